"""The kernel latency predictor: fits, validates by held-out kernels, and survives a JSON round trip."""

import json

import numpy as np

from codesign.latency.positions import PositionTable
from codesign.latency.predictor import KernelLatencyPredictor, error_summary, grouped_cross_validation
from codesign.latency.workloads import Workload
from codesign.testing import synthetic_profile


def _rows(space):
    rows = []
    for m in synthetic_profile(space).measurements:
        w = Workload.from_dict(m["workload"])
        rows += [(w, r["candidate"], r["timing"]["median_ms"]) for r in m["results"]]
    return rows


def test_fit_predict_and_json_round_trip(tiny_space):
    rows = _rows(tiny_space)
    model = KernelLatencyPredictor.fit(rows)
    pairs = [(w, c) for w, c, _ in rows]
    before = model.predict(pairs)
    again = KernelLatencyPredictor.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(pairs), before, rtol=1e-6)
    assert error_summary(before, np.asarray([ms for *_, ms in rows]))["within10"] > 0.9


def test_grouped_cross_validation_holds_out_whole_kernels(tiny_space):
    rows = _rows(tiny_space)
    predicted, measured = grouped_cross_validation(rows, folds=4)
    assert np.isfinite(predicted).all() and len(predicted) == len(rows)
    summary = error_summary(predicted, measured)
    assert 0.3 < summary["within10"] <= 1.0  # held-out kernels are harder than training ones
    assert len(PositionTable(tiny_space).workloads) == len({w for w, *_ in rows})
