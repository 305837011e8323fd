"""TVM primitives of the profiler: turn a :class:`Workload` into the fused TIR kernel TVM builds
for it, tune it with MetaSchedule, and time schedules of it.

Each workload is lowered the way a whole exported subnet is: a one-layer torch module exported
by the same ONNX exporter, imported with ``from_onnx`` and fused by Relax's ``zero`` pipeline.
The kernels measured here are therefore structurally the ones a deployed model contains, and
their tuning records apply to whole-model compilation through the MetaSchedule database.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.errors import CodesignError
from codesign.latency.workloads import Workload
from codesign.supernet.static import ConvBNAct


def require_tvm() -> Any:
    """Import TVM (with MetaSchedule) or fail with a one-line install hint."""
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    try:
        import tvm
        from tvm.s_tir import meta_schedule  # noqa: F401
    except ImportError as exc:
        raise CodesignError(f"profiling needs Apache TVM: pip install 'codesign[tvm]' ({exc})") from None
    return tvm


def host_llvm_target(num_cores: int | None = None) -> dict[str, Any]:
    """The llvm target of this host's CPU, with its ``mcpu`` detected (without it LLVM builds generic x86)."""
    tvm = require_tvm()
    return {
        "kind": "llvm",
        "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()),
        "num-cores": int(num_cores or os.cpu_count() or 1),
    }


class _ResidualProject(nn.Module):
    """Project conv + BN whose output is added to the block input (fused into one kernel by TVM).

    With ``skip_nhwc`` the block input arrives NHWC, as it does inside a network whose previous
    kernel ran NHWC; converted to NHWC, the kernel then reads it without a transpose.
    """

    def __init__(self, mid: int, out: int, *, skip_nhwc: bool = False) -> None:
        super().__init__()
        self.conv = ConvBNAct(mid, out, 1, 1, 1, None)
        self.skip_nhwc = skip_nhwc

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x.permute(0, 3, 1, 2) if self.skip_nhwc else x) + self.conv(y)


class _PoolClassifier(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


def layer_module(workload: Workload, *, layout: str = "NCHW") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A one-layer torch module computing ``workload`` and example inputs (batch 1).

    ``layout`` is the layout the kernel will run in: a residual kernel's block input arrives in it.
    """
    w = workload
    act = None if w.activation == "none" else w.activation
    x = torch.randn(1, w.in_channels, w.resolution, w.resolution)
    if w.kind == "pool_fc":
        return _PoolClassifier(w.in_channels, w.out_channels).eval(), (x,)
    if w.kind == "depthwise":
        return ConvBNAct(w.in_channels, w.out_channels, w.kernel_size, w.stride, w.in_channels, act).eval(), (x,)
    if w.residual:
        skip = torch.randn(1, w.out_channels, w.out_resolution, w.out_resolution)
        if layout == "NHWC":
            skip = skip.permute(0, 2, 3, 1).contiguous()
        return _ResidualProject(w.in_channels, w.out_channels, skip_nhwc=layout == "NHWC").eval(), (x, skip)
    return ConvBNAct(w.in_channels, w.out_channels, w.kernel_size, w.stride, 1, act).eval(), (x,)


def relax_module(module: nn.Module, inputs: tuple[torch.Tensor, ...], *, opset: int = 17) -> Any:
    """``module`` exported to ONNX (as export does) and imported into Relax, unfused."""
    require_tvm()
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, str(path), opset_version=opset, do_constant_folding=True, dynamo=False)
            return from_onnx(onnx.load(str(path)), keep_params_in_input=False)


@dataclass(frozen=True)
class KernelTask:
    """One fused TIR kernel of a workload (``mod`` holds it as ``main``) and how often it runs."""

    name: str
    mod: Any
    weight: int


def workload_tasks(workload: Workload, target: dict[str, Any], *, layout: str = "NCHW") -> list[KernelTask]:
    """The fused kernels TVM builds for ``workload`` on ``target`` (one for convolutions).

    ``layout="NHWC"`` (or a packed layout such as ``NCHW8c``) gives the kernel the workload
    compiles to when its convolution runs in that layout (see :mod:`codesign.compiler.layouts`);
    the layout changes at the one-layer module's own input and output are not part of the
    workload and are left out.
    """
    tvm = require_tvm()
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from codesign.compiler.layouts import apply_layouts, conv_calls

    module, inputs = layer_module(workload, layout=layout)
    mod = relax_module(module, inputs)
    if layout != "NCHW":
        mod = apply_layouts(mod, [layout] * len(conv_calls(mod)))
    fused = relax.get_pipeline("zero")(mod)
    tasks = ms.relax_integration.extract_tasks(fused, tvm.target.Target(target))
    kept = [t for t in tasks if layout == "NCHW" or not _is_transpose(t.dispatched[0])]
    return [KernelTask(t.task_name, t.dispatched[0], int(t.weight)) for t in kept]


def transpose_task(
    channels: int, resolution: int, target: dict[str, Any], *, to_layout: str = "NHWC", from_layout: str | None = None
) -> KernelTask:
    """The kernel a change of layout compiles to: one activation (batch 1) changed to ``to_layout``.

    ``from_layout`` defaults to NCHW (NHWC for a change into NCHW). A change to or from a packed
    layout (``NCHW8c``) is the isolated ``layout_transform`` kernel the compiled network runs.
    """
    tvm = require_tvm()
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from codesign.compiler.layouts import emit_isolated_transpose, isolate_layout_transforms, packed_block
    from codesign.latency.transposes import default_source

    source = from_layout or default_source(to_layout)
    packed = packed_block(to_layout if source == "NCHW" else source)
    c, r = channels, resolution
    if (source, to_layout) in (("NCHW", "NHWC"), ("NHWC", "NCHW")):
        x_shape: tuple[int, ...] = (1, c, r, r) if to_layout == "NHWC" else (1, r, r, c)
    elif packed and "NCHW" in (source, to_layout):
        if channels % packed:
            raise ValueError(f"{channels} channels do not divide into {packed}-channel blocks")
        x_shape = (1, c, r, r) if source == "NCHW" else (1, c // packed, r, r, packed)
    else:
        raise ValueError(f"no layout change from {source!r} to {to_layout!r}; changes go to or from NCHW")
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            if packed is None:
                axes = [0, 2, 3, 1] if to_layout == "NHWC" else [0, 3, 1, 2]
                out = builder.emit_output(emit_isolated_transpose(builder, x, axes))
            elif source == "NCHW":
                b = packed
                out = builder.emit_output(
                    relax.op.layout_transform(x, index_map=lambda n, c, h, w: (n, c // b, h, w, c % b))
                )
            else:
                b = packed
                out = builder.emit_output(
                    relax.op.layout_transform(x, index_map=lambda n, cb, h, w, ci: (n, cb * b + ci, h, w))
                )
        builder.emit_func_output(out)
    mod = builder.get() if packed is None else isolate_layout_transforms(builder.get())
    fused = relax.get_pipeline("zero")(mod)
    (task,) = ms.relax_integration.extract_tasks(fused, tvm.target.Target(target))
    return KernelTask(task.task_name, task.dispatched[0], 1)


def _is_transpose(mod: Any) -> bool:
    """Whether a fused kernel only changes layout (the boundary of a one-layer module in another layout)."""
    text = mod.script()
    return ("T_transpose" in text or "T_layout_trans" in text) and "conv2d" not in text


def fast_build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build without its 30 s ``tensor_intrin`` import (not needed for fp32)."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


def tune_task(
    task: KernelTask,
    target: dict[str, Any],
    work_dir: str | Path,
    *,
    trials: int,
    seed: int = 0,
    cost_model: str = "xgb",
    runner: Any = "local",
    trials_per_iter: int = 16,
) -> Any:
    """Tune one kernel with MetaSchedule; returns the JSON database (records accumulate across calls)."""
    tvm = require_tvm()
    from tvm.s_tir import meta_schedule as ms

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    _drop_unnamed_log_handlers()
    if runner == "local":
        runner = ms.runner.LocalRunner(
            timeout_sec=60,
            evaluator_config=ms.runner.EvaluatorConfig(
                number=3, repeat=3, min_repeat_ms=20, enable_cpu_cache_flush=False
            ),
        )
    return ms.tune_tir(
        task.mod,
        tvm.target.Target(target),
        str(work_dir),
        max_trials_global=trials,
        num_trials_per_iter=min(trials_per_iter, trials),
        builder=ms.builder.LocalBuilder(f_build=fast_build, timeout_sec=120, max_workers=1),
        runner=runner,
        database=ms.database.JSONDatabase(work_dir=str(work_dir)),
        cost_model=cost_model,
        seed=seed,
        num_tuning_cores=int(target.get("num-cores", 1)),
    )


def _drop_unnamed_log_handlers() -> None:
    # MetaSchedule rebuilds its logging config on every tune_tir call from the names of the handlers
    # already on its logger; an unnamed one (None) makes the second call in a process crash.
    import logging

    for name in ("tvm.s_tir.meta_schedule", "tvm.s_tir.meta_schedule.logging"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler.get_name() is None:
                logger.removeHandler(handler)


def distinct_top_records(database: Any, task: KernelTask, k: int) -> list[Any]:
    """Up to ``k`` fastest tuning records of ``task`` whose schedules (traces) differ."""
    workload = database.commit_workload(task.mod)
    seen: set[str] = set()
    picked = []
    for record in database.get_top_k(workload, 64):
        key = str(record.trace)
        if key not in seen:
            seen.add(key)
            picked.append(record)
        if len(picked) == k:
            break
    return picked


def build_kernel(task: KernelTask, target: dict[str, Any], trace: Any | None = None) -> Any:
    """Compile ``task`` with ``trace`` replayed on it (``None``: TVM's default lowering)."""
    tvm = require_tvm()
    mod = task.mod
    if trace is not None:
        sch = tvm.s_tir.Schedule(mod)
        trace.apply_to_schedule(sch, remove_postproc=False)
        mod = sch.mod
    return tvm.tirx.build(mod, target=tvm.target.Target(target))


@dataclass(frozen=True)
class Timing:
    """Run time statistics of one kernel or model: milliseconds over ``repeats`` repeats of ``number`` runs."""

    mean_ms: float
    median_ms: float
    std_ms: float
    repeats: int
    number: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mean_ms": self.mean_ms,
            "median_ms": self.median_ms,
            "std_ms": self.std_ms,
            "repeats": self.repeats,
            "number": self.number,
        }


def time_kernel(
    runtime_module: Any, task: KernelTask, *, device: Any = None, repeat: int = 5, min_repeat_ms: int = 50
) -> Timing:
    """Time a built kernel on random inputs with TVM's time evaluator."""
    tvm = require_tvm()
    dev = device if device is not None else tvm.cpu()
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(0)
    args = []
    for info in ArgInfo.from_prim_func(task.mod["main"]):
        shape = [int(d) for d in info.shape]
        args.append(tvm.runtime.tensor(rng.standard_normal(shape).astype(str(info.dtype)), dev))
    evaluator = runtime_module.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
    result = evaluator(*args)
    per_run = np.asarray(result.results, dtype=np.float64) * 1e3
    return Timing(float(per_run.mean()), float(np.median(per_run)), float(per_run.std()), len(per_run), 1)


def trace_to_json(trace: Any) -> Any:
    """A schedule trace as plain JSON data (lists, ints, floats, strings), replayable with :func:`build_from_json`."""
    return _plain(trace.as_json(remove_postproc=False))


def _plain(obj: Any) -> Any:
    import tvm

    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, tvm.tirx.IntImm):
        return int(obj.value)
    if isinstance(obj, tvm.tirx.FloatImm):
        return float(obj.value)
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "Array":
        return [_plain(x) for x in obj]
    return str(obj)


def build_in_child(make: Callable[[], Any], *, timeout_s: float) -> Any:
    """``make()`` (a TVM build) run in a forked child with a time limit; its exported library loaded here.

    Some schedules replayed onto other shapes send LLVM into code generation that runs for hours
    (seen on 2026-11-29: an NHWC trace whose 108-wide vectorized loop LLVM never finished); a
    thread cannot be interrupted inside TVM's C++ code, so the build runs in a child process that
    is killed at the deadline (:class:`TimeoutError`). Forking costs about 20 ms and re-imports
    nothing. POSIX only, and for targets this machine's C compiler can link (local measurement).
    """
    import signal
    import time

    tvm = require_tvm()
    with tempfile.TemporaryDirectory(prefix="codesign-build-") as tmp:
        library, error = Path(tmp) / "built.so", Path(tmp) / "error.txt"
        pid = os.fork()
        if pid == 0:  # the child: build, export, leave without running the parent's cleanup
            code = 0
            try:
                make().export_library(str(library))
            except BaseException as exc:  # reported to the parent through the file
                error.write_text(
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                )
                code = 1
            os._exit(code)
        deadline = time.monotonic() + timeout_s
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"compilation did not finish within {timeout_s:g} s")
            time.sleep(0.002)
        if status != 0:
            raise RuntimeError(
                error.read_text() if error.is_file() else f"the build process ended with status {status}"
            )
        return tvm.runtime.load_module(str(library))


def build_from_json(task: KernelTask, target: dict[str, Any], trace_json: Any | None) -> Any:
    """Compile ``task`` with a JSON trace replayed on it (``None``: default lowering).

    A trace tuned for one workload replays onto another of the same kernel family (same fused
    operators, other shapes); tile decisions that do not fit the new shape are re-sampled by TVM.
    """
    tvm = require_tvm()
    if trace_json is None:
        return build_kernel(task, target)
    return tvm.tirx.build(replay_json(task, trace_json).mod, target=tvm.target.Target(target))


def replay_json(task: KernelTask, trace_json: Any) -> Any:
    """The schedule of ``task`` with a JSON trace replayed on it; raises when the trace does not fit the shape."""
    tvm = require_tvm()
    sch = tvm.s_tir.Schedule(task.mod)
    tvm.s_tir.Trace.apply_json_to_schedule(trace_json, sch)
    return sch


def changed_tile_decisions(traced: Any, replayed: Any) -> dict[int, tuple[list[int], list[int]]]:
    """The ``SamplePerfectTile`` decisions of JSON trace ``traced`` that differ in ``replayed`` (the same trace
    after replaying it on another shape), by instruction index, as ``(traced, replayed)``."""
    instructions, decisions = traced
    before = {int(i): d for i, d in decisions}
    after = {int(i): d for i, d in replayed[1]}
    return {
        i: (list(before[i]), list(after.get(i) or []))
        for i, instruction in enumerate(instructions)
        if instruction[0] == "SamplePerfectTile" and i in before and after.get(i) != before[i]
    }


def replayed_tilings(tasks: list[KernelTask], trace_json: Any) -> list[list[int]]:
    """The tilings ``trace_json`` takes when replayed on ``tasks`` (a workload's kernels, in order), concatenated.

    Replaying keeps each tuned tiling from the innermost factor outwards while it divides the new
    loop; at the first factor that does not, TVM puts the whole remaining loop there and 1 outside
    it (``[4, 3, 1, 2]`` becomes ``[3, 3, 1, 2]`` on 18 channel blocks but ``[1, 1, 1, 27]`` on 27).
    These, not the candidate's index, say what a replayed schedule does on a shape: the kernel
    predictor reads them (:func:`~codesign.latency.predictor.tiling_features`). Raises when the
    trace does not replay.
    """
    from codesign.latency.predictor import trace_tilings

    return [tiling for task in tasks for tiling in trace_tilings(trace_to_json(replay_json(task, trace_json).trace))]


def resampled_tiles(task: KernelTask, trace_json: Any) -> dict[int, tuple[list[int], list[int]]]:
    """The tilings of ``trace_json`` that TVM drew again when replaying it on ``task`` because they do not divide
    this shape's loops (see :func:`changed_tile_decisions`); empty when the trace fits as tuned.

    A tiling drawn again is not adapted from the tuned one: a packed 1x1 trace whose channel-block tiling
    ``[4, 3, 1, 2]`` (24 blocks) was redrawn as ``[1, 1, 1, 27]`` on 27 blocks ran 27x its predicted time
    (``tools/time_kernel.py`` shows these per candidate).
    """
    return changed_tile_decisions(trace_json, trace_to_json(replay_json(task, trace_json).trace))


def software_versions() -> dict[str, str]:
    """Versions of TVM, its FFI and the LLVM it was built with (provenance for profiles)."""
    tvm = require_tvm()
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    llvm = ""
    try:
        llvm = str(tvm.support.libinfo().get("LLVM_VERSION", ""))
    except Exception:  # libinfo is best effort provenance
        llvm = ""
    return {"tvm": version("apache-tvm") or str(tvm.__version__), "tvm_ffi": version("apache-tvm-ffi"), "llvm": llvm}
