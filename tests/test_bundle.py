"""Measurement bundles: built here, measured by their own measure.py (no TVM compiler), merged into a profile."""

import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codesign.errors import CodesignError
from codesign.profile.bundle import BundleConfig, build_bundle, load_bundle_index, merge_results
from codesign.profile.bundle_measure import output_summary, probe_array, summary_error


def test_probe_inputs_are_deterministic_and_summaries_catch_differences():
    a = probe_array([2, 3, 4], "float32", salt=5)
    assert a.shape == (2, 3, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, probe_array([2, 3, 4], "float32", salt=5))
    assert np.abs(a).max() <= 1.0 and not np.array_equal(a, probe_array([2, 3, 4], "float32", salt=6))
    assert probe_array([], "float32", 0).shape == ()
    want = output_summary(a)
    assert summary_error(output_summary(a + 1e-6), want) < 1e-3
    assert summary_error(output_summary(a * 1.01), want) > 1e-3
    poisoned = a.copy()
    poisoned[0, 0, 0] = np.nan
    assert summary_error(output_summary(poisoned), want) == float("inf")


def run_measure(bundle: Path, *args: str) -> str:
    """Run a bundle's own measure.py as on a device: no PYTHONPATH, so codesign is not importable there."""
    run = subprocess.run(
        [sys.executable, str(bundle / "measure.py"), "--min-repeat-ms", "1", "--no-torch", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def measured_llvm_bundle(tmp_path_factory, tiny_space):
    from codesign.profile.tvm_backend import host_llvm_target

    root = tmp_path_factory.mktemp("bundle")
    config = BundleConfig(target=host_llvm_target(), sampled_candidates=1, models=3, max_workloads=5, batch_kernels=4)
    summary = build_bundle(tiny_space, config, root / "b")
    bundle = root / "b"
    log = run_measure(bundle, "--repeat", "3").splitlines()
    # the few whole subnets first, so that a short GPU window that ends early keeps them
    first_kernels = next(i for i, line in enumerate(log) if line.startswith("kernels/"))
    assert [i for i, line in enumerate(log) if line.startswith("model ")] == list(range(1, 4))
    assert first_kernels == 4
    return summary, bundle


def test_bundle_is_self_contained_and_measured(measured_llvm_bundle):
    summary, bundle = measured_llvm_bundle
    index = load_bundle_index(bundle)
    assert summary["kernels"] == sum(len(lib["kernels"]) for lib in index["kernel_libraries"]) > 0
    assert len(index["kernel_libraries"]) >= 2  # batches of 4 functions
    assert all(len(c) == 2 for c in index["families"].values())  # default + one sampled schedule
    for name in ("measure.py", "codesign_runtime.py", "runtime/libtvm_runtime.so"):
        assert (bundle / name).is_file()
    assert any((bundle / "python").glob("cp*/tvm_ffi/__init__.py"))
    assert summary["bytes"] < 64 * 2**20
    results = json.loads((bundle / "results.json").read_text())
    statuses = [r["status"] for r in results["kernels"].values()]
    assert len(statuses) == summary["kernels"] and statuses.count("ok") == len(statuses)
    assert all(r["status"] == "ok" and r["timing"]["median_ms"] > 0 for r in results["models"].values())
    assert len(results["models"]) == 3


def test_merged_profile_predicts_and_validates(measured_llvm_bundle, tiny_space, tmp_path):
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile, save_profile

    _, bundle = measured_llvm_bundle
    profile = merge_results(bundle, bundle / "results.json")
    path = save_profile(tmp_path / "p.json", profile)
    loaded = load_profile(path, target=profile.target).profile
    assert loaded.validation["bundle"]["bundle_id"] == load_bundle_index(bundle)["bundle_id"]
    assert len(loaded.models) == 3 and all(m["status"] == "ok" for m in loaded.models)
    model = LatencyModel.from_profile(loaded)
    genome = loaded.models[0]["genome"]
    from codesign.space import Genome

    predicted = model.predict([Genome.from_dict(genome)])[0]
    assert np.isfinite(predicted) and predicted > 0


def test_a_models_only_bundle_measures_held_out_subnets(measured_llvm_bundle, tiny_space, tmp_path):
    """What tools/bench_latency_model.py --build-bundle sends to a device without TVM."""
    from codesign.latency.model import LatencyModel
    from codesign.profile.bundle import build_model_bundle
    from codesign.space import Genome

    _, source = measured_llvm_bundle
    profile = merge_results(source, source / "results.json")
    model = LatencyModel.from_profile(profile)
    genomes = [model.fastest_schedules(Genome.random(tiny_space, np.random.default_rng(s))) for s in (7, 8)]
    families = profile.tuning_records["families"]
    labels = [{"predicted_ms": float(p)} for p in model.predict(genomes)]
    summary = build_model_bundle(tiny_space, profile.target, families, genomes, tmp_path / "h", labels=labels)
    assert summary["models"] == 2 and not (tmp_path / ".h.partial").exists()
    index = load_bundle_index(tmp_path / "h")
    assert index["kernel_libraries"] == [] and index["config"]["models_only"]
    assert [m["predicted_ms"] for m in index["models"]] == [lab["predicted_ms"] for lab in labels]
    assert [Genome.from_dict(m["genome"]) for m in index["models"]] == genomes
    run_measure(tmp_path / "h", "--repeat", "2")
    results = json.loads((tmp_path / "h" / "results.json").read_text())
    assert [results["models"][m["key"]]["status"] for m in index["models"]] == ["ok", "ok"]
    assert all(r["check_error"] <= 1e-4 for r in results["models"].values())
    with pytest.raises(CodesignError, match="not empty"):
        build_model_bundle(tiny_space, profile.target, families, genomes, tmp_path / "h")


def test_wrong_outputs_are_not_timed_and_results_must_match_the_bundle(measured_llvm_bundle, tmp_path):
    _, source = measured_llvm_bundle
    bundle = tmp_path / "b"
    shutil.copytree(source, bundle)
    (bundle / "results.json").unlink()
    index = json.loads((bundle / "bundle.json").read_text())
    first = index["kernel_libraries"][0]["kernels"][0]
    index["references"][first["reference"]]["values"][0] += 10.0
    index["bundle_id"] = "edited"
    (bundle / "bundle.json").write_text(json.dumps(index))
    run_measure(bundle, "--repeat", "2")
    results = json.loads((bundle / "results.json").read_text())
    assert results["kernels"][first["symbol"]]["status"] == "wrong"
    profile = merge_results(bundle, bundle / "results.json")
    record = next(m for m in profile.measurements if m["key"] == first["key"])
    row = next(r for r in record["results"] if r["candidate"] == first["candidate"])
    assert row["status"] == "failed" and "wrong output" in row["error"]
    with pytest.raises(CodesignError, match="measured bundle"):
        merge_results(bundle, source / "results.json")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit's nvcc (no GPU needed)")
def test_a_stopped_build_resumes_without_redoing_finished_work(measured_llvm_bundle, tiny_space, tmp_path, monkeypatch):
    from codesign.compiler import tvm_compile
    from codesign.profile import bundle as bundle_module
    from codesign.profile.tvm_backend import host_llvm_target

    config = BundleConfig(target=host_llvm_target(), sampled_candidates=1, models=2, max_workloads=5, batch_kernels=4)
    out = tmp_path / "b"
    built: list[list[str]] = []
    compiled: list[object] = []
    real_build, real_compile = bundle_module._KernelBatcher._build, tvm_compile.compile_subnet

    def build(self, items):
        built.append([symbol for symbol, _, _ in items])
        if stop_at_library == len(built):
            raise KeyboardInterrupt  # killed while compiling this library
        return real_build(self, items)

    def compile_subnet(*args, **kwargs):
        compiled.append(args[1])
        if stop_at_model == len(compiled):
            raise KeyboardInterrupt
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(bundle_module._KernelBatcher, "_build", build)
    monkeypatch.setattr(tvm_compile, "compile_subnet", compile_subnet)
    stop_at_library, stop_at_model = 2, 0
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_space, config, out)
    partial = tmp_path / ".b.partial"
    assert not out.exists() and len(json.loads((partial / "progress.json").read_text())["libraries"]) == 1
    first_library = set(built[0])

    built.clear()
    stop_at_library, stop_at_model = 0, 2
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_space, config, out)
    assert built and not first_library & {s for symbols in built for s in symbols}  # library 1 was not rebuilt
    assert len(json.loads((partial / "progress.json").read_text())["models"]) == 1

    built.clear()
    compiled.clear()
    stop_at_library, stop_at_model = 0, 0
    summary = build_bundle(tiny_space, config, out)
    assert built == [] and len(compiled) == 1  # only the second whole model was left to do
    assert not partial.exists() and not (out / "progress.json").exists()
    index = load_bundle_index(out)
    assert [m["key"] for m in index["models"]] == ["model000", "model001"]
    assert all((out / m["path"]).is_file() for m in index["models"])
    symbols = [k["symbol"] for lib in index["kernel_libraries"] for k in lib["kernels"]]
    uninterrupted = load_bundle_index(measured_llvm_bundle[1])  # the same kernels, built in one go
    assert sorted(symbols) == sorted(k["symbol"] for lib in uninterrupted["kernel_libraries"] for k in lib["kernels"])
    assert summary["kernels"] == len(symbols) == len(set(symbols))


def test_cuda_bundle_builds_here_with_compiled_kernels(tmp_path, tiny_space):
    from codesign.compiler.cuda_binary import CudaPayload, complete_cuda_target, library_import_tree

    summary = build_bundle(
        tiny_space,
        BundleConfig(target=complete_cuda_target(), sampled_candidates=1, models=1, max_workloads=3),
        tmp_path / "gpu",
    )
    bundle = tmp_path / "gpu"
    index = load_bundle_index(bundle)
    assert summary["kernels"] > 0 and summary["models"] == 1
    assert (bundle / "runtime" / "libtvm_runtime_cuda.so").is_file()
    for path in [lib["path"] for lib in index["kernel_libraries"]] + [m["path"] for m in index["models"]]:
        assert path.endswith(".so.xz")
        unpacked = tmp_path / Path(path).name[: -len(".xz")]
        unpacked.write_bytes(lzma.decompress((bundle / path).read_bytes()))
        formats = [CudaPayload.parse(m.payload).fmt for m in library_import_tree(unpacked).modules if m.kind == "cuda"]
        assert formats == ["fatbin"], (path, formats)
    dry = subprocess.run(
        [sys.executable, str(bundle / "measure.py"), "--dry-run"], capture_output=True, text=True, timeout=300
    )
    if dry.returncode != 0:  # no GPU driver here: one clear line, not a traceback
        assert dry.stderr.startswith("error: cannot load the TVM runtime for cuda") and dry.stderr.count("\n") == 1


def test_bad_bundles_are_refused(tmp_path):
    with pytest.raises(CodesignError, match="not a measurement bundle"):
        load_bundle_index(tmp_path)
    (tmp_path / "bundle.json").write_text("{")
    with pytest.raises(CodesignError, match="unreadable"):
        load_bundle_index(tmp_path)


class _FakeFunc:
    def with_attr(self, key, value):
        return self


def test_kernel_batches_isolate_kernels_the_compiler_rejects(tmp_path, monkeypatch):
    from codesign.profile import bundle as bundle_module

    exported = []

    def fake_export(items, path, target):
        symbols = [s for s, _, _ in items]
        if "k2" in symbols:  # ptxas names the entry function it rejects
            raise RuntimeError("ptxas error   : Entry function 'k2_kernel' uses too much shared data")
        if "k5" in symbols:  # an error that names nothing: found by bisection
            raise RuntimeError("nvcc crashed")
        path.write_bytes(b"library")
        exported.append((path.name, symbols))

    batcher = bundle_module._KernelBatcher(tmp_path, {"kind": "cuda"}, batch=8)
    monkeypatch.setattr(batcher, "_build", lambda items: items)
    monkeypatch.setattr(bundle_module, "_export", fake_export)
    for i in range(8):
        batcher.add(f"k{i}", _FakeFunc(), {"key": f"w{i}", "candidate": 0, "task": 0, "weight": 1})
    batcher.flush()
    kept = [s for lib in batcher.libraries for s in (k["symbol"] for k in lib["kernels"])]
    assert sorted(kept) == ["k0", "k1", "k3", "k4", "k6", "k7"]
    assert sorted(f["key"] for f in batcher.failed) == ["w2", "w5"]
    assert "too much shared data" in next(f["error"] for f in batcher.failed if f["key"] == "w2")
    assert len({name for name, _ in exported}) == len(exported)  # every library has its own file


def test_measure_checks_exported_artifacts_on_the_device(measured_llvm_bundle, fmnist_splits, tmp_path):
    from codesign.export.pipeline import export_subnet
    from codesign.profile.shipped import resolve_profile
    from codesign.profile.tvm_backend import host_llvm_target
    from codesign.space import Genome
    from codesign.supernet import load_supernet

    _, bundle = measured_llvm_bundle
    loaded = load_supernet()
    profile = resolve_profile(host_llvm_target(), None, allow_mismatch=True).profile
    export_subnet(
        loaded=loaded,
        genome=Genome.smallest(loaded.supernet.space),
        splits=fmnist_splits,
        out_dir=tmp_path / "art",
        parity_images=8,
        evaluate_test=False,
        profile=profile,
        measure_latency=False,
    )
    out = tmp_path / "r.json"
    run_measure(bundle, "--out", str(out), "--repeat", "2", "--artifact", str(tmp_path / "art"))
    record = json.loads(out.read_text())["artifacts"]["art"]
    assert record["status"] == "ok" and record["max_abs_vs_onnxruntime"] <= 1e-3 and record["images"] == 8
    assert record["timing"]["median_ms"] > 0 and record["predicted_ms"] > 0


def test_merge_records_the_gpu_as_measure_py_read_it(measured_llvm_bundle, tmp_path):
    """The provenance path of a GPU run, on the llvm results relabeled as measure.py writes them on a GPU."""
    _, bundle = measured_llvm_bundle
    results = json.loads((bundle / "results.json").read_text())
    results["device"] = "cuda"
    results["device_info"] = {
        "device": "cuda",
        "name": "NVIDIA H100 80GB HBM3",
        "driver_version": "580.159.04",
        "clocks.max.sm": "1980",
        "cuda": "13.0",
        "multiprocessors": 132,
        "host": "gpu-box",
    }
    path = tmp_path / "gpu_results.json"
    path.write_text(json.dumps(results))
    profile = merge_results(bundle, path)
    assert profile.device.kind == "gpu" and profile.device.name == "NVIDIA H100 80GB HBM3"
    assert profile.device.cores == 132 and profile.device.max_clock_mhz == 1980.0
    assert profile.software.cuda == "13.0 (driver 580.159.04)"
    assert profile.validation["bundle"]["device_as_read"]["driver_version"] == "580.159.04"


def test_measure_py_refuses_a_corrupt_index_in_one_line(tmp_path):
    from codesign.profile import bundle_measure

    (tmp_path / "bundle.json").write_text("{")
    run = subprocess.run(
        [sys.executable, bundle_measure.__file__, "--bundle", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and run.stderr.startswith("error:") and run.stderr.count("\n") == 1
