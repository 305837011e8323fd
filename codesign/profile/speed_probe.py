"""How fast the device runs *now*, relative to when its profile was measured.

A shared or virtual machine does not keep one speed: on the CI machine class the same compiled
subnets ran 10-15% faster in an afternoon than in the morning of the same day, which alone moves
most predictions outside +-10%. :func:`probe_device_speed` re-times a few of the profile's own
whole-subnet measurements (compiled exactly as the profile compiled them) and returns the median
ratio of the new time to the recorded one; :meth:`LatencyModel.at_speed` scales every prediction
by it. The probe uses only subnets the profile already holds, never the ones it is asked about,
so it tells the model about the machine and nothing about the answers.

Kernels at TVM's default lowering run on one thread and drift unlike the tuned, multi-threaded
ones (on the CI machine class: subnets 1.22-1.29x their profile time, one-thread kernels alone
0.98x). The probe therefore times subnets of both kinds the profile holds, at the search's
fastest schedules (mostly multi-threaded) and at random schedules (mostly default-lowered), and
fits the two factors that explain their ratios (:func:`fit_thread_factors`): in one probe inside
networks one-thread kernels ran 1.08x while alone they ran 0.98x, so the fit, not a kernel timed
alone, is what predicts a network (README, "Both factors fitted on subnets").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from codesign.errors import CodesignError
from codesign.space import Genome, SearchSpace

RATIO_SPREAD_TO_DISTRUST = 1.5
"""Largest max/min of the probe's per-subnet ratios taken as a steady machine (its subnets drift together)."""

FACTOR_TO_DISTRUST = 2.0
"""A factor beyond 2x either way is a busy machine, not drift (seen here: 11-19% in a day, 16-23% on a new VM)."""


@dataclass(frozen=True)
class SpeedProbe:
    """The result of a probe: how much longer than in the profile tuned kernels (``factor``) and
    one-thread, default-lowered kernels (``single_thread_factor``) take here now.

    ``ratios`` are the subnets' (``keys``) time now over their recorded time. With
    ``single_thread_source == "subnets"`` both factors are fitted on them (:func:`fit_thread_factors`,
    ``single_thread_shares`` the part of each subnet's predicted time in one-thread kernels);
    otherwise ``factor`` is the median ratio and ``single_thread_factor``, with ``single_thread_source
    == "kernels"``, the median over ``single_thread_keys`` of default-lowered kernels timed alone
    (``None`` when the probe timed none). See :meth:`LatencyModel.at_speed`.
    """

    factor: float
    ratios: tuple[float, ...]
    keys: tuple[str, ...]
    seconds: float
    single_thread_factor: float | None = None
    single_thread_ratios: tuple[float, ...] = ()
    single_thread_keys: tuple[str, ...] = ()
    single_thread_shares: tuple[float, ...] = ()
    single_thread_source: Literal["subnets", "kernels"] | None = None

    @property
    def kernels_alone_factor(self) -> float | None:
        """Median ratio of the one-thread kernels timed alone (``None`` when none was): how to bring a kernel timed
        alone here now to the profile's units, which for one-thread kernels is not how they drift in a network."""
        return float(np.median(self.single_thread_ratios)) if self.single_thread_ratios else None

    def fitted_ratios(self) -> tuple[float, ...]:
        """Each subnet's ratio as the two factors predict it (its ``single_thread_shares`` at one, the rest at
        the other); the median ratio for every subnet when the factors were not fitted on the subnets."""
        if self.single_thread_source != "subnets" or self.single_thread_factor is None:
            return tuple(self.factor for _ in self.ratios)
        return tuple(
            self.factor * (1 - share) + self.single_thread_factor * share for share in self.single_thread_shares
        )

    def warning(self) -> str | None:
        """Why these factors should not be trusted, or ``None``.

        The probe's subnets (and its kernels) share one machine, so their ratios agree when the
        machine is steady; when they spread by more than :data:`RATIO_SPREAD_TO_DISTRUST` (or a
        factor is beyond :data:`FACTOR_TO_DISTRUST` either way) something else was using the CPU
        while they ran.
        """
        # fitted factors: what the fit leaves unexplained must be as steady as plain ratios
        residuals = tuple(r / f for r, f in zip(self.ratios, self.fitted_ratios(), strict=True))
        for what, factor, ratios, spread_of in (
            ("", self.factor, self.ratios, residuals),
            ("one-thread ", self.single_thread_factor, self.single_thread_ratios, self.single_thread_ratios),
        ):
            if factor is None or not ratios:
                continue
            spread = max(spread_of) / min(spread_of)
            if spread > RATIO_SPREAD_TO_DISTRUST or not 1 / FACTOR_TO_DISTRUST < factor < FACTOR_TO_DISTRUST:
                return (
                    f"{what}speed probe ratios {min(ratios):.3f}-{max(ratios):.3f} (factor {factor:.3f}): "
                    "the device was probably busy while probing; do not trust predictions at this speed, "
                    "probe again on an idle device"
                )
        if self.single_thread_source == "subnets" and not (
            self.single_thread_factor is not None
            and 1 / FACTOR_TO_DISTRUST < self.single_thread_factor < FACTOR_TO_DISTRUST
        ):
            return (
                f"speed probe: one-thread factor {self.single_thread_factor} fitted on the subnets: the device "
                "was probably busy while probing; probe again on an idle device"
            )
        return None

    def describe(self) -> str:
        """One line for a log."""
        ratios = f"ratios {min(self.ratios):.3f}-{max(self.ratios):.3f}"
        if self.single_thread_source == "subnets" and self.single_thread_factor is not None:
            shares = self.single_thread_shares
            return (
                f"speed probe: {len(self.keys)} of the profile's subnets ran {ratios} their recorded time; fitted on "
                f"their one-thread shares ({min(shares):.2f}-{max(shares):.2f}): tuned kernels {self.factor:.3f}x, "
                f"one-thread kernels {self.single_thread_factor:.3f}x{self._alone()} ({self.seconds:.0f} s)"
            )
        line = f"speed probe: {len(self.keys)} of the profile's subnets run {self.factor:.3f}x their recorded time "
        line += f"({ratios}"
        if self.single_thread_factor is not None:
            line += (
                f"), {len(self.single_thread_keys)} one-thread kernels {self.single_thread_factor:.3f}x "
                f"(ratios {min(self.single_thread_ratios):.3f}-{max(self.single_thread_ratios):.3f}"
            )
        return line + f", {self.seconds:.0f} s)"

    def _alone(self) -> str:
        if self.kernels_alone_factor is None:
            return ""
        return f"; {len(self.single_thread_keys)} of them timed alone {self.kernels_alone_factor:.3f}x"

    def to_dict(self) -> dict[str, Any]:
        """The probe as a JSON record (what a search front, an export manifest or a profile journal keeps)."""
        out: dict[str, Any] = {
            "factor": self.factor,
            "ratios": list(self.ratios),
            "subnets": list(self.keys),
            "seconds": round(self.seconds, 1),
        }
        if self.single_thread_factor is not None:
            out["single_thread_factor"] = self.single_thread_factor
            out["single_thread_source"] = self.single_thread_source
        if self.single_thread_shares:
            out["single_thread_shares"] = list(self.single_thread_shares)
        if self.single_thread_keys:
            out["single_thread_ratios"] = list(self.single_thread_ratios)
            out["single_thread_kernels"] = list(self.single_thread_keys)
            out["kernels_alone_factor"] = self.kernels_alone_factor
        return out

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SpeedProbe:
        """The probe :meth:`to_dict` wrote (other keys, such as a manifest's ``warning``, are ignored)."""
        single = record.get("single_thread_factor")
        return cls(
            factor=float(record["factor"]),
            ratios=tuple(float(r) for r in record["ratios"]),
            keys=tuple(str(k) for k in record["subnets"]),
            seconds=float(record.get("seconds", 0.0)),
            single_thread_factor=None if single is None else float(single),
            single_thread_ratios=tuple(float(r) for r in record.get("single_thread_ratios", ())),
            single_thread_keys=tuple(str(k) for k in record.get("single_thread_kernels", ())),
            single_thread_shares=tuple(float(x) for x in record.get("single_thread_shares", ())),
            single_thread_source=record.get("single_thread_source", "kernels" if single is not None else None),
        )


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


PROBE_SUBNET_SHORTEST_QUANTILE = 0.3
"""Probe subnets come from above this quantile of each kind's recorded times: in the shortest (50 us) a timing
harness's fixed cost per call weighs most (the smallest subnet timed the export's way, in a fresh process, read
1.58x while the others read 1.17-1.31x)."""


def _spread(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` of ``records`` above :data:`PROBE_SUBNET_SHORTEST_QUANTILE`, spread evenly over their recorded
    latency range, fastest first."""
    ranked = sorted(records, key=lambda m: m["timing"]["median_ms"])
    ranked = ranked[int(len(ranked) * PROBE_SUBNET_SHORTEST_QUANTILE) :]
    if count >= len(ranked):
        return ranked
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, count)).astype(int))
    return [ranked[i] for i in picks]


def probe_subnets(profile: Any, count: int) -> list[dict[str, Any]]:
    """``count`` of the profile's measured subnets, each kind spread evenly over its latency range above its shortest
    :data:`PROBE_SUBNET_SHORTEST_QUANTILE` (deterministic).

    Half (rounded up) are at their fastest schedules (what the search picks; mostly tuned, multi-threaded
    kernels), the rest at random schedules (mostly default-lowered, one-thread kernels), so that
    :func:`fit_thread_factors` can tell the two speeds apart; a profile with one kind gives that kind.
    Only subnets timed at the profile's own speed qualify: a recalibration's (``speed_factor``) were
    divided by an earlier probe's factors.
    """
    if count < 1:
        raise CodesignError("a speed probe needs at least one subnet")
    ok = [m for m in profile.models if m.get("status") == "ok" and m.get("timing") and m.get("speed_factor") is None]
    if not ok:
        raise CodesignError("the profile has no measured whole subnets to probe the device's speed with")
    fastest = [m for m in ok if m.get("schedules") == "fastest"]
    others = [m for m in ok if m.get("schedules") != "fastest"]
    if not fastest or not others or count < 2:
        return _spread(fastest or others, count)
    tuned = _spread(fastest, count - min(count // 2, len(others)))
    return tuned + _spread(others, count - len(tuned))


MIN_SHARE_SPAN = 0.3
"""Smallest spread of the probe subnets' one-thread shares over which :func:`fit_thread_factors` fits two factors."""


def single_thread_shares(profile: Any, genomes: list[Genome]) -> np.ndarray:
    """Per genome, the part of the profile's predicted latency that :meth:`LatencyModel.at_speed` scales by its
    one-thread factor (default-lowered kernels and layout changes)."""
    from codesign.latency.model import LatencyModel

    model = LatencyModel.from_profile(profile)
    base = model.predict(genomes)
    step = 0.5
    return np.asarray((model.at_speed(1.0, single_thread_factor=1.0 + step).predict(genomes) - base) / (step * base))


def fit_thread_factors(ratios: np.ndarray, shares: np.ndarray) -> tuple[float, float] | None:
    """The factors ``(tuned, one_thread)`` with ``ratio ~= tuned * (1 - share) + one_thread * share``, or ``None``
    when ``shares`` span less than :data:`MIN_SHARE_SPAN` or a factor comes out non-positive.

    A Theil-Sen line (the median slope over pairs of subnets at least half the span apart, then the median
    intercept), so one subnet timed while something else ran moves neither factor much.
    """
    ratios, shares = np.asarray(ratios, dtype=float), np.asarray(shares, dtype=float)
    if len(ratios) < 2 or np.ptp(shares) < MIN_SHARE_SPAN:
        return None
    i, j = np.triu_indices(len(ratios), k=1)
    apart = np.abs(shares[j] - shares[i]) >= MIN_SHARE_SPAN / 2
    slope = float(np.median((ratios[j] - ratios[i])[apart] / (shares[j] - shares[i])[apart]))
    tuned = float(np.median(ratios - slope * shares))
    one_thread = tuned + slope
    if tuned <= 0 or one_thread <= 0:
        return None
    return tuned, one_thread


PROBE_KERNEL_SHORTEST_QUANTILE = 0.3
"""One-thread probe kernels come from above this quantile of the profile's default-lowered kernel times:
the shortest (a few microseconds) time least steadily."""


def probe_kernels(profile: Any, count: int) -> list[tuple[dict[str, Any], float]]:
    """``count`` of the profile's kernels timed at TVM's default lowering (NCHW, one thread), each with its
    recorded median (ms), spread evenly over their latency range above
    :data:`PROBE_KERNEL_SHORTEST_QUANTILE` (deterministic).

    Only steady timings taken at the profile's own speed qualify: a recalibration's (``speed_factor``)
    were divided by an earlier probe's factor, and a disturbed one is no reference.
    """
    from codesign.latency.model import timing_disturbed
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
            if (
                int(result["candidate"]) == 0
                and result.get("status") == "ok"
                and timing
                and not timing_disturbed(timing)
            ):
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
    kernels_alone: bool = False,
    repeat: int = 10,
    time_subnet: Callable[[Any, Genome], float] | None = None,
    time_kernel: Callable[[Any], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SpeedProbe:
    """Compile ``subnets`` of ``profile``'s measured subnets (:func:`probe_subnets`), time them here and compare
    with the profile; fit the tuned and one-thread factors on them (:func:`fit_thread_factors`). Only when
    their one-thread shares do not span enough for that (a profile without random-schedule subnets), or with
    ``kernels_alone``, are ``kernels`` of its default-lowered kernels (0: none) timed alone: for the one-thread
    factor in the first case, for :attr:`SpeedProbe.kernels_alone_factor` in both (a recalibration converts
    kernels it times alone with it: alone, they drift unlike inside a network).

    Runs on this machine (the profile's target must be this CPU). By default the executables are
    timed in this process, their windows interleaved (the TVM runtime uses as many threads as
    ``TVM_NUM_THREADS`` says, which should be what the profile was measured with);
    ``time_subnet(executable, genome) -> median ms`` times it the way the caller times what it
    compares (e.g. an exported library in a fresh process), ``time_kernel(workload) -> median ms``
    a kernel (default: :func:`time_default_kernel`).
    """
    from codesign.compiler.tvm_compile import time_executables

    started = time.perf_counter()
    records, genomes, executables = compile_probe_subnets(profile, subnets)
    if time_subnet is not None:
        times = [float(time_subnet(executable, g)) for executable, g in zip(executables, genomes, strict=True)]
    else:
        space = SearchSpace.from_dict(profile.space)
        pairs = [(executable, g.resolution) for executable, g in zip(executables, genomes, strict=True)]
        times = [t.median_ms for t in time_executables(pairs, space, windows=repeat)]
    from_subnets = speed_from_subnet_timings(profile, records, times)
    if progress is not None:
        for i, (key, ratio) in enumerate(zip(from_subnets.keys, from_subnets.ratios, strict=True)):
            progress(f"speed probe {i + 1}: {key} {times[i]:.3f} ms now, {ratio:.3f}x the profile's")
    return with_kernels_alone(
        profile,
        from_subnets,
        kernels=kernels,
        kernels_alone=kernels_alone,
        time_kernel=time_kernel,
        progress=progress,
        started=started,
    )


def compile_probe_subnets(profile: Any, count: int) -> tuple[list[dict[str, Any]], list[Genome], list[Any]]:
    """The probe's subnets (:func:`probe_subnets`): their records, genomes and executables, compiled exactly
    as the profile compiled them (its schedules), for this machine's target."""
    from codesign.compiler.tvm_compile import compile_subnet
    from codesign.latency.positions import PositionTable

    space = SearchSpace.from_dict(profile.space)
    positions = PositionTable(space)
    families = profile.tuning_records.get("families", {})
    records = probe_subnets(profile, count)
    genomes = [Genome.from_dict(record["genome"]) for record in records]
    executables = [compile_subnet(space, g, profile.target, families, positions=positions) for g in genomes]
    return records, genomes, executables


def with_kernels_alone(
    profile: Any,
    probe: SpeedProbe,
    *,
    kernels: int,
    kernels_alone: bool = False,
    time_kernel: Callable[[Any], float] | None = None,
    progress: Callable[[str], None] | None = None,
    started: float | None = None,
) -> SpeedProbe:
    """``probe`` (fitted on subnets by :func:`speed_from_subnet_timings`) with ``kernels`` of the profile's
    default-lowered kernels timed alone (:func:`probe_kernels`) where it needs them: when the subnets' one-thread
    shares span too little to fit the one-thread factor (then it is their median ratio), or with ``kernels_alone``
    (recorded beside the fitted factor). ``started`` (a :func:`time.perf_counter` value) dates the probe's start."""
    from codesign.latency.workloads import Workload

    fitted = probe.single_thread_source == "subnets"
    kernel_ratios, kernel_keys = [], []
    for record, recorded_ms in probe_kernels(profile, kernels if not fitted or kernels_alone else 0):
        workload = Workload.from_dict(record["workload"])
        if time_kernel is not None:
            now = float(time_kernel(workload))
        else:
            now = time_default_kernel(workload, profile.target)
        kernel_ratios.append(now / recorded_ms)
        kernel_keys.append(str(record["key"]))
        if progress is not None:
            progress(f"speed probe, one thread: {record['key']} {now * 1e3:.1f} us now, {kernel_ratios[-1]:.3f}x")
    alone = float(np.median(kernel_ratios)) if kernel_ratios else None
    return replace(
        probe,
        seconds=probe.seconds if started is None else time.perf_counter() - started,
        single_thread_factor=probe.single_thread_factor if fitted else alone,
        single_thread_ratios=tuple(kernel_ratios),
        single_thread_keys=tuple(kernel_keys),
        single_thread_source="subnets" if fitted else ("kernels" if kernel_ratios else None),
    )


def speed_from_subnet_timings(
    profile: Any, records: list[dict[str, Any]], times: list[float], *, seconds: float = 0.0
) -> SpeedProbe:
    """A probe from ``times`` (median ms, here and now) of the profile's subnets ``records`` (:func:`probe_subnets`),
    however the caller timed them (taking ``seconds``): both factors fitted on them (:func:`fit_thread_factors`), or,
    when their one-thread shares span too little for that, their median ratio with no one-thread factor (every
    kernel at it).

    A benchmark that times these subnets in the same interleaved rounds as the subnets it predicts gets the
    machine's speed during exactly those rounds, not minutes before them.
    """
    if len(records) != len(times) or not records:
        raise CodesignError(f"a speed probe needs one timing per probe subnet, got {len(times)} for {len(records)}")
    genomes = [Genome.from_dict(record["genome"]) for record in records]
    ratios = [float(now) / float(record["timing"]["median_ms"]) for record, now in zip(records, times, strict=True)]
    shares = single_thread_shares(profile, genomes)
    fitted = fit_thread_factors(np.asarray(ratios), shares)
    return SpeedProbe(
        factor=fitted[0] if fitted else float(np.median(ratios)),
        ratios=tuple(ratios),
        keys=tuple(str(record["key"]) for record in records),
        seconds=seconds,
        single_thread_factor=fitted[1] if fitted else None,
        single_thread_shares=tuple(float(x) for x in shares),
        single_thread_source="subnets" if fitted else None,
    )


def model_at_probed_speed(model: Any, record: dict[str, Any]) -> Any:
    """``model`` at the speed a probe record (:meth:`SpeedProbe.to_dict`) says; one without a one-thread
    factor (written before probes timed kernels) scales every kernel by its ``factor``."""
    return model.at_speed(float(record["factor"]), single_thread_factor=record.get("single_thread_factor"))
