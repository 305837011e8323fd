"""How fast the device runs *now*, relative to when its profile was measured.

A shared or virtual machine does not keep one speed: on the CI machine class the same compiled
subnets ran 10-15% faster in an afternoon than in the morning of the same day, which alone moves
most predictions outside +-10%. :func:`probe_device_speed` re-times a few of the profile's own
whole-subnet measurements (compiled exactly as the profile compiled them) and returns the median
ratio of the new time to the recorded one; :meth:`LatencyModel.at_speed` scales every prediction
by it. The probe uses only subnets the profile already holds, never the ones it is asked about,
so it tells the model about the machine and nothing about the answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.space import Genome

RATIO_SPREAD_TO_DISTRUST = 1.5
"""Largest max/min of the probe's per-subnet ratios taken as a steady machine (its subnets drift together)."""

FACTOR_TO_DISTRUST = 2.0
"""A factor beyond 2x either way is a busy machine, not drift (seen here: 11-19% in a day, 16-23% on a new VM)."""


@dataclass(frozen=True)
class SpeedProbe:
    """The result of a probe: ``factor`` = median over ``keys`` of (time now / time in the profile).

    ``single_thread_factor`` is the same median over ``single_thread_keys``, kernels at TVM's default
    lowering (one thread) timed alone (``None`` when the probe timed none): whole subnets run
    mostly multi-threaded kernels, and a shared machine can slow those and not one thread (see
    :meth:`LatencyModel.at_speed`).
    """

    factor: float
    ratios: tuple[float, ...]
    keys: tuple[str, ...]
    seconds: float
    single_thread_factor: float | None = None
    single_thread_ratios: tuple[float, ...] = ()
    single_thread_keys: tuple[str, ...] = ()

    def warning(self) -> str | None:
        """Why these factors should not be trusted, or ``None``.

        The probe's subnets (and its kernels) share one machine, so their ratios agree when the
        machine is steady; when they spread by more than :data:`RATIO_SPREAD_TO_DISTRUST` (or a
        factor is beyond :data:`FACTOR_TO_DISTRUST` either way) something else was using the CPU
        while they ran.
        """
        for what, factor, ratios in (
            ("", self.factor, self.ratios),
            ("one-thread ", self.single_thread_factor, self.single_thread_ratios),
        ):
            if factor is None or not ratios:
                continue
            spread = max(ratios) / min(ratios)
            if spread > RATIO_SPREAD_TO_DISTRUST or not 1 / FACTOR_TO_DISTRUST < factor < FACTOR_TO_DISTRUST:
                return (
                    f"{what}speed probe ratios {min(ratios):.3f}-{max(ratios):.3f} (factor {factor:.3f}): "
                    "the device was probably busy while probing; do not trust predictions at this speed, "
                    "probe again on an idle device"
                )
        return None

    def describe(self) -> str:
        """One line for a log."""
        line = (
            f"speed probe: {len(self.keys)} of the profile's subnets run {self.factor:.3f}x their recorded time "
            f"(ratios {min(self.ratios):.3f}-{max(self.ratios):.3f}"
        )
        if self.single_thread_factor is not None:
            line += (
                f"), {len(self.single_thread_keys)} one-thread kernels {self.single_thread_factor:.3f}x "
                f"(ratios {min(self.single_thread_ratios):.3f}-{max(self.single_thread_ratios):.3f}"
            )
        return line + f", {self.seconds:.0f} s)"

    def to_dict(self) -> dict[str, Any]:
        """The probe as a JSON record (what a search front, an export manifest or a profile journal keeps)."""
        out: dict[str, Any] = {"factor": self.factor, "ratios": list(self.ratios), "subnets": list(self.keys)}
        if self.single_thread_factor is not None:
            out["single_thread_factor"] = self.single_thread_factor
            out["single_thread_ratios"] = list(self.single_thread_ratios)
            out["single_thread_kernels"] = list(self.single_thread_keys)
        return out


def profiled_here_problems(profile: Any, *, cores: int | None = None) -> list[str]:
    """Why ``profile`` was not measured with this machine's CPU and TVM release (empty when it was).

    A speed probe compares timings taken here with the profile's, so it only means something on
    the profiled device; ``cores`` defaults to the profile's own core count.
    """
    from codesign.profile.profile_file import target_mismatch, tvm_release_line
    from codesign.profile.tvm_backend import host_llvm_target, software_versions

    if profile.target.get("kind") != "llvm":
        return [f"it was measured for target kind {profile.target.get('kind')!r}, a probe times this CPU"]
    problems = []
    tvm = software_versions()["tvm"]
    if tvm_release_line(profile.software.tvm) != tvm_release_line(tvm):
        problems.append(f"it was made with TVM {profile.software.tvm}, this is TVM {tvm}")
    reason = target_mismatch(
        profile.target, host_llvm_target(cores or int(profile.target.get("num-cores") or 0) or None)
    )
    if reason:
        problems.append(reason)
    return problems


def probe_subnets(profile: Any, count: int) -> list[dict[str, Any]]:
    """``count`` of the profile's measured subnets spread evenly over their latency range (deterministic).

    Subnets at their fastest schedules come first (what the search picks; their timings repeat best).
    """
    ok = [m for m in profile.models if m.get("status") == "ok" and m.get("timing")]
    preferred = [m for m in ok if m.get("schedules") == "fastest"] or ok
    if count < 1:
        raise CodesignError("a speed probe needs at least one subnet")
    if not preferred:
        raise CodesignError("the profile has no measured whole subnets to probe the device's speed with")
    ranked = sorted(preferred, key=lambda m: m["timing"]["median_ms"])
    if count >= len(ranked):
        return ranked
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, count)).astype(int))
    return [ranked[i] for i in picks]


PROBE_KERNEL_SHORTEST_QUANTILE = 0.3
"""One-thread probe kernels come from above this quantile of the profile's default-lowered kernel times:
the shortest (a few microseconds) time least steadily."""


def probe_kernels(profile: Any, count: int) -> list[tuple[dict[str, Any], float]]:
    """``count`` of the profile's kernels timed at TVM's default lowering (NCHW, one thread), each with its
    recorded median (ms), spread evenly over their latency range above
    :data:`PROBE_KERNEL_SHORTEST_QUANTILE` (deterministic).

    Only timings taken at the profile's own speed qualify: a recalibration's (``speed_factor``)
    were divided by an earlier probe's factor.
    """
    from codesign.latency.workloads import kernel_family

    families = profile.tuning_records.get("families", {})
    timed: dict[str, tuple[dict[str, Any], float]] = {}
    for record in profile.measurements:
        if record.get("speed_factor") is not None or record["workload"].get("kind") == "pool_fc":
            continue
        options = families.get(record.get("family") or kernel_family(record["workload"]), [])
        if options and options[0].get("source") != "default":
            continue
        for result in record["results"]:
            timing = result.get("timing")
            if int(result["candidate"]) == 0 and result.get("status") == "ok" and timing:
                timed[record["key"]] = (record, float(timing["median_ms"]))
    ranked = sorted(timed.values(), key=lambda pair: pair[1])
    ranked = ranked[int(len(ranked) * PROBE_KERNEL_SHORTEST_QUANTILE) :]
    if count < 1 or not ranked:
        return []
    if count >= len(ranked):
        return ranked
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, count)).astype(int))
    return [ranked[i] for i in picks]


def time_default_kernel(workload: Any, target: dict[str, Any], *, repeat: int = 5) -> float:
    """Median ms of ``workload`` compiled at TVM's default lowering and timed here, as the profiler times it."""
    from codesign.profile import tvm_backend as tb

    return sum(
        tb.time_kernel(tb.build_kernel(task, target), task, repeat=repeat).median_ms
        for task in tb.workload_tasks(workload, target, layout="NCHW")
    )


def probe_device_speed(
    profile: Any,
    *,
    subnets: int = 8,
    kernels: int = 8,
    repeat: int = 10,
    time_subnet: Callable[[Any, Genome], float] | None = None,
    time_kernel: Callable[[Any], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SpeedProbe:
    """Compile ``subnets`` of ``profile``'s measured subnets, time them here and compare with the profile;
    then the same for ``kernels`` of its default-lowered (one-thread) kernels (0: none).

    Runs on this machine (the profile's target must be this CPU). By default the executables are
    timed in this process, their windows interleaved (the TVM runtime uses as many threads as
    ``TVM_NUM_THREADS`` says, which should be what the profile was measured with);
    ``time_subnet(executable, genome) -> median ms`` times it the way the caller times what it
    compares (e.g. an exported library in a fresh process), ``time_kernel(workload) -> median ms``
    a kernel (default: :func:`time_default_kernel`).
    """
    from codesign.compiler.tvm_compile import compile_subnet, time_executables
    from codesign.latency.positions import PositionTable
    from codesign.latency.workloads import Workload
    from codesign.space import SearchSpace

    space = SearchSpace.from_dict(profile.space)
    positions = PositionTable(space)
    families = profile.tuning_records.get("families", {})
    started = time.perf_counter()
    ratios, keys = [], []
    records = probe_subnets(profile, subnets)
    genomes = [Genome.from_dict(record["genome"]) for record in records]
    executables = [compile_subnet(space, g, profile.target, families, positions=positions) for g in genomes]
    if time_subnet is not None:
        times = [float(time_subnet(executable, g)) for executable, g in zip(executables, genomes, strict=True)]
    else:
        pairs = [(executable, g.resolution) for executable, g in zip(executables, genomes, strict=True)]
        times = [t.median_ms for t in time_executables(pairs, space, windows=repeat)]
    for record, now in zip(records, times, strict=True):
        ratios.append(now / float(record["timing"]["median_ms"]))
        keys.append(str(record["key"]))
        if progress is not None:
            progress(f"speed probe {len(keys)}: {record['key']} {now:.3f} ms now, {ratios[-1]:.3f}x the profile's")
    kernel_ratios, kernel_keys = [], []
    for record, recorded_ms in probe_kernels(profile, kernels):
        workload = Workload.from_dict(record["workload"])
        if time_kernel is not None:
            now = float(time_kernel(workload))
        else:
            now = time_default_kernel(workload, profile.target)
        kernel_ratios.append(now / recorded_ms)
        kernel_keys.append(str(record["key"]))
        if progress is not None:
            progress(f"speed probe, one thread: {record['key']} {now * 1e3:.1f} us now, {kernel_ratios[-1]:.3f}x")
    return SpeedProbe(
        factor=float(np.median(ratios)),
        ratios=tuple(ratios),
        keys=tuple(keys),
        seconds=time.perf_counter() - started,
        single_thread_factor=float(np.median(kernel_ratios)) if kernel_ratios else None,
        single_thread_ratios=tuple(kernel_ratios),
        single_thread_keys=tuple(kernel_keys),
    )


def model_at_probed_speed(model: Any, record: dict[str, Any]) -> Any:
    """``model`` at the speed a probe record (:meth:`SpeedProbe.to_dict`) says; one without a one-thread
    factor (written before probes timed kernels) scales every kernel by its ``factor``."""
    return model.at_speed(float(record["factor"]), single_thread_factor=record.get("single_thread_factor"))
