"""The kernel latency predictor: fits, validates by held-out kernels, and survives a JSON round trip."""

import json

import numpy as np

from codesign.latency.positions import PositionTable
from codesign.latency.predictor import (
    TILING_FEATURE_NAMES,
    KernelLatencyPredictor,
    error_summary,
    grouped_cross_validation,
    tiling_features,
)
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


def test_tiling_features_say_how_a_replayed_schedule_tiles_this_shape():
    assert len(tiling_features([], [])) == len(TILING_FEATURE_NAMES)
    assert not any(tiling_features([], []))  # a default lowering has no tilings
    tuned = [[4, 3, 1, 2], [1, 12]]
    kept = dict(zip(TILING_FEATURE_NAMES, tiling_features(tuned, tuned), strict=True))
    assert kept["tilings_log2_distance"] == 0 and kept["tilings_collapsed"] == 0 and kept["tilings"] == 2
    assert [kept[f"tiling0_log2_factor{f}"] for f in range(4)] == [2, np.log2(3), 0, 1]
    assert [kept[f"tiling1_log2_factor{f}"] for f in range(4)] == [0, 0, 0, np.log2(12)]  # left-padded with 1s
    # on 27 channel blocks TVM collapses the first tiling into its innermost factor; the second is adapted
    collapsed = dict(zip(TILING_FEATURE_NAMES, tiling_features(tuned, [[1, 1, 1, 27], [1, 6]]), strict=True))
    assert collapsed["tilings_collapsed"] == 1
    assert collapsed["tilings_log2_inner_growth"] == np.log2(27 / 2)
    assert collapsed["tilings_log2_distance"] == np.log2(4) + np.log2(3) + np.log2(27 / 2) + 1
    # more than four factors: the outer ones are multiplied into the first kept
    five = dict(zip(TILING_FEATURE_NAMES, tiling_features([[2, 2, 3, 1, 2]], [[2, 2, 3, 1, 2]]), strict=True))
    assert [five[f"tiling0_log2_factor{f}"] for f in range(4)] == [2, np.log2(3), 0, 1]


def test_the_predictor_reads_the_tilings_not_only_the_candidate(tiny_space):
    """Pairs alike in shape and candidate whose replayed tilings collapsed ran 10x slower: the predictor
    must tell them apart by their tilings alone."""
    rows, tilings = [], {}
    tuned = [[4, 3, 1, 2]]
    for w, c, ms in _rows(tiny_space):
        collapsed = c == 1 and w.out_channels % 3 == 0
        rows.append((w, c, ms * (10.0 if collapsed else 1.0)))
        tilings[(w.key(), c)] = tiling_features(tuned, [[1, 1, 1, 24]] if collapsed else tuned)
    model = KernelLatencyPredictor.fit(rows, tilings=tilings)
    slow = [(w, c) for w, c, _ in rows if (w.key(), c) in tilings and tilings[(w.key(), c)][-3] > 0]
    assert slow
    as_recorded = model.predict(slow, tilings=tilings)
    as_tuned = model.predict(slow, tilings={(w.key(), c): tiling_features(tuned, tuned) for w, c in slow})
    assert np.all(as_recorded > 4 * as_tuned)
