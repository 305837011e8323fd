"""TVM artifacts: compiled under the shipped profile's schedules, checked against onnxruntime, runnable."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from codesign.export.pipeline import describe, export_subnet
from codesign.export.threads import candidate_thread_counts
from codesign.latency.model import LatencyModel
from codesign.profile.profile_file import load_profile
from codesign.profile.shipped import find_shipped_profile
from codesign.profile.speed_probe import SpeedProbe, fit_thread_factors
from codesign.profile.tvm_backend import host_llvm_target
from codesign.space import Genome
from codesign.supernet import load_supernet
from codesign.testing import run_cli


@pytest.fixture(scope="module")
def shipped():
    # this CPU's own profile where one ships (its kernels must run here), else the first llvm one
    path = find_shipped_profile(host_llvm_target(), allow_mismatch=True)
    profile = load_profile(path).profile
    return profile, LatencyModel.from_profile(profile)


def genomes(space, model):
    rng = np.random.default_rng(11)
    picks = [Genome.largest(space), Genome.smallest(space)] + [Genome.random(space, rng) for _ in range(10)]
    return [model.fastest_schedules(g.canonical(space)) for g in picks]


def test_tvm_artifacts_match_onnxruntime(shipped, fmnist_splits, tmp_path):
    profile, model = shipped
    loaded = load_supernet()
    space = loaded.supernet.space
    for i, genome in enumerate(genomes(space, model)):
        result = export_subnet(
            loaded=loaded,
            genome=genome,
            splits=fmnist_splits,
            out_dir=tmp_path / f"a{i}",
            parity_images=32,
            evaluate_test=False,
            profile=profile,
            measure_latency=i == 0,
            speed_probe=2 if i == 0 else 0,
            latency_budget_ms=1e-3 if i == 0 else None,  # no subnet runs in a microsecond: over budget
        )
        tvm = result.manifest["tvm"]
        assert tvm["tvm_vs_onnxruntime_max_abs"] <= 1e-4
        assert tvm["schedules"] == list(genome.schedules) and any(s > 0 for s in genome.schedules)
        assert (tmp_path / f"a{i}" / "model_tvm.so").is_file()
        assert "model_tvm.so" in result.manifest["files"]
        if i == 0:
            latency = tvm["latency"]
            assert latency["predicted_ms"] > 0
            from codesign.profile.profile_file import target_mismatch
            from codesign.profile.tvm_backend import host_llvm_target

            if target_mismatch(profile.target, host_llvm_target()) is None:  # this machine is the profiled one
                assert latency["measured"]["median_ms"] > 0 and latency["measured"]["repeats"] == 30
                assert latency["measured"]["threads"] == profile.target["num-cores"]
                timings = latency["by_threads"]["timings"]
                cores = max(profile.target["num-cores"], os.cpu_count() or 1)
                assert set(timings) == {str(t) for t in candidate_thread_counts(cores)}
                assert all(t["median_ms"] > 0 and t["repeats"] == 30 for t in timings.values())
                assert str(latency["recommended_threads"]) in timings
                probe = latency["speed_probe"]  # two of the profile's subnets re-timed the artifact's way
                # the factor is whatever the machine's load makes it (a busy CI machine gave 283x): only its
                # form is checked here, its arithmetic in tests/test_speed_probe.py
                assert len(probe["subnets"]) == 2 and math.isfinite(probe["factor"]) and probe["factor"] > 0
                assert probe["timed"] == "in the windows that timed the artifact, alternating with them"
                assert probe["single_thread_factor"] > 0
                assert probe.get("warning") == SpeedProbe.from_dict(probe).warning()
                if probe["single_thread_source"] == "subnets":  # one subnet of each schedule kind: fitted
                    factors = fit_thread_factors(np.array(probe["ratios"]), np.array(probe["single_thread_shares"]))
                    assert (probe["factor"], probe["single_thread_factor"]) == pytest.approx(factors)
                else:
                    assert probe["factor"] == pytest.approx(float(np.median(probe["ratios"])))
                    assert probe["single_thread_factor"] == pytest.approx(np.median(probe["single_thread_ratios"]))
                at_speed = model.at_speed(probe["factor"], single_thread_factor=probe["single_thread_factor"])
                assert latency["predicted_at_probed_speed_ms"] == pytest.approx(at_speed.predict([genome])[0])
                assert "speed probe" in describe(result.manifest)
                assert latency["budget_ms"] == 1e-3
                assert latency["measured_over_budget"] == pytest.approx(latency["measured"]["median_ms"] / 1e-3)
                assert "OVER the search's 0.001 ms budget here" in describe(result.manifest)
                assert not (tmp_path / f"a{i}" / ".speed_probe").exists()
            else:
                assert latency["measured"] is None and "not this machine" in latency["not_measured"]
                assert "speed_probe" not in latency
                assert latency["budget_ms"] == 1e-3 and "measured_over_budget" not in latency
        else:
            assert "budget_ms" not in tvm["latency"]


def test_run_command_uses_the_artifact(shipped, fmnist_splits, tmp_path):
    profile, model = shipped
    loaded = load_supernet()
    genome = model.fastest_schedules(Genome.smallest(loaded.supernet.space))
    export_subnet(
        loaded=loaded,
        genome=genome,
        splits=fmnist_splits,
        out_dir=tmp_path / "a",
        evaluate_test=False,
        profile=profile,
        measure_latency=False,
    )
    test = fmnist_splits.test.head(64)
    np.save(tmp_path / "x.npy", np.asarray(test.images)[..., 0])  # raw uint8 (N, H, W)
    result = run_cli("run", str(tmp_path / "a"), "--input", str(tmp_path / "x.npy"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 64
    classes = json.loads((tmp_path / "a" / "manifest.json").read_text())["output"]["classes"]
    predicted = [classes.index(line.split("\t")[1]) for line in lines]
    assert np.mean(np.asarray(predicted) == np.asarray(test.labels)) > 0.7
    timed = run_cli("run", str(tmp_path / "a"), "--time", "--threads", "1", cwd=tmp_path)
    assert timed.returncode == 0 and "latency: median" in timed.stdout and "predicted" in timed.stdout, timed.stderr
    assert "30 repeats, 1 thread)" in timed.stdout
    # TVM_NUM_THREADS is honoured; without it the artifact runs on the cores it was profiled for
    # (the TVM runtime alone would use one thread here: half the speed the profile measured)
    timed = run_cli("run", str(tmp_path / "a"), "--time", cwd=tmp_path, env={"TVM_NUM_THREADS": "2"})
    assert timed.returncode == 0 and "30 repeats, 2 threads)" in timed.stdout, timed.stderr
    bad = run_cli("run", str(tmp_path / "a"), "--time", "--threads", "0", cwd=tmp_path)
    assert bad.returncode == 1 and "--threads must be at least 1" in bad.stderr
    check = run_cli("run", str(tmp_path / "a"), "--check", cwd=tmp_path)
    assert check.returncode == 0 and "check: max |artifact - onnxruntime|" in check.stdout, check.stderr
    assert check.stdout.strip().endswith("ok")


def test_an_artifact_runs_on_the_cores_it_was_profiled_for(shipped, fmnist_splits, tmp_path, monkeypatch):
    from codesign.runtime import artifact_threads, load_artifact

    profile, model = shipped
    loaded = load_supernet()
    export_subnet(
        loaded=loaded,
        genome=model.fastest_schedules(Genome.smallest(loaded.supernet.space)),
        splits=fmnist_splits,
        out_dir=tmp_path / "a",
        evaluate_test=False,
        profile=profile,
        measure_latency=False,
    )
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    predict, manifest = load_artifact(tmp_path / "a")
    assert artifact_threads(manifest) == profile.target["num-cores"]
    assert predict.threads == profile.target["num-cores"]  # type: ignore[attr-defined]
    # once export has measured which thread count is fastest here, that count wins over num-cores
    manifest["tvm"]["latency"]["recommended_threads"] = 3
    assert artifact_threads(manifest) == 3
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    predict, _ = load_artifact(tmp_path / "a")
    assert predict.threads == 3  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit's nvcc (no GPU needed)")
def test_cuda_export_builds_here_with_compiled_kernels(fmnist_splits, tmp_path):
    from codesign.compiler.cuda_binary import CudaPayload, complete_cuda_target, library_import_tree

    loaded = load_supernet()
    smallest = Genome.smallest(loaded.supernet.space)
    picked = Genome(**{**smallest.__dict__, "schedules": (2,) * 39})  # genes for a CPU profile: ignored here
    result = export_subnet(
        loaded=loaded,
        genome=picked,
        splits=fmnist_splits,
        out_dir=tmp_path / "gpu",
        parity_images=16,
        evaluate_test=False,
        target=complete_cuda_target(),
    )
    tvm = result.manifest["tvm"]
    assert tvm["kernels"] == {"format": "fatbin", "arch": "sm_90", "cuda_modules": 1}
    assert tvm["tvm_vs_onnxruntime_max_abs"] is None and tvm["latency"]["predicted_ms"] is None
    modules = library_import_tree(tmp_path / "gpu" / "model_tvm.so").modules
    assert [CudaPayload.parse(m.payload).fmt for m in modules if m.kind == "cuda"] == ["fatbin"]
    x = np.load(tmp_path / "gpu" / tvm["device_check"]["inputs"], allow_pickle=False)
    logits = np.load(tmp_path / "gpu" / tvm["device_check"]["onnxruntime_logits"], allow_pickle=False)
    assert x.shape == (16, 1, 20, 20) and logits.shape == (16, 10) and tvm["device_check"]["images"] == 16
    assert set(result.manifest["files"]) >= {"model_tvm.so", "reference_inputs.npy", "reference_logits.npy"}


def test_kernels_without_profiled_schedules_are_tuned_when_asked(shipped, fmnist_splits, tmp_path):
    from dataclasses import replace

    from codesign.latency.workloads import kernel_family, subnet_workloads
    from codesign.profile.tvm_backend import host_llvm_target

    profile, _ = shipped
    loaded = load_supernet()
    space = loaded.supernet.space
    genome = Genome.smallest(space)
    family = kernel_family(subnet_workloads(space, genome)[-1])  # the classifier's family
    families = {k: v for k, v in profile.tuning_records["families"].items() if k != family}
    # tuning measures on this machine, so the profile must be this CPU's (the shipped one may be another's)
    stripped = replace(
        profile, target=host_llvm_target(), tuning_records={**profile.tuning_records, "families": families}
    )
    result = export_subnet(
        loaded=loaded,
        genome=genome,
        splits=fmnist_splits,
        out_dir=tmp_path / "t",
        parity_images=16,
        evaluate_test=False,
        profile=stripped,
        measure_latency=False,
        tune_trials=4,
    )
    tvm = result.manifest["tvm"]
    assert tvm["tuned_here"] and all(key.startswith(family.split("/")[0]) for key in tvm["tuned_here"])
    assert tvm["tvm_vs_onnxruntime_max_abs"] <= 1e-4


def test_genomes_without_schedule_genes_compile_under_the_fastest(shipped):
    from codesign.export.pipeline import choose_schedules

    profile, model = shipped
    plain = Genome.largest(model.space)
    fastest = model.fastest_schedules(plain)
    assert any(s > 0 for s in fastest.schedules)
    picked, why = choose_schedules(plain, profile, "auto")
    assert picked == fastest and "fastest" in why
    chosen = Genome(**{**plain.__dict__, "schedules": (1,) * len(fastest.schedules)})
    assert choose_schedules(chosen, profile, "auto") == (chosen, "the genome's schedule genes")
    assert choose_schedules(chosen, profile, "fastest")[0] == fastest
    assert set(choose_schedules(chosen, profile, "default")[0].schedules) == {0}
    assert set(choose_schedules(chosen, None, "auto")[0].schedules) == {0}
    assert model.predict([picked])[0] < model.predict([plain])[0]


def test_export_finds_the_budget_of_the_search_that_wrote_its_genome(tmp_path):
    from codesign.cli.export import search_beside
    from codesign.export.pipeline import judge_budget

    (tmp_path / "recommended.json").write_text("{}")
    (tmp_path / "front.json").write_text(json.dumps({"budget": {"latency_ms": 0.25}, "front": []}))
    assert search_beside(str(tmp_path / "recommended.json")) == {"budget_ms": 0.25, "probed": False}
    (tmp_path / "front.json").write_text(json.dumps({"budget": {"latency_ms": 0.25}, "speed_probe": {"factor": 1.2}}))
    assert search_beside(str(tmp_path / "recommended.json")) == {"budget_ms": 0.25, "probed": True}
    assert search_beside("largest") is None
    (tmp_path / "front.json").write_text('{"budget": ')
    assert search_beside(str(tmp_path / "recommended.json")) is None  # not a search's output: nothing to judge
    assert judge_budget({"measured": {"median_ms": 0.3}}, 0.25) == {"budget_ms": 0.25, "measured_over_budget": 1.2}
    assert judge_budget({"measured": None}, 0.25) == {"budget_ms": 0.25}
