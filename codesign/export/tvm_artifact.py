"""The TVM-compiled artifact of an exported subnet: the checked ONNX model compiled under the chosen schedules.

The ONNX file (real weights, embedded as constants) is imported into Relax and compiled for the
profile's target with exactly the schedules the genome's genes choose from the profile (a
MetaSchedule database with one record per kernel; kernels left at candidate 0 get TVM's default
lowering), then written with ``export_library`` as one shared library. Its output is compared
with onnxruntime on real images before the export counts as done, and its latency is measured
here (batch 1) next to the latency model's prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import ExportError
from codesign.space import Genome, SearchSpace

LIBRARY_NAME = "model_tvm.so"


def compile_onnx(
    onnx_path: str | Path,
    space: SearchSpace,
    genome: Genome,
    target: dict[str, Any],
    families: dict[str, list[dict[str, Any]]],
    *,
    tune_trials: int = 0,
    retune: Callable[[Any, dict[tuple[Any, str], Any]], None] | None = None,
) -> tuple[Any, list[str]]:
    """Compile the ONNX model of ``genome`` for ``target`` under its schedule genes.

    Kernels of families the profile holds no schedules for are tuned here with ``tune_trials``
    MetaSchedule trials (0: they get TVM's default lowering). ``retune``, when given, is called
    with the schedule database and the chosen traces before compiling and may commit better
    records (see :mod:`codesign.export.retune`). Returns the executable and the keys of the
    kernels tuned here.
    """
    from codesign.compiler.layouts import apply_layouts
    from codesign.compiler.tvm_compile import compiled_choices, schedule_database
    from codesign.profile.tvm_backend import require_tvm

    tvm = require_tvm()
    import onnx
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import meta_schedule as ms

    raw = from_onnx(onnx.load(str(onnx_path)), keep_params_in_input=False)
    try:
        choices = compiled_choices(space, genome, families)
        raw = apply_layouts(raw, choices.layouts)
        database = schedule_database(choices.traces, target)
    except ValueError as exc:
        raise ExportError(f"the genome's schedule genes do not fit the profile: {exc}") from None
    tuned = _tune_missing(database, space, genome, target, families, tune_trials) if tune_trials > 0 else []
    if retune is not None:
        retune(database, choices.traces)
    return ms.relax_integration.compile_relax(database, raw, tvm.target.Target(target), params=None), tuned


def _tune_missing(
    database: Any,
    space: SearchSpace,
    genome: Genome,
    target: dict[str, Any],
    families: dict[str, list[dict[str, Any]]],
    trials: int,
) -> list[str]:
    """Tune the kernels whose family has no profiled schedules; their best record joins ``database``."""
    import tempfile

    from codesign.compiler.tvm_compile import commit_trace
    from codesign.latency.workloads import kernel_family, subnet_workloads
    from codesign.profile.tvm_backend import distinct_top_records, tune_task, workload_tasks

    missing = sorted(
        {w for w in subnet_workloads(space, genome) if len(families.get(kernel_family(w), [])) <= 1},
        key=lambda w: w.key(),
    )
    if not missing:
        return []
    require_local_target(target, f"--tune-trials ({len(missing)} kernels lack profiled schedules)")
    tuned = []
    for workload in missing:
        for task in workload_tasks(workload, target):
            with tempfile.TemporaryDirectory(prefix="codesign-tune-") as work:
                records = distinct_top_records(tune_task(task, target, work, trials=trials), task, 1)
            if not records:
                continue
            commit_trace(
                database,
                task,
                records[0].trace,
                target,
                run_secs=float(np.mean([float(s) for s in records[0].run_secs])),
            )
            tuned.append(workload.key())
    return tuned


def require_local_target(target: dict[str, Any], what: str) -> None:
    """Tuning measures on this machine: raise unless ``target`` is an llvm target describing this CPU."""
    from codesign.profile.profile_file import target_mismatch
    from codesign.profile.tvm_backend import host_llvm_target

    if target.get("kind") != "llvm" or target_mismatch(target, host_llvm_target()) is not None:
        raise ExportError(
            f"{what} tunes on this machine: it needs an llvm target describing this CPU "
            "(profile the device instead, or export with a profile of this machine)"
        )


def run_library(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Logits of a compiled library for ``images`` (N, C, H, W), one image per call (batch-1 artifact)."""
    from codesign.runtime import load_artifact_library

    run = load_artifact_library(path)
    return np.concatenate([run(images[i : i + 1]) for i in range(len(images))])


def check_tvm_parity(library: str | Path, images: np.ndarray, reference: np.ndarray, tolerance: float) -> float:
    """Largest |TVM - onnxruntime| over ``images``; raises :class:`ExportError` above ``tolerance``."""
    got = run_library(library, images)
    err = float(np.max(np.abs(got - reference))) if got.size else 0.0
    if not err <= tolerance:
        raise ExportError(
            f"TVM artifact disagrees with onnxruntime: max |difference| {err:.3g} > {tolerance:g} over "
            f"{len(images)} images"
        )
    return err
