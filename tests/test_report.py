"""``codesign report``: a real search on the shipped profile, a real export, one HTML page about both."""

import base64
import json
import re
import shutil

import pytest

from codesign.export.pipeline import export_subnet
from codesign.latency.model import LatencyModel
from codesign.profile.profile_file import load_profile
from codesign.profile.shipped import find_shipped_profile
from codesign.profile.tvm_backend import host_llvm_target
from codesign.search.accuracy_predictor import AccuracyPredictor
from codesign.search.encoding import SearchEncoding
from codesign.search.pipeline import default_predictor_path
from codesign.search.problem import Budget, SearchProblem
from codesign.search.report import front_points, recommend, write_results
from codesign.search.runner import run_search
from codesign.search.strategies import create_strategy
from codesign.space import Genome
from codesign.supernet import load_supernet
from codesign.testing import run_cli

BUDGET_MS = 0.3


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    """What `codesign search --latency-ms 0.3 -o DIR` writes, searched in-process (no finalist evaluation)."""
    # this CPU's profile (or the portable one): a profile's kernels may use instructions another CPU lacks (the Intel
    # profile's AVX-512 ones stop an AMD CPU with an illegal instruction)
    profile_path = find_shipped_profile(host_llvm_target(2), allow_mismatch=True)
    model = LatencyModel.from_profile(profile_path)
    predictor = AccuracyPredictor.load(default_predictor_path(None))
    problem = SearchProblem(SearchEncoding(model.space, model), model, predictor, Budget(latency_ms=BUDGET_MS))
    outcome = run_search(problem, create_strategy("evolution", population_size=40), generations=20, seed=0)
    points = front_points(problem, outcome.archive)
    out = tmp_path_factory.mktemp("report") / "search"
    summary = {
        "target": {"kind": "llvm", "mcpu": "znver3", "num-cores": 2},
        "profile": str(profile_path),
        "device": model.name,
        "budget": {"latency_ms": BUDGET_MS, "max_params": None, "max_memory_bytes": None},
        "fastest_reachable_ms": 0.117,
        "search": {"strategy": "evolution", "generations": 20, "seed": 0, "scored": outcome.scored, "seconds": 1.0},
    }
    write_results(out, points=points, recommended=recommend(points), space=model.space, summary=summary)
    return out


def images(html):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_shows_search_export_breakdown_and_trust(search_dir, fmnist_splits, tmp_path):
    front = json.loads((search_dir / "front.json").read_text())
    recommended = front["front"][front["recommended"]]
    model = LatencyModel.from_profile(front["profile"])

    export = export_subnet(
        loaded=load_supernet(),
        genome=Genome.from_dict(recommended["genome"]),
        splits=fmnist_splits,
        out_dir=tmp_path / "best",
        parity_images=16,
        evaluate_test=False,
        profile=load_profile(front["profile"]).profile,
    )
    result = run_cli("report", str(search_dir), "--export", str(tmp_path / "best"), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "r.html").read_text()
    assert recommended["short"] in html and f"latency &le; {BUDGET_MS:g} ms" in html
    pngs = images(html)
    assert len(pngs) == 3 and all(p[:4] == b"\x89PNG" for p in pngs)  # front, per-kernel breakdown, trust
    explanation = model.explain(Genome.from_dict(recommended["genome"]))
    assert f"<b>{explanation['predicted_ms']:.3f} ms</b>" in html
    assert f"{explanation['kernels']} fused kernels" in html
    latency = export.manifest["tvm"]["latency"]
    if latency["measured"]:  # the profiled machine: measured next to predicted, with the error
        error = (latency["predicted_ms"] / latency["measured"]["median_ms"] - 1) * 100
        assert f"{latency['measured']['median_ms']:.3f} &plusmn;" in html and f"{error:+.1f}%" in html
        one_thread = latency["by_threads"]["timings"]["1"]["median_ms"]
        assert f"<td class=l>{latency['recommended_threads']} (1: {one_thread:.3f}" in html
        # an export made with --speed-probe: the prediction at the probed speed beside the profile's
        manifest_path = tmp_path / "best" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["tvm"]["latency"]["speed_probe"] = {"factor": 0.9, "ratios": [0.9], "subnets": ["m"], "seconds": 1}
        manifest["tvm"]["latency"].update({"budget_ms": 0.25, "measured_over_budget": 1.2})
        manifest_path.write_text(json.dumps(manifest))
        result = run_cli("report", str(search_dir), "--export", str(tmp_path / "best"), "-o", str(tmp_path / "p.html"))
        assert result.returncode == 0, result.stderr
        probed = (tmp_path / "p.html").read_text()
        scaled = 0.9 * latency["predicted_ms"]
        assert f"({scaled:.3f} at this machine's probed speed, 0.900x the profile's time)" in probed
        assert f"{(scaled / latency['measured']['median_ms'] - 1) * 100:+.1f}% at probed speed" in probed
        assert "the device was busy while probing" not in probed
        assert "(<b>over</b> the 0.25 ms budget: 1.20x)" in probed and "ms budget: " not in html
        manifest["tvm"]["latency"]["speed_probe"]["warning"] = "ratios 0.9-283"
        manifest_path.write_text(json.dumps(manifest))
        assert (
            run_cli(
                "report", str(search_dir), "--export", str(tmp_path / "best"), "-o", str(tmp_path / "p.html")
            ).returncode
            == 0
        )
        assert "0.900x the profile's time; the device was busy while probing" in (tmp_path / "p.html").read_text()
    assert "the genome&#x27;s schedule genes" in html  # a search result carries its schedule genes
    assert "(not the recommended genome)" not in html
    assert "leave-one-out" in html and "cross-validation" in html
    default = search_dir / "report.html"
    assert run_cli("report", str(search_dir)).returncode == 0 and default.is_file()  # default output path
    # a search run with --speed-probe: its budget was bound at the probed speed, and the report says so
    probed_search = tmp_path / "probed_search"
    shutil.copytree(search_dir, probed_search)
    probed_front = json.loads((probed_search / "front.json").read_text())
    probed_front["speed_probe"] = {"factor": 1.5, "ratios": [1.5], "subnets": ["m"], "seconds": 1}
    (probed_search / "front.json").write_text(json.dumps(probed_front))
    assert run_cli("report", str(probed_search), "-o", str(tmp_path / "s.html")).returncode == 0
    assert "ms at the probed speed (1.500x the profiled time)" in (tmp_path / "s.html").read_text()
    assert "at the probed speed" not in html


def test_report_input_errors_are_one_line(search_dir, tmp_path):
    missing = run_cli("report", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.html"))
    assert missing.returncode == 1 and "front.json" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "front.json").write_text('{"front": [')
    bad = run_cli("report", str(broken), "-o", str(tmp_path / "r.html"))
    assert bad.returncode == 1 and "not valid JSON" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    no_export = run_cli("report", str(search_dir), "--export", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert no_export.returncode == 1 and "manifest.json" in no_export.stderr
    assert not (tmp_path / "r.html").exists()  # nothing written on failure
