"""Fitting a profile's latency model from its measurements: kernel predictor, filled table, calibration.

The kernel predictor (gradient-boosted trees) is validated with kernel-grouped cross-validation and
then fills every (kernel, schedule) pair of the space the budget did not measure. The calibration
is fitted on the whole subnets the profiler compiled and measured, and validated leave-one-out:
each model's latency is predicted by a calibration fitted without it. Both validations are stored
in the profile, next to the raw measurements they summarize.
"""

from __future__ import annotations

import collections
from dataclasses import asdict
from typing import Any

import numpy as np

from codesign.latency.model import Calibration, LatencyModel, kernel_table_from_profile, timing_disturbed
from codesign.latency.positions import PositionTable
from codesign.latency.predictor import (
    KernelLatencyPredictor,
    ScheduleTilings,
    error_summary,
    grouped_cross_validation,
    tiling_features,
    trace_tilings,
)
from codesign.latency.transposes import TransposeCosts
from codesign.latency.workloads import Workload, kernel_family
from codesign.space import Genome, SearchSpace


def measurement_rows(measurements: list[dict[str, Any]]) -> list[tuple[Workload, int, float]]:
    """Successful kernel measurements as ``(workload, candidate, median_ms)``, leaving out timings disturbed while
    timed (:func:`~codesign.latency.model.timing_disturbed`): the predictor would learn their noise."""
    rows = []
    for record in measurements:
        w = Workload.from_dict(record["workload"])
        for r in record["results"]:
            if r["status"] == "ok" and not timing_disturbed(r["timing"]):
                rows.append((w, int(r["candidate"]), float(r["timing"]["median_ms"])))
    return rows


def schedule_tilings(families: dict[str, list[dict[str, Any]]], measurements: list[dict[str, Any]]) -> ScheduleTilings:
    """Per ``(kernel key, candidate)``, the :func:`~codesign.latency.predictor.tiling_features` of every pair the
    profiler replayed (timed or seen to replay): the measurement results' ``tilings`` against the trace's own.

    Pairs without recorded tilings (a default lowering, or a profile measured before they were
    recorded: see :func:`~codesign.profile.profiler.record_tilings`) are left out, and the
    predictor reads them as having none.
    """
    tilings: dict[tuple[str, int], list[float]] = {}
    for record in measurements:
        options = families.get(str(record.get("family")), [])
        for result in record["results"]:
            c = int(result["candidate"])
            replayed = result.get("tilings")
            if replayed is None or c >= len(options) or not options[c].get("trace"):
                continue
            tilings[(str(record["key"]), c)] = tiling_features(trace_tilings(options[c]["trace"]), replayed)
    return tilings


def fit_predictor(
    space: SearchSpace,
    families: dict[str, list[dict[str, Any]]],
    measurements: list[dict[str, Any]],
    models: list[dict[str, Any]],
    *,
    seed: int = 0,
    transposes: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The ``predictor`` section of a profile, or None when there is too little to fit on.

    The pooling + classifier kernels are left out of the kernel predictor: the profiler times them
    (they have one schedule), and two such rows among convolutions only add their own error.
    """
    rows = [row for row in measurement_rows(measurements) if row[0].kind != "pool_fc"]
    if len({w for w, _, _ in rows}) < 4:
        return None
    tilings = schedule_tilings(families, measurements)
    predictor = KernelLatencyPredictor.fit(rows, tilings=tilings)
    predicted, measured = grouped_cross_validation(rows, seed=seed, tilings=tilings)
    by_family: dict[str, list[int]] = collections.defaultdict(list)
    for i, (w, _, _) in enumerate(rows):
        by_family[kernel_family(w)].append(i)
    ok = np.isfinite(predicted)
    kernel_validation = {
        "method": "5-fold cross-validation, all candidates of a kernel held out together",
        "pairs_with_tilings": sum(1 for w, c, _ in rows if (w.key(), c) in tilings),
        "all": error_summary(predicted[ok], measured[ok]),
        "by_family": {
            f: error_summary(predicted[idx][ok[idx]], measured[idx][ok[idx]]) for f, idx in sorted(by_family.items())
        },
    }
    measured_pairs = {(w, c) for w, c, _ in rows}
    filled = filled_table(space, families, predictor, tilings)
    section: dict[str, Any] = {
        "kernel_model": predictor.to_dict(),
        "filled": filled,
        "kernel_validation": kernel_validation,
        "coverage": {
            "pairs_total": sum(len(row) for row in filled.values()),
            "pairs_measured": sum(
                1
                for w in PositionTable(space).workloads
                for c in range(len(filled[w.key()]))
                if (w, c) in measured_pairs
            ),
        },
        "calibration": {"terms": asdict(Calibration()), "models": 0},
    }
    section.update(fit_calibration(space, families, measurements, models, section, transposes or []))
    return section


def fit_calibration(
    space: SearchSpace,
    families: dict[str, list[dict[str, Any]]],
    measurements: list[dict[str, Any]],
    models: list[dict[str, Any]],
    section: dict[str, Any],
    transposes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Calibration terms and their leave-one-out validation on the measured whole models.

    The activation term (see :class:`~codesign.latency.model.Calibration`) is kept only where it
    validates: both forms are fitted, and the one with more leave-one-out predictions within +-10%
    (then the lower RMSPE) wins; ``model_validation.activation_term`` records both.
    """
    ok = [m for m in models if m.get("status") == "ok"]
    if not ok:
        return {}
    model = uncalibrated_model(space, families, measurements, section, transposes or [])
    genomes = [Genome.from_dict(m["genome"]) for m in ok]
    sums, kernels, swaps, activations = model.layer_sum(genomes)
    measured = np.asarray([m["timing"]["median_ms"] for m in ok], dtype=np.float64)
    transposes_per_model = swaps.astype(float)

    def fitted_and_loo(acts: np.ndarray | None) -> tuple[Calibration, np.ndarray]:
        full = Calibration.fit(sums, kernels, measured, swaps, acts)
        loo = np.empty_like(measured)
        for i in range(len(ok)):
            keep = np.arange(len(ok)) != i
            fitted = (
                Calibration.fit(
                    sums[keep], kernels[keep], measured[keep], swaps[keep], None if acts is None else acts[keep]
                )
                if keep.sum() >= 3
                else full
            )
            loo[i] = fitted.apply(sums[i : i + 1], kernels[i : i + 1], swaps[i : i + 1], activations[i : i + 1])[0]
        return full, loo

    without, loo_without = fitted_and_loo(None)
    with_acts, loo_with = fitted_and_loo(activations)
    summary_without, summary_with = error_summary(loo_without, measured), error_summary(loo_with, measured)
    keep_acts = (summary_with["within10"], -summary_with["rmspe"]) > (
        summary_without["within10"],
        -summary_without["rmspe"],
    )
    calibration, loo = (with_acts, loo_with) if keep_acts else (without, loo_without)
    return {
        "calibration": {"terms": asdict(calibration), "models": len(ok)},
        "model_validation": {
            "method": "leave-one-out over the measured whole models",
            "calibrated": error_summary(loo, measured),
            "calibrated_by_schedules": {
                label: error_summary(loo[idx], measured[idx])
                for label in sorted({m["schedules"] for m in ok if "schedules" in m})
                for idx in [np.asarray([m.get("schedules") == label for m in ok])]
            },
            "layer_sum_only": error_summary(sums, measured),
            "activation_term": {
                "kept": bool(keep_acts),
                "with": summary_with,
                "without": summary_without,
            },
            "transposes_per_model": float(transposes_per_model.mean()),
        },
    }


def filled_table(
    space: SearchSpace,
    families: dict[str, list[dict[str, Any]]],
    predictor: KernelLatencyPredictor,
    tilings: ScheduleTilings | None = None,
) -> dict[str, list[float]]:
    """The predictor's latency (ms) of every kernel of ``space`` under every candidate of its family
    (with the ``tilings`` of the pairs the profiler replayed)."""
    pairs = []
    for w in PositionTable(space).workloads:
        count = 1 if w.kind == "pool_fc" else max(1, len(families.get(kernel_family(w), [None])))
        pairs += [(w, c) for c in range(count)]
    filled: dict[str, list[float]] = {}
    for (w, _candidate), value in zip(pairs, predictor.predict(pairs, tilings=tilings), strict=True):
        filled.setdefault(w.key(), []).append(float(value))
    return filled


def uncalibrated_model(
    space: SearchSpace,
    families: dict[str, list[dict[str, Any]]],
    measurements: list[dict[str, Any]],
    section: dict[str, Any],
    transposes: list[dict[str, Any]],
) -> LatencyModel:
    """The latency model of a profile's parts, before any calibration (its per-kernel and transpose sum)."""

    class _Partial:  # the slice of a profile kernel_table_from_profile reads
        tuning_records = {"families": families}
        predictor = section

    _Partial.measurements = measurements  # type: ignore[attr-defined]
    table, sources = kernel_table_from_profile(_Partial)
    return LatencyModel(
        space, families, table, sources, Calibration(), transposes=TransposeCosts.from_records(transposes)
    )


def provisional_model(
    space: SearchSpace,
    families: dict[str, list[dict[str, Any]]],
    measurements: list[dict[str, Any]],
    transposes: list[dict[str, Any]],
) -> LatencyModel | None:
    """The uncalibrated model of the kernels measured so far (no validation), or None with too few to fit.

    The profiler draws calibration subnets with it the way the search will: each kernel at the
    schedule and layout this model finds fastest.
    """
    rows = [row for row in measurement_rows(measurements) if row[0].kind != "pool_fc"]
    if len({w for w, _, _ in rows}) < 4:
        return None
    tilings = schedule_tilings(families, measurements)
    section = {"filled": filled_table(space, families, KernelLatencyPredictor.fit(rows, tilings=tilings), tilings)}
    return uncalibrated_model(space, families, measurements, section, transposes)
