"""``codesign search`` end to end on the shipped supernet with a synthetic profile and predictor."""

import json

import pytest

from codesign.profile.profile_file import save_profile
from codesign.testing import run_cli, synthetic_accuracy_predictor, synthetic_profile


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, default_space):
    folder = tmp_path_factory.mktemp("search_inputs")
    profile = save_profile(folder / "synthetic.json", synthetic_profile(default_space))
    predictor = synthetic_accuracy_predictor(default_space, samples=64).save(folder / "predictor.json")
    return profile, predictor


def codesign(*args, cwd):
    return run_cli(*args, cwd=cwd, timeout=900)


def test_search_writes_front_plot_and_recommendation(inputs, tmp_path, fmnist_root):
    profile, predictor = inputs
    out = tmp_path / "run"
    common = ["--profile", str(profile), "--predictor", str(predictor), "--allow-mismatch", "--no-progress"]
    result = codesign(
        "search",
        "--latency-ms",
        "40",
        "--generations",
        "5",
        "--population",
        "20",
        "--finalists",
        "2",
        "--val-size",
        "1000",
        *common,
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    front = json.loads((out / "front.json").read_text())
    assert front["budget"]["latency_ms"] == 40 and front["front"]
    assert all(p["predicted_latency_ms"] <= 40 for p in front["front"])
    assert sum(p["val_accuracy"] is not None for p in front["front"]) == min(2, len(front["front"]))
    recommended = front["front"][front["recommended"]]
    assert recommended["val_accuracy"] is not None and recommended["val_accuracy"] > 0.5  # real evaluation
    assert json.loads((out / "recommended.json").read_text()) == recommended["genome"]
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert "recommended (*)" in result.stdout and (out / "checkpoint.json").is_file()

    infeasible = codesign("search", "--latency-ms", "0.001", *common, "-o", str(tmp_path / "x"), cwd=tmp_path)
    assert infeasible.returncode == 1
    assert "infeasible budget" in infeasible.stderr and "fastest subnet reachable" in infeasible.stderr
    assert len(infeasible.stderr.strip().splitlines()) == 1


def test_search_fails_clearly_without_a_profile_for_the_target(tmp_path):
    result = codesign("search", "--target", "cuda", "--latency-ms", "1", "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 1 and "no shipped profile" in result.stderr and "codesign profile" in result.stderr
    bad = codesign("search", "--target", "tpu", "--latency-ms", "1", "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert bad.returncode == 1 and "unknown target" in bad.stderr
