"""``codesign export``: a genome of a supernet -> a checked, deployable artifact directory.

The artifact is built in a temporary directory next to the destination and moved into place
only when every check passed, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from codesign import __version__
from codesign.data import DataSplits
from codesign.errors import ExportError
from codesign.evaluation import TorchSubnetEvaluator, accuracy_of, predict_logits, prepare_images
from codesign.export.onnx_export import DEFAULT_OPSET, check_onnx_parity, export_onnx, onnxruntime_logits
from codesign.export.threads import ThreadSweep, TimedLibrary
from codesign.fileio import staging_directory, write_json_atomic
from codesign.space import Genome
from codesign.supernet import LoadedSupernet

MANIFEST_SCHEMA_VERSION = 1
SchedulePolicy = Literal["auto", "genome", "fastest", "default"]
RuntimeThreads = Literal["auto"] | int


@dataclass(frozen=True)
class ExportResult:
    """Where the artifact went and what was checked."""

    out_dir: Path
    manifest: dict[str, Any]


REFERENCE_INPUTS = "reference_inputs.npy"
REFERENCE_LOGITS = "reference_logits.npy"
DEVICE_PARITY_TOLERANCE = 1e-3
DEVICE_CHECK_IMAGES = 32


def _tvm_artifact(
    staging: Path,
    onnx_path: Path,
    space: Any,
    genome: Genome,
    target: dict[str, Any],
    profile: Any,
    images: np.ndarray,
    tolerance: float,
    measure_latency: bool,
    rpc: Any,
    tune_trials: int,
    schedules_from: str,
    runtime_threads: RuntimeThreads,
    retune: RetuneSettings | None,
    speed_probe: int = 0,
) -> dict[str, Any]:
    from codesign.compiler.tvm_compile import compiled_choices, time_executable
    from codesign.export.tvm_artifact import LIBRARY_NAME, check_tvm_parity, compile_onnx
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import target_mismatch
    from codesign.profile.speed_probe import model_at_probed_speed
    from codesign.profile.tvm_backend import host_llvm_target

    families = profile.tuning_records.get("families", {}) if profile is not None else {}
    model = LatencyModel.from_profile(profile) if profile is not None else None
    retuned: list[Any] = []
    retune_step = None
    if retune is not None and model is not None:
        retune_step = _retune_step(retune, model, space, genome, target, retuned)
    executable, tuned = compile_onnx(
        onnx_path, space, genome, target, families, tune_trials=tune_trials, retune=retune_step
    )
    library = staging / LIBRARY_NAME
    reference = onnxruntime_logits(onnx_path, images)
    predicted = float(model.predict([genome])[0]) if model is not None else None
    section: dict[str, Any] = {
        "library": LIBRARY_NAME,
        "target": target,
        "device": profile.device.name if profile is not None else None,
        "schedules": list(genome.schedules) if profile is not None else "TVM default (no profile for this target)",
        "schedules_from": schedules_from,
        "layouts": compiled_choices(space, genome, families).layouts,
        "parity_images": len(images),
        "tuned_here": tuned,
        "latency": {"predicted_ms": predicted, "measured": None},
    }
    if retune is not None and model is not None:
        from codesign.export.retune import retuned_prediction

        if retune.journal.exists():
            shutil.copyfile(retune.journal, staging / RETUNE_JOURNAL)
        else:
            (staging / RETUNE_JOURNAL).write_text("")
        kernels = {(o.workload, o.layout) for o in retuned}  # a kernel may lower to several tasks
        kept = {(o.workload, o.layout) for o in retuned if o.kept == "tuned"}
        section["retuned"] = {
            "trials_per_kernel": retune.trials,
            "budget_minutes": retune.budget_minutes,
            "kernels_tuned": len(kernels),
            "kernels_kept": len(kept),
            "journal": RETUNE_JOURNAL,
            "kernels": [o.summary() for o in retuned],
        }
        section["latency"]["predicted_retuned_ms"] = retuned_prediction(model, genome, retuned)
    if rpc is not None and measure_latency:
        from codesign.profile.session import RPCSession

        session = RPCSession(rpc, target)
        try:
            timing = time_executable(executable, space, genome.resolution, repeat=20, session=session)
        finally:
            session.close()
        section["latency"]["measured"] = {**timing.to_dict(), "where": f"{session.description}, batch 1"}
        _warn_on_spread(timing.std_ms, timing.median_ms)
        measure_latency = False
    if target.get("kind") == "cuda":
        from codesign.compiler.cuda_binary import COMPILED_FORMAT, cuda_arch, export_library_with_compiled_cuda

        arch = cuda_arch(target)
        compiled = export_library_with_compiled_cuda(executable, library, arch)
        section["kernels"] = {"format": COMPILED_FORMAT, "arch": arch, "cuda_modules": compiled}
        section["tvm_vs_onnxruntime_max_abs"] = None
        section["device_check"] = _save_reference(staging, images, reference)
        if measure_latency:
            section["latency"]["not_measured"] = "no CUDA device on the exporting machine; run the device check"
        return section
    executable.export_library(str(library))
    section["tvm_vs_onnxruntime_max_abs"] = check_tvm_parity(library, images, reference, tolerance)
    section["device_check"] = _save_reference(staging, images, reference)
    here = profile is not None and target_mismatch(target, host_llvm_target()) is None
    if measure_latency and here:
        probing = bool(speed_probe and model is not None and predicted is not None)
        measured, probe = _measure_here(
            library,
            space,
            genome,
            target,
            runtime_threads,
            profile=profile,
            probe_subnets=speed_probe * probing,
            staging=staging,
        )
        section["latency"].update(measured)
        if probe is not None and model is not None and predicted is not None:
            latency = section["latency"]
            latency["speed_probe"] = probe
            at_speed = float(model_at_probed_speed(model, probe).predict([genome])[0])
            latency["predicted_at_probed_speed_ms"] = at_speed
            if "predicted_retuned_ms" in latency:  # its kernels' gains stay: the genome's mix of one-thread time too
                latency["predicted_retuned_at_probed_speed_ms"] = latency["predicted_retuned_ms"] * at_speed / predicted
    elif measure_latency:
        section["latency"]["not_measured"] = "the profile's device is not this machine"
    return section


@dataclass(frozen=True)
class RetuneSettings:
    """``codesign export --retune-trials``: tune every kernel of the subnet here and keep what is faster."""

    trials: int
    journal: Path
    budget_minutes: float | None = None
    reuse: tuple[Path, ...] = ()
    """Journals of earlier exports whose matching kernels are reused instead of re-tuned."""


RETUNE_JOURNAL = "retune_journal.jsonl"


def retune_journal_path(out_dir: str | Path) -> Path:
    """Where a re-tuning export journals its kernels until it succeeds: beside the artifact directory."""
    out = Path(out_dir)
    return out.parent / f"{out.name}.retune-journal.jsonl"


def _retune_step(
    retune: RetuneSettings, model: Any, space: Any, genome: Genome, target: dict[str, Any], outcomes: list[Any]
) -> Any:
    """The callback :func:`compile_onnx` runs on the schedule database before compiling."""
    from codesign.export.retune import kernels_by_predicted_time, order_by_measured_time, retune_kernels
    from codesign.latency.workloads import subnet_workloads

    def step(database: Any, traces: dict[Any, Any]) -> None:
        def say(line: str) -> None:
            print(line, flush=True)

        kernels = kernels_by_predicted_time(model, genome, traces, subnet_workloads(space, genome))
        if retune.budget_minutes is not None:  # within a budget the order decides what gets tuned
            kernels = order_by_measured_time(kernels, target, progress=say)
        say(f"re-tuning {len(kernels)} kernels, {retune.trials} trials each, slowest first (journal: {retune.journal})")
        outcomes.extend(
            retune_kernels(
                database,
                kernels,
                target,
                trials=retune.trials,
                journal_path=retune.journal,
                budget_minutes=retune.budget_minutes,
                progress=say,
                reuse=retune.reuse,
            )
        )

    return step


def _measure_here(
    library: Path,
    space: Any,
    genome: Genome,
    target: dict[str, Any],
    runtime_threads: RuntimeThreads,
    *,
    profile: Any,
    probe_subnets: int,
    staging: Path,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Time the shipped library on this CPU (:func:`_measure_threads`) and, with ``probe_subnets`` > 0, the
    machine's speed relative to ``profile`` (the manifest's ``speed_probe``), measured in the same rounds.

    The probe's subnets are compiled as the profile compiled them, exported and timed exactly as the artifact
    is (the runtime-only loader, at the target's core count), in the same process as the artifact with their
    windows alternating with its windows (:func:`codesign.export.threads.sweep_libraries`): the factor is the
    machine's speed while the artifact ran, not minutes before (a separate probe read 1.25x where the same
    subnets timed between the measured ones read 0.92x, tools/bench_latency_model.py on the znver3 VM,
    2026-12-07), nor in the seconds beside it (one process per library read the probe 1.27x while the
    artifact ran 1.05x its prediction, znver4 VM, 2026-12-08).
    """
    from codesign.profile.speed_probe import compile_probe_subnets, speed_from_subnet_timings, with_kernels_alone

    if probe_subnets < 1:
        return _measure_threads(library, space, genome, target, runtime_threads)[0], None
    cores = int(target.get("num-cores") or os.cpu_count() or 1)
    started = time.perf_counter()
    records, genomes, executables = compile_probe_subnets(profile, probe_subnets)
    scratch = staging / ".speed_probe"  # inside the export's staging: nothing left elsewhere if it is killed
    scratch.mkdir()
    try:
        probes = []
        for i, (executable, probed) in enumerate(zip(executables, genomes, strict=True)):
            path = scratch / f"probe{i}.so"
            executable.export_library(str(path))
            shape = (1, space.in_channels, probed.resolution, probed.resolution)
            probes.append(TimedLibrary(path, shape, (cores,)))
        measured, sweeps = _measure_threads(library, space, genome, target, runtime_threads, probes=probes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    times = [sweep.median_ms(cores) for sweep in sweeps]
    probe = with_kernels_alone(
        profile,
        speed_from_subnet_timings(profile, records, times),
        kernels=probe_subnets,
        started=started,
    )
    record: dict[str, Any] = {
        **probe.to_dict(),
        "timed": "in the windows that timed the artifact, alternating with them",
    }
    warning = probe.warning()
    if warning is not None:
        record["warning"] = warning
        print(f"warning: {warning}")
    return measured, record


def _measure_threads(
    library: Path,
    space: Any,
    genome: Genome,
    target: dict[str, Any],
    runtime_threads: RuntimeThreads,
    *,
    probes: Sequence[TimedLibrary] = (),
) -> tuple[dict[str, Any], list[ThreadSweep]]:
    """Time the shipped library on this CPU at the profiled core count and the candidate thread counts.

    ``measured`` is the timing at the target's ``num-cores`` (what the latency model predicts);
    ``recommended_threads`` the count the artifact should run on: the fastest measured with
    ``runtime_threads="auto"``, else the one given. ``probes`` are timed in the same rounds (at their own
    thread counts); their sweeps are returned beside the section.
    """
    from codesign.export.threads import candidate_thread_counts, sweep_libraries

    cores = int(target.get("num-cores") or os.cpu_count() or 1)
    if runtime_threads == "auto":
        counts = sorted({*candidate_thread_counts(max(cores, os.cpu_count() or 1)), cores})
    else:
        if runtime_threads < 1:
            raise ExportError(f"runtime threads must be at least 1, got {runtime_threads}")
        counts = sorted({cores, runtime_threads})
    shape = (1, space.in_channels, genome.resolution, genome.resolution)
    sweep, *probe_sweeps = sweep_libraries([TimedLibrary(Path(library), shape, tuple(counts)), *probes])
    measured = sweep.timing(cores)
    _warn_on_spread(measured["std_ms"], measured["median_ms"])
    recommended = sweep.recommended() if runtime_threads == "auto" else runtime_threads
    section = {
        "measured": {**measured, "threads": cores, "where": "this machine, batch 1, runtime-only loader"},
        "by_threads": sweep.to_dict(),
        "recommended_threads": recommended,
        "recommended_by": "fastest measured" if runtime_threads == "auto" else "--runtime-threads",
    }
    return section, probe_sweeps


def choose_schedules(genome: Genome, profile: Any, policy: SchedulePolicy) -> tuple[Genome, str]:
    """The genome with the schedule genes the export compiles under, and where they came from.

    ``auto``: the genome's own genes (a search result) when it has any, else every kernel at its
    fastest candidate in the profile (a genome typed by hand, ``largest``, a short form).
    ``genome``: its own genes (none: TVM's default lowering). ``fastest``: the profile's fastest
    per kernel. ``default``: TVM's default lowering everywhere. Without a profile: TVM's defaults.
    """
    from codesign.latency.model import LatencyModel

    def defaults() -> Genome:
        return replace(genome, schedules=tuple(0 for _ in genome.schedules))

    if profile is None:
        return defaults(), "TVM default (no profile for this target)"
    if policy == "default":
        return defaults(), "TVM default (--schedules default)"
    if policy == "fastest" or (policy == "auto" and not genome.schedules):
        why = "--schedules fastest" if policy == "fastest" else "the genome has no schedule genes"
        return LatencyModel.from_profile(profile).fastest_schedules(genome), f"fastest in the profile ({why})"
    if policy not in ("auto", "genome"):
        raise ExportError(f"unknown schedule policy {policy!r}: use auto, genome, fastest or default")
    return genome, "the genome's schedule genes" if genome.schedules else "TVM default (the genome has none)"


def _save_reference(staging: Path, images: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Ship reference images and their onnxruntime logits, so the target device can check the library."""
    count = min(len(images), DEVICE_CHECK_IMAGES)
    np.save(staging / REFERENCE_INPUTS, np.ascontiguousarray(images[:count], dtype=np.float32), allow_pickle=False)
    np.save(staging / REFERENCE_LOGITS, np.ascontiguousarray(reference[:count], dtype=np.float32), allow_pickle=False)
    return {
        "inputs": REFERENCE_INPUTS,
        "onnxruntime_logits": REFERENCE_LOGITS,
        "images": count,
        "tolerance": DEVICE_PARITY_TOLERANCE,
        "command": "codesign run ARTIFACT --check --time   # on the target device",
    }


def _warn_on_spread(std_ms: float, median_ms: float) -> None:
    """Say so when the measurement's spread is large enough to doubt the median (a busy machine)."""
    if std_ms > 0.1 * median_ms:
        print(
            f"warning: latency spread +-{std_ms:.4f} ms is over 10% of the median {median_ms:.4f} ms: "
            "the device was probably busy; measure again on an idle device (codesign run DIR --time)"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_subnet(
    *,
    loaded: LoadedSupernet,
    genome: Genome,
    splits: DataSplits,
    out_dir: str | Path,
    parity_images: int = 256,
    tolerance: float = 1e-4,
    evaluate_test: bool = True,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    profile: Any = None,
    target: dict[str, Any] | None = None,
    measure_latency: bool = True,
    rpc: Any = None,
    tune_trials: int = 0,
    schedules: SchedulePolicy = "auto",
    runtime_threads: RuntimeThreads = "auto",
    retune_trials: int = 0,
    retune_minutes: float | None = None,
    retune_from: tuple[str | Path, ...] = (),
    speed_probe: int = 0,
    latency_budget_ms: float | None = None,
) -> ExportResult:
    """Extract ``genome``, recalibrate its BN on training images, export ONNX, check it, write a manifest.

    With a hardware ``profile`` (or a TVM ``target`` without one: TVM's default schedules) the ONNX
    model is also compiled by TVM for that target under the genome's schedule genes
    (``model_tvm.so``). An llvm library is checked against onnxruntime on the same images and, when
    the profile describes this machine and ``measure_latency``, timed next to the latency model's
    prediction. A cuda library holds nvcc-compiled kernels; with no GPU here it ships the
    reference images and onnxruntime logits that ``codesign run --check`` compares on the device.
    With ``rpc`` (a :class:`~codesign.profile.session.RPCConfig`) the library is timed on the
    device behind that tracker instead. Kernels whose family the profile holds no schedules for
    are tuned here with ``tune_trials`` MetaSchedule trials each (0: TVM's default lowering).
    ``schedules`` says which schedule genes to compile under (see :func:`choose_schedules`).
    A library timed on this machine is timed at several thread counts in fresh processes with the
    runtime-only loader; ``runtime_threads="auto"`` records the fastest as the count
    ``codesign run`` uses, an int records that count instead. ``retune_trials`` > 0 tunes every
    kernel of the subnet on this machine with that many trials each (slowest first, within
    ``retune_minutes`` if given; kernels in the journals of the earlier exports ``retune_from`` are
    reused) and compiles each with whichever of its own and the profile's
    schedule times faster (see :mod:`codesign.export.retune`); the kernels finished are journaled
    beside ``out_dir`` until the export succeeds, so a killed export resumes. ``speed_probe`` > 0
    re-times that many of the profile's own subnets beside the artifact and records the machine's
    speed now relative to the profile and the prediction at that speed (see
    :mod:`codesign.profile.speed_probe`). ``latency_budget_ms`` (the budget the genome was searched
    under) is recorded beside the measured latency, with their ratio: whether the budget held here.
    """
    space = loaded.supernet.space
    genome = genome.validate(space)
    schedules_from = ""
    if profile is not None or target is not None:
        genome, schedules_from = choose_schedules(genome, profile, schedules)
    out = Path(out_dir)
    retune = _retune_settings(out, profile, target, retune_trials, retune_minutes, retune_from)
    if speed_probe and profile is not None:
        from codesign.errors import CodesignError
        from codesign.profile.speed_probe import probe_subnets

        try:  # before any work: a profile without whole subnets cannot be probed
            probe_subnets(profile, speed_probe)
        except CodesignError as error:
            raise ExportError(f"--speed-probe: {error}") from None
    staging = staging_directory(out, overwrite=overwrite, error=ExportError)
    try:
        started = time.perf_counter()
        evaluator = TorchSubnetEvaluator(loaded.supernet, splits, split="test")
        subnet = evaluator.subnet(genome)
        onnx_path = export_onnx(subnet, staging / "model.onnx", opset=opset)
        images, labels = prepare_images(splits.test.head(parity_images), loaded.mean, loaded.std, genome.resolution)
        max_err = check_onnx_parity(subnet, onnx_path, images, tolerance=tolerance)
        metrics: dict[str, Any] = {"onnx_vs_torch_max_abs": max_err, "parity_images": len(images)}
        if evaluate_test:
            test_x, test_y = prepare_images(splits.test, loaded.mean, loaded.std, genome.resolution)
            metrics["test_accuracy_torch"] = accuracy_of(predict_logits(subnet, test_x), test_y)
            ort_logits = torch.from_numpy(onnxruntime_logits(onnx_path, test_x.numpy()))
            metrics["test_accuracy_onnxruntime"] = accuracy_of(ort_logits, test_y)
            metrics["test_images"] = len(test_y)
        tvm_section = None
        if profile is not None or target is not None:
            tvm_section = _tvm_artifact(
                staging,
                onnx_path,
                space,
                genome,
                target if target is not None else profile.target,
                profile,
                images.numpy(),
                tolerance,
                measure_latency,
                rpc,
                tune_trials,
                schedules_from,
                runtime_threads,
                retune,
                speed_probe,
            )
        if latency_budget_ms is not None and tvm_section is not None:
            tvm_section["latency"].update(judge_budget(tvm_section["latency"], latency_budget_ms))
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in subnet.state_dict().items()}, str(staging / "subnet.safetensors"))
        write_json_atomic(staging / "subnet_config.json", subnet.config)
        files = {
            p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(staging.iterdir()) if p.is_file()
        }
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "codesign_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "space": space.name,
            "genome": genome.to_dict(),
            "genome_short": genome.short(space),
            "supernet": str(loaded.path),
            "input": {
                "name": "images",
                "shape": [1, space.in_channels, genome.resolution, genome.resolution],
                "dtype": "float32",
                "normalization": {"mean": list(loaded.mean), "std": list(loaded.std)},
                "resize": "bilinear to the input shape, then (x/255 - mean) / std",
            },
            "output": {"name": "logits", "classes": list(splits.test.classes)},
            "onnx": {"opset": opset, "checker": "passed"},
            "parameters": int(sum(p.numel() for p in subnet.parameters())),
            "metrics": metrics,
            **({"tvm": tvm_section} if tvm_section is not None else {}),
            "software": {"torch": torch.__version__, "numpy": np.__version__, **_onnx_versions()},
            "files": files,
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        write_json_atomic(staging / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        if retune is not None:
            retune.journal.unlink(missing_ok=True)  # shipped in the artifact now
        return ExportResult(out, manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _retune_settings(
    out: Path,
    profile: Any,
    target: dict[str, Any] | None,
    trials: int,
    minutes: float | None,
    reuse: tuple[str | Path, ...] = (),
) -> RetuneSettings | None:
    """Validate ``--retune-trials``/``--retune-minutes``/``--retune-from`` before any work starts."""
    from codesign.export.tvm_artifact import require_local_target

    if trials == 0:
        if minutes is not None:
            raise ExportError("--retune-minutes needs --retune-trials N (N > 0)")
        if reuse:
            raise ExportError("--retune-from needs --retune-trials N (N > 0)")
        return None
    if trials < 0:
        raise ExportError(f"--retune-trials must be at least 0, got {trials}")
    if minutes is not None and not minutes > 0:
        raise ExportError(f"--retune-minutes must be positive, got {minutes:g}")
    if profile is None:
        raise ExportError("--retune-trials needs a hardware profile (it orders and compares kernels by it)")
    require_local_target(target if target is not None else profile.target, "--retune-trials")
    journals = []
    for given in reuse:
        path = Path(given) / RETUNE_JOURNAL if Path(given).is_dir() else Path(given)
        if not path.is_file():
            raise ExportError(
                f"--retune-from {given}: no re-tuning journal there (expected a re-tuned export or {RETUNE_JOURNAL})"
            )
        journals.append(path)
    return RetuneSettings(trials, retune_journal_path(out), minutes, tuple(journals))


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def judge_budget(latency: dict[str, Any], budget_ms: float) -> dict[str, Any]:
    """The manifest's budget fields: the search's latency budget and, when measured, measured / budget."""
    judged: dict[str, Any] = {"budget_ms": float(budget_ms)}
    measured = latency.get("measured")
    if measured:
        judged["measured_over_budget"] = float(measured["median_ms"]) / float(budget_ms)
    return judged


def describe(manifest: dict[str, Any]) -> str:
    """A short human summary of an export manifest."""
    m = manifest["metrics"]
    parts = [
        f"genome {manifest['genome_short']}",
        f"{manifest['parameters']:,} parameters",
        f"ONNX vs torch max |diff| {m['onnx_vs_torch_max_abs']:.2e}",
    ]
    if "test_accuracy_onnxruntime" in m:
        parts.append(
            f"test accuracy {m['test_accuracy_onnxruntime'] * 100:.2f}% (onnxruntime, {m['test_images']} images)"
        )
    tvm = manifest.get("tvm")
    if tvm:
        latency = tvm["latency"]
        measured = latency.get("measured")
        parity = tvm["tvm_vs_onnxruntime_max_abs"]
        predicted = latency["predicted_ms"]
        parts.append(
            (
                f"TVM vs onnxruntime max |diff| {parity:.2e}"
                if parity is not None
                else f"TVM {tvm['target']['kind']} library built ({tvm['kernels']['format']} kernels, parity is "
                "checked on the device)"
            )
            + (f"; latency predicted {predicted:.3f} ms" if predicted is not None else "; no latency prediction")
            + (
                f", measured {measured['median_ms']:.3f} ms (+-{measured['std_ms']:.3f}, {measured['repeats']} repeats)"
                if measured
                else f", not measured ({latency.get('not_measured', 'skipped')})"
            )
        )
        if "speed_probe" in latency:
            probe = latency["speed_probe"]
            one_thread = probe.get("single_thread_factor")
            one_thread_part = f", one-thread kernels {one_thread:.3f}x" if one_thread is not None else ""
            parts.append(
                f"speed probe: this machine runs {probe['factor']:.3f}x the profile's time now{one_thread_part} "
                f"({len(probe['subnets'])} subnets), predicted at that speed "
                f"{latency.get('predicted_retuned_at_probed_speed_ms', latency['predicted_at_probed_speed_ms']):.3f} ms"
            )
        if "measured_over_budget" in latency:
            ratio, budget = latency["measured_over_budget"], latency["budget_ms"]
            parts.append(
                f"OVER the search's {budget:g} ms budget here: measured {ratio:.2f}x it"
                if ratio > 1.0
                else f"within the search's {budget:g} ms budget ({ratio:.2f}x it)"
            )
        retuned = tvm.get("retuned")
        if retuned:
            gains = [k["speedup"] for k in retuned["kernels"] if k["kept"] == "tuned"]
            parts.append(
                f"re-tuned {retuned['kernels_tuned']} kernels ({retuned['trials_per_kernel']} trials each): "
                f"{retuned['kernels_kept']} faster than the profile's schedule"
                + (f" (up to {max(gains):.2f}x)" if gains else "")
                + f", predicted after re-tuning {latency['predicted_retuned_ms']:.3f} ms"
            )
        if "by_threads" in latency:
            medians = ", ".join(
                f"{t} thread{'s' if t != '1' else ''} {v['median_ms']:.3f} ms"
                for t, v in latency["by_threads"]["timings"].items()
            )
            threads = latency["recommended_threads"]
            plural = "s" if threads != 1 else ""
            parts.append(f"runs on {threads} thread{plural} ({latency['recommended_by']}: {medians})")
    return "; ".join(parts) + "\n" + json.dumps(manifest["files"], indent=None)
