"""The profiling run: tune representative kernels, replay their schedules on every workload, measure.

Method (budgeted, resumable):

1. Rank the space's workloads by how much of a random subnet's cost they carry (frequency over
   sampled subnets x MACs): what matters most is measured first.
2. Per kernel family (same fused operators: kind, activation, residual) tune the top
   ``representatives`` workloads with MetaSchedule, in every data layout of ``layouts``, and keep
   each one's ``top_k`` distinct traces. A family's schedule candidates are: 0 = TVM's default
   lowering, then the NCHW traces; then, per further layout, its default lowering and its traces.
   A candidate fixes the kernel's layout as well as its schedule.
3. Layouts: with more than one, time the kernel a change of layout compiles to (a transpose
   between NCHW and NHWC, a ``layout_transform`` to or from the packed NCHW8c) for every
   activation shape of the space, in both directions. A packed layout is only tuned, timed and
   offered on kernels whose channels divide into its blocks.
4. Time the most important workloads (``full_fraction`` of the kernel time, rank order) under
   every candidate of their family (a trace tuned on one shape replays onto another of its
   family), recording mean, median, spread and repeat count, or the failure and its reason.
5. Coverage: every other workload is timed under the default and the family's ``coverage_candidates``
   most often fastest candidates; every other candidate is checked to replay on it (a trace that
   does not fit a shape is recorded as failed, so no subnet is ever predicted with it).
6. Collapsed tilings: time the candidates the coverage pass only checked whose tilings collapsed
   on replay (a tuned tiling that does not divide this shape's loop becomes one innermost factor:
   the loop no longer blocked, nor parallel), the most important kernels first: a kernel
   predictor cannot foresee a collapse its family never showed timed (one ran 28x its prediction).
7. Adaptive: with the time left, fully time workloads of the family where the kernel predictor's
   cross-validated error is largest (nn-Meter's adaptive sampling, at family granularity).
8. Whole models: compile ``calibration_models`` random subnets under their schedule genes (mixed
   layouts included) and time them; they calibrate and judge the per-kernel sum.

Every finished step is appended to a journal first, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codesign.compiler.layouts import fits_layout
from codesign.errors import CodesignError
from codesign.latency.model import NOISY_SPREAD, timing_disturbed
from codesign.latency.workloads import Workload, enumerate_workloads, kernel_family, subnet_workloads
from codesign.profile.journal import Journal, with_retries
from codesign.space import Genome, SearchSpace


def steady_timing(time_once: Callable[[], Any]) -> tuple[Any, int]:
    """``time_once()`` (a :class:`~codesign.profile.tvm_backend.Timing`), timed a second time when its repeats spread
    beyond :data:`NOISY_SPREAD`; returns the timing with the lower median and how many times it was re-timed."""
    first = time_once()
    if first.std_ms <= NOISY_SPREAD * first.median_ms:
        return first, 0
    second = time_once()
    return min((first, second), key=lambda t: t.median_ms), 1


@dataclass(frozen=True)
class ProfileConfig:
    """Knobs of a profiling run (recorded in the profile)."""

    target: dict[str, Any]
    budget_minutes: float = 30.0
    tune_trials: int = 32
    representatives: int = 2
    top_k: int = 3
    repeat: int = 5
    min_repeat_ms: int = 20
    attempts: int = 2
    ranking_samples: int = 2000
    cost_model: str = "xgb"
    seed: int = 0
    max_tuned_families: int | None = None
    max_workloads: int | None = None
    adaptive_batch: int = 16
    calibration_models: int = 24
    calibration_minutes: float = 6.0
    full_fraction: float = 0.3
    coverage_candidates: int = 2
    coverage_repeat: int = 3
    coverage_min_repeat_ms: int = 10
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    layouts: tuple[str, ...] = ("NCHW",)
    kernel_build_timeout_s: float = 20.0
    model_build_timeout_s: float = 180.0
    model_batch: int = 8


def rank_workloads(space: SearchSpace, samples: int, seed: int) -> list[tuple[Workload, float]]:
    """Every workload of ``space`` with its expected share of a random subnet's MACs, largest first."""
    rng = np.random.default_rng(seed)
    weight: collections.Counter[Workload] = collections.Counter()
    for _ in range(samples):
        for w in subnet_workloads(space, Genome.random(space, rng)):
            weight[w] += w.macs
    total = sum(weight.values()) or 1
    everything = enumerate_workloads(space)
    ranked = sorted(everything, key=lambda w: (-weight.get(w, 0), w.key()))
    return [(w, weight.get(w, 0) / total) for w in ranked]


def describe_record(verb: str, record: dict[str, Any]) -> str:
    """One progress line for a kernel record: each candidate's median, or whether it replays."""
    parts = []
    for r in record["results"]:
        if r["timing"]:
            parts.append(f"{r['candidate']}={r['timing']['median_ms'] * 1e3:.1f}us")
        else:
            parts.append(f"{r['candidate']}={'replays' if r['status'] == 'unmeasured' else 'failed'}")
    return f"{verb} {record['key']}: " + ", ".join(parts)


def families_from_records(tuned: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Schedule candidates per kernel family from tuning records.

    0 = the NCHW default lowering, then the NCHW traces; then per further layout (in the order of
    :data:`~codesign.latency.transposes.LAYOUT_NAMES`) its default lowering and its traces. The
    order does not depend on the order tuning ran in, so a resumed run numbers candidates alike.
    """
    from codesign.latency.transposes import LAYOUT_NAMES

    out: dict[str, list[dict[str, Any]]] = {}
    for layout in LAYOUT_NAMES:
        for record in tuned:
            if record.get("layout", "NCHW") != layout:
                continue
            fam = out.setdefault(record["family"], [{"source": "default", "trace": None, "layout": "NCHW"}])
            if layout != "NCHW" and not any(c["layout"] == layout for c in fam):
                fam.append({"source": "default", "trace": None, "layout": layout})
            fam.extend(
                {"source": f"{record['key']}#{i}", "trace": t, "layout": layout}
                for i, t in enumerate(record.get("traces", []))
            )
    return out


def tuning_key(workload: Workload, layout: str) -> str:
    """Journal key of one tuning run: the workload key, with ``@LAYOUT`` for layouts other than NCHW."""
    return workload.key() if layout == "NCHW" else f"{workload.key()}@{layout}"


class Profiler:
    """Runs the method above for one space on one target, journaling into ``work_dir``."""

    def __init__(self, space: SearchSpace, config: ProfileConfig, work_dir: str | Path) -> None:
        self.space, self.config = space, config
        self.work_dir = Path(work_dir)
        self.journal = Journal(self.work_dir / "journal.jsonl")
        self._session: Any = None

    def _done(self, kind: str) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in self.journal if r.get("type") == kind}

    def _kernel_records(self) -> list[dict[str, Any]]:
        """Every kernel measurement record in the journal, in order (a kernel may have several)."""
        return [r for r in self.journal if r.get("type") == "measured"]

    def _kernel_results(self) -> dict[str, dict[int, dict[str, Any]]]:
        """Per kernel key, each candidate's latest result over all its records (a timing or failure is never
        replaced by a later replay check)."""
        merged: dict[str, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
        for record in self._kernel_records():
            for r in record["results"]:
                known = merged[record["key"]].get(int(r["candidate"]))
                if r["status"] != "unmeasured" or known is None:
                    merged[record["key"]][int(r["candidate"])] = r
        return merged

    def candidates(self) -> dict[str, list[dict[str, Any]]]:
        """Schedule candidates per family from the journal: index 0 is the default lowering."""
        return families_from_records([r for r in self.journal if r.get("type") == "tuned"])

    def run(self, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Tune and measure within the budget; returns counts of what is in the journal."""

        from codesign.profile.profile_file import current_command, now_utc

        say = progress or (lambda _msg: None)
        cfg = self.config
        begun = time.monotonic()
        deadline = begun + cfg.budget_minutes * 60.0
        invocation = {"command": current_command(), "started": now_utc(), "budget_minutes": cfg.budget_minutes}
        try:
            self._run_phases(deadline, say)
        finally:
            previous = len(self._done("invocation"))
            self.journal.append(
                {
                    "type": "invocation",
                    "key": f"run{previous}",
                    **invocation,
                    "seconds": round(time.monotonic() - begun, 1),
                }
            )
        return {
            "tuned": len(self._done("tuned")),
            "measured": len(self._done("measured")),
            "models": len(self._done("model")),
            "workloads": len(enumerate_workloads(self.space)),
            "config": asdict(cfg),
        }

    def _run_phases(self, deadline: float, say: Callable[[str], None]) -> None:
        from codesign.profile import tvm_backend as tb

        cfg = self.config
        models_seconds = cfg.calibration_minutes * 60.0 if cfg.calibration_models else 0.0
        kernel_deadline = deadline - models_seconds
        ranked = rank_workloads(self.space, cfg.ranking_samples, cfg.seed)
        by_family: dict[str, list[Workload]] = collections.defaultdict(list)
        for w, _share in ranked:
            if w.kind != "pool_fc":
                by_family[kernel_family(w)].append(w)
        tuned = self._done("tuned")
        family_share: dict[str, float] = collections.defaultdict(float)
        for w, share in ranked:
            family_share[kernel_family(w)] += share
        families = sorted(by_family, key=lambda f: -family_share[f])[: cfg.max_tuned_families]
        runs = [
            (family, rep, layout)
            for family in families
            for layout in cfg.layouts
            # a packed layout is tuned on kernels whose channels divide into its blocks
            for rep in [w for w in by_family[family] if fits_layout(layout, w.in_channels, w.out_channels)][
                : cfg.representatives
            ]
        ]
        for family, rep, layout in runs:
            key = tuning_key(rep, layout)
            if key in tuned or time.monotonic() > kernel_deadline:
                continue
            say(f"tuning {key} ({cfg.tune_trials} trials)")
            started = time.monotonic()

            def tune(rep: Workload = rep, layout: str = layout, key: str = key) -> list[Any]:
                (task,) = tb.workload_tasks(rep, cfg.target, layout=layout)
                db = tb.tune_task(
                    task,
                    cfg.target,
                    self.work_dir / "ms" / key,
                    trials=cfg.tune_trials,
                    seed=cfg.seed,
                    cost_model=cfg.cost_model,
                    runner=self._tuning_runner(),
                )
                return [tb.trace_to_json(r.trace) for r in tb.distinct_top_records(db, task, cfg.top_k)]

            traces, error = with_retries(tune, attempts=cfg.attempts)
            self.journal.append(
                {
                    "type": "tuned",
                    "key": key,
                    "layout": layout,
                    "family": family,
                    "workload": rep.to_dict(),
                    "traces": traces or [],
                    "error": error,
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
        candidates = self.candidates()
        from codesign.profile.session import open_session

        self._session = open_session(cfg.target, self._rpc())
        try:
            self._measure_all(ranked, candidates, kernel_deadline, deadline, say)
        finally:
            self._session.close()

    def _rpc(self) -> Any:
        from codesign.profile.session import RPCConfig

        cfg = self.config
        return RPCConfig(cfg.rpc_tracker, cfg.rpc_key or "") if cfg.rpc_tracker else None

    def _tuning_runner(self) -> Any:
        rpc = self._rpc()
        if rpc is None:
            return "local"
        from tvm.s_tir import meta_schedule as ms

        host, port = rpc.host_port
        return ms.runner.RPCRunner(
            rpc_config=ms.runner.RPCConfig(
                tracker_host=host, tracker_port=port, tracker_key=rpc.key, session_timeout_sec=120
            ),
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=20),
            max_workers=1,
        )

    def _measure_all(
        self,
        ranked: list[tuple[Workload, float]],
        candidates: dict[str, list[dict[str, Any]]],
        kernel_deadline: float,
        deadline: float,
        say: Callable[[str], None],
    ) -> None:
        cfg = self.config
        # most important kernels fully, then every kernel under its likely-best schedules, then full
        # measurements where the predictor errs most
        if len(cfg.layouts) > 1:  # cheap, and every layout change the model prices depends on them
            self._measure_transposes(ranked, kernel_deadline, say)
        now = time.monotonic()
        full_deadline = now + max(0.0, kernel_deadline - now) * cfg.full_fraction
        self._measure_kernels(ranked, candidates, full_deadline, say, adaptive=False)
        self._cover_kernels(ranked, candidates, kernel_deadline, say)
        self._time_collapsed(candidates, kernel_deadline, say)
        self._measure_kernels(ranked, candidates, kernel_deadline, say, adaptive=True)
        self._check_replays(ranked, candidates, say)
        if cfg.calibration_models:
            self._measure_models(candidates, deadline, say)

    # ------------------------------------------------------------------ kernels
    def _measure_one(
        self,
        w: Workload,
        share: float,
        options: list[dict[str, Any]],
        *,
        only: set[int] | None = None,
        repeat: int | None = None,
        min_repeat_ms: int | None = None,
        others: bool = True,
    ) -> dict[str, Any]:
        """Time ``w`` under every candidate (or those in ``only``: the others are only checked to replay,
        or with ``others=False`` left out of the record)."""
        from codesign.profile import tvm_backend as tb

        cfg = self.config
        by_layout: dict[str, tuple[Any, str | None]] = {}
        results = []
        for index, option in enumerate(options):
            if w.kind == "pool_fc" and index > 0:
                break
            if only is not None and index not in only and not others:
                continue
            layout = str(option.get("layout", "NCHW"))
            if layout not in by_layout and not fits_layout(layout, w.in_channels, w.out_channels):
                by_layout[layout] = (None, f"{w.in_channels} -> {w.out_channels} channels do not fit {layout}")
            if layout not in by_layout:

                def extract(layout: str = layout) -> list[Any]:
                    return tb.workload_tasks(w, cfg.target, layout=layout)

                by_layout[layout] = with_retries(extract, attempts=cfg.attempts)
            tasks, error = by_layout[layout]
            tilings, problem = None, None
            if tasks and option["trace"] is not None:
                try:
                    tilings = tb.replayed_tilings(tasks, option["trace"])
                except Exception as exc:  # a trace that does not fit this shape
                    problem = f"{type(exc).__name__}: {exc}"
            if only is not None and index not in only:
                results.append(
                    {
                        "candidate": index,
                        "source": option["source"],
                        "status": "failed" if problem or not tasks else "unmeasured",
                        "timing": None,
                        "error": problem or (None if tasks else error),
                        **({"tilings": tilings} if tilings is not None else {}),
                    }
                )
                continue

            def measure(
                option: dict[str, Any] = option, tasks: Any = tasks, error: str | None = error
            ) -> dict[str, Any]:
                def build(task: Any) -> Any:
                    return self._build(
                        lambda: tb.build_from_json(task, cfg.target, option["trace"]), cfg.kernel_build_timeout_s
                    )

                def timed(task: Any) -> tuple[Any, int]:
                    built = build(task)
                    return steady_timing(
                        lambda: tb.time_kernel(
                            built,
                            task,
                            device=self._session.device,
                            repeat=repeat or cfg.repeat,
                            min_repeat_ms=min_repeat_ms or cfg.min_repeat_ms,
                        )
                    )

                steady = [timed(t) for t in tasks or []]
                timings = [t for t, _ in steady]
                if not timings:
                    raise RuntimeError(error or "no kernel to measure")
                retimes = sum(n for _, n in steady)
                return {
                    "median_ms": sum(t.median_ms for t in timings),
                    "mean_ms": sum(t.mean_ms for t in timings),
                    "std_ms": float(np.sqrt(sum(t.std_ms**2 for t in timings))),
                    "repeats": min(t.repeats for t in timings),
                    "kernels": [t.to_dict() for t in timings],
                    **({"noisy_retimes": retimes} if retimes else {}),
                }

            timing, failure = with_retries(measure, attempts=cfg.attempts)
            results.append(
                {
                    "candidate": index,
                    "source": option["source"],
                    "status": "ok" if timing else "failed",
                    "timing": timing,
                    "error": failure,
                    **({"tilings": tilings} if tilings is not None and timing else {}),
                }
            )
        record = {
            "type": "measured",
            "key": w.key(),
            "family": kernel_family(w),
            "workload": w.to_dict(),
            "share": share,
            "results": results,
        }
        self.journal.append(record)
        return record

    def _measure_kernels(
        self,
        ranked: list[tuple[Workload, float]],
        candidates: dict[str, list[dict[str, Any]]],
        deadline: float,
        say: Callable[[str], None],
        *,
        adaptive: bool,
    ) -> None:
        """Time kernels under every candidate: in rank order, or (``adaptive``) where the predictor errs most."""
        cfg = self.config
        results = self._kernel_results()  # a kernel's records together: coverage, then collapsed pairs timed

        def complete(key: str) -> bool:
            return key in results and all(r["status"] != "unmeasured" for r in results[key].values())

        pending = [(w, share) for w, share in ranked[: cfg.max_workloads] if not complete(w.key())]
        family_error: dict[str, float] = {}
        since_fit = 0
        while pending:
            if time.monotonic() > deadline:
                if adaptive:
                    say(f"kernel budget spent; {len(pending)} kernels have candidates left to the predictor")
                return
            index = 0
            if adaptive:
                if not family_error or since_fit >= cfg.adaptive_batch:
                    family_error = self._family_errors()
                    since_fit = 0
                    if family_error:
                        say(
                            "predictor error by family (RMSPE): "
                            + ", ".join(f"{f}={e:.3f}" for f, e in sorted(family_error.items()))
                        )
                index = self._adaptive_pick(pending, family_error)
            w, share = pending.pop(index)
            since_fit += 1
            family = kernel_family(w)
            record = self._measure_one(w, share, candidates.get(family, [{"source": "default", "trace": None}]))
            say(describe_record("measured", record))

    def preferred_candidates(self, candidates: dict[str, list[dict[str, Any]]]) -> dict[str, list[int]]:
        """Per family, the tuned candidates most often within 10 % of the fastest on fully measured kernels."""
        wins: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        for record in self._done("measured").values():
            ok = {r["candidate"]: r["timing"]["median_ms"] for r in record["results"] if r["status"] == "ok"}
            if len(ok) < len(candidates.get(record["family"], [None])):
                continue  # a coverage record, not a full measurement
            best = min(ok.values())
            for c, ms in ok.items():
                if c > 0 and ms <= best * 1.1:
                    wins[record["family"]][c] += 1
        out = {}
        for family, options in candidates.items():
            ranked = [c for c, _ in wins[family].most_common()] + list(range(1, len(options)))
            out[family] = list(dict.fromkeys(ranked))[: self.config.coverage_candidates]
        return out

    def _cover_kernels(
        self,
        ranked: list[tuple[Workload, float]],
        candidates: dict[str, list[dict[str, Any]]],
        deadline: float,
        say: Callable[[str], None],
    ) -> None:
        """Every kernel not measured yet: default + preferred candidates timed, every other one checked to replay."""
        cfg = self.config
        preferred = self.preferred_candidates(candidates)
        measured = self._done("measured")
        pending = [(w, share) for w, share in ranked[: cfg.max_workloads] if w.key() not in measured]
        if pending:
            say(f"coverage pass over {len(pending)} kernels: candidates timed per family {preferred}")
        for w, share in pending:
            if time.monotonic() > deadline:
                say("coverage budget spent")
                return
            family = kernel_family(w)
            options = candidates.get(family, [{"source": "default", "trace": None}])
            record = self._measure_one(
                w,
                share,
                options,
                only={0, *preferred.get(family, [])},
                repeat=cfg.coverage_repeat,
                min_repeat_ms=cfg.coverage_min_repeat_ms,
            )
            say(describe_record("covered", record))

    def _time_collapsed(
        self, candidates: dict[str, list[dict[str, Any]]], deadline: float, say: Callable[[str], None]
    ) -> None:
        """Candidates the coverage pass only checked to replay whose tilings collapsed there: timed, by rank."""
        timed = {
            (r["key"], int(x["candidate"]))
            for r in self._kernel_records()
            for x in r["results"]
            if x["status"] != "unmeasured"
        }
        wanted = collapsed_schedules(
            self._kernel_records(), candidates, wanted=lambda key, candidate: (key, candidate) not in timed
        )
        if wanted:
            say(
                f"timing {sum(len(cs) for _, cs in wanted.values())} schedules whose tilings collapsed on "
                f"{len(wanted)} kernels"
            )
        share = {r["key"]: float(r.get("share", 0.0)) for r in self._kernel_records()}
        for key, (w, cs) in wanted.items():
            if time.monotonic() > deadline:
                say("kernel budget spent before every collapsed schedule was timed")
                return
            options = candidates.get(kernel_family(w), [{"source": "default", "trace": None}])
            say(describe_record("measured", self._measure_one(w, share[key], options, only=cs, others=False)))

    def _check_replays(
        self,
        ranked: list[tuple[Workload, float]],
        candidates: dict[str, list[dict[str, Any]]],
        say: Callable[[str], None],
    ) -> None:
        """Kernels the budget left untimed: check which tuned schedules replay on them (cheap; not budgeted).

        Without it, a tuned schedule of such a kernel is unverified and the latency model never
        offers it; with it, the schedules that replay are offered at the predictor's latency.
        The pooling + classifier kernels are timed instead: they have no other schedule, run in
        every subnet, and their few MACs rank them last, while the predictor, which has no kernel
        like them to learn from, put them at 10x their time.
        """
        measured = self._done("measured")
        pending = [(w, share) for w, share in ranked[: self.config.max_workloads] if w.key() not in measured]
        if pending:
            say(f"checking which schedules replay on the {len(pending)} kernels left untimed")
        for w, share in pending:
            options = candidates.get(kernel_family(w), [{"source": "default", "trace": None}])
            if w.kind != "pool_fc":
                self._measure_one(w, share, options, only=set())
        measured = self._done("measured")
        for w, share in ranked[: self.config.max_workloads]:
            record = measured.get(w.key())
            if w.kind == "pool_fc" and not (record and any(r["status"] == "ok" for r in record["results"])):
                say(describe_record("measured", self._measure_one(w, share, [{"source": "default", "trace": None}])))

    def _measure_transposes(
        self, ranked: list[tuple[Workload, float]], deadline: float, say: Callable[[str], None]
    ) -> None:
        """Time the layout change of every activation shape, both directions (largest and smallest first).

        Past the deadline only the first few shapes are timed: the latency model fits the rest.
        """
        from codesign.latency.transposes import activation_shapes, change_fits, layout_changes, transpose_key
        from codesign.profile import tvm_backend as tb

        cfg = self.config
        done = self._done("transpose")
        shapes = activation_shapes(w for w, _ in ranked[: cfg.max_workloads])
        order = [shape for pair in zip(shapes, reversed(shapes), strict=True) for shape in pair]
        order = list(dict.fromkeys(order))
        changes = layout_changes(cfg.layouts)
        pending = [
            (c, r, f, t)
            for c, r in order
            for f, t in changes
            if change_fits(c, f, t) and transpose_key(c, r, t, f) not in done
        ]
        if pending:
            say(f"timing {len(pending)} layout changes (transposes and packing between kernels)")
        timed = len(done)
        for channels, resolution, from_layout, to_layout in pending:
            if time.monotonic() > deadline and timed >= 4 * len(changes):
                say("transpose budget spent; the latency model fits the shapes left")
                return

            def measure(
                channels: int = channels,
                resolution: int = resolution,
                to_layout: str = to_layout,
                src: str = from_layout,
            ) -> Any:
                task = tb.transpose_task(channels, resolution, cfg.target, to_layout=to_layout, from_layout=src)
                return tb.time_kernel(
                    self._session.load(tb.build_kernel(task, cfg.target)),
                    task,
                    device=self._session.device,
                    repeat=cfg.coverage_repeat,
                    min_repeat_ms=cfg.coverage_min_repeat_ms,
                ).to_dict()

            timing, error = with_retries(measure, attempts=cfg.attempts)
            self.journal.append(
                {
                    "type": "transpose",
                    "key": transpose_key(channels, resolution, to_layout, from_layout),
                    "channels": channels,
                    "resolution": resolution,
                    "from_layout": from_layout,
                    "to_layout": to_layout,
                    "status": "ok" if timing else "failed",
                    "timing": timing,
                    "error": error,
                }
            )
            timed += 1

    def _build(self, make: Callable[[], Any], timeout_s: float) -> Any:
        """A kernel built and loaded where it is timed: here in a child process with a time limit, or remotely."""
        from codesign.profile import tvm_backend as tb

        if self._rpc() is None:
            return tb.build_in_child(make, timeout_s=timeout_s)
        return self._session.load(make())

    def measurement_rows(self) -> list[tuple[Workload, int, float]]:
        """Every successful kernel measurement as ``(workload, candidate, median_ms)``."""
        from codesign.profile.fitting import measurement_rows

        return measurement_rows(self._kernel_records())

    def _family_errors(self) -> dict[str, float]:
        from codesign.latency.predictor import grouped_cross_validation
        from codesign.profile.fitting import schedule_tilings

        rows = self.measurement_rows()
        if len({w for w, _, _ in rows}) < 10:
            return {}
        tilings = schedule_tilings(self.candidates(), self._kernel_records())
        predicted, measured = grouped_cross_validation(rows, folds=4, seed=self.config.seed, tilings=tilings)
        errors: dict[str, list[float]] = collections.defaultdict(list)
        for (w, _, _), p, m in zip(rows, predicted, measured, strict=True):
            if np.isfinite(p):
                errors[kernel_family(w)].append(p / m - 1.0)
        return {f: float(np.sqrt(np.mean(np.square(e)))) for f, e in errors.items()}

    @staticmethod
    def _adaptive_pick(pending: list[tuple[Workload, float]], family_error: dict[str, float]) -> int:
        """Index of the next kernel: the most important one of the family with the most error x share left."""
        if not family_error:
            return 0
        left: dict[str, float] = collections.defaultdict(float)
        for w, share in pending:
            left[kernel_family(w)] += share
        worst = max(left, key=lambda f: family_error.get(f, max(family_error.values())) * (left[f] + 1e-6))
        return next(i for i, (w, _) in enumerate(pending) if kernel_family(w) == worst)

    # ------------------------------------------------------------------ whole models
    def calibration_genomes(self, candidates: dict[str, list[dict[str, Any]]]) -> list[tuple[Genome, str]]:
        """Random subnets, each with how it is scheduled: half as the search will ("fastest"), half "random".

        Even ones take, per kernel, the schedule and layout a provisional model of the kernels measured
        so far finds fastest (:meth:`LatencyModel.fastest_schedules`): the subnets the search returns,
        whose latency the calibration must get right, including whatever optimism choosing the fastest
        of predicted candidates brings. Odd ones take a random schedule seen to build and run on each
        kernel, or a default lowering, so the calibration also sees schedules the search explores.
        """
        from codesign.latency.positions import PositionTable
        from codesign.profile.fitting import provisional_model

        positions = PositionTable(self.space)
        measured = self._kernel_results()
        model = provisional_model(
            self.space, candidates, self._kernel_records(), list(self._done("transpose").values())
        )
        rng = np.random.default_rng(self.config.seed + 1)
        genomes = []
        for i in range(self.config.calibration_models):
            g = Genome.random(self.space, rng).canonical(self.space)
            if i % 2 == 0 and model is not None:
                genomes.append((model.fastest_schedules(g), "fastest"))
                continue
            v = g.to_vector(self.space)[None, :]
            ids = positions.workload_ids(v)[0]
            genes = []
            # a network mixes NCHW with at most one other layout (never NHWC with a packed one)
            others = [name for name in self.config.layouts if name != "NCHW"]
            allowed = {"NCHW", others[int(rng.integers(len(others)))]} if others else {"NCHW"}
            for p, position in enumerate(positions.positions):
                count = max(1, len(candidates.get(position.family, [None])))
                w = positions.workloads[ids[p]]
                results = measured.get(w.key(), {})
                # usable: a default lowering, or a schedule seen to build and run on this kernel (a schedule
                # only checked to replay may send code generation into a build that never ends)
                options = candidates.get(position.family, [])
                valid = [
                    c
                    for c in range(count)
                    if c == 0
                    or (
                        c < len(options)
                        and str(options[c].get("layout", "NCHW")) in allowed
                        and fits_layout(str(options[c].get("layout", "NCHW")), w.in_channels, w.out_channels)
                        and (options[c]["trace"] is None or results.get(c, {}).get("status") == "ok")
                    )
                ]
                genes.append(int(valid[int(rng.integers(len(valid)))]) if valid else 0)
            genomes.append((Genome(**{**g.__dict__, "schedules": tuple(genes)}), "random"))
        return genomes

    def time_candidates(
        self,
        wanted: dict[str, tuple[Workload, set[int]]],
        candidates: dict[str, list[dict[str, Any]]],
        *,
        deadline: float,
        say: Callable[[str], None],
    ) -> None:
        """Time the given schedule candidates of each kernel (by key), those not timed in the journal yet."""
        from codesign.profile.session import open_session

        done = {
            (r["key"], int(x["candidate"])) for r in self.journal if r.get("type") == "measured" for x in r["results"]
        }
        pending = {k: (w, {c for c in cs if (k, c) not in done}) for k, (w, cs) in wanted.items()}
        pending = {k: v for k, v in pending.items() if v[1]}
        say(
            f"timing {sum(len(cs) for _, cs in pending.values())} kernel/schedule pairs "
            f"({sum(len(cs) for _, cs in wanted.values())} wanted, on {len(wanted)} kernels)"
        )
        self._session = open_session(self.config.target, self._rpc())
        try:
            for key in pending:  # in the order wanted: under a deadline, the first ones
                if time.monotonic() > deadline:
                    say("budget spent before every wanted kernel was timed")
                    return
                w, cs = pending[key]
                options = candidates.get(kernel_family(w), [{"source": "default", "trace": None}])
                say(describe_record("measured", self._measure_one(w, 0.0, options, only=cs, others=False)))
        finally:
            self._session.close()

    def _measure_models(
        self, candidates: dict[str, list[dict[str, Any]]], deadline: float, say: Callable[[str], None]
    ) -> None:
        self.measure_models(self.calibration_genomes(candidates), candidates, deadline=deadline, say=say)

    def measure_models(
        self,
        genomes: list[tuple[Genome, str]],
        candidates: dict[str, list[dict[str, Any]]],
        *,
        deadline: float,
        say: Callable[[str], None],
        prefix: str = "model",
    ) -> None:
        """Compile each genome whole under its schedule genes and time it; journaled as ``prefix000``, ...

        Each genome comes with how its schedules were chosen ("fastest", "random"), recorded with it.
        Genomes are compiled ``model_batch`` at a time, and each batch is timed with its windows
        interleaved (:func:`~codesign.compiler.tvm_compile.time_executables`), so every subnet of
        a batch is timed over the same seconds of the machine.
        """
        from codesign.compiler.tvm_compile import compile_prepared, compile_subnet, prepare_subnet, time_executables
        from codesign.latency.positions import PositionTable
        from codesign.profile import tvm_backend as tb

        cfg = self.config
        done = self._done("model")
        positions = PositionTable(self.space)
        pending = [(i, g, s) for i, (g, s) in enumerate(genomes) if f"{prefix}{i:03d}" not in done]
        for first in range(0, len(pending), max(1, cfg.model_batch)):
            if time.monotonic() > deadline:
                say("budget spent before every calibration model was measured")
                return
            batch = pending[first : first + max(1, cfg.model_batch)]
            compiled: list[tuple[int, Genome, str, Any, float]] = []
            for i, genome, schedules in batch:
                if compiled and time.monotonic() > deadline:
                    break  # time what is compiled; the next batch reports the spent budget
                started = time.monotonic()

                def build(genome: Genome = genome) -> Any:
                    if self._rpc() is None:  # torch runs here, only TVM's compilation in the child
                        mod, database = prepare_subnet(self.space, genome, cfg.target, candidates, positions=positions)
                        return tb.build_in_child(
                            lambda: compile_prepared(mod, database, cfg.target), timeout_s=cfg.model_build_timeout_s
                        )
                    return compile_subnet(self.space, genome, cfg.target, candidates, positions=positions)

                executable, error = with_retries(build, attempts=cfg.attempts)
                if executable is None:
                    self._journal_model(f"{prefix}{i:03d}", genome, schedules, None, error, time.monotonic() - started)
                    say(f"whole model {prefix}{i:03d} ({i + 1}/{len(genomes)}): failed: {error}")
                    continue
                compiled.append((i, genome, schedules, executable, time.monotonic() - started))
            if not compiled:
                continue
            timing_started = time.monotonic()
            timings, error = with_retries(
                functools.partial(
                    time_executables,
                    [(e, g.resolution) for _, g, _, e, _ in compiled],
                    self.space,
                    windows=max(cfg.repeat, 20),
                    session=self._session if self._rpc() is not None else None,
                ),
                attempts=cfg.attempts,
            )
            timing_share = (time.monotonic() - timing_started) / len(compiled)
            for position, (i, genome, schedules, _, build_s) in enumerate(compiled):
                timing = timings[position].to_dict() if timings else None
                key = f"{prefix}{i:03d}"
                self._journal_model(key, genome, schedules, timing, error, build_s + timing_share)
                say(
                    f"whole model {key} ({i + 1}/{len(genomes)}): "
                    + (f"{timing['median_ms']:.3f} ms" if timing else f"failed: {error}")
                )

    def _journal_model(
        self,
        key: str,
        genome: Genome,
        schedules: str,
        timing: dict[str, Any] | None,
        error: str | None,
        seconds: float,
    ) -> None:
        self.journal.append(
            {
                "type": "model",
                "key": key,
                "genome": genome.to_dict(),
                "schedules": schedules,
                "status": "ok" if timing else "failed",
                "timing": timing,
                "error": None if timing else error,
                "seconds": round(seconds, 2),
            }
        )


def profile_from_journal(space: SearchSpace, config: ProfileConfig, work_dir: str | Path) -> Any:
    """Assemble a :class:`~codesign.profile.profile_file.HardwareProfile` from a run's journal."""
    from codesign.profile.fitting import fit_predictor
    from codesign.profile.profile_file import (
        HardwareProfile,
        SoftwareInfo,
        current_command,
        describe_host_cpu,
        now_utc,
    )
    from codesign.profile.tvm_backend import software_versions

    journal = Journal(Path(work_dir) / "journal.jsonl")
    measurements = [r for r in journal if r.get("type") == "measured"]
    tuned = [r for r in journal if r.get("type") == "tuned"]
    models = [r for r in journal if r.get("type") == "model"]
    transposes = [r for r in journal if r.get("type") == "transpose"]
    invocations = [r for r in journal if r.get("type") == "invocation"]
    candidates = families_from_records(tuned)
    failed = sum(1 for m in measurements for r in m["results"] if r["status"] == "failed")
    versions = software_versions()
    if config.rpc_tracker:
        from codesign.profile.profile_file import DeviceInfo

        device = DeviceInfo(
            kind="gpu" if config.target.get("kind") == "cuda" else "cpu",
            name=f"rpc:{config.rpc_key}@{config.rpc_tracker}",
            cores=int(config.target.get("num-cores", 0)),
            arch=str(config.target.get("mcpu") or config.target.get("arch") or ""),
        )
    else:
        device = describe_host_cpu(str(config.target.get("mcpu", "")))
    return HardwareProfile(
        target=dict(config.target),
        device=device,
        software=SoftwareInfo(**versions),
        space=space.to_dict(),
        command=current_command(),
        created=now_utc(),
        measurements=measurements,
        models=models,
        predictor=fit_predictor(space, candidates, measurements, models, seed=config.seed, transposes=transposes),
        tuning_records={
            "families": candidates,
            "tuning_runs": [{k: v for k, v in r.items() if k != "traces"} for r in tuned],
        },
        transposes=transposes,
        validation={
            "workloads_total": len(enumerate_workloads(space)),
            "workloads_measured": len(measurements),
            "failed_measurements": failed,
            "invocations": [{k: v for k, v in r.items() if k not in ("type", "key")} for r in invocations],
            "measurement_minutes": round(sum(r.get("seconds", 0.0) for r in invocations) / 60.0, 2),
            "config": asdict(config),
        },
    )


def record_tilings(profile: Any, *, progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], int]:
    """``profile``'s kernel measurements with the ``tilings`` of every replayed pair recorded that lacked them,
    and how many were added.

    A profile measured before the profiler recorded them gets them here: each tuned schedule the
    profiler timed or saw replay is replayed again on its kernel (TVM, no device, no build: about
    0.05 s a pair) and the tilings it takes are read (:func:`~codesign.profile.tvm_backend.replayed_tilings`).
    A pair that no longer replays keeps its record as it was.
    """
    from codesign.profile import tvm_backend as tb

    say = progress or (lambda _msg: None)
    families = profile.tuning_records.get("families", {})
    missing = sum(
        1
        for record in profile.measurements
        for r in record["results"]
        if r["status"] in ("ok", "unmeasured")
        and "tilings" not in r
        and (options := families.get(str(record.get("family")), []))
        and int(r["candidate"]) < len(options)
        and options[int(r["candidate"])].get("trace") is not None
    )
    if missing:
        say(f"replaying {missing} kernel/schedule pairs to record the tilings they take")
    tasks: dict[tuple[str, str], Any] = {}
    found: dict[tuple[str, int], list[list[int]] | None] = {}
    updated, added = [], 0
    for record in profile.measurements:
        options = families.get(str(record.get("family")), [])
        results = []
        for result in record["results"]:
            c = int(result["candidate"])
            trace = options[c].get("trace") if c < len(options) else None
            if result["status"] not in ("ok", "unmeasured") or "tilings" in result or trace is None:
                results.append(result)
                continue
            pair = (str(record["key"]), c)
            if pair not in found:
                layout = str(options[c].get("layout", "NCHW"))
                try:
                    if (pair[0], layout) not in tasks:
                        workload = Workload.from_dict(record["workload"])
                        tasks[(pair[0], layout)] = tb.workload_tasks(workload, profile.target, layout=layout)
                    found[pair] = tb.replayed_tilings(tasks[(pair[0], layout)], trace)
                except Exception:  # a schedule that no longer replays: its record stays as measured
                    found[pair] = None
            if found[pair] is None:
                results.append(result)
            else:
                results.append({**result, "tilings": found[pair]})
                added += 1
        updated.append({**record, "results": results})
    return updated, added


def refit_calibration(
    profile: Any, *, kernel_predictor: bool = False, progress: Callable[[str], None] | None = None
) -> Any:
    """``profile`` (a :class:`~codesign.profile.profile_file.HardwareProfile`) with its whole-model calibration fitted
    again on the subnets it holds (nothing is measured).

    The kernel table and predictor are kept, unless ``kernel_predictor``: then the tilings of its
    replayed pairs are recorded where missing (:func:`record_tilings`, needs TVM but no device) and
    the kernel predictor is fitted again on its kernel timings first, which fills the untimed pairs
    anew. The re-fit is appended to the calibration's history.
    """
    from dataclasses import replace

    from codesign.profile.fitting import fit_calibration, fit_predictor
    from codesign.profile.profile_file import current_command, now_utc

    started = time.monotonic()
    space = SearchSpace.from_dict(profile.space)
    families = dict(profile.tuning_records.get("families", {}))
    predictor = dict(profile.predictor or {})
    if not predictor.get("filled"):
        raise CodesignError("the profile has no fitted kernel predictor to re-fit a calibration on")
    if not any(m.get("status") == "ok" for m in profile.models):
        raise CodesignError("the profile holds no timed whole subnets to fit a calibration on")
    history = list(predictor.get("calibration", {}).get("recalibrations", []))
    measurements, tilings_added = list(profile.measurements), 0
    if kernel_predictor:
        measurements, tilings_added = record_tilings(profile, progress=progress)
        seed = int(profile.validation.get("config", {}).get("seed", 0))
        refit = fit_predictor(space, families, measurements, [], seed=seed, transposes=profile.transposes)
        if refit is None:
            raise CodesignError("the profile holds too few kernel timings to fit a kernel predictor on")
        predictor = {**refit, "calibration": predictor["calibration"]}
    predictor.update(fit_calibration(space, families, measurements, profile.models, predictor, profile.transposes))
    history.append(
        {
            "created": now_utc(),
            "command": current_command(),
            "refit_only": True,
            **({"kernel_predictor_refit": True, "tilings_recorded": tilings_added} if kernel_predictor else {}),
            "models_added": 0,
            "models_retimed": 0,
            "kernel_records_added": 0,
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    predictor["calibration"] = {**predictor["calibration"], "recalibrations": history}
    return replace(profile, measurements=measurements, predictor=predictor)


CalibrationSampling = Literal["random", "spread"]
KernelSchedules = Literal["fastest", "random", "collapsed", "disturbed"]


def spread_architectures(
    model: Any, count: int, rng: np.random.Generator, *, exclude: Collection[str] = (), pool: int = 40
) -> list[Genome]:
    """``count`` architectures whose predicted latencies (at the fastest schedules) span the space's range.

    The space's smallest and largest subnets come first (the range's ends, which random draws almost
    never reach, and where a calibration fitted without them extrapolates); the rest are picked from
    ``pool`` x ``count`` draws nearest to latencies evenly spaced on a log scale between the two.
    Half the draws are uniform, half :meth:`Genome.sized` at a uniform size level, so the pool
    reaches both ends of the range (uniform draws cluster in its middle). Architectures in
    ``exclude`` (JSON of :meth:`Genome.architecture`) are skipped: the profile measured them already.
    """
    space = model.space
    ends = [Genome.smallest(space).canonical(space), Genome.largest(space).canonical(space)]
    drawn = [
        (Genome.random(space, rng) if k % 2 else Genome.sized(space, float(rng.uniform()), rng)).canonical(space)
        for k in range(pool * count)
    ]
    candidates, seen = [], set(exclude)
    for g in ends + drawn:
        if g.to_json() not in seen:
            seen.add(g.to_json())
            candidates.append(g)
    if not candidates or count < 1:
        return []
    latency = np.log(model.predict([model.fastest_schedules(g) for g in candidates]))
    low, high = float(np.log(model.predict([model.fastest_schedules(ends[0])])[0])), float(latency.max())
    chosen = [i for i, g in enumerate(candidates[:2]) if g in ends][:count]
    free = np.ones(len(candidates), dtype=bool)
    free[chosen] = False
    for goal in np.linspace(low, high, count - len(chosen) + 2)[1:-1]:
        if not free.any():
            break
        i = int(np.argmin(np.where(free, np.abs(latency - goal), np.inf)))
        chosen.append(i)
        free[i] = False
    return [candidates[i] for i in chosen]


RetimeRule = Literal["replace", "fastest"]


def retimed_record(old: dict[str, Any], new: dict[str, Any], *, rule: RetimeRule, label: str) -> dict[str, Any]:
    """A profile's whole-subnet record after re-timing it (``new``, a journal record) under ``rule``.

    ``replace``: the new timing (or failure) replaces the old. ``fastest``: the timing with the
    lower median of the two is kept, and ``timing_occasions_ms`` lists the medians of all occasions;
    a failed re-timing keeps the old record's timing.
    """
    if rule == "replace":
        return {**old, **{k: new[k] for k in ("status", "timing", "error", "seconds")}, "retimed": label}
    if rule != "fastest":
        raise CodesignError(f"unknown re-timing rule {rule!r}; use replace or fastest")
    occasions = list(old.get("timing_occasions_ms") or ([old["timing"]["median_ms"]] if old.get("timing") else []))
    if new.get("status") != "ok" or not new.get("timing"):
        return {**old, "timing_occasions_ms": occasions, "retimed": label}
    occasions.append(new["timing"]["median_ms"])
    if old.get("status") == "ok" and old.get("timing") and old["timing"]["median_ms"] <= new["timing"]["median_ms"]:
        return {**old, "timing_occasions_ms": occasions, "retimed": label}
    return {
        **old,
        **{k: new[k] for k in ("status", "timing", "error")},
        "timing_occasions_ms": occasions,
        "retimed": label,
    }


def at_profile_speed(
    record: dict[str, Any], factor: float, *, single_thread_factor: float | None = None
) -> dict[str, Any]:
    """A journaled kernel or whole-subnet record with every timing (``*_ms``) divided by ``factor``, the
    device's speed at measuring relative to its profile's (itself when both factors are 1 or absent);
    ``speed_factor`` says by what. A kernel record's results at TVM's default lowering (one thread) are
    divided by ``single_thread_factor`` instead, where given (``single_thread_speed_factor``)."""
    one_thread = factor if single_thread_factor is None else single_thread_factor
    if factor == 1.0 and one_thread == 1.0:
        return record

    def scaled(value: Any, by: float, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scaled(v, by, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scaled(v, by, key) for v in value]
        if key.endswith("_ms") and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) / by
        return value

    out = dict(record)
    if "timing" in record:
        out["timing"] = scaled(record["timing"], factor)
    if "results" in record:
        out["results"] = [
            scaled(result, one_thread if result.get("source") == "default" else factor) for result in record["results"]
        ]
    out["speed_factor"] = factor
    if single_thread_factor is not None:
        out["single_thread_speed_factor"] = single_thread_factor
    return out


def _journaled_speed_probe(
    profile: Any, profiler: Profiler, subnets: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """The speed probe of this recalibration: from its journal when a killed run already probed, else measured
    here (on the profile's own subnets) and journaled. A probe that says the device was busy is an error."""
    from codesign.profile.profile_file import ProfileError
    from codesign.profile.speed_probe import probe_device_speed

    for record in profiler.journal:
        if record.get("type") == "speed_probe":
            say(f"speed probe from the journal: this machine ran {record['factor']:.3f}x the profile's time")
            return {k: v for k, v in record.items() if k != "type"}
    probe = probe_device_speed(profile, subnets=subnets, kernels=subnets, kernels_alone=True, progress=say)
    say(probe.describe())
    if probe.warning():
        raise ProfileError(f"{probe.warning()}; new timings would not be in the profile's units")
    record = {"type": "speed_probe", "key": "speed_probe", **probe.to_dict()}
    profiler.journal.append(record)
    return {k: v for k, v in record.items() if k != "type"}


def kernel_speed_factors(probe: dict[str, Any] | None) -> tuple[float, float | None]:
    """The factors by which a speed probe record (:meth:`SpeedProbe.to_dict`) divides kernels timed alone: tuned
    ones by its ``factor``, one-thread ones by how one-thread kernels *alone* drifted (``kernels_alone_factor``),
    not by the factor fitted for them inside networks (a probe written before the fit has only the former, as
    ``single_thread_factor``). ``(1.0, None)`` without a probe."""
    if not probe:
        return 1.0, None
    alone = probe.get("kernels_alone_factor", probe.get("single_thread_factor"))
    return float(probe["factor"]), None if alone is None else float(alone)


def kernels_to_time(
    model: Any, architectures: list[Genome], kernel_schedules: KernelSchedules, *, seed: int = 0
) -> dict[str, tuple[Workload, set[int]]]:
    """Per kernel key, the predicted (never timed) schedule candidates ``architectures`` use when scheduled
    ``"fastest"`` (the search's picks) or ``"random"`` (every gene drawn at random, seeded), in the order of
    the architectures: what :func:`recalibrate_profile` times first under its budget."""
    if kernel_schedules == "fastest":
        genomes = [model.fastest_schedules(a) for a in architectures]
    elif kernel_schedules == "random":
        rng = np.random.default_rng(seed + 104729)
        genomes = [model.random_schedules(a, rng) for a in architectures]
    else:
        raise CodesignError(f"unknown kernel schedules {kernel_schedules!r}; use fastest or random")
    wanted: dict[str, tuple[Workload, set[int]]] = {}
    for genome in genomes:
        for key, (workload, candidates) in model.predicted_choices([genome]).items():
            wanted.setdefault(key, (workload, set()))[1].update(candidates)
    return wanted


def collapsed_schedules(
    measurements: list[dict[str, Any]],
    families: dict[str, list[dict[str, Any]]],
    *,
    wanted: Callable[[str, int], bool],
) -> dict[str, tuple[Workload, set[int]]]:
    """Per kernel key, the schedule candidates whose recorded tilings collapsed when replayed on that kernel
    (:func:`~codesign.latency.predictor.collapsed_tilings`) and that ``wanted(key, candidate)`` accepts, the
    kernels that carry most of a random subnet's work first.

    A collapse the kernel predictor has seen timed in that family it can predict; one it has not
    (a channel-block tiling ``[4, 3, 1, 2]`` collapsed to ``[1, 1, 1, 9]`` ran 28x its prediction)
    it cannot, whatever its features, so such pairs are timed rather than predicted. Reads the
    ``tilings`` the profiler recorded (:func:`record_tilings` adds them to an older profile).
    """
    from codesign.latency.predictor import collapsed_tilings, trace_tilings

    found: dict[str, tuple[Workload, set[int], float]] = {}
    for record in measurements:
        options = families.get(str(record.get("family")), [])
        for result in record["results"]:
            c = int(result["candidate"])
            if "tilings" not in result or c >= len(options) or not options[c].get("trace"):
                continue
            if wanted(str(record["key"]), c) and collapsed_tilings(
                trace_tilings(options[c]["trace"]), result["tilings"]
            ):
                workload, candidates, share = found.get(
                    record["key"], (Workload.from_dict(record["workload"]), set(), 0.0)
                )
                found[record["key"]] = (workload, candidates | {c}, max(share, float(record.get("share", 0.0))))
    ordered = sorted(found.items(), key=lambda item: -item[1][2])
    return {key: (workload, candidates) for key, (workload, candidates, _) in ordered}


def collapsed_pairs(profile: Any, model: Any) -> dict[str, tuple[Workload, set[int]]]:
    """The profile's predicted (never timed) pairs whose tilings collapsed (:func:`collapsed_schedules`): what
    :func:`recalibrate_profile` times first with ``kernel_schedules="collapsed"``."""
    from codesign.latency.model import PREDICTED

    rows = {w.key(): i for i, w in enumerate(model.positions.workloads)}

    def predicted(key: str, candidate: int) -> bool:
        row = rows.get(key)
        return row is not None and candidate < model.sources.shape[1] and model.sources[row, candidate] == PREDICTED

    return collapsed_schedules(profile.measurements, profile.tuning_records.get("families", {}), wanted=predicted)


def disturbed_pairs(measurements: list[dict[str, Any]]) -> dict[str, tuple[Workload, set[int]]]:
    """Per kernel key, the schedule candidates whose latest timing was disturbed while timed
    (:func:`~codesign.latency.model.timing_disturbed`; the latency model predicts those pairs instead), the kernels
    that carry most of a random subnet's work first: what :func:`recalibrate_profile` times again with
    ``kernel_schedules="disturbed"``. A pair timed again steadily in a later record is not wanted."""
    latest: dict[tuple[str, int], bool] = {}
    workloads: dict[str, Workload] = {}
    share: dict[str, float] = collections.defaultdict(float)
    for record in measurements:
        key = str(record["key"])
        share[key] = max(share[key], float(record.get("share", 0.0)))
        for result in record["results"]:
            if result.get("status") == "ok" and result.get("timing"):
                latest[(key, int(result["candidate"]))] = timing_disturbed(result["timing"])
                workloads.setdefault(key, Workload.from_dict(record["workload"]))
    wanted: dict[str, tuple[Workload, set[int]]] = {}
    for (key, candidate), disturbed in latest.items():
        if disturbed:
            wanted.setdefault(key, (workloads[key], set()))[1].add(candidate)
    return dict(sorted(wanted.items(), key=lambda item: -share[item[0]]))


def recalibrate_profile(
    profile: Any,
    *,
    models: int,
    work_dir: str | Path,
    seed: int = 0,
    budget_minutes: float = 30.0,
    model_build_timeout_s: float = 180.0,
    time_kernels: bool = True,
    retime_models: bool = False,
    retime_rule: RetimeRule = "replace",
    sampling: CalibrationSampling = "random",
    kernel_schedules: KernelSchedules = "fastest",
    speed_probe: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """``profile`` refined where the search goes: its picks' kernels timed, whole subnets measured, all re-fitted.

    ``models`` random architectures are scheduled the way the search schedules them (each kernel at
    the candidate the profile's calibrated model finds fastest). With ``time_kernels``, every
    kernel/schedule pair those picks use at a predicted latency is timed first and the kernel
    predictor re-fitted, and the architectures are scheduled again with the refined model: the
    fastest of several predictions is the most optimistic one, and the search picks exactly those.
    Then each pick is compiled whole and timed, and the calibration is re-fitted on all the
    profile's whole subnets. Everything measured is journaled in ``work_dir``: rerunning resumes.

    With ``retime_models``, every whole subnet the profile already holds is compiled and timed
    again first and its new timing replaces the old one (its genome and key stay): for a profile
    whose subnets were measured before a change to how codesign compiles them, since those timings
    are the ground truth the calibration is fitted on and judged by. ``retime_rule="fastest"``
    instead keeps, of the recorded and the new timing, the one with the lower median, and lists
    the medians of every occasion under ``timing_occasions_ms``: for a machine whose speed is
    bimodal over minutes (on the 2-vCPU znver4 VMs a search-scheduled subnet's slowest of three
    occasions was a median 1.46x its fastest, a random-scheduled one's 1.06x), so that the
    calibration is fitted on one state, the fast one; ``--speed-probe`` scales for the state at use.

    ``sampling="spread"`` takes the architectures from :func:`spread_architectures` instead of at
    random: the space's smallest and largest subnets and others spanning the latency range between,
    for a calibration that holds at the range's ends (random draws cluster in its middle).

    ``kernel_schedules="collapsed"`` times, instead, every predicted pair whose tilings collapsed on
    replay (:func:`collapsed_pairs`), the most important kernels first.

    ``kernel_schedules="disturbed"`` times again, instead, every pair whose recorded timing was disturbed
    (:func:`disturbed_pairs`; the model predicts those until a steady timing replaces them).

    ``kernel_schedules="random"`` times, instead of the picks' kernels, the predicted pairs of the
    architectures with every schedule gene drawn at random (:meth:`LatencyModel.random_schedules`),
    subnet by subnet until the budget is spent: the pairs a search evolving schedule genes meets,
    which the kernel predictor otherwise fills from the few kernels the profile timed under every
    candidate. The whole subnets measured afterwards are still the search's picks.

    ``speed_probe`` > 0 first re-times that many of the profile's own subnets and default-lowered
    kernels here (:func:`~codesign.profile.speed_probe.probe_device_speed`) and divides every new
    kernel and whole-subnet timing by the factor found (:func:`at_profile_speed`: one-thread kernels
    by the kernels' factor, a subnet by the mix of both its kernels predict), so that they join the profile
    in its units: a shared VM runs 10-25% off the speed its profile recorded, and timings of two
    speeds in one table bias the kernel predictor and the calibration alike. The probe is journaled
    (a resumed run reuses it) and recorded with the recalibration.
    """
    from dataclasses import replace

    from codesign.latency.model import LatencyModel
    from codesign.profile.fitting import fit_calibration, fit_predictor
    from codesign.profile.profile_file import ProfileError, current_command, now_utc
    from codesign.profile.speed_probe import model_at_probed_speed

    say = progress or (lambda _msg: None)
    if not profile.predictor or "filled" not in profile.predictor:
        raise ProfileError("the profile has no fitted kernel predictor to recalibrate; re-run `codesign profile`")
    space = SearchSpace.from_dict(profile.space)
    families = profile.tuning_records.get("families", {})
    history = list(profile.predictor.get("calibration", {}).get("recalibrations", []))
    prefix = f"recalibration{len(history)}-"  # each recalibration of a profile adds models of its own
    rng = np.random.default_rng(seed + 7919 + 1000 * len(history))  # not the profile's own calibration subnets
    model = LatencyModel.from_profile(profile)  # its picks are the search's: calibration costs transposes too
    if sampling == "spread":
        measured = {Genome.from_dict(m["genome"]).architecture(space).to_json() for m in profile.models}
        architectures = spread_architectures(model, models, rng, exclude=measured)
    elif sampling == "random":
        architectures = [Genome.random(space, rng).canonical(space) for _ in range(models)]
    else:
        raise ProfileError(f"unknown calibration sampling {sampling!r}; use random or spread")
    config = ProfileConfig(
        target=dict(profile.target),
        calibration_models=models,
        model_build_timeout_s=model_build_timeout_s,
        seed=seed,
    )
    profiler = Profiler(space, config, work_dir)
    started = time.monotonic()
    deadline = started + budget_minutes * 60.0
    if speed_probe and retime_models:
        raise ProfileError("a speed probe scales new timings to the profile's speed; re-timed models replace them")
    probe = _journaled_speed_probe(profile, profiler, speed_probe, say) if speed_probe else None
    factor, single_thread_factor = kernel_speed_factors(probe)
    measurements = list(profile.measurements)
    predictor = dict(profile.predictor)
    if time_kernels and (architectures or kernel_schedules in ("collapsed", "disturbed")):
        # the kernel predictor reads each replayed pair's tilings; a profile measured before they were recorded
        measurements, _ = record_tilings(replace(profile, measurements=measurements), progress=say)
        if kernel_schedules == "collapsed":
            wanted = collapsed_pairs(replace(profile, measurements=measurements), model)
        elif kernel_schedules == "disturbed":
            wanted = disturbed_pairs(measurements)
        else:
            wanted = kernels_to_time(model, architectures, kernel_schedules, seed=seed + len(history))
        profiler.time_candidates(wanted, families, deadline=deadline, say=say)
        # a work dir reused from an earlier round holds kernels the profile already has
        timed = [
            at_profile_speed(r, factor, single_thread_factor=single_thread_factor)
            for r in profiler.journal
            if r.get("type") == "measured"
        ]
        added_kernels = [r for r in timed if r not in profile.measurements]
        if added_kernels:
            measurements += added_kernels
            refit = fit_predictor(
                space, families, measurements, profile.models, seed=seed, transposes=profile.transposes
            )
            if refit is not None:
                predictor = {**refit, "calibration": predictor.get("calibration", refit["calibration"])}
                model = LatencyModel.from_profile(replace(profile, measurements=measurements, predictor=predictor))
    kept = list(profile.models)
    if retime_models:
        retimed_prefix = f"{prefix}retimed-"
        old = [m for m in kept if m.get("genome")]
        say(f"re-timing the profile's {len(old)} whole subnets")
        profiler.measure_models(
            [(Genome.from_dict(m["genome"]), str(m.get("schedules", "fastest"))) for m in old],
            families,
            deadline=deadline,
            say=say,
            prefix=retimed_prefix,
        )
        retimed = {r["key"]: r for r in profiler.journal if r.get("type") == "model"}
        replaced = {}
        for i, m in enumerate(old):
            new = retimed.get(f"{retimed_prefix}{i:03d}")
            if new is not None:
                replaced[m["key"]] = retimed_record(m, new, rule=retime_rule, label=prefix.rstrip("-"))
        kept = [replaced.get(m.get("key"), m) for m in kept]
    genomes = [(model.fastest_schedules(a), "fastest") for a in architectures]
    profiler.measure_models(genomes, families, deadline=deadline, say=say, prefix=prefix)
    probed_model = None if probe is None else model_at_probed_speed(model, probe)

    def subnet_factor(record: dict[str, Any]) -> float:
        """The probe's factor for this subnet: its one-thread kernels' share of the time at the kernels' factor."""
        if probed_model is None or "genome" not in record:
            return factor
        genome = [Genome.from_dict(record["genome"])]
        return float(probed_model.predict(genome)[0] / model.predict(genome)[0])

    added = [
        at_profile_speed(r, subnet_factor(r))
        for r in profiler.journal
        if r.get("type") == "model" and r["key"].startswith(prefix) and not r["key"].startswith(f"{prefix}retimed-")
    ]
    added_keys = {r["key"] for r in added}
    all_models = [m for m in kept if m.get("key") not in added_keys] + added
    section = {**predictor}
    section.update(fit_calibration(space, families, measurements, all_models, section, profile.transposes))
    history.append(
        {
            "created": now_utc(),
            "command": current_command(),
            "models_added": sum(1 for r in added if r["status"] == "ok"),
            "models_retimed": sum(1 for m in all_models if m.get("retimed") == prefix.rstrip("-")),
            "kernel_records_added": len(measurements) - len(profile.measurements),
            "kernel_schedules": kernel_schedules if time_kernels else None,
            "speed_probe": probe,
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    section["calibration"] = {**section["calibration"], "recalibrations": history}
    return replace(profile, measurements=measurements, models=all_models, predictor=section)
