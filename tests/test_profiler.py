"""The profiling run, for real on this CPU with a tiny space and budget (TVM, MetaSchedule)."""

import collections
import json

import numpy as np
import pytest

from codesign.latency.workloads import kernel_family
from codesign.profile.journal import read_journal
from codesign.profile.profiler import ProfileConfig, Profiler, disturbed_pairs, rank_workloads
from codesign.profile.tvm_backend import host_llvm_target
from codesign.testing import run_cli


def test_ranking_puts_heavy_frequent_workloads_first(tiny_space):
    ranked = rank_workloads(tiny_space, 300, 0)
    shares = [s for _, s in ranked]
    assert abs(sum(shares) - 1.0) < 1e-9 and shares == sorted(shares, reverse=True)
    assert len({w for w, _ in ranked}) == len(ranked)


def test_tune_measure_and_resume(tiny_space, tmp_path):
    config = ProfileConfig(
        target=host_llvm_target(1),
        budget_minutes=10,
        tune_trials=2,
        representatives=1,
        top_k=2,
        repeat=3,
        min_repeat_ms=2,
        cost_model="random",
        ranking_samples=200,
        max_tuned_families=1,
        max_workloads=6,
        calibration_models=0,
    )
    summary = Profiler(tiny_space, config, tmp_path).run()
    assert summary == {**summary, "tuned": 1, "measured": 6}
    records = read_journal(tmp_path / "journal.jsonl").records
    (tuned,) = [r for r in records if r["type"] == "tuned"]
    assert tuned["error"] is None and 1 <= len(tuned["traces"]) <= 2
    measured = [r for r in records if r["type"] == "measured"]
    for record in measured:
        ok = [r for r in record["results"] if r["status"] == "ok"]
        assert ok and all(r["timing"]["median_ms"] > 0 and r["timing"]["repeats"] == 3 for r in ok)
        if record["family"] == tuned["family"]:  # replayed tuned schedules are candidates 1..k
            assert len(record["results"]) == 1 + len(tuned["traces"])
    # a second run (e.g. after a kill) measures only what is missing and tunes nothing again
    more = ProfileConfig(
        **{
            **config.__dict__,
            "max_workloads": 8,
            "calibration_models": 3,
            "full_fraction": 0.0,
            "coverage_candidates": 1,
        }
    )
    again = Profiler(tiny_space, more, tmp_path).run()
    assert again["tuned"] == 1 and again["measured"] == 8 and again["models"] == 3
    records = read_journal(tmp_path / "journal.jsonl").records
    keys = [r["key"] for r in records if r["type"] == "measured"]
    assert len(set(keys)) == 8
    first: dict = {}
    for r in records:
        if r["type"] == "measured":
            first.setdefault(r["key"], r)
    # a kernel is timed again only to complete a partial (coverage) record, never twice in full
    for key in {k for k in keys if keys.count(k) > 1}:
        assert keys.count(key) == 2 and any(r["status"] == "unmeasured" for r in first[key]["results"])
    # the two new kernels went through the coverage pass: default + 1 preferred candidate timed,
    # the other tuned candidate only checked to replay
    covered = [r for k, r in first.items() if k not in {m["key"] for m in measured}]
    for record in covered:
        statuses = [r["status"] for r in record["results"]]
        if record["family"] == tuned["family"]:
            assert statuses[0] == "ok" and statuses.count("ok") == 2 and len(statuses) == 3, statuses
    assert kernel_family(ranked_first(tiny_space)) in {r["family"] for r in measured}
    models = [r for r in read_journal(tmp_path / "journal.jsonl").records if r["type"] == "model"]
    assert all(m["status"] == "ok" and m["timing"]["median_ms"] > 0 for m in models), models
    assert any(any(s > 0 for s in m["genome"]["schedules"]) for m in models)  # tuned schedules compiled in
    # even calibration models are scheduled as the search schedules: fastest under the model of the kernels
    from codesign.profile.fitting import provisional_model
    from codesign.space import Genome

    profiler = Profiler(tiny_space, more, tmp_path)
    provisional = provisional_model(tiny_space, profiler.candidates(), list(profiler._done("measured").values()), [])
    assert provisional is not None
    for m in models[::2]:
        genome = Genome.from_dict(m["genome"])
        assert provisional.fastest_schedules(genome) == genome and m["schedules"] == "fastest"
    assert all(m["schedules"] == "random" for m in models[1::2])
    invocations = [r for r in read_journal(tmp_path / "journal.jsonl").records if r["type"] == "invocation"]
    assert len(invocations) == 2 and all(r["seconds"] > 0 for r in invocations)

    # the profile: kernel predictor fills what was not measured, calibration fitted on the models
    from codesign.latency.model import LatencyModel
    from codesign.profile.profiler import profile_from_journal

    profile = profile_from_journal(tiny_space, more, tmp_path)
    fitted = profile.predictor
    assert fitted["coverage"]["pairs_measured"] < fitted["coverage"]["pairs_total"]
    assert fitted["calibration"]["models"] == 3 and "model_validation" in fitted
    assert profile.validation["measurement_minutes"] > 0 and len(profile.models) == 3
    latency = LatencyModel.from_profile(profile)
    assert 0 < latency.predict([Genome.largest(tiny_space)])[0] < 1e3

    # every replayed tuned schedule (timed or only checked to replay) records the tilings it took on that shape,
    # the kernel predictor reads them, and a profile measured without them gets the same ones back by replaying
    from dataclasses import replace

    from codesign.profile.profiler import record_tilings

    families = profile.tuning_records["families"]
    traced = [
        (r, families.get(m["family"], [{"trace": None}])[r["candidate"]]["trace"] is not None)
        for m in profile.measurements
        for r in m["results"]
        if r["status"] != "failed"
    ]
    replayed = [r for r, has_trace in traced if has_trace]
    assert replayed and all(r["tilings"] and all(isinstance(f, int) for t in r["tilings"] for f in t) for r in replayed)
    assert not any("tilings" in r for r, has_trace in traced if not has_trace)  # default lowerings have none
    assert fitted["kernel_validation"]["pairs_with_tilings"] > 0
    stripped = [
        {**m, "results": [{k: v for k, v in r.items() if k != "tilings"} for r in m["results"]]}
        for m in profile.measurements
    ]
    # a schedule the coverage pass only saw replay, whose tilings collapsed there, was timed after it
    from codesign.latency.predictor import collapsed_tilings, trace_tilings

    timed = {(m["key"], r["candidate"]) for m in profile.measurements for r in m["results"] if r["status"] == "ok"}
    for m in profile.measurements:
        for r in m["results"]:
            if r["status"] == "unmeasured" and "tilings" in r:
                tuned = trace_tilings(families[m["family"]][r["candidate"]]["trace"])
                assert not collapsed_tilings(tuned, r["tilings"]) or (m["key"], r["candidate"]) in timed
    restored, added = record_tilings(replace(profile, measurements=stripped))
    assert restored == profile.measurements and added == len(replayed)
    assert record_tilings(profile) == (profile.measurements, 0)


def test_profiling_in_two_layouts_gives_mixed_layout_candidates_and_transposes(tiny_space, tmp_path):
    """NHWC tuned next to NCHW: candidates carry their layout, transposes are timed, models mix layouts."""
    from codesign.compiler.tvm_compile import compile_subnet, compiled_choices, time_executable
    from codesign.latency.model import LatencyModel
    from codesign.profile.profiler import profile_from_journal
    from codesign.space import Genome

    config = ProfileConfig(
        target=host_llvm_target(1),
        budget_minutes=10,
        tune_trials=2,
        representatives=1,
        top_k=1,
        repeat=3,
        min_repeat_ms=2,
        cost_model="random",
        ranking_samples=200,
        max_tuned_families=2,
        max_workloads=8,
        calibration_models=2,
        full_fraction=1.0,
        layouts=("NCHW", "NHWC"),
    )
    Profiler(tiny_space, config, tmp_path).run()
    records = read_journal(tmp_path / "journal.jsonl").records
    tuned = [r for r in records if r["type"] == "tuned"]
    assert sorted(r["layout"] for r in tuned) == ["NCHW", "NCHW", "NHWC", "NHWC"]
    assert all(r["error"] is None and r["traces"] for r in tuned)
    profile = profile_from_journal(tiny_space, config, tmp_path)
    families = profile.tuning_records["families"]
    for family in {r["family"] for r in tuned}:
        layouts = [c["layout"] for c in families[family]]
        assert layouts == ["NCHW", "NCHW", "NHWC", "NHWC"], layouts  # default + trace, per layout
        assert families[family][2]["trace"] is None  # NHWC's default lowering
    nhwc_timed = [
        r
        for m in profile.measurements
        if m["family"] in families
        for r in m["results"]
        if families[m["family"]][r["candidate"]]["layout"] == "NHWC" and r["status"] == "ok"
    ]
    assert nhwc_timed and all(r["timing"]["median_ms"] > 0 for r in nhwc_timed)
    assert {t["to_layout"] for t in profile.transposes} == {"NCHW", "NHWC"}
    assert all(t["status"] == "ok" and t["timing"]["median_ms"] > 0 for t in profile.transposes)
    assert all(m["status"] == "ok" for m in profile.models), profile.models
    model = LatencyModel.from_profile(profile)
    assert model.has_layouts
    # the fastest schedules of a subnet compile, in the layouts their candidates fix
    genome = model.fastest_schedules(Genome.largest(tiny_space))
    nhwc_genes = Genome(
        **{
            **genome.__dict__,
            "schedules": tuple(
                2 if model.positions.positions[p].family in families else 0 for p in range(model.num_positions)
            ),
        }
    )
    assert "NHWC" in compiled_choices(tiny_space, nhwc_genes, families).layouts
    timing = time_executable(
        compile_subnet(tiny_space, nhwc_genes, config.target, families), tiny_space, nhwc_genes.resolution
    )
    assert timing.median_ms > 0 and np.isfinite(model.predict([nhwc_genes])[0])


def ranked_first(space):
    return rank_workloads(space, 200, 0)[0][0]


def test_profile_command_writes_a_valid_profile(tmp_path):
    import subprocess
    import sys
    from dataclasses import replace

    from codesign.latency.model import MEASURED, PREDICTED, LatencyModel, timing_disturbed
    from codesign.profile.profile_file import load_profile
    from codesign.space import Genome, SearchSpace

    out = tmp_path / "cpu.json"
    cmd = [
        sys.executable,
        "-m",
        "codesign",
        "profile",
        "--space",
        "tiny",
        "--representatives",
        "0",
        "--max-workloads",
        "5",
        "--calibration-models",
        "2",
        "--cores",
        "1",
        "-o",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = load_profile(out, target=host_llvm_target(1))
    profile = loaded.profile
    assert len(profile.measurements) == 5 and profile.validation["workloads_measured"] == 5
    assert len(profile.models) == 2 and "whole models (leave-one-out)" in result.stdout
    assert profile.software.tvm.startswith("0.27") and profile.device.cores >= 1
    assert profile.command[:2] == ["codesign", "profile"] or profile.command[1] == "profile"
    bad = run_cli("profile", "--target", "tpu", "-o", str(out), cwd=tmp_path)
    assert bad.returncode == 1 and "unknown target" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    # --recalibrate: more whole models measured here, scheduled as the search would, calibration re-fitted
    again = tmp_path / "recalibrated.json"
    recalibrate = ("profile", "--recalibrate", str(out), "--calibration-models", "2", "--cores", "1", "-o", str(again))
    result = run_cli(*recalibrate, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recalibrated = load_profile(again, target=host_llvm_target(1)).profile
    assert recalibrated.models[:2] == profile.models
    # first the kernel/schedule pairs the search's picks use at a predicted latency are timed
    before = LatencyModel.from_profile(profile)
    kept = len(profile.measurements)
    assert recalibrated.measurements[:kept] == profile.measurements
    timed = [(r["key"], x) for r in recalibrated.measurements[kept:] for x in r["results"]]
    assert timed and all(x["status"] in ("ok", "failed") for _, x in timed)
    index = {w.key(): i for i, w in enumerate(before.positions.workloads)}
    assert all(before.sources[index[key], x["candidate"]] == PREDICTED for key, x in timed)
    after = LatencyModel.from_profile(recalibrated)
    # a timing disturbed while timed (a busy CI machine) stays predicted: the table does not trust it
    assert all(
        after.sources[index[key], x["candidate"]] == (PREDICTED if timing_disturbed(x["timing"]) else MEASURED)
        for key, x in timed
        if x["status"] == "ok"
    )
    # then the picks of the refined kernel table (under the calibration of the time) are measured whole
    added = recalibrated.models[2:]
    assert len(added) == 2 and all(m["status"] == "ok" and m["key"].startswith("recalibration") for m in added)
    refined = replace(
        recalibrated,
        models=profile.models,
        predictor={**recalibrated.predictor, "calibration": profile.predictor["calibration"]},
    )
    model = LatencyModel.from_profile(refined)
    for m in added:
        genome = Genome.from_dict(m["genome"])
        assert model.fastest_schedules(genome) == genome
    calibration = recalibrated.predictor["calibration"]
    assert calibration["models"] == 4 and calibration["recalibrations"][-1]["models_added"] == 2
    assert all(m["schedules"] == "fastest" for m in added)
    assert "3 scheduled fastest" in result.stdout and "1 scheduled random" in result.stdout  # 1 + 1 of the profile
    rerun = run_cli(*recalibrate, cwd=tmp_path)  # resumes from the journal: nothing measured twice
    assert rerun.returncode == 0 and "whole model recalibration" not in rerun.stdout
    assert load_profile(again).profile.models == recalibrated.models
    twice = tmp_path / "twice.json"  # a second recalibration adds models of its own (here whole models only)
    result = run_cli(
        "profile",
        "--recalibrate",
        str(again),
        "--calibration-models",
        "1",
        "--calibration-sampling",
        "spread",
        "--models-only",
        "--speed-probe",
        "1",
        "--cores",
        "1",
        "-o",
        str(twice),
    )
    assert result.returncode == 0, result.stderr
    assert load_profile(twice).profile.measurements == recalibrated.measurements
    models = load_profile(twice).profile.models
    # the new subnet's timing joins in the profile's units: divided by the probe's factor, journaled raw
    probe = load_profile(twice).profile.predictor["calibration"]["recalibrations"][-1]["speed_probe"]
    assert probe["factor"] > 0 and len(probe["subnets"]) == 1 and "speed probe" in result.stdout
    assert probe["single_thread_factor"] > 0 and len(probe["single_thread_kernels"]) == 1
    journal = read_journal(tmp_path / "twice.json.work" / "journal.jsonl").records
    raw = [r for r in journal if r.get("type") == "model"]
    # a subnet's factor: its one-thread kernels' share of its predicted time at theirs, the rest at the subnets'
    used = models[4]["speed_factor"]
    assert models[4]["timing"]["median_ms"] == pytest.approx(raw[0]["timing"]["median_ms"] / used)
    two = sorted((probe["factor"], probe["single_thread_factor"]))
    assert two[0] - 1e-12 <= used <= two[1] + 1e-12
    assert [m["key"] for m in models[:4]] == [m["key"] for m in recalibrated.models]
    assert len(models) == 5 and models[4]["key"] == "recalibration1-000"
    tiny = SearchSpace.from_dict(recalibrated.space)
    smallest = LatencyModel.from_profile(recalibrated).fastest_schedules(Genome.smallest(tiny).canonical(tiny))
    assert Genome.from_dict(models[4]["genome"]) == smallest  # spread sampling starts at the range's low end
    # after a change to the compiler, the subnets the profile holds are timed again, in place
    retimed_path = tmp_path / "retimed.json"
    result = run_cli(
        "profile",
        "--recalibrate",
        str(twice),
        "--calibration-models",
        "0",
        "--retime-models",
        "--cores",
        "1",
        "-o",
        str(retimed_path),
    )
    assert result.returncode == 0, result.stderr
    assert "5 of them re-timed" in result.stdout
    retimed = load_profile(retimed_path).profile
    assert [m["key"] for m in retimed.models] == [m["key"] for m in models]
    assert [m["genome"] for m in retimed.models] == [m["genome"] for m in models]
    assert all(m["retimed"] == "recalibration2" and m["status"] == "ok" for m in retimed.models)
    assert all(a["timing"] != b["timing"] for a, b in zip(retimed.models, models, strict=True))
    assert retimed.predictor["calibration"]["recalibrations"][-1]["models_retimed"] == 5
    # on a machine whose speed is bimodal, each subnet keeps its fastest occasion
    fastest_path = tmp_path / "fastest.json"
    result = run_cli(
        "profile",
        "--recalibrate",
        str(retimed_path),
        "--calibration-models",
        "0",
        "--retime-models",
        "--retime-rule",
        "fastest",
        "--cores",
        "1",
        "-o",
        str(fastest_path),
    )
    assert result.returncode == 0, result.stderr
    for before, after in zip(retimed.models, load_profile(fastest_path).profile.models, strict=True):
        occasions = after["timing_occasions_ms"]
        assert len(occasions) == 2 and occasions[0] == before["timing"]["median_ms"]
        assert after["timing"]["median_ms"] == min(occasions) and after["retimed"] == "recalibration3"
    # a pair timed while disturbed (its repeats spread wide) is timed again by itself: kernels only, no subnets
    disturbed_doc = json.loads(fastest_path.read_text())
    steady = next(
        (m, x)
        for m in disturbed_doc["measurements"]
        for x in m["results"]
        if x["status"] == "ok" and not timing_disturbed(x["timing"])
    )
    steady[1]["timing"]["std_ms"] = steady[1]["timing"]["median_ms"]  # spread 100%: disturbed
    disturbed_path = tmp_path / "disturbed.json"
    disturbed_path.write_text(json.dumps(disturbed_doc))
    redone_path = tmp_path / "redone.json"
    result = run_cli(
        "profile",
        "--recalibrate",
        str(disturbed_path),
        "--kernel-schedules",
        "disturbed",
        "--calibration-models",
        "0",
        "--cores",
        "1",
        "-o",
        str(redone_path),
    )
    assert result.returncode == 0, result.stderr
    redone = load_profile(redone_path).profile
    kept = len(disturbed_doc["measurements"])
    again_timed = [(r["key"], x["candidate"]) for r in redone.measurements[kept:] for x in r["results"]]
    wanted = {(key, c) for key, (_, chosen) in disturbed_pairs(disturbed_doc["measurements"]).items() for c in chosen}
    assert (steady[0]["key"], steady[1]["candidate"]) in wanted  # with any the CI machine disturbed itself
    assert sorted(again_timed) == sorted(wanted)
    assert redone.models == load_profile(fastest_path).profile.models
    # a profile of another CPU is not recalibrated here
    foreign = json.loads(out.read_text())
    foreign["target"]["mcpu"] = "cortex-a72"
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    bad = run_cli("profile", "--recalibrate", str(tmp_path / "foreign.json"), "-o", str(tmp_path / "f2.json"))
    assert (
        bad.returncode == 1
        and "not measured with this machine" in bad.stderr
        and len(bad.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "f2.json").exists()
    # --check-speed: the profile's own subnets re-timed here, the factor printed; not on another CPU's profile
    checked = run_cli("profile", "--check-speed", str(retimed_path), "--probe-subnets", "2", "--cores", "1")
    assert checked.returncode == 0, checked.stderr
    factor = float(checked.stdout.split("subnets run ")[1].split("x their recorded")[0])
    assert factor > 0 and "speed probe 2:" in checked.stdout  # its value is the machine's load, not the code's
    assert "speed probe, one thread:" in checked.stdout and "2 one-thread kernels" in checked.stdout
    assert ("warning:" in checked.stdout) != (
        "of the profile's speed" in checked.stdout or "x the time it ran" in checked.stdout
    )
    bad = run_cli("profile", "--check-speed", str(tmp_path / "foreign.json"))
    assert bad.returncode == 1 and "not measured with this machine" in bad.stderr


def test_bad_layouts_are_one_line_errors_before_any_work(tmp_path):
    out = tmp_path / "p.json"
    for spec, message in (("NHWC", "must include NCHW"), ("NCHW,NCHW16c", "unknown data layout 'NCHW16c'")):
        result = run_cli("profile", "--space", "tiny", "--layouts", spec, "-o", str(out))
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "p.json.work").exists()


def test_spread_sampling_spans_the_latency_range(tiny_space):
    from codesign.latency.model import LatencyModel
    from codesign.profile.profiler import spread_architectures
    from codesign.space import Genome
    from codesign.testing import synthetic_profile

    model = LatencyModel.from_profile(synthetic_profile(tiny_space))
    picks = spread_architectures(model, 6, np.random.default_rng(0))
    assert len(picks) == 6 and len({g.to_json() for g in picks}) == 6
    assert picks[:2] == [
        Genome.smallest(tiny_space).canonical(tiny_space),
        Genome.largest(tiny_space).canonical(tiny_space),
    ]
    latency = model.predict([model.fastest_schedules(g) for g in picks])
    assert latency[0] == latency.min() and latency[1] == latency.max()
    between = latency[2:]
    assert np.all(np.diff(between) >= 0)  # nearest to rising goals
    # the largest gap between picks on a log latency scale (the range's ends included) is smaller
    # than for random draws of the same number: random draws cluster in the middle
    ends = np.log(latency[:2])

    def widest_gap(values: np.ndarray) -> float:
        return float(np.diff(np.sort(np.concatenate([np.log(values), ends]))).max())

    rng = np.random.default_rng(1)
    random_gaps = [
        widest_gap(model.predict([model.fastest_schedules(Genome.random(tiny_space, rng)) for _ in range(6)]))
        for _ in range(20)
    ]
    assert widest_gap(latency) < np.median(random_gaps)
    # a profile's subnets carry schedule genes: excluded by architecture, however scheduled
    scheduled = model.fastest_schedules(picks[0])
    assert scheduled.schedules and scheduled.architecture(tiny_space) == picks[0]
    exclude = {scheduled.architecture(tiny_space).to_json()}
    again = spread_architectures(model, 6, np.random.default_rng(0), exclude=exclude)
    assert picks[0] not in again and again[0] == picks[1]


def test_retimed_record_rules():
    from codesign.errors import CodesignError
    from codesign.profile.profiler import retimed_record

    old = {"key": "model000", "genome": {}, "status": "ok", "timing": {"median_ms": 2.0}, "error": None, "seconds": 1}
    slower = {"status": "ok", "timing": {"median_ms": 3.0}, "error": None, "seconds": 2}
    faster = {"status": "ok", "timing": {"median_ms": 1.0}, "error": None, "seconds": 2}
    failed = {"status": "failed", "timing": None, "error": "boom", "seconds": 2}
    assert retimed_record(old, slower, rule="replace", label="r1")["timing"]["median_ms"] == 3.0
    assert retimed_record(old, failed, rule="replace", label="r1")["status"] == "failed"
    kept = retimed_record(old, slower, rule="fastest", label="r1")
    assert kept["timing"]["median_ms"] == 2.0 and kept["timing_occasions_ms"] == [2.0, 3.0]
    taken = retimed_record(kept, faster, rule="fastest", label="r2")
    assert taken["timing"]["median_ms"] == 1.0 and taken["timing_occasions_ms"] == [2.0, 3.0, 1.0]
    assert taken["retimed"] == "r2" and taken["key"] == "model000"
    survived = retimed_record(taken, failed, rule="fastest", label="r3")
    assert survived["status"] == "ok" and survived["timing"]["median_ms"] == 1.0
    assert survived["timing_occasions_ms"] == [2.0, 3.0, 1.0]
    with pytest.raises(CodesignError, match="unknown re-timing rule"):
        retimed_record(old, slower, rule="median", label="r1")  # type: ignore[arg-type]


def test_retime_rule_without_retime_models_is_a_one_line_error(tmp_path):
    out = tmp_path / "never.json"
    result = run_cli("profile", "--recalibrate", str(tmp_path / "any.json"), "--retime-rule", "fastest", "-o", str(out))
    assert result.returncode == 1 and "--retime-rule applies to --retime-models" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_refit_with_recalibrate_is_a_one_line_error(tmp_path):
    out = tmp_path / "never.json"
    result = run_cli(
        "profile", "--recalibrate", str(tmp_path / "a.json"), "--refit", str(tmp_path / "a.json"), "-o", str(out)
    )
    assert result.returncode == 1 and "not both" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_refit_fits_the_activation_term_where_it_validates_and_measures_nothing(tiny_space, tmp_path):
    from dataclasses import replace

    from codesign.latency.model import LatencyModel
    from codesign.profile.fitting import fit_predictor
    from codesign.profile.profile_file import load_profile, save_profile
    from codesign.space import Genome
    from codesign.testing import synthetic_profile

    profile = synthetic_profile(tiny_space, calibration=False)
    families = profile.tuning_records["families"]
    predictor = fit_predictor(tiny_space, families, profile.measurements, [])
    assert predictor is not None
    uncalibrated = LatencyModel.from_profile(replace(profile, predictor=predictor))
    rng = np.random.default_rng(0)
    genomes = [uncalibrated.fastest_schedules(Genome.random(tiny_space, rng)) for _ in range(24)]
    sums, kernels, _, activations = uncalibrated.layer_sum(genomes)
    # whole subnets "measured" with a cost per activation element beyond their kernels' own times
    measured = 1.02 * sums + 0.0002 * kernels + 0.03 * activations / 1e6
    models = [
        {
            "key": f"model{i:03d}",
            "status": "ok",
            "schedules": "fastest",
            "genome": g.to_dict(),
            "timing": {"median_ms": m},
        }
        for i, (g, m) in enumerate(zip(genomes, measured, strict=True))
    ]
    source = tmp_path / "old.json"
    save_profile(source, replace(profile, models=models, predictor=predictor))
    out = tmp_path / "refit.json"
    result = run_cli("profile", "--refit", str(source), "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "activation term kept" in result.stdout
    refit = load_profile(out).profile
    terms = refit.predictor["calibration"]["terms"]
    assert terms["per_million_activations_ms"] == pytest.approx(0.03, rel=1e-3)
    assert refit.measurements == profile.measurements and refit.models == models
    assert refit.predictor["filled"] == predictor["filled"]
    assert refit.predictor["calibration"]["recalibrations"][-1]["refit_only"] is True
    assert LatencyModel.from_profile(refit).predict(genomes) == pytest.approx(measured, rel=1e-3)
    assert refit.predictor["model_validation"]["activation_term"]["kept"] is True

    # --kernel-predictor re-fits the kernel predictor too (the profile's pairs have no traces to replay here)
    stale = {**predictor, "filled": {k: [2.0 * v for v in row] for k, row in predictor["filled"].items()}}
    save_profile(source, replace(profile, models=models, predictor=stale))
    result = run_cli("profile", "--refit", str(source), "--kernel-predictor", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kernel predictor and calibration re-fitted" in result.stdout and "kernel predictor before" in result.stdout
    refit = load_profile(out).profile
    assert refit.predictor["filled"] == predictor["filled"] and refit.measurements == profile.measurements
    assert refit.predictor["calibration"]["recalibrations"][-1]["kernel_predictor_refit"] is True
    assert LatencyModel.from_profile(refit).predict(genomes) == pytest.approx(measured, rel=1e-3)
    alone = run_cli("profile", "--kernel-predictor", "-o", str(tmp_path / "y.json"), cwd=tmp_path)
    assert alone.returncode == 1 and "--kernel-predictor applies to --refit" in alone.stderr

    empty = tmp_path / "no-models.json"
    save_profile(empty, replace(profile, models=[], predictor=predictor))
    bad = run_cli("profile", "--refit", str(empty), "-o", str(tmp_path / "x.json"), cwd=tmp_path)
    assert bad.returncode == 1 and "no timed whole subnets" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def _partly_predicted_model(space):
    """The latency model of a synthetic profile (NCHW, NHWC and NCHW8c candidates) whose candidates 2 and 3
    were only checked to replay on every kernel (filled at their invented latency, never timed)."""
    import copy
    from dataclasses import replace

    from codesign.latency.model import LatencyModel
    from codesign.testing import synthetic_profile

    profile = synthetic_profile(space, layouts=True, packed=True)
    measurements = copy.deepcopy(profile.measurements)
    filled = {}
    for record in measurements:
        filled[record["key"]] = [r["timing"]["median_ms"] if r.get("timing") else 1.0 for r in record["results"]]
        for r in record["results"]:
            if r["candidate"] in (2, 3) and r["status"] == "ok":
                r.update(status="unmeasured", timing=None)
    predictor = {**(profile.predictor or {}), "filled": filled}
    return LatencyModel.from_profile(replace(profile, measurements=measurements, predictor=predictor))


def test_random_schedule_genes_are_valid_and_stay_within_one_layout_set(tiny_space):
    from codesign.latency.transposes import LAYOUT_NAMES
    from codesign.space import Genome

    model = _partly_predicted_model(tiny_space)
    rng = np.random.default_rng(0)
    drawn = [model.random_schedules(Genome.random(tiny_space, rng).canonical(tiny_space), rng) for _ in range(40)]
    vectors = model.vectors(drawn)
    ids = model.positions.workload_ids(vectors)
    active = model.positions.active(vectors)
    layouts_used = set()
    for n, genome in enumerate(drawn):
        genes = np.asarray(genome.schedules)
        assert np.all(np.isfinite(model.table[ids[n], genes][active[n]]))
        used = {LAYOUT_NAMES[int(model.layout_of[p, g])] for p, g in enumerate(genes) if active[n, p]}
        assert not {"NHWC", "NCHW8c"} <= used  # NCHW and at most one other layout
        layouts_used |= used
    assert layouts_used == {"NCHW", "NHWC", "NCHW8c"}
    assert len({g.schedules for g in drawn}) == len(drawn)
    again = np.random.default_rng(0)
    assert [
        model.random_schedules(Genome.random(tiny_space, again).canonical(tiny_space), again) for _ in range(40)
    ] == drawn


def test_kernels_to_time_are_the_predicted_pairs_of_fastest_or_random_schedules(tiny_space):
    from codesign.errors import CodesignError
    from codesign.latency.model import PREDICTED
    from codesign.profile.profiler import kernels_to_time
    from codesign.space import Genome

    model = _partly_predicted_model(tiny_space)
    rng = np.random.default_rng(1)
    architectures = [Genome.random(tiny_space, rng).canonical(tiny_space) for _ in range(12)]
    index = {w.key(): i for i, w in enumerate(model.positions.workloads)}
    fastest = kernels_to_time(model, architectures, "fastest")
    randomly = kernels_to_time(model, architectures, "random", seed=3)
    assert randomly == kernels_to_time(model, architectures, "random", seed=3)
    pairs = {(k, c) for k, (_, cs) in randomly.items() for c in cs}
    assert len(pairs) > len({(k, c) for k, (_, cs) in fastest.items() for c in cs})
    for wanted in (fastest, randomly):
        assert all(model.sources[index[k], c] == PREDICTED for k, (_, cs) in wanted.items() for c in cs)
    # subnet by subnet: the first architecture's kernels come first
    first = model.predicted_choices([model.random_schedules(architectures[0], np.random.default_rng(3 + 104729))])
    assert list(randomly)[: len(first)] == list(first)
    with pytest.raises(CodesignError, match="unknown kernel schedules"):
        kernels_to_time(model, architectures, "slowest")  # type: ignore[arg-type]


def test_random_kernel_schedules_with_models_only_is_a_one_line_error(tmp_path):
    out = tmp_path / "never.json"
    result = run_cli(
        "profile",
        "--recalibrate",
        str(tmp_path / "a.json"),
        "--kernel-schedules",
        "random",
        "--models-only",
        "-o",
        str(out),
    )
    assert result.returncode == 1 and "--models-only times none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_timings_at_profile_speed_are_divided_by_the_factor_and_say_so():
    from codesign.profile.profiler import at_profile_speed

    record = {
        "type": "measured",
        "key": "k",
        "results": [
            {
                "candidate": 0,
                "status": "ok",
                "timing": {
                    "median_ms": 2.4,
                    "std_ms": 0.12,
                    "repeats": 5,
                    "kernels": [{"median_ms": 2.4, "number": 1}],
                },
            },
            {"candidate": 1, "status": "failed", "timing": None, "error": "x"},
        ],
    }
    scaled = at_profile_speed(record, 1.2)
    ok = scaled["results"][0]["timing"]
    assert ok["median_ms"] == pytest.approx(2.0) and ok["std_ms"] == pytest.approx(0.1) and ok["repeats"] == 5
    assert ok["kernels"] == [{"median_ms": pytest.approx(2.0), "number": 1}]
    assert scaled["results"][1] == record["results"][1] and scaled["speed_factor"] == 1.2
    assert record["results"][0]["timing"]["median_ms"] == 2.4  # the journaled record is left as measured
    assert at_profile_speed(record, 1.0) is record
    model = {"type": "model", "key": "m", "timing": {"median_ms": 0.3, "mean_ms": 0.33}, "genome": {"resolution": 24}}
    assert at_profile_speed(model, 1.5)["timing"] == {"median_ms": pytest.approx(0.2), "mean_ms": pytest.approx(0.22)}
    assert at_profile_speed(model, 1.5)["genome"] == {"resolution": 24}


def test_kernels_timed_alone_join_the_profile_by_the_kernels_alone_factor_not_the_in_network_one():
    from codesign.profile.profiler import kernel_speed_factors

    fitted = {"factor": 1.3, "single_thread_factor": 1.06, "kernels_alone_factor": 0.98, "ratios": [1.3]}
    assert kernel_speed_factors(fitted) == (1.3, 0.98)
    before_the_fit = {"factor": 1.25, "single_thread_factor": 0.97, "ratios": [1.25]}
    assert kernel_speed_factors(before_the_fit) == (1.25, 0.97)
    assert kernel_speed_factors({"factor": 1.1, "ratios": [1.1]}) == (1.1, None)
    assert kernel_speed_factors(None) == (1.0, None)


def test_one_thread_timings_at_profile_speed_are_divided_by_their_own_factor():
    from codesign.profile.profiler import at_profile_speed

    def result(candidate: int, source: str, ms: float) -> dict:
        return {"candidate": candidate, "source": source, "status": "ok", "timing": {"median_ms": ms, "kernels": []}}

    record = {"type": "measured", "key": "k", "results": [result(0, "default", 1.8), result(1, "k#0", 2.4)]}
    scaled = at_profile_speed(record, 1.2, single_thread_factor=0.9)
    assert scaled["results"][0]["timing"]["median_ms"] == pytest.approx(2.0)  # default lowering: one thread
    assert scaled["results"][1]["timing"]["median_ms"] == pytest.approx(2.0)
    assert scaled["speed_factor"] == 1.2 and scaled["single_thread_speed_factor"] == 0.9
    assert at_profile_speed(record, 1.0, single_thread_factor=1.0) is record
    assert at_profile_speed(record, 1.0, single_thread_factor=0.5)["results"][1] == record["results"][1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--speed-probe", "2", "--retime-models"), "give one of them"),
        (("--speed-probe", "-1"), "at least 1 (0: no probe)"),
    ],
)
def test_bad_speed_probe_arguments_are_one_line_errors(tmp_path, extra, message):
    out = tmp_path / "never.json"
    result = run_cli("profile", "--recalibrate", str(tmp_path / "a.json"), *extra, "-o", str(out))
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_disturbed_kernel_timing_is_timed_again_and_the_lower_median_kept():
    from codesign.profile.profiler import NOISY_SPREAD, steady_timing
    from codesign.profile.tvm_backend import Timing

    steady = Timing(mean_ms=0.0031, median_ms=0.003, std_ms=0.0001, repeats=5, number=1)
    disturbed = Timing(mean_ms=4.2, median_ms=4.0, std_ms=2.0, repeats=5, number=1)  # seen in a shipped profile
    queue = [disturbed, steady]
    assert steady_timing(lambda: queue.pop(0)) == (steady, 1) and not queue
    queue = [steady, disturbed]
    assert steady_timing(lambda: queue.pop(0)) == (steady, 0) and queue == [disturbed]
    edge = Timing(mean_ms=1.0, median_ms=1.0, std_ms=NOISY_SPREAD, repeats=5, number=1)
    assert steady_timing(lambda: edge) == (edge, 0)
    slower = Timing(mean_ms=5.0, median_ms=5.0, std_ms=0.1, repeats=5, number=1)
    queue = [disturbed, slower]  # the second attempt is no better: the lower median stands
    assert steady_timing(lambda: queue.pop(0)) == (disturbed, 1)


def test_collapsed_pairs_are_the_predicted_pairs_whose_tilings_collapsed_on_replay(tiny_space):
    """Only pairs predicted (seen to replay, never timed) whose replay collapsed a tiling are timed first."""
    from dataclasses import replace

    from codesign.latency.model import LatencyModel
    from codesign.profile.profiler import collapsed_pairs
    from codesign.testing import synthetic_profile

    profile = synthetic_profile(tiny_space)
    counts = collections.Counter(m["family"] for m in profile.measurements)
    family = max(counts, key=lambda f: counts[f])
    trace = [[["SamplePerfectTile", [], [], []]], [[0, [4, 3, 1, 2]]]]
    options = [dict(o) for o in profile.tuning_records["families"][family]]
    options[1]["trace"] = trace
    families = {**profile.tuning_records["families"], family: options}
    ours = [m for m in profile.measurements if m["family"] == family]
    assert len(ours) >= 3
    cases = {  # key -> (status, tilings of candidate 1)
        ours[0]["key"]: ("unmeasured", [[1, 1, 1, 27]]),  # predicted and collapsed: timed first
        ours[1]["key"]: ("unmeasured", [[3, 3, 1, 2]]),  # predicted, tiled differently but not collapsed
        ours[2]["key"]: ("ok", [[1, 1, 1, 9]]),  # collapsed but already timed
    }
    measurements = []
    for m in profile.measurements:
        results = m["results"]
        if m["key"] in cases:
            status, tilings = cases[m["key"]]
            results = [
                {**r, "status": status, "tilings": tilings, **({"timing": None} if status == "unmeasured" else {})}
                if r["candidate"] == 1
                else r
                for r in results
            ]
        measurements.append({**m, "results": results, "share": 0.5 if m["key"] == ours[0]["key"] else 0.1})
    changed = replace(profile, measurements=measurements, tuning_records={"families": families})
    wanted = collapsed_pairs(changed, LatencyModel.from_profile(changed))
    assert list(wanted) == [ours[0]["key"]] and wanted[ours[0]["key"]][1] == {1}
    assert wanted[ours[0]["key"]][0].key() == ours[0]["key"]


def test_the_profilers_collapsed_phase_times_exactly_the_replay_only_pairs_that_collapsed(tiny_space, tmp_path):
    """The phase after coverage, on a journal written to force it: a candidate only checked to replay whose
    tilings collapsed is timed (alone, most-shared kernel first); one timed in a later record, one that replayed
    without collapsing, and one that collapsed but was timed are not; past the deadline nothing is timed."""
    from codesign.latency.workloads import enumerate_workloads

    trace = [[["SamplePerfectTile", [], [], []]], [[0, [4, 3, 1, 2]]]]
    by_family = collections.defaultdict(list)
    for w in enumerate_workloads(tiny_space):
        by_family[kernel_family(w)].append(w)
    family, workloads = max(by_family.items(), key=lambda item: len(item[1]))
    assert len(workloads) >= 4
    candidates = {family: [{"source": "default", "trace": None}, {"source": "tuned", "trace": trace}]}
    profiler = Profiler(tiny_space, ProfileConfig(target=host_llvm_target(1)), tmp_path)

    def record(w, share, status, tilings):
        result = {"candidate": 1, "status": status, "tilings": tilings, "timing": None}
        return {
            "type": "measured",
            "key": w.key(),
            "family": family,
            "workload": w.to_dict(),
            "share": share,
            "results": [{"candidate": 0, "status": "ok", "timing": {"median_ms": 0.01}}, result],
        }

    collapsed, later_timed, fitting, timed_collapsed = workloads[:4]
    for entry in (
        record(collapsed, 0.2, "unmeasured", [[1, 1, 1, 27]]),
        record(later_timed, 0.9, "unmeasured", [[1, 1, 1, 9]]),
        record(later_timed, 0.9, "ok", [[1, 1, 1, 9]]),
        record(fitting, 0.9, "unmeasured", [[3, 3, 1, 2]]),
        record(timed_collapsed, 0.9, "ok", [[1, 1, 1, 27]]),
    ):
        profiler.journal.append(entry)
    calls, said = [], []

    def fake_measure(w, share, options, *, only=None, others=True, **_):
        calls.append((w.key(), share, only, others, len(options)))
        return record(w, share, "ok", [[1, 1, 1, 27]])

    profiler._measure_one = fake_measure  # type: ignore[method-assign]
    profiler._time_collapsed(candidates, float("-inf"), said.append)
    assert calls == [] and any("budget spent" in line for line in said)
    profiler._time_collapsed(candidates, float("inf"), said.append)
    assert calls == [(collapsed.key(), 0.2, {1}, False, 2)]
    assert any("timing 1 schedules whose tilings collapsed on 1 kernels" in line for line in said)


def test_disturbed_pairs_are_those_whose_latest_timing_spread_beyond_the_threshold(tiny_space):
    """`--kernel-schedules disturbed` times again each pair whose latest timing was disturbed, the most-shared kernel
    first; a pair timed steadily in a later record, a steady one and a failed one are not wanted."""
    from codesign.latency.model import NOISY_SPREAD
    from codesign.latency.workloads import enumerate_workloads
    from codesign.profile.profiler import disturbed_pairs

    def record(w, share, *timings):
        results = [
            {"candidate": c, "status": "ok", "timing": {"median_ms": 1.0, "std_ms": spread}}
            if spread is not None
            else {"candidate": c, "status": "failed", "timing": None}
            for c, spread in timings
        ]
        return {"key": w.key(), "workload": w.to_dict(), "share": share, "results": results}

    a, b, c = [w for w in enumerate_workloads(tiny_space) if w.kind != "pool_fc"][:3]
    noisy, steady = 2 * NOISY_SPREAD, NOISY_SPREAD
    measurements = [
        record(a, 0.1, (0, steady), (1, noisy), (2, None)),
        record(b, 0.2, (0, noisy), (1, noisy)),
        record(b, 0.0, (1, steady)),  # timed again steadily later
        record(c, 0.05, (0, steady)),
    ]
    wanted = disturbed_pairs(measurements)
    assert list(wanted) == [b.key(), a.key()]
    assert wanted[b.key()][1] == {0} and wanted[a.key()][1] == {1} and wanted[a.key()][0] == a
