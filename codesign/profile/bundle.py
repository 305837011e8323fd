"""Measurement bundles: compile everything here, measure it on a device reached briefly, merge the results.

For devices without TVM (a GPU server reachable for a few minutes, a board reachable only by
copying files) the profiling run is split in three:

1. :func:`build_bundle` (``codesign profile --build-only -o BUNDLE``), on the build machine:
   every kernel of the space under every schedule candidate of its family (candidate 0: TVM's
   default lowering, dlight rules on GPUs; then schedules sampled from MetaSchedule's design
   space on the family's representative and replayed on each kernel), batched into libraries
   (CUDA kernels compiled to fatbin with nvcc), ``models`` random whole subnets compiled under
   random valid schedule genes, reference outputs for all of them computed here, the TVM
   runtime libraries, ``tvm_ffi`` for this Python (plus any wheels given) and ``measure.py``.
2. ``python3 BUNDLE/measure.py`` (or ``codesign profile --measure BUNDLE``) on the device:
   checks and times everything (see :mod:`codesign.profile.bundle_measure`).
3. :func:`merge_results` (``codesign profile --merge BUNDLE --results R -o FILE.json``): the
   results become a hardware profile like one measured directly (kernel table, whole models,
   fitted kernel predictor and calibration), with the device's provenance as the device read it.

A build takes tens of minutes on a small machine (35 for the default space on 2 cores), so it is
resumable: its progress is saved after every kernel library and whole model, and rerunning the
same command after a kill or a failure continues from there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.fileio import write_json_atomic
from codesign.latency.workloads import Workload, enumerate_workloads, kernel_family
from codesign.profile.bundle_measure import RESULTS_FORMAT, output_summary, probe_array
from codesign.space import Genome, SearchSpace

BUNDLE_FORMAT = "codesign-measurement-bundle"
BUNDLE_SCHEMA_VERSION = 1
BUNDLE_SIZE_LIMIT = 64 * 2**20
GPU_DEFAULT_RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")


@dataclass(frozen=True)
class BundleConfig:
    """Knobs of a bundle build (recorded in the bundle and in the merged profile)."""

    target: dict[str, Any]
    sampled_candidates: int = 3
    models: int = 30
    batch_kernels: int = 96
    seed: int = 0
    max_workloads: int | None = None
    runtime_wheels: str | None = None


def _gpu(target: dict[str, Any]) -> bool:
    return target.get("kind") == "cuda"


def default_schedule(mod: Any, target: dict[str, Any]) -> Any:
    """TVM's default lowering of a kernel module: as is on CPUs, dlight's GPU rules on GPUs (as compile_relax)."""
    if not _gpu(target):
        return mod
    import tvm
    from tvm.s_tir import dlight as dl

    rules = [getattr(dl.gpu, name)() for name in GPU_DEFAULT_RULES]
    private = tvm.ir.load_json(tvm.ir.save_json(mod))  # dlight rewrites functions in place
    with tvm.target.Target(target):
        return dl.ApplyDefaultSchedule(*rules)(private)


def sample_family_candidates(
    task: Any, target: dict[str, Any], count: int, seed: int, source: str
) -> list[dict[str, Any]]:
    """``count`` distinct schedules drawn from MetaSchedule's design space of ``task`` (untuned, as JSON traces)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from codesign.profile.tvm_backend import trace_to_json

    if count <= 0:
        return []
    context = ms.TuneContext(
        mod=task.mod,
        target=tvm.target.Target(target),
        space_generator="post-order-apply",
        search_strategy=ms.search_strategy.ReplayTrace(),
        task_name=task.name,
        rand_state=seed,
        num_threads=1,
    )
    spaces = context.generate_design_space()
    context.pre_tuning(max_trials=4 * count, num_trials_per_iter=4 * count, design_spaces=spaces)
    picked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for candidate in context.generate_measure_candidates() or []:
        trace = trace_to_json(candidate.sch.trace)
        key = json.dumps(trace)
        if key not in seen:
            seen.add(key)
            picked.append({"source": f"{source}#sample{len(picked)}", "trace": trace})
        if len(picked) == count:
            break
    return picked


class _GpuCodeCheck:
    """MetaSchedule's VerifyGPUCode: threads per block, shared memory and registers within the target's limits.

    A schedule sampled on one shape and replayed on a larger one can exceed them; nvcc would then
    reject the whole batch it sits in.
    """

    def __init__(self, target: dict[str, Any]) -> None:
        import tvm
        from tvm.s_tir import meta_schedule as ms

        self.postproc = ms.postproc.VerifyGPUCode()
        self.postproc._initialize_with_tune_context(ms.TuneContext(target=tvm.target.Target(target)))

    def __call__(self, mod: Any) -> bool:
        import tvm

        return bool(self.postproc.apply(tvm.s_tir.Schedule(mod)))


class _KernelBatcher:
    """Collects scheduled kernel functions and writes them as libraries of ``batch`` functions each."""

    def __init__(self, out_dir: Path, target: dict[str, Any], batch: int) -> None:
        self.out_dir = out_dir
        self.target = target
        self.batch = batch
        self.pending: list[tuple[str, Any, dict[str, Any]]] = []
        self.libraries: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.on_flush: Callable[[], None] = lambda: None

    def add(self, symbol: str, func: Any, entry: dict[str, Any]) -> None:
        self.pending.append((symbol, func.with_attr("global_symbol", symbol), entry))
        if len(self.pending) >= self.batch:
            self.flush()

    def _build(self, items: list[tuple[str, Any, dict[str, Any]]]) -> Any:
        import tvm

        return tvm.tirx.build(tvm.IRModule({s: f for s, f, _ in items}), target=tvm.target.Target(self.target))

    def _reject(self, item: tuple[str, Any, dict[str, Any]], error: str) -> None:
        self.failed.append({"symbol": item[0], **item[2], "error": error[:300]})

    def flush(self) -> None:
        """Build and write the pending functions; one that fails to build or compile is isolated and recorded."""
        items, self.pending = self.pending, []
        path = self.out_dir / f"kernels_{len(self.libraries):03d}.so"
        while items:
            try:
                _export(self._build(items), path, self.target)
                path = _compress(path)
                break
            except Exception as exc:
                message = str(exc)
                named = {s for s, _, _ in items if f"'{s}_kernel'" in message or f"'{s}'" in message}
                if named and "rror" in message:
                    for item in items:
                        if item[0] in named:
                            self._reject(item, _last_error_line(message, item[0]))
                    items = [item for item in items if item[0] not in named]
                    continue
                if len(items) == 1:
                    self._reject(items[0], _last_error_line(message, items[0][0]))
                    items = []
                    break
                half = len(items) // 2
                self.pending = items[half:] + self.pending
                items = items[:half]
        if items:
            self.libraries.append(
                {"path": f"kernels/{path.name}", "kernels": [{"symbol": s, **entry} for s, _, entry in items]}
            )
        if self.pending:
            self.flush()
        else:
            self.on_flush()


def _last_error_line(message: str, symbol: str) -> str:
    lines = [line for line in message.splitlines() if symbol in line and "rror" in line]
    return (lines or [line for line in message.strip().splitlines() if line.strip()][-1:] or ["failed"])[0]


def _export(module: Any, path: Path, target: dict[str, Any]) -> None:
    if _gpu(target):
        from codesign.compiler.cuda_binary import cuda_arch, export_library_with_compiled_cuda

        export_library_with_compiled_cuda(module, path, cuda_arch(target))
    else:
        module.export_library(str(path))


def _compress(path: Path) -> Path:
    """Replace a library by its xz-compressed copy (host stubs and fatbins shrink about 5x); measure.py unpacks it."""
    import lzma

    packed = path.with_name(path.name + ".xz")
    packed.write_bytes(lzma.compress(path.read_bytes(), preset=6))
    path.unlink()
    return packed


def _arg_specs(mod: Any) -> list[tuple[list[int], str]]:
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return [([int(d) for d in info.shape], str(info.dtype)) for info in ArgInfo.from_prim_func(mod["main"])]


def _cpu_references(tasks: list[tuple[str, Any]], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Output summaries of each task's default lowering, built for and run on this CPU."""
    import tvm

    if not tasks:
        return {}
    module = tvm.tirx.build(
        tvm.IRModule({name: mod["main"].with_attr("global_symbol", name) for name, mod in tasks}),
        target=tvm.target.Target({"kind": "llvm"}),
    )
    references = {}
    for name, mod in tasks:
        specs = _arg_specs(mod)
        args = [tvm.runtime.tensor(probe_array(shape, dtype, salt=i)) for i, (shape, dtype) in enumerate(specs[:-1])]
        out = tvm.runtime.tensor(np.full(specs[-1][0], np.nan, dtype=specs[-1][1]))
        module[name](*args, out)
        references[name] = output_summary(out.numpy())
    return references


def _random_model_genomes(
    space: SearchSpace, families: dict[str, list[dict[str, Any]]], usable: dict[str, set[int]], count: int, seed: int
) -> list[Genome]:
    """Random subnets whose schedule genes pick, per kernel, a candidate that compiled for that kernel."""
    from codesign.latency.positions import PositionTable

    positions = PositionTable(space)
    rng = np.random.default_rng(seed + 1)
    genomes = []
    for _ in range(count):
        genome = Genome.random(space, rng).canonical(space)
        ids = positions.workload_ids(genome.to_vector(space)[None, :])[0]
        genes = []
        for p, position in enumerate(positions.positions):
            valid = sorted(usable.get(positions.workloads[ids[p]].key(), {0}))
            genes.append(int(valid[int(rng.integers(len(valid)))]) if families.get(position.family) else 0)
        genomes.append(Genome(**{**genome.__dict__, "schedules": tuple(genes)}))
    return genomes


def _compile_model(
    space: SearchSpace,
    genome: Genome,
    target: dict[str, Any],
    families: dict[str, list[dict[str, Any]]],
    staging: Path,
    number: int,
    positions: Any = None,
) -> dict[str, Any]:
    """Compile one whole subnet into ``staging/models`` (xz) with its CPU reference logits; its index entry."""
    import torch

    from codesign.compiler.tvm_compile import compile_subnet, subnet_reference_module

    path = staging / "models" / f"model_{number:03d}.so"
    try:
        _export(compile_subnet(space, genome, target, families, positions=positions), path, target)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    path = _compress(path)
    shape = [1, space.in_channels, genome.resolution, genome.resolution]
    with torch.inference_mode():
        logits = subnet_reference_module(space, genome)(torch.from_numpy(probe_array(shape, "float32", 0)))
    return {
        "key": f"model{number:03d}",
        "path": f"models/{path.name}",
        "genome": genome.to_dict(),
        "input_shape": shape,
        "reference_logits": logits.double().numpy().tolist(),
    }


def _copy_runtime(bundle: Path, target: dict[str, Any], wheels: str | None) -> dict[str, Any]:
    """The TVM runtime libraries, tvm_ffi for this Python and any given wheels; what was copied."""
    import tvm_ffi

    from codesign import runtime

    for partial in ("runtime", "python", "wheels"):  # left by a build that stopped while copying
        shutil.rmtree(bundle / partial, ignore_errors=True)
    runtime_dir = bundle / "runtime"
    runtime_dir.mkdir()
    source = runtime.runtime_library_dir()
    names = list(runtime.RUNTIME_LIBRARIES) + (list(runtime.CUDA_RUNTIME_LIBRARIES) if _gpu(target) else [])
    for name in names:
        shutil.copy2(source / name, runtime_dir / name)
    if _gpu(target):
        cudart = _find_cudart()
        if cudart is not None:
            shutil.copy2(cudart, runtime_dir / "libcudart.so.13")
    ffi_root = Path(tvm_ffi.__file__).resolve().parent
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    shutil.copytree(
        ffi_root,
        bundle / "python" / tag / "tvm_ffi",
        ignore=shutil.ignore_patterns("include", "src", "cython", "share", "cmake", "3rdparty", "stub", "__pycache__"),
    )
    copied_wheels = []
    if wheels:
        (bundle / "wheels").mkdir()
        for wheel in sorted(Path(wheels).glob("apache_tvm_ffi-*.whl")):
            shutil.copy2(wheel, bundle / "wheels" / wheel.name)
            copied_wheels.append(wheel.name)
    package = Path(__file__).resolve().parents[1]
    shutil.copy2(package / "runtime.py", bundle / "codesign_runtime.py")
    shutil.copy2(Path(__file__).with_name("bundle_measure.py"), bundle / "measure.py")
    return {"libraries": names, "python": [tag], "wheels": copied_wheels}


def _find_cudart() -> Path | None:
    import os

    roots = [Path(os.environ["CUDA_HOME"])] if os.environ.get("CUDA_HOME") else []
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(Path(nvcc).resolve().parents[1])
    roots += [Path("/usr/local/cuda"), *sorted(Path("/usr/local").glob("cuda-13*"))]
    for root in roots:
        for sub in ("lib", "lib64", "targets/x86_64-linux/lib"):
            candidate = root / sub / "libcudart.so.13"
            if candidate.is_file():
                return candidate.resolve()
    return None


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _BuildCheckpoint:
    """A bundle build's progress, kept in ``.NAME.partial`` beside the bundle and saved atomically after
    every kernel library and every whole model, so that rerunning the same command resumes it."""

    FILE = "progress.json"

    def __init__(self, out: Path, key: dict[str, Any], say: Callable[[str], None]) -> None:
        self.folder = out.with_name(f".{out.name}.partial")
        self.key = json.loads(json.dumps(key))
        saved: dict[str, Any] | None = None
        try:
            saved = json.loads((self.folder / self.FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            saved = None
        if isinstance(saved, dict) and saved.get("key") == self.key:
            self.state = saved
            say(f"resuming the bundle build kept in {self.folder} ({saved.get('seconds', 0.0):.0f} s done)")
        else:
            if self.folder.exists():
                say(f"{self.folder} holds a build with other settings: starting over")
                shutil.rmtree(self.folder)
            (self.folder / "kernels").mkdir(parents=True)
            (self.folder / "models").mkdir()
            self.state = {"key": self.key, "seconds": 0.0}
        self._since = time.monotonic()

    def seconds(self) -> float:
        """Build time over every run of this build."""
        return float(self.state["seconds"]) + time.monotonic() - self._since

    def save(self, **updates: Any) -> None:
        """Record ``updates`` (and the time spent) in the progress file, atomically."""
        self.state.update(updates)
        self.state["seconds"] = self.seconds()
        self._since = time.monotonic()
        write_json_atomic(self.folder / self.FILE, self.state, compact=True)


def build_bundle(
    space: SearchSpace,
    config: BundleConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compile the bundle into ``out_dir``: built in ``.NAME.partial`` beside it and moved in place at the end.

    A build that stops (killed, or a compiler failure) keeps that folder; rerunning with the same
    space and config resumes after the last kernel library or whole model it finished.
    """
    import os

    from codesign.profile.profile_file import current_command
    from codesign.profile.profiler import rank_workloads
    from codesign.profile.tvm_backend import replay_json, require_tvm, software_versions, workload_tasks

    say = progress or (lambda _msg: None)
    require_tvm()
    if _gpu(config.target):
        from codesign.compiler.cuda_binary import cuda_arch, nvcc_path

        cuda_arch(config.target)
        nvcc_path()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise CodesignError(f"output directory {out} exists and is not empty")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = _BuildCheckpoint(
            out, {"config": asdict(config), "space": space.to_dict(), "software": software_versions()}, say
        )
    except OSError as exc:
        raise CodesignError(f"cannot write to {out.parent}: {exc.strerror}") from None
    staging = checkpoint.folder
    state = checkpoint.state
    try:
        ranked = [w for w, _ in rank_workloads(space, 500, config.seed)]
        workloads = ranked[: config.max_workloads] if config.max_workloads else enumerate_workloads(space)
        if "families" not in state:
            by_family: dict[str, list[Workload]] = {}
            for w in workloads:
                by_family.setdefault(kernel_family(w), []).append(w)
            sampled: dict[str, list[dict[str, Any]]] = {}
            for f, (family, members) in enumerate(sorted(by_family.items())):
                representative = max(members, key=lambda w: (w.macs, w.key()))
                task = workload_tasks(representative, config.target)[0]
                sampled[family] = [{"source": "default", "trace": None}] + sample_family_candidates(
                    task, config.target, config.sampled_candidates, config.seed + f, representative.key()
                )
                say(f"family {family}: {len(sampled[family]) - 1} sampled schedules from {representative.key()}")
            checkpoint.save(families=sampled)
        families: dict[str, list[dict[str, Any]]] = state["families"]
        batcher = _KernelBatcher(staging / "kernels", config.target, config.batch_kernels)
        batcher.libraries = state.get("libraries", [])
        batcher.failed = state.get("build_failures", [])
        fits_gpu = _GpuCodeCheck(config.target) if _gpu(config.target) else None
        reference_tasks: list[tuple[str, Any]] = []
        replay_failures: list[dict[str, Any]] = state.get("replay_failures", [])
        task_counts: dict[str, int] = {}
        resume_at = int(state.get("next_workload", 0))
        finished = {k["symbol"] for lib in batcher.libraries for k in lib["kernels"]}
        finished |= {f["symbol"] for f in batcher.failed + replay_failures}
        current = resume_at

        def save_kernels() -> None:  # after each library: every kernel before `current` is in one or failed
            checkpoint.save(
                libraries=batcher.libraries,
                build_failures=batcher.failed,
                replay_failures=replay_failures,
                next_workload=current,
            )

        batcher.on_flush = save_kernels
        for i, workload in enumerate(workloads):
            current = i
            family = kernel_family(workload)
            tasks = workload_tasks(workload, config.target)
            task_counts[workload.key()] = len(tasks)
            for t, task in enumerate(tasks):
                reference = f"w{i:04d}t{t}"
                reference_tasks.append((reference, task.mod))
                if i < resume_at:
                    continue
                specs = _arg_specs(task.mod)
                for c, candidate in enumerate(families[family]):
                    symbol = f"k{i:04d}_t{t}_c{c}"
                    if symbol in finished:
                        continue
                    entry = {
                        "key": workload.key(),
                        "candidate": c,
                        "task": t,
                        "weight": task.weight,
                        "reference": reference,
                        "args": specs,
                    }
                    try:
                        if candidate["trace"] is None:
                            mod = default_schedule(task.mod, config.target)
                        else:
                            mod = replay_json(task, candidate["trace"]).mod
                    except Exception as exc:
                        error = str(exc).strip().splitlines()[-1][:300]
                        replay_failures.append({"symbol": symbol, **entry, "error": error})
                        continue
                    if fits_gpu is not None and c > 0 and not fits_gpu(mod):
                        replay_failures.append(
                            {"symbol": symbol, **entry, "error": "exceeds the GPU's limits (VerifyGPUCode)"}
                        )
                        continue
                    batcher.add(symbol, mod["main"], entry)
            if i >= resume_at and ((i + 1) % 50 == 0 or i + 1 == len(workloads)):
                say(f"kernels: {i + 1}/{len(workloads)} workloads scheduled, {len(batcher.libraries)} libraries")
        current = len(workloads)
        batcher.flush()
        save_kernels()
        if "references" not in state:
            checkpoint.save(references=_cpu_references(reference_tasks, staging))
        references: dict[str, dict[str, Any]] = state["references"]
        built: dict[tuple[str, int], set[int]] = {}
        for library in batcher.libraries:
            for kernel in library["kernels"]:
                built.setdefault((kernel["key"], kernel["candidate"]), set()).add(kernel["task"])
        # a candidate is usable for a kernel only when every fused task of that kernel compiled with it
        usable: dict[str, set[int]] = {}
        for (key, built_candidate), built_tasks in built.items():
            if len(built_tasks) == task_counts[key]:
                usable.setdefault(key, set()).add(built_candidate)
        models: list[dict[str, Any]] = state.get("models", [])
        model_failures: list[dict[str, Any]] = state.get("model_failures", [])
        drawn = _random_model_genomes(space, families, usable, 3 * config.models, config.seed)
        for d in range(int(state.get("models_drawn", 0)), len(drawn)):
            genome = drawn[d]
            if len(models) == config.models:
                break
            m = len(models)
            try:
                models.append(_compile_model(space, genome, config.target, families, staging, m))
            except Exception as exc:  # record it and draw the next subnet
                model_failures.append({"genome": genome.to_dict(), "error": str(exc).strip().splitlines()[-1][:300]})
                checkpoint.save(models=models, model_failures=model_failures, models_drawn=d + 1)
                continue
            checkpoint.save(models=models, model_failures=model_failures, models_drawn=d + 1)
            say(f"whole models: {m + 1}/{config.models} compiled")
        copied = _copy_runtime(staging, config.target, config.runtime_wheels)
        digest = hashlib.sha256(
            json.dumps([config.target, space.to_dict(), time.time_ns()], sort_keys=True).encode()
        ).hexdigest()[:16]
        index: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "bundle_id": digest,
            "target": config.target,
            "space": space.to_dict(),
            "config": asdict(config),
            "families": families,
            "kernel_libraries": batcher.libraries,
            "build_failures": batcher.failed,
            "replay_failures": replay_failures,
            "model_failures": model_failures,
            "references": references,
            "models": models,
            "runtime": copied,
            "software": software_versions(),
            "command": current_command(),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(checkpoint.seconds(), 1),
        }
        write_json_atomic(staging / "bundle.json", index, compact=True)
        size = _directory_bytes(staging)
        if size > BUNDLE_SIZE_LIMIT:
            raise CodesignError(
                f"the bundle is {size / 2**20:.1f} MiB, over the {BUNDLE_SIZE_LIMIT / 2**20:.0f} MiB limit: "
                "use fewer --bundle-models or --sampled-candidates"
            )
        (staging / _BuildCheckpoint.FILE).unlink()
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException as exc:
        if staging.exists() and not isinstance(exc, CodesignError):
            say(f"the bundle build stopped; its progress is kept in {staging}: rerun the same command to resume")
        raise
    kernels = sum(len(lib["kernels"]) for lib in index["kernel_libraries"])
    return {
        "bundle": str(out),
        "bytes": size,
        "kernels": kernels,
        "workloads": len(workloads),
        "replay_failures": len(replay_failures),
        "build_failures": len(batcher.failed),
        "models": len(models),
        "seconds": index["build_seconds"],
    }


def build_model_bundle(
    space: SearchSpace,
    target: dict[str, Any],
    families: dict[str, list[dict[str, Any]]],
    genomes: list[Genome],
    out_dir: str | Path,
    *,
    labels: list[dict[str, Any]] | None = None,
    runtime_wheels: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A bundle of whole subnets only, compiled here under the schedules their genes choose.

    Measured on the device by the same ``measure.py`` (no kernel table): this is how a profile's
    latency model is tested on subnets it was not fitted on when the device has no TVM
    (``tools/bench_latency_model.py --build-bundle``). ``labels`` adds fields to each model's entry
    (its predicted latency, say). Resumable like :func:`build_bundle`; built beside ``out_dir`` and
    moved in place at the end.
    """
    import os

    from codesign.latency.positions import PositionTable
    from codesign.profile.profile_file import current_command
    from codesign.profile.tvm_backend import require_tvm, software_versions

    say = progress or (lambda _msg: None)
    require_tvm()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise CodesignError(f"output directory {out} exists and is not empty")
    key = {"target": target, "space": space.to_dict(), "genomes": [g.to_dict() for g in genomes]}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = _BuildCheckpoint(out, {**key, "software": software_versions()}, say)
    except OSError as exc:
        raise CodesignError(f"cannot write to {out.parent}: {exc.strerror}") from None
    staging = checkpoint.folder
    models: list[dict[str, Any]] = checkpoint.state.get("models", [])
    positions = PositionTable(space)
    for m in range(len(models), len(genomes)):
        try:
            entry = _compile_model(space, genomes[m], target, families, staging, m, positions)
        except CodesignError:
            raise
        except Exception as exc:
            raise CodesignError(
                f"subnet {m} ({genomes[m].short(space)}) does not compile: {str(exc).strip().splitlines()[-1][:300]}"
            ) from None
        models.append({**entry, **(labels[m] if labels else {})})
        checkpoint.save(models=models)
        say(f"whole models: {m + 1}/{len(genomes)} compiled")
    copied = _copy_runtime(staging, target, runtime_wheels)
    index: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "bundle_id": hashlib.sha256(json.dumps([key, time.time_ns()], sort_keys=True).encode()).hexdigest()[:16],
        "target": target,
        "space": space.to_dict(),
        "config": {"target": target, "models": len(genomes), "models_only": True},
        "families": families,
        "kernel_libraries": [],
        "build_failures": [],
        "replay_failures": [],
        "model_failures": [],
        "references": {},
        "models": models,
        "runtime": copied,
        "software": software_versions(),
        "command": current_command(),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(checkpoint.seconds(), 1),
    }
    write_json_atomic(staging / "bundle.json", index, compact=True)
    size = _directory_bytes(staging)
    if size > BUNDLE_SIZE_LIMIT:
        raise CodesignError(
            f"the bundle is {size / 2**20:.1f} MiB, over the {BUNDLE_SIZE_LIMIT / 2**20:.0f} MiB limit: "
            "use fewer subnets"
        )
    (staging / _BuildCheckpoint.FILE).unlink()
    if out.exists():
        out.rmdir()
    os.replace(staging, out)
    return {"bundle": str(out), "bytes": size, "models": len(models), "seconds": index["build_seconds"]}


def load_bundle_index(bundle: str | Path) -> dict[str, Any]:
    """A bundle's ``bundle.json``, validated; a clear error for anything else."""
    path = Path(bundle) / "bundle.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CodesignError(f"{bundle} is not a measurement bundle (no bundle.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CodesignError(f"{path} is unreadable: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
        raise CodesignError(f"{path} is not a codesign measurement bundle index")
    if index.get("schema_version", 0) > BUNDLE_SCHEMA_VERSION:
        raise CodesignError(f"{path} comes from a newer codesign (schema {index.get('schema_version')})")
    return index


def _timing(record: dict[str, Any]) -> dict[str, Any] | None:
    return record.get("timing") if record.get("status") == "ok" else None


def merge_results(bundle: str | Path, results_path: str | Path, *, seed: int = 0) -> Any:
    """The hardware profile of a measured bundle (see the module docstring)."""
    from codesign.profile.fitting import fit_predictor
    from codesign.profile.profile_file import DeviceInfo, HardwareProfile, SoftwareInfo, current_command, now_utc

    index = load_bundle_index(bundle)
    try:
        results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CodesignError(f"cannot read results {results_path}: {exc}") from None
    if results.get("format") != RESULTS_FORMAT:
        raise CodesignError(f"{results_path} is not a bundle results file")
    if results.get("bundle_id") != index["bundle_id"]:
        raise CodesignError(
            f"{results_path} measured bundle {results.get('bundle_id')}, not {index['bundle_id']} ({bundle})"
        )
    space = SearchSpace.from_dict(index["space"])
    families = index["families"]
    kernel_results = results.get("kernels", {})
    per_workload: dict[str, dict[int, dict[int, tuple[int, dict[str, Any]]]]] = {}
    workloads: dict[str, Workload] = {w.key(): w for w in enumerate_workloads(space)}
    for library in index["kernel_libraries"]:
        for kernel in library["kernels"]:
            record = kernel_results.get(kernel["symbol"])
            if record is not None:
                per_workload.setdefault(kernel["key"], {}).setdefault(kernel["candidate"], {})[kernel["task"]] = (
                    kernel["weight"],
                    record,
                )
    for failure in index.get("replay_failures", []) + index.get("build_failures", []):
        per_workload.setdefault(failure["key"], {}).setdefault(failure["candidate"], {})[failure["task"]] = (
            failure["weight"],
            {"status": "failed", "error": failure["error"]},
        )
    measurements: list[dict[str, Any]] = []
    for key, candidates in sorted(per_workload.items()):
        workload = workloads[key]
        rows = []
        for c, tasks in sorted(candidates.items()):
            maybe_timings = [_timing(r) for _, r in tasks.values()]
            errors = [r.get("error") for _, r in tasks.values() if r.get("status") != "ok"]
            timings = [t for t in maybe_timings if t is not None]
            if len(timings) == len(maybe_timings):
                weights = [w for w, _ in tasks.values()]
                timing: dict[str, Any] = {
                    stat: sum(w * t[stat] for w, t in zip(weights, timings, strict=True))
                    for stat in ("mean_ms", "median_ms", "std_ms")
                }
                timing.update(repeats=min(t["repeats"] for t in timings), kernels=timings)
                rows.append(
                    {
                        "candidate": c,
                        "status": "ok",
                        "source": families[kernel_family(workload)][c]["source"],
                        "timing": timing,
                        "error": None,
                    }
                )
            elif any(r.get("status") == "wrong" for _, r in tasks.values()):
                rows.append(
                    {
                        "candidate": c,
                        "status": "failed",
                        "source": "",
                        "timing": None,
                        "error": "wrong output: " + "; ".join(filter(None, errors)),
                    }
                )
            elif errors:
                rows.append(
                    {
                        "candidate": c,
                        "status": "failed",
                        "source": "",
                        "timing": None,
                        "error": "; ".join(filter(None, errors)),
                    }
                )
        measurements.append(
            {"family": kernel_family(workload), "key": key, "workload": workload.to_dict(), "results": rows}
        )
    models = []
    for model in index["models"]:
        record = results.get("models", {}).get(model["key"])
        if record is None:
            continue
        model_timing = _timing(record)
        models.append(
            {
                "key": model["key"],
                "genome": model["genome"],
                "status": "ok" if model_timing else "failed",
                "timing": model_timing,
                "host_loop_rotated": record.get("host_loop_rotated"),
                "torch_eager": record.get("torch_eager"),
                "error": record.get("error"),
            }
        )
    info = results.get("device_info", {})
    gpu = results.get("device") == "cuda"
    device = DeviceInfo(
        kind="gpu" if gpu else "cpu",
        name=str(info.get("name", "unknown")),
        cores=int(info.get("multiprocessors", 0) if gpu else info.get("cores", 0) or 0),
        arch=str(index["target"].get("arch") or index["target"].get("mcpu") or ""),
        max_clock_mhz=_float(info.get("clocks.max.sm")),
        host=str(info.get("host", "")),
    )
    software = dict(index["software"])
    if gpu:
        software["cuda"] = f"{info.get('cuda', '')} (driver {info.get('driver_version', '?')})"
    failed = sum(1 for m in measurements for r in m["results"] if r["status"] == "failed")
    return HardwareProfile(
        target=dict(index["target"]),
        device=device,
        software=SoftwareInfo(**software),
        space=space.to_dict(),
        command=current_command(),
        created=now_utc(),
        measurements=measurements,
        models=models,
        predictor=fit_predictor(space, families, measurements, models, seed=seed),
        tuning_records={"families": families, "tuning_runs": []},
        validation={
            "workloads_total": len(workloads),
            "workloads_measured": len(measurements),
            "failed_measurements": failed,
            "measurement_minutes": round(float(results.get("seconds", 0.0)) / 60.0, 2),
            "bundle": {
                "bundle_id": index["bundle_id"],
                "build_command": index["command"],
                "build_seconds": index["build_seconds"],
                "config": index["config"],
                "device_as_read": info,
                "measure_settings": results.get("settings"),
                "measured": [results.get("started"), results.get("finished")],
            },
        },
    )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
