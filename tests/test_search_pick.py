"""Which front point `codesign search` recommends: validation accuracy and the predictor, by inverse variance."""

import math

import pytest

from codesign.search.accuracy_predictor import AccuracyPredictor
from codesign.search.pipeline import default_predictor_path
from codesign.search.report import FrontPoint, estimated_accuracy, evaluate_finalists, recommend
from codesign.space import Genome, get_space


def point(predicted: float, latency_ms: float, val: float | None = None, images: int | None = 5000) -> FrontPoint:
    genome = Genome.smallest(get_space("tiny"))
    return FrontPoint(genome, predicted, latency_ms, 1000, 1 << 20, val, images if val is not None else None)


def test_estimate_is_the_inverse_variance_blend():
    p = point(0.88, 0.2, val=0.90, images=5000)
    val_var = 0.90 * 0.10 / 5000
    pred_var = 0.004**2
    want = (0.90 / val_var + 0.88 / pred_var) / (1 / val_var + 1 / pred_var)
    assert estimated_accuracy(p, predictor_rmse=0.004) == pytest.approx(want, abs=1e-12)
    assert 0.88 < want < 0.90
    # more validation images: the measurement weighs more
    assert estimated_accuracy(point(0.88, 0.2, val=0.90, images=50000), predictor_rmse=0.004) > want


def test_estimate_falls_back_to_what_is_known():
    assert estimated_accuracy(point(0.88, 0.2, val=0.90), predictor_rmse=None) == 0.90
    assert estimated_accuracy(point(0.88, 0.2, val=0.90, images=None), predictor_rmse=0.004) == 0.90
    assert estimated_accuracy(point(0.88, 0.2), predictor_rmse=0.004) == 0.88
    assert math.isfinite(estimated_accuracy(point(0.88, 0.2, val=1.0), predictor_rmse=0.004))


def test_a_lucky_validation_score_no_longer_wins_alone():
    lucky = point(0.880, 0.20, val=0.9010)  # over-rated by one split: 2 points above the predictor
    steady = point(0.899, 0.25, val=0.9000)
    points = [lucky, steady]
    assert recommend(points) == 0  # validation alone takes the lucky one
    assert recommend(points, predictor_rmse=0.004) == 1


def test_recommend_only_among_evaluated_points_and_ties_go_to_the_faster():
    points = [point(0.95, 0.1), point(0.89, 0.3, val=0.89), point(0.89, 0.2, val=0.89)]
    assert recommend(points, predictor_rmse=0.004) == 2
    assert recommend([point(0.88, 0.3), point(0.89, 0.3)], predictor_rmse=0.004) == 1  # none evaluated


def test_evaluate_finalists_records_the_image_count():
    class Evaluator:
        image_count = 1234

        def evaluate_many(self, genomes):
            return [0.5] * len(genomes)

    out = evaluate_finalists([point(0.8, 0.1), point(0.7, 0.2)], [1], Evaluator())
    assert out[0].val_accuracy is None and out[1].val_accuracy == 0.5 and out[1].val_images == 1234


def test_shipped_predictor_records_its_rmse():
    rmse = AccuracyPredictor.load(default_predictor_path(None)).rmse
    assert rmse is not None and 0.001 < rmse < 0.02
