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


def _search_args(profile, predictor, out, *extra):
    return [
        "search",
        "--latency-ms",
        "40",
        "--generations",
        "4",
        "--population",
        "16",
        "--finalists",
        "0",
        "--profile",
        str(profile),
        "--predictor",
        str(predictor),
        "--allow-mismatch",
        "--no-progress",
        "-o",
        str(out),
        *extra,
    ]


def test_search_speed_probe_scales_the_model_and_resume_reuses_it(inputs, tmp_path, default_space):
    """The recorded factor scales every latency the search sees, so the budget binds at the probed speed."""
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile
    from codesign.space import Genome

    profile, predictor = inputs
    plain = codesign(*_search_args(profile, predictor, tmp_path / "plain"), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    out = tmp_path / "probed"
    out.mkdir()
    (out / "speed_probe.json").write_text(json.dumps({"factor": 1.5, "ratios": [1.5], "subnets": ["m"], "seconds": 1}))
    probed = codesign(*_search_args(profile, predictor, out, "--speed-probe", "2", "--resume"), cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr
    assert "speed probe reused" in probed.stdout and "at its probed speed (1.500x the profile's time)" in probed.stdout
    front = json.loads((out / "front.json").read_text())
    assert front["speed_probe"]["factor"] == 1.5 and "speed_probe" not in json.loads(
        (tmp_path / "plain" / "front.json").read_text()
    )
    model = LatencyModel.from_profile(load_profile(profile, allow_mismatch=True).profile)
    genomes = [Genome.from_dict(p["genome"]) for p in front["front"]]
    latencies = [p["predicted_latency_ms"] for p in front["front"]]
    assert latencies == pytest.approx(list(1.5 * model.predict(genomes)), rel=1e-9)
    assert max(latencies) <= 40 and max(model.predict(genomes)) <= 40 / 1.5
    # resuming keeps the probed factor even without --speed-probe; a new search without one drops it
    resumed = codesign(*_search_args(profile, predictor, out, "--resume"), cwd=tmp_path)
    assert resumed.returncode == 0 and "speed probe reused" in resumed.stdout
    again = json.loads((out / "front.json").read_text())
    assert again["front"] == front["front"] and again["speed_probe"] == front["speed_probe"]
    fresh = codesign(*_search_args(profile, predictor, out), cwd=tmp_path)
    assert fresh.returncode == 0 and not (out / "speed_probe.json").exists()
    assert "speed_probe" not in json.loads((out / "front.json").read_text())
    (out / "speed_probe.json").write_text('{"factor": -1}')
    negative = codesign(*_search_args(profile, predictor, out, "--resume"), cwd=tmp_path)
    assert negative.returncode == 1 and "no positive factor" in negative.stderr
    (out / "speed_probe.json").write_text("{not json")
    corrupt = codesign(*_search_args(profile, predictor, out, "--speed-probe", "2", "--resume"), cwd=tmp_path)
    assert corrupt.returncode == 1 and "corrupt speed probe" in corrupt.stderr
    assert len(corrupt.stderr.strip().splitlines()) == 1


def test_search_speed_probe_times_the_profiled_subnets_here(tmp_path, default_space, inputs):
    """A real probe on a profile of this CPU; on another CPU's profile a one-line error before any work, or with
    --allow-mismatch a warning and a search at the profile's speed."""
    from dataclasses import replace

    from codesign.latency.workloads import Workload
    from codesign.profile.speed_probe import probe_kernels, time_default_kernel
    from codesign.profile.tvm_backend import host_llvm_target
    from codesign.space import Genome
    from codesign.testing import synthetic_profile

    _, predictor = inputs
    from codesign.compiler.tvm_compile import compile_subnet, time_executable

    genome = Genome.smallest(default_space)
    genome = Genome(**{**genome.__dict__, "schedules": tuple(0 for _ in genome.schedules)})
    profile = synthetic_profile(default_space, candidates=0)
    families = profile.tuning_records["families"]
    executable = compile_subnet(default_space, genome, host_llvm_target(1), families)
    now = time_executable(executable, default_space, genome.resolution, repeat=5).median_ms
    timing = {"median_ms": now, "mean_ms": now, "std_ms": 0.0, "repeats": 5, "number": 1}  # as if profiled just now
    record = {"key": "m0", "type": "model", "genome": genome.to_dict(), "schedules": "fastest", "status": "ok"}
    here = replace(
        synthetic_profile(default_space, candidates=0),
        target=host_llvm_target(1),
        models=[{**record, "timing": timing}],
    )
    # the probe's one-thread kernel, timed here as if profiled just now (the others are invented: never probed)
    (kernel, _), *_ = probe_kernels(here, 1)
    kernel_now = time_default_kernel(Workload.from_dict(kernel["workload"]), here.target)
    measurements = [
        {
            **r,
            "results": [
                {**r["results"][0], "timing": {**r["results"][0]["timing"], "median_ms": kernel_now, "std_ms": 0.0}}
            ],
        }
        if r["key"] == kernel["key"]
        else {**r, "speed_factor": 1.0}
        for r in here.measurements
    ]
    here = replace(here, measurements=measurements)
    assert [r["key"] for r, _ in probe_kernels(here, 1)] == [kernel["key"]]
    here_path = save_profile(tmp_path / "here.json", here)
    out = tmp_path / "run"
    result = codesign(*_search_args(here_path, predictor, out, "--speed-probe", "1", "--threads", "1"), cwd=tmp_path)
    if result.returncode == 1:  # the machine's load moved the time beyond 2x: the search must refuse it
        assert "--speed-probe:" in result.stderr and "probably busy" in result.stderr
        assert not (out / "speed_probe.json").exists()
    else:
        assert result.returncode == 0, result.stderr
        written = json.loads((out / "speed_probe.json").read_text())
        assert written["subnets"] == ["m0"] and written["factor"] == written["ratios"][0] > 0
        assert written["single_thread_kernels"] == [kernel["key"]]
        assert written["single_thread_factor"] == written["single_thread_ratios"][0] > 0
        assert json.loads((out / "front.json").read_text())["speed_probe"] == written

    foreign = replace(here, target={**here.target, "mcpu": "cortex-a72"})
    foreign_path = save_profile(tmp_path / "foreign.json", foreign)
    strict = _search_args(foreign_path, predictor, tmp_path / "bad", "--speed-probe", "1")
    strict.remove("--allow-mismatch")
    bad = codesign(*strict, cwd=tmp_path)
    assert bad.returncode == 1 and "cortex-a72" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    # with --allow-mismatch another device's profile is accepted as such: the search runs at its speed
    accepted = tmp_path / "accepted"
    args = _search_args(foreign_path, predictor, accepted, "--speed-probe", "1")
    result = codesign(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--speed-probe skipped: the profile was not measured with this machine" in result.stderr
    assert not (accepted / "speed_probe.json").exists()
    assert json.loads((accepted / "front.json").read_text()).get("speed_probe") is None
