"""The profiling run: tune representative kernels, replay their schedules on every workload, measure.

Method (budgeted, resumable):

1. Rank the space's workloads by how much of a random subnet's cost they carry (frequency over
   sampled subnets x MACs): what matters most is measured first.
2. Per kernel family (same fused operators: kind, activation, residual) tune the top
   ``representatives`` workloads with MetaSchedule and keep each one's ``top_k`` distinct traces.
   A family's schedule candidates are: 0 = TVM's default lowering, then those traces.
3. Measure every workload, in rank order until the budget ends, under every candidate of its
   family (a trace tuned on one shape replays onto another of its family), recording mean,
   median, spread and repeat count, or the failure and its reason after retries.

Every finished step is appended to a journal first, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.latency.workloads import Workload, enumerate_workloads, subnet_workloads
from codesign.profile.journal import Journal, with_retries
from codesign.space import Genome, SearchSpace


def kernel_family(workload: Workload) -> str:
    """Workloads of one family lower to the same fused operators, so schedules replay across them."""
    return f"{workload.kind}/{workload.activation}/{'residual' if workload.residual else 'plain'}"


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


class Profiler:
    """Runs the method above for one space on one target, journaling into ``work_dir``."""

    def __init__(self, space: SearchSpace, config: ProfileConfig, work_dir: str | Path) -> None:
        self.space, self.config = space, config
        self.work_dir = Path(work_dir)
        self.journal = Journal(self.work_dir / "journal.jsonl")

    def _done(self, kind: str) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in self.journal if r.get("type") == kind}

    def candidates(self) -> dict[str, list[dict[str, Any]]]:
        """Schedule candidates per family from the journal: index 0 is the default lowering."""
        out: dict[str, list[dict[str, Any]]] = {}
        for record in self.journal:
            if record.get("type") == "tuned":
                fam = out.setdefault(record["family"], [{"source": "default", "trace": None}])
                for i, trace in enumerate(record.get("traces", [])):
                    fam.append({"source": f"{record['key']}#{i}", "trace": trace})
        return out

    def run(self, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Tune and measure within the budget; returns counts of what is in the journal."""
        from codesign.profile import tvm_backend as tb

        say = progress or (lambda _msg: None)
        cfg = self.config
        deadline = time.monotonic() + cfg.budget_minutes * 60.0
        ranked = rank_workloads(self.space, cfg.ranking_samples, cfg.seed)
        by_family: dict[str, list[Workload]] = collections.defaultdict(list)
        for w, _share in ranked:
            if w.kind != "pool_fc":
                by_family[kernel_family(w)].append(w)
        tuned = self._done("tuned")
        family_share = collections.Counter()
        for w, share in ranked:
            family_share[kernel_family(w)] += share
        families = sorted(by_family, key=lambda f: -family_share[f])[: cfg.max_tuned_families]
        for family in families:
            members = by_family[family]
            for rep in members[: cfg.representatives]:
                if rep.key() in tuned or time.monotonic() > deadline:
                    continue
                say(f"tuning {rep.key()} ({cfg.tune_trials} trials)")
                started = time.monotonic()

                def tune(rep: Workload = rep) -> list[Any]:
                    (task,) = tb.workload_tasks(rep, cfg.target)
                    db = tb.tune_task(
                        task,
                        cfg.target,
                        self.work_dir / "ms" / rep.key(),
                        trials=cfg.tune_trials,
                        seed=cfg.seed,
                        cost_model=cfg.cost_model,
                    )
                    return [tb.trace_to_json(r.trace) for r in tb.distinct_top_records(db, task, cfg.top_k)]

                traces, error = with_retries(tune, attempts=cfg.attempts)
                self.journal.append(
                    {
                        "type": "tuned",
                        "key": rep.key(),
                        "family": family,
                        "workload": rep.to_dict(),
                        "traces": traces or [],
                        "error": error,
                        "seconds": round(time.monotonic() - started, 2),
                    }
                )
        candidates = self.candidates()
        measured = self._done("measured")
        for w, share in ranked[: cfg.max_workloads]:
            if w.key() in measured:
                continue
            if time.monotonic() > deadline:
                say("budget spent")
                break
            family = kernel_family(w)
            options = candidates.get(family, [{"source": "default", "trace": None}])
            tasks, error = with_retries(lambda w=w: tb.workload_tasks(w, cfg.target), attempts=cfg.attempts)
            results = []
            for index, option in enumerate(options):

                def measure(option: dict[str, Any] = option, tasks: Any = tasks, error: Any = error) -> dict[str, Any]:
                    timings = [
                        tb.time_kernel(
                            tb.build_from_json(t, cfg.target, option["trace"]),
                            t,
                            repeat=cfg.repeat,
                            min_repeat_ms=cfg.min_repeat_ms,
                        )
                        for t in tasks or []
                    ]
                    if not timings:
                        raise RuntimeError(error or "no kernel to measure")
                    return {
                        "median_ms": sum(t.median_ms for t in timings),
                        "mean_ms": sum(t.mean_ms for t in timings),
                        "std_ms": float(np.sqrt(sum(t.std_ms**2 for t in timings))),
                        "repeats": min(t.repeats for t in timings),
                        "kernels": [t.to_dict() for t in timings],
                    }

                if w.kind == "pool_fc" and index > 0:
                    break
                timing, failure = with_retries(measure, attempts=cfg.attempts)
                results.append(
                    {
                        "candidate": index,
                        "source": option["source"],
                        "status": "ok" if timing else "failed",
                        "timing": timing,
                        "error": failure,
                    }
                )
            self.journal.append(
                {
                    "type": "measured",
                    "key": w.key(),
                    "family": family,
                    "workload": w.to_dict(),
                    "share": share,
                    "results": results,
                }
            )
            say(
                f"measured {w.key()}: "
                + ", ".join(
                    f"{r['candidate']}={r['timing']['median_ms'] * 1e3:.1f}us"
                    if r["timing"]
                    else f"{r['candidate']}=failed"
                    for r in results
                )
            )
        return {
            "tuned": len(self._done("tuned")),
            "measured": len(self._done("measured")),
            "workloads": len(ranked),
            "config": asdict(cfg),
        }


def profile_from_journal(space: SearchSpace, config: ProfileConfig, work_dir: str | Path) -> Any:
    """Assemble a :class:`~codesign.profile.profile_file.HardwareProfile` from a run's journal."""
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
    candidates: dict[str, list[dict[str, Any]]] = {}
    for record in tuned:
        fam = candidates.setdefault(record["family"], [{"source": "default", "trace": None}])
        fam.extend({"source": f"{record['key']}#{i}", "trace": t} for i, t in enumerate(record["traces"]))
    failed = sum(1 for m in measurements for r in m["results"] if r["status"] != "ok")
    versions = software_versions()
    return HardwareProfile(
        target=dict(config.target),
        device=describe_host_cpu(str(config.target.get("mcpu", ""))),
        software=SoftwareInfo(**versions),
        space=space.to_dict(),
        command=current_command(),
        created=now_utc(),
        measurements=measurements,
        tuning_records={
            "families": candidates,
            "tuning_runs": [{k: v for k, v in r.items() if k != "traces"} for r in tuned],
        },
        validation={
            "workloads_total": len(enumerate_workloads(space)),
            "workloads_measured": len(measurements),
            "failed_measurements": failed,
            "config": asdict(config),
        },
    )
