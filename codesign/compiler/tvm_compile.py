"""Whole subnets compiled by TVM Relax under per-layer schedules, and timed.

The schedules a genome chooses (per kernel position, an index into its kernel family's candidates
in a hardware profile) fix each convolution's data layout, applied to the Relax module first, and
become a MetaSchedule database: one tuning record per distinct kernel, holding the chosen trace
replayed onto that kernel in its layout. ``compile_relax`` then applies exactly those
records to the whole model's fused kernels (matched by structure) and leaves every other kernel
(candidate 0, pooling, classifier) to TVM's default lowering, as the profile measured them.
"""

from __future__ import annotations

import functools
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codesign.compiler.layouts import apply_layouts
from codesign.latency.positions import PositionTable, candidate_layouts
from codesign.latency.workloads import Workload
from codesign.profile import tvm_backend as tb
from codesign.space import Genome, SearchSpace

_TASK_CACHE: dict[tuple[Workload, str, str], list[tb.KernelTask]] = {}


def _tasks(workload: Workload, target: dict[str, Any], layout: str = "NCHW") -> list[tb.KernelTask]:
    key = (workload, repr(sorted(target.items())), layout)
    if key not in _TASK_CACHE:
        _TASK_CACHE[key] = tb.workload_tasks(workload, target, layout=layout)
    return _TASK_CACHE[key]


@dataclass(frozen=True)
class CompiledChoices:
    """What a genome's schedule genes decide at compile time.

    ``traces``: the JSON trace each distinct (kernel, layout) compiles with (kernels left at their
    layout's default lowering omitted); ``layouts``: the layout of every convolution of the
    subnet, in program order (what :func:`codesign.compiler.layouts.apply_layouts` takes).
    """

    traces: dict[tuple[Workload, str], Any]
    layouts: list[str]


def compiled_choices(
    space: SearchSpace,
    genome: Genome,
    families: dict[str, list[dict[str, Any]]],
    *,
    positions: PositionTable | None = None,
) -> CompiledChoices:
    """The traces and layouts ``genome``'s schedule genes choose among ``families``' candidates."""
    table = positions or PositionTable(space)
    vector = genome.to_vector(space)[None, :]
    ids = table.workload_ids(vector)
    active = table.active(vector)
    genes = np.zeros((1, table.num_positions), dtype=np.int64)
    genes[0, : len(genome.schedules)] = genome.schedules[: table.num_positions]
    layout_of = candidate_layouts(table, families)
    effective = table.effective_schedules(ids, active, genes, layout_of)[0]
    traces: dict[tuple[Workload, str], Any] = {}
    layouts: list[str] = []
    for p, position in enumerate(table.positions):
        if not active[0, p]:
            continue
        workload = table.workloads[int(ids[0, p])]
        options = families.get(position.family, [])
        c = int(effective[p])
        if c and c >= len(options):
            raise ValueError(f"schedule gene {c} at {position.name} exceeds the {len(options)} candidates")
        layout = str(options[c].get("layout", "NCHW")) if options else "NCHW"
        if workload.kind != "pool_fc":
            layouts.append(layout)
        if c and options[c]["trace"] is not None:
            traces.setdefault((workload, layout), options[c]["trace"])
    return CompiledChoices(traces, layouts)


def chosen_traces(
    space: SearchSpace,
    genome: Genome,
    families: dict[str, list[dict[str, Any]]],
    *,
    positions: PositionTable | None = None,
) -> dict[tuple[Workload, str], Any]:
    """The JSON trace each distinct (kernel, layout) of ``genome`` compiles with (default lowerings omitted)."""
    return compiled_choices(space, genome, families, positions=positions).traces


def schedule_database(chosen: dict[tuple[Workload, str], Any], target: dict[str, Any]) -> Any:
    """A MetaSchedule in-memory database with one record per kernel: its chosen trace."""
    tb.require_tvm()
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.MemoryDatabase()
    for (workload, layout), trace_json in chosen.items():
        for task in _tasks(workload, target, layout):
            try:
                sch = tb.replay_json(task, trace_json)
            except Exception as exc:
                raise ValueError(f"the chosen schedule does not replay on {workload.key()} ({layout}): {exc}") from None
            commit_trace(database, task, sch.trace, target, run_secs=1e-6)
    return database


def commit_trace(database: Any, task: Any, trace: Any, target: dict[str, Any], *, run_secs: float) -> None:
    """Record ``trace`` as ``task``'s schedule in a MetaSchedule ``database``, timed at ``run_secs``.

    ``compile_relax`` applies each kernel's fastest record, so ``run_secs`` ranks the records of
    one kernel; the value itself is never shown as a measurement.
    """
    tvm = tb.require_tvm()
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    database.commit_tuning_record(
        ms.database.TuningRecord(
            trace,
            database.commit_workload(task.mod),
            run_secs=[float(run_secs)],
            target=tvm.target.Target(target),
            args_info=ArgInfo.from_prim_func(task.mod["main"]),
        )
    )


def subnet_reference_module(space: SearchSpace, genome: Genome) -> torch.nn.Module:
    """The torch subnet of ``genome`` with the seeded random weights :func:`subnet_relax_module` compiles."""
    from codesign.supernet.static import StaticSubnet
    from codesign.supernet.supernet import ElasticSupernet

    torch.manual_seed(0)
    return StaticSubnet(ElasticSupernet(space).subnet_config(genome)).eval()


def subnet_relax_module(space: SearchSpace, genome: Genome, *, opset: int = 17) -> Any:
    """The subnet of ``genome`` (random weights: latency does not depend on values) as raw Relax from ONNX."""
    tb.require_tvm()
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    module = subnet_reference_module(space, genome)
    example = torch.zeros(1, space.in_channels, genome.resolution, genome.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subnet.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), opset_version=opset, do_constant_folding=True, dynamo=False
            )
        return from_onnx(onnx.load(str(path)), keep_params_in_input=False)


def compile_subnet(
    space: SearchSpace,
    genome: Genome,
    target: dict[str, Any],
    families: dict[str, list[dict[str, Any]]],
    *,
    positions: PositionTable | None = None,
) -> Any:
    """Compile ``genome``'s subnet for ``target`` with the schedules its genes choose; returns the executable."""
    return compile_prepared(*prepare_subnet(space, genome, target, families, positions=positions), target)


def prepare_subnet(
    space: SearchSpace,
    genome: Genome,
    target: dict[str, Any],
    families: dict[str, list[dict[str, Any]]],
    *,
    positions: PositionTable | None = None,
) -> tuple[Any, Any]:
    """The unfused Relax module of ``genome`` in its layouts and the database of its schedules.

    Everything that needs torch (ONNX export) happens here, so :func:`compile_prepared` can run in a
    forked child (GNU OpenMP, which torch uses, deadlocks in a child forked after its threads ran).
    """
    choices = compiled_choices(space, genome, families, positions=positions)
    raw = apply_layouts(subnet_relax_module(space, genome), choices.layouts)
    return raw, schedule_database(choices.traces, target)


def compile_prepared(mod: Any, database: Any, target: dict[str, Any]) -> Any:
    """Compile a module prepared by :func:`prepare_subnet` under its schedule database."""
    tvm = tb.require_tvm()
    from tvm.s_tir import meta_schedule as ms

    # compile_relax needs the unfused module, or it silently applies nothing.
    return ms.relax_integration.compile_relax(database, mod, tvm.target.Target(target), params=None)


def _timed_vm(executable: Any, space: SearchSpace, resolution: int, session: Any) -> tuple[Any, Any]:
    """A VM of ``executable`` (here, or through ``session``) whose ``main_timed`` runs on a fixed random input."""
    tvm = tb.require_tvm()
    from tvm import relax

    device = session.device if session is not None else tvm.cpu()
    vm = relax.VirtualMachine(session.load(executable) if session is not None else executable, device)
    x = tvm.runtime.tensor(
        np.random.default_rng(0).standard_normal((1, space.in_channels, resolution, resolution)).astype("float32"),
        device,
    )
    vm.save_function("main", "main_timed", x)
    return vm, device


def time_executable(
    executable: Any,
    space: SearchSpace,
    resolution: int,
    *,
    repeat: int = 10,
    min_repeat_ms: int = 50,
    session: Any = None,
) -> tb.Timing:
    """Median, mean and spread of one batch-1 inference of a compiled subnet (this CPU, or ``session``'s device)."""
    vm, device = _timed_vm(executable, space, resolution, session)
    result = vm.time_evaluator("main_timed", device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)()
    per_run = np.asarray(result.results, dtype=np.float64) * 1e3
    return tb.Timing(float(per_run.mean()), float(np.median(per_run)), float(per_run.std()), len(per_run), 1)


def interleaved_windows(
    timers: Sequence[Callable[[], float]],
    *,
    windows: int,
    pause_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[list[float]]:
    """Call each timer ``windows`` times, round-robin over the timers, and return each timer's readings.

    Round-robin spreads each timer's windows over the whole span (``pause_s`` between rounds
    widens it for few timers): subnets timed together see the same seconds of a shared machine,
    and a slow stretch shorter than the span moves each median little. It does not remove slow
    states that last longer than the span (on the 2-vCPU znver4 VMs, search-scheduled subnets'
    slowest of three occasions a median 1.46x their fastest; ``hw_profiles/README.md``): for
    those, time again on another occasion.
    """
    readings: list[list[float]] = [[] for _ in timers]
    for round_index in range(windows):
        if round_index and pause_s > 0:
            sleep(pause_s)
        for i, timer in enumerate(timers):
            readings[i].append(float(timer()))
    return readings


def _window_ms(evaluator: Any) -> float:
    return float(evaluator().results[0]) * 1e3


def time_executables(
    executables: list[tuple[Any, int]],
    space: SearchSpace,
    *,
    windows: int = 20,
    window_ms: float = 50.0,
    pause_s: float = 0.0,
    session: Any = None,
) -> list[tb.Timing]:
    """Timing of each ``(executable, resolution)`` over ``windows`` interleaved windows of ``window_ms``.

    Each window runs the subnet as many times as fill ``window_ms`` (counted once per subnet, on
    a warm-up); windows of all subnets alternate (:func:`interleaved_windows`). The median, mean
    and spread are over windows, so ``repeats`` is ``windows`` and ``number`` the runs per window.
    """
    timers: list[Callable[[], float]] = []
    numbers: list[int] = []
    for executable, resolution in executables:
        vm, device = _timed_vm(executable, space, resolution, session)
        warm = vm.time_evaluator("main_timed", device, number=1, repeat=1, min_repeat_ms=int(window_ms))()
        per_run_s = max(float(warm.results[0]), 1e-7)
        number = max(1, int(round(window_ms / 1e3 / per_run_s)))
        timers.append(functools.partial(_window_ms, vm.time_evaluator("main_timed", device, number=number, repeat=1)))
        numbers.append(number)
    readings = interleaved_windows(timers, windows=windows, pause_s=pause_s)
    return [
        tb.Timing(float(np.mean(r)), float(np.median(r)), float(np.std(r)), len(r), number)
        for r, number in zip(readings, numbers, strict=True)
    ]
