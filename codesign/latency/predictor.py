"""Kernel latency predictor: gradient-boosted trees on workload + schedule features, stored as JSON.

It fills the latency table for (kernel, schedule candidate) pairs the profiling budget did not
measure. Features describe the kernel's shape and the fit of its channel counts to vector widths
(a tiling that fits 48 channels may not fit 36), the schedule candidate, and the loop tilings that
candidate's trace takes when replayed on this shape (:func:`tiling_features`): a trace tuned on one
shape keeps its tilings where they divide the new loops and collapses them where they do not,
which the candidate's index alone cannot say. Targets are log latencies, so errors are relative.
Validation is grouped by kernel: all candidates of a kernel are held out together, which is the
situation of an unmeasured kernel. The model is saved with XGBoost's own JSON format (never pickled).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.latency.workloads import Workload

ACTIVATIONS = ("none", "relu", "relu6", "hswish", "hsigmoid", "sigmoid", "swish", "gelu")
KINDS = ("conv", "depthwise", "pool_fc")
SHAPE_FEATURE_NAMES = (
    "kind",
    "activation",
    "residual",
    "in_channels",
    "out_channels",
    "resolution",
    "out_resolution",
    "kernel_size",
    "stride",
    "log2_macs",
    "log2_input_elems",
    "log2_output_elems",
    "out_mod8",
    "out_mod16",
    "in_mod8",
    "candidate",
)
TILINGS_READ = 6  # the first tilings of a schedule (outer spatial and channel loops come first in a trace)
TILING_FACTORS = 4  # factors kept per tiling; outer ones beyond are multiplied into the first
TILING_FEATURE_NAMES = (
    *(f"tiling{k}_log2_factor{f}" for k in range(TILINGS_READ) for f in range(TILING_FACTORS)),
    "tilings_log2_distance",
    "tilings_collapsed",
    "tilings_log2_inner_growth",
    "tilings",
)
FEATURE_NAMES = SHAPE_FEATURE_NAMES + TILING_FEATURE_NAMES

ScheduleTilings = Mapping[tuple[str, int], Sequence[float]]
"""Per ``(kernel key, candidate)``, the :func:`tiling_features` of that candidate's trace replayed on that kernel."""


def _xgboost() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise CodesignError(f"the latency predictor needs xgboost: pip install 'codesign[tvm]' ({exc})") from None
    return xgboost


def trace_tilings(trace_json: Any) -> list[list[int]]:
    """The ``SamplePerfectTile`` decisions of a JSON trace, in the trace's order: the schedule's loop tilings."""
    instructions, decisions = trace_json
    by_index = {int(i): d for i, d in decisions}
    return [
        [int(x) for x in by_index[i]]
        for i, instruction in enumerate(instructions)
        if instruction[0] == "SamplePerfectTile" and i in by_index
    ]


def tiling_features(tuned: Sequence[Sequence[int]], replayed: Sequence[Sequence[int]]) -> list[float]:
    """Features of a schedule's loop tilings on one shape (see :data:`TILING_FEATURE_NAMES`).

    ``tuned`` are the trace's tilings on the shape it was tuned for (:func:`trace_tilings`),
    ``replayed`` the same tilings replayed on this shape
    (:func:`~codesign.profile.tvm_backend.replayed_tilings`); both empty for a default lowering.
    The first :data:`TILINGS_READ` replayed tilings as log2 factors (left-padded with 1s), then
    how far the replay moved them (sum of log2 ratios), how many collapsed (outer factors all 1
    where the tuned tiling had some: the loop no longer blocked or parallel) and the largest
    growth of an innermost factor (log2).
    """
    values: list[float] = []
    for k in range(TILINGS_READ):
        tiling = [int(x) for x in replayed[k]] if k < len(replayed) else []
        if len(tiling) > TILING_FACTORS:
            cut = len(tiling) - TILING_FACTORS + 1
            tiling = [int(np.prod(tiling[:cut]))] + tiling[cut:]
        tiling = [1] * (TILING_FACTORS - len(tiling)) + tiling
        values += [float(np.log2(max(x, 1))) for x in tiling]
    pairs = list(zip(tuned, replayed, strict=False))
    distance = sum(abs(np.log2(max(a, 1) / max(b, 1))) for t, r in pairs for b, a in zip(t, r, strict=False))
    collapsed = collapsed_tilings(tuned, replayed)
    growth = max([float(np.log2(max(r[-1], 1) / max(t[-1], 1))) for t, r in pairs if r and t] + [0.0])
    return [*values, float(distance), float(collapsed), growth, float(len(replayed))]


def collapsed_tilings(tuned: Sequence[Sequence[int]], replayed: Sequence[Sequence[int]]) -> int:
    """How many of a schedule's tilings collapsed on replay: all outer factors 1 where the tuned tiling had some,
    the whole loop in its innermost factor (no longer blocked, nor parallel where it was)."""
    return sum(
        1 for t, r in zip(tuned, replayed, strict=False) if r and t and np.prod(r[:-1]) == 1 and np.prod(t[:-1]) > 1
    )


NO_TILINGS = tuple(tiling_features([], []))


def features(workload: Workload, candidate: int, tilings: Sequence[float] = NO_TILINGS) -> list[float]:
    """The feature vector of ``workload`` compiled with schedule ``candidate`` (see :data:`FEATURE_NAMES`);
    ``tilings`` are its :func:`tiling_features` (none known: those of a default lowering)."""
    w = workload
    act = ACTIVATIONS.index(w.activation) if w.activation in ACTIVATIONS else len(ACTIVATIONS)
    in_elems = w.in_channels * w.resolution**2
    out_elems = w.out_channels * w.out_resolution**2
    return [
        float(KINDS.index(w.kind)),
        float(act),
        float(w.residual),
        float(w.in_channels),
        float(w.out_channels),
        float(w.resolution),
        float(w.out_resolution),
        float(w.kernel_size),
        float(w.stride),
        float(np.log2(max(w.macs, 1))),
        float(np.log2(max(in_elems, 1))),
        float(np.log2(max(out_elems, 1))),
        float(w.out_channels % 8),
        float(w.out_channels % 16),
        float(w.in_channels % 8),
        float(candidate),
        *(float(x) for x in tilings),
    ]


@dataclass
class KernelLatencyPredictor:
    """Predicts a kernel's median latency (ms) under a schedule candidate."""

    booster_json: dict[str, Any]
    params: dict[str, Any]

    _booster: Any = field(default=None, repr=False, compare=False)

    # deeper and longer than the shape features alone needed: the tiling features interact with the candidate
    DEFAULT_PARAMS = {
        "max_depth": 6,
        "eta": 0.05,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "min_child_weight": 1.0,
        "objective": "reg:squarederror",
        "seed": 0,
        "nthread": 1,
    }
    ROUNDS = 400

    @classmethod
    def fit(
        cls,
        rows: list[tuple[Workload, int, float]],
        *,
        tilings: ScheduleTilings | None = None,
        params: dict[str, Any] | None = None,
    ) -> KernelLatencyPredictor:
        """Fit on ``(workload, candidate, median_ms)`` measurements, each with its ``tilings`` where known."""
        xgb = _xgboost()
        if len(rows) < 2:
            raise CodesignError(f"the latency predictor needs at least 2 measurements, got {len(rows)}")
        merged = {**cls.DEFAULT_PARAMS, **(params or {})}
        x = _matrix([(w, c) for w, c, _ in rows], tilings)
        y = np.log(np.asarray([ms for _, _, ms in rows], dtype=np.float64))
        booster = xgb.train(merged, xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)), cls.ROUNDS)
        model = cls(json.loads(bytes(booster.save_raw("json")).decode()), merged)
        model._booster = booster
        return model

    def _load(self) -> Any:
        if self._booster is None:
            xgb = _xgboost()
            booster = xgb.Booster()
            booster.load_model(bytearray(json.dumps(self.booster_json).encode()))
            self._booster = booster
        return self._booster

    def predict(self, pairs: list[tuple[Workload, int]], *, tilings: ScheduleTilings | None = None) -> np.ndarray:
        """Median latency (ms) of each ``(workload, candidate)``, with its ``tilings`` where known."""
        if not pairs:
            return np.zeros(0)
        xgb = _xgboost()
        x = _matrix(pairs, tilings)
        return np.exp(self._load().predict(xgb.DMatrix(x, feature_names=list(FEATURE_NAMES))).astype(np.float64))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (XGBoost's JSON model and the parameters)."""
        return {
            "kind": "xgboost-gbdt",
            "features": list(FEATURE_NAMES),
            "params": self.params,
            "booster": self.booster_json,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelLatencyPredictor:
        """Inverse of :meth:`to_dict`."""
        if data.get("kind") != "xgboost-gbdt" or list(data.get("features", [])) != list(FEATURE_NAMES):
            raise CodesignError("the profile's kernel predictor has another format; re-fit it with `codesign profile`")
        return cls(dict(data["booster"]), dict(data["params"]))


def _matrix(pairs: list[tuple[Workload, int]], tilings: ScheduleTilings | None) -> np.ndarray:
    known = tilings or {}
    return np.asarray([features(w, c, known.get((w.key(), c), NO_TILINGS)) for w, c in pairs], dtype=np.float32)


def relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """``predicted / measured - 1`` element-wise."""
    return np.asarray(predicted, dtype=np.float64) / np.asarray(measured, dtype=np.float64) - 1.0


def error_summary(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Share within +-10 %, RMSPE and the largest error of predictions against measurements."""
    rel = relative_errors(predicted, measured)
    if rel.size == 0:
        return {"n": 0, "within10": float("nan"), "rmspe": float("nan"), "max_abs_pct": float("nan")}
    return {
        "n": int(rel.size),
        "within10": float(np.mean(np.abs(rel) <= 0.10)),
        "rmspe": float(np.sqrt(np.mean(rel**2))),
        "max_abs_pct": float(np.max(np.abs(rel)) * 100),
    }


def grouped_cross_validation(
    rows: list[tuple[Workload, int, float]],
    *,
    folds: int = 5,
    seed: int = 0,
    tilings: ScheduleTilings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions for ``rows``, holding out all candidates of a kernel together.

    Returns ``(predicted_ms, measured_ms)`` aligned with ``rows``.
    """
    kernels = sorted({w for w, _, _ in rows})
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(kernels, rng.permutation(len(kernels)) % max(2, min(folds, len(kernels))), strict=True))
    predicted = np.full(len(rows), np.nan)
    for fold in sorted(set(fold_of.values())):
        train = [r for r in rows if fold_of[r[0]] != fold]
        test_index = [i for i, r in enumerate(rows) if fold_of[r[0]] == fold]
        if len(train) < 2 or not test_index:
            continue
        model = KernelLatencyPredictor.fit(train, tilings=tilings)
        predicted[test_index] = model.predict([(rows[i][0], rows[i][1]) for i in test_index], tilings=tilings)
    measured = np.asarray([ms for _, _, ms in rows], dtype=np.float64)
    return predicted, measured
