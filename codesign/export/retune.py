"""Per-export re-tuning: each kernel of the exported subnet tuned on its own, kept only where it is faster.

A profile tunes a few representatives per kernel family and replays their schedules onto the
other shapes of the family, which fits some shapes well and others badly (``tools/bench_retune.py``
measured a 1x1 convolution of the largest subnet at 86 us under its replayed schedule and 13 us
after 32 trials of its own). Re-tuning spends MetaSchedule trials on every distinct kernel of one
subnet, slowest first by the latency model, in two independent runs (:func:`tuning_runs`: one
warm-started from the profile's schedule, one from scratch), and times the kernel's own best schedule against the
one the profile chose (or TVM's default lowering), built and timed here side by side. The faster
one goes into the export's schedule database: a re-tuned record is committed with a lower
``run_secs`` than the profile's placeholders, so ``compile_relax`` picks it.

Each finished kernel is appended to a journal (JSON lines) before the next starts, so a killed
export resumes without re-tuning what it finished, and the journal ships in the artifact as the
record of what was tuned.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import ExportError
from codesign.latency.workloads import Workload
from codesign.profile.journal import Journal, read_journal

JOURNAL_VERSION = 2
KEEP_MARGIN = 0.03
"""A re-tuned schedule replaces the chosen one only when at least this much faster (timing noise)."""

RETUNED_RUN_SECS = 1e-7
"""``run_secs`` of a kept re-tuned record: below the profile's placeholder (1e-6), so it wins the query."""


@dataclass(frozen=True)
class RetunedKernel:
    """The outcome for one kernel: its time under the chosen schedule and its own tuned one, and which was kept."""

    workload: str
    layout: str
    task: str
    trials: int
    chosen_ms: float
    tuned_ms: float | None
    kept: str
    seconds: float
    tuned_trace: Any
    error: str | None = None
    """Why tuning gave no schedule (the profile's one stayed), when it failed."""
    runs: tuple[dict[str, Any], ...] = ()
    """Each MetaSchedule run (:class:`TuningRun` fields) with the best time it measured (``tuning_ms``)."""

    @property
    def speedup(self) -> float:
        """Chosen over kept time (1.0 when the chosen schedule stayed)."""
        if self.kept != "tuned" or not self.tuned_ms:
            return 1.0
        return self.chosen_ms / self.tuned_ms

    def summary(self) -> dict[str, Any]:
        """The manifest's line for this kernel (the trace itself stays in the journal)."""
        out = asdict(self)
        del out["tuned_trace"]
        out["speedup"] = round(self.speedup, 4)
        return out


@dataclass(frozen=True)
class KernelToRetune:
    """One distinct (kernel, layout) of the subnet, with the schedule the profile chose and its weight.

    ``predicted_ms`` is the model's time summed over the ``uses`` layers that run this kernel;
    ``measured_ms``, once :func:`order_by_measured_time` has timed it here, one run of it.
    """

    workload: Workload
    layout: str
    chosen_trace: Any
    uses: int
    predicted_ms: float
    measured_ms: float | None = None


def _trace_digest(trace_json: Any) -> str:
    return hashlib.sha256(json.dumps(trace_json, sort_keys=True).encode()).hexdigest()[:16]


def _journal_key(target: dict[str, Any], kernel: KernelToRetune, task_name: str, trials: int) -> str:
    """What makes a journaled outcome reusable: same target, kernel, layout, chosen schedule and trial count."""
    return json.dumps(
        [
            JOURNAL_VERSION,
            sorted(target.items()),
            kernel.workload.key(),
            kernel.layout,
            task_name,
            trials,
            _trace_digest(kernel.chosen_trace),
        ],
        default=str,
    )


def kernels_by_predicted_time(
    model: Any, genome: Any, traces: dict[tuple[Workload, str], Any], workloads: list[Workload]
) -> list[KernelToRetune]:
    """The distinct (kernel, layout) pairs of ``genome``, slowest first by the model's summed per-layer time."""
    by_key = {w.key(): w for w in workloads}
    total: dict[tuple[str, str], float] = {}
    uses: dict[tuple[str, str], int] = {}
    for layer in model.explain(genome)["layers"]:
        if layer["workload"] in by_key:
            key = (layer["workload"], layer["layout"])
            total[key] = total.get(key, 0.0) + float(layer["latency_ms"])
            uses[key] = uses.get(key, 0) + 1
    ordered = sorted(total.items(), key=lambda item: -item[1])
    return [
        KernelToRetune(by_key[name], layout, traces.get((by_key[name], layout)), uses[(name, layout)], ms)
        for (name, layout), ms in ordered
    ]


def order_by_measured_time(
    kernels: list[KernelToRetune], target: dict[str, Any], *, progress: Callable[[str], None] | None = None
) -> list[KernelToRetune]:
    """``kernels`` slowest first by their chosen schedule timed here, times the layers that run each.

    The model's per-kernel predictions can be far off for a schedule replayed from another shape
    (one measured 63 us predicted among the fastest), and a budgeted re-tuning should spend its
    minutes where the time really goes. Timing a chosen schedule costs a build and a short timing.
    """
    from codesign.profile import tvm_backend as tb

    say = progress or (lambda _msg: None)
    say(f"timing the {len(kernels)} kernels under their chosen schedules to re-tune the slowest first")
    timed = []
    for kernel in kernels:
        one_run = sum(
            tb.time_kernel(
                tb.build_from_json(task, target, kernel.chosen_trace), task, repeat=3, min_repeat_ms=20
            ).median_ms
            for task in tb.workload_tasks(kernel.workload, target, layout=kernel.layout)
        )
        timed.append(replace(kernel, measured_ms=one_run))
    return sorted(timed, key=lambda k: -(k.measured_ms or 0.0) * k.uses)


def median_of_alternating(builds: list[Any], task: Any, rounds: int = 2) -> list[float]:
    """Each build's best median over ``rounds`` alternating timing passes (drift hits all alike)."""
    from codesign.profile import tvm_backend as tb

    best = [float("inf")] * len(builds)
    for _ in range(rounds):
        for i, built in enumerate(builds):
            best[i] = min(best[i], tb.time_kernel(built, task, repeat=5, min_repeat_ms=50).median_ms)
    return best


def retune_kernels(
    database: Any,
    kernels: list[KernelToRetune],
    target: dict[str, Any],
    *,
    trials: int,
    journal_path: str | Path,
    budget_minutes: float | None = None,
    progress: Callable[[str], None] | None = None,
    reuse: tuple[Path, ...] = (),
) -> list[RetunedKernel]:
    """Tune each of ``kernels`` with ``trials`` trials, time it against its chosen schedule, commit the winners.

    Kernels are taken in order until ``budget_minutes`` of tuning have passed (``None``: all of
    them); the kernel in flight finishes, so at least one is tuned. Outcomes already in the
    journal at ``journal_path``, or in the journals of earlier exports listed in ``reuse`` (same
    target, kernel, layout, chosen schedule and trial count: a kernel another subnet shares is tuned
    once), are reused, not re-tuned; those from ``reuse`` are copied into this journal. Every kept
    re-tuned schedule is
    committed to ``database`` (a MetaSchedule database the export compiles with) so that it
    outranks the chosen one.
    """
    from codesign.compiler.tvm_compile import commit_trace
    from codesign.profile import tvm_backend as tb

    if trials < 1:
        raise ExportError(f"--retune-trials must be at least 1, got {trials}")
    say = progress or (lambda _msg: None)
    try:
        journal = Journal(journal_path)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot use the re-tuning journal: {exc}") from None
    done = {record["key"]: record for record in journal if "key" in record}
    earlier: dict[str, dict[str, Any]] = {}
    for path in reuse:
        try:
            records = read_journal(path).records
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot reuse the re-tuning journal {path}: {exc}") from None
        earlier.update({r["key"]: r for r in records if "key" in r and r["key"] not in done})
    started: float | None = None  # the clock runs from the first kernel tuned here (journaled ones are free)
    outcomes: list[RetunedKernel] = []
    resumed = reused = 0
    for n, kernel in enumerate(kernels, 1):
        tasks = tb.workload_tasks(kernel.workload, target, layout=kernel.layout)
        keys = [_journal_key(target, kernel, task.name, trials) for task in tasks]
        if all(key in done for key in keys):
            resumed += 1
        elif all(key in done or key in earlier for key in keys):
            reused += 1
        # the budget is checked per kernel, never between its tasks: a half-tuned kernel would
        # leave the re-tuned prediction with only some of its tasks' times
        if any(key not in done and key not in earlier for key in keys):
            if started is None:
                started = time.monotonic()
            elif budget_minutes is not None and time.monotonic() - started > budget_minutes * 60:
                say(f"re-tuning budget of {budget_minutes:g} min spent after {n - 1}/{len(kernels)} kernels")
                break
        for task, key in zip(tasks, keys):
            record = done.get(key)
            if record is None and key in earlier:
                record = done[key] = earlier[key]
                journal.append(record)
            if record is None:
                record = _retune_one(kernel, task, target, trials, key)
                journal.append(record)
            fields = {k: record[k] for k in RetunedKernel.__dataclass_fields__ if k in record}
            outcome = RetunedKernel(**{**fields, "runs": tuple(fields.get("runs", ()))})
            outcomes.append(outcome)
            tuned = f"{outcome.tuned_ms * 1e3:.1f} us" if outcome.tuned_ms is not None else "none"
            if outcome.error:
                tuned = f"none (tuning failed: {outcome.error})"
            say(
                f"[{n}/{len(kernels)}] {kernel.workload.key()} [{kernel.layout}]: chosen "
                f"{outcome.chosen_ms * 1e3:.1f} us, own {tuned} -> {outcome.kept}"
                + (" (journal)" if key in done else f" ({outcome.seconds:.0f} s)")
            )
            if outcome.kept == "tuned":
                sch = tb.replay_json(task, outcome.tuned_trace)
                commit_trace(database, task, sch.trace, target, run_secs=RETUNED_RUN_SECS)
    if resumed or reused:
        say(
            f"{resumed + reused} of {len(kernels)} kernels not tuned again: {resumed} from this export's own "
            f"journal (resumed), {reused} from --retune-from journals"
        )
    return outcomes


@dataclass(frozen=True)
class TuningRun:
    """One MetaSchedule run of a re-tuning: its trials, seed, and whether it starts from the chosen schedule."""

    trials: int
    seed: int
    warm: bool


def tuning_runs(trials: int, *, warm: bool) -> list[TuningRun]:
    """How ``trials`` are split between independent MetaSchedule runs on one kernel.

    Two runs of half the trials each, with different seeds: the first warm-started from the
    profile's chosen schedule when there is one (its record seeds the search's population, which
    mutates it), the second from scratch. At the 16-32 trials an export can afford per kernel, what
    one run finds varies by 2x from seed to seed; the warm run explores around a schedule known to
    be good, the cold one elsewhere. Measured against one run of all the trials on the largest
    subnet's kernels (``tools/bench_retune.py``, README "Re-tuning an export"): as good, not
    clearly better.
    """
    if trials < 2:
        return [TuningRun(trials=trials, seed=0, warm=warm)]
    first = (trials + 1) // 2
    return [TuningRun(trials=first, seed=0, warm=warm), TuningRun(trials=trials - first, seed=1, warm=False)]


def _tuned_candidate(
    task: Any, target: dict[str, Any], run: TuningRun, chosen: Any | None, chosen_ms: float
) -> tuple[Any, float] | None:
    """The fastest schedule of its own one tuning run found (never the chosen one), with its tuning time in ms."""
    from codesign.compiler.tvm_compile import commit_trace
    from codesign.profile import tvm_backend as tb

    tb.require_tvm()
    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory(prefix="codesign-retune-") as work:
        if run.warm and chosen is not None:
            seeded = ms.database.JSONDatabase(work_dir=work)
            commit_trace(seeded, task, chosen.trace, target, run_secs=chosen_ms / 1e3)
            del seeded  # tune_task opens the same files again
        records = tb.distinct_top_records(tb.tune_task(task, target, work, trials=run.trials, seed=run.seed), task, 2)
    chosen_json = tb.trace_to_json(chosen.trace) if chosen is not None else None
    for record in records:
        trace = tb.trace_to_json(record.trace)
        if trace != chosen_json:
            return trace, float(np.mean([float(t) for t in record.run_secs])) * 1e3
    return None


def tuned_candidates(
    task: Any, target: dict[str, Any], trials: int, chosen: Any | None, chosen_ms: float
) -> tuple[list[tuple[Any, float]], list[dict[str, Any]]]:
    """The distinct schedules of its own the :func:`tuning_runs` of ``trials`` found for ``task``, and a log per run.

    ``chosen`` is the profile's schedule replayed on ``task`` (``None``: TVM's default lowering),
    timed here at ``chosen_ms``; it seeds the warm run. Each candidate is (JSON trace, best time
    the tuner measured in ms); each log entry holds the run's settings, that time and its error.
    """
    found: list[tuple[Any, float]] = []
    runs: list[dict[str, Any]] = []
    for run in tuning_runs(trials, warm=chosen is not None):
        failure = None
        try:
            candidate = _tuned_candidate(task, target, run, chosen, chosen_ms)
        except Exception as exc:  # noqa: BLE001 - a kernel MetaSchedule cannot tune keeps the profile's schedule
            failure, candidate = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300], None
        runs.append({**asdict(run), "tuning_ms": candidate[1] if candidate else None, "error": failure})
        if candidate is not None and all(candidate[0] != trace for trace, _ in found):
            found.append(candidate)
    return found, runs


def _retune_one(kernel: KernelToRetune, task: Any, target: dict[str, Any], trials: int, key: str) -> dict[str, Any]:
    """Tune one kernel (:func:`tuned_candidates`), time the best found against the chosen one; the journal record."""
    from codesign.profile import tvm_backend as tb

    started = time.perf_counter()
    chosen_build = tb.build_from_json(task, target, kernel.chosen_trace)
    chosen = tb.replay_json(task, kernel.chosen_trace) if kernel.chosen_trace is not None else None
    seed_ms = tb.time_kernel(chosen_build, task, repeat=3, min_repeat_ms=20).median_ms
    found, runs = tuned_candidates(task, target, trials, chosen, seed_ms)
    failures = [r["error"] for r in runs if r["error"]]
    error = failures[0] if failures and not found else None
    if not found:
        (chosen_ms,) = median_of_alternating([chosen_build], task)
        tuned_ms, tuned_trace = None, None
    else:
        times = median_of_alternating([chosen_build, *(tb.build_from_json(task, target, t) for t, _ in found)], task)
        chosen_ms = times[0]
        best = int(np.argmin(times[1:]))
        tuned_ms, tuned_trace = times[1 + best], found[best][0]
    kept = "tuned" if tuned_ms is not None and tuned_ms < chosen_ms * (1 - KEEP_MARGIN) else "chosen"
    return {
        "key": key,
        "workload": kernel.workload.key(),
        "layout": kernel.layout,
        "task": task.name,
        "trials": trials,
        "chosen_ms": chosen_ms,
        "tuned_ms": tuned_ms,
        "kept": kept,
        "seconds": round(time.perf_counter() - started, 1),
        "tuned_trace": tuned_trace,
        "error": error,
        "runs": runs,
    }


def retuned_prediction(model: Any, genome: Any, outcomes: list[RetunedKernel]) -> float:
    """The model's prediction with each re-tuned kernel's time scaled by what re-tuning measured it gained.

    A re-tuned kernel's per-layer time becomes the model's time for it times kept over chosen
    schedule's time, both timed here side by side (1.0 where the profile's schedule stayed). The
    ratio, not the time measured here, goes in: the prediction stays in the profile's units, so a
    speed probe's factor applies to all of it once (a time measured on this machine now already
    carries its speed). The profile's calibration (graph overhead per kernel and transpose) still
    applies.
    """
    kept: dict[tuple[str, str], float] = {}
    chosen: dict[tuple[str, str], float] = {}
    for o in outcomes:  # a kernel lowered to several tasks runs all of them
        key = (o.workload, o.layout)
        kept[key] = kept.get(key, 0.0) + (o.tuned_ms if o.kept == "tuned" and o.tuned_ms is not None else o.chosen_ms)
        chosen[key] = chosen.get(key, 0.0) + o.chosen_ms
    explained = model.explain(genome)
    layer_sum = explained["layer_sum_ms"]
    for layer in explained["layers"]:
        key = (layer["workload"], layer["layout"])
        if chosen.get(key, 0.0) > 0.0:
            layer_sum += float(layer["latency_ms"]) * (kept[key] / chosen[key] - 1.0)
    return float(
        model.calibration.apply(
            np.asarray(layer_sum), np.asarray(explained["kernels"]), explained["transposes"], explained["activations"]
        )
    )
