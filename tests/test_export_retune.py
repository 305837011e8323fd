"""`codesign export --retune-trials`: each kernel tuned on its own, kept where faster, journaled, resumable."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from codesign.errors import ExportError
from codesign.export import retune as retune_module
from codesign.export.pipeline import RETUNE_JOURNAL, export_subnet, retune_journal_path
from codesign.profile.profile_file import load_profile
from codesign.profile.shipped import find_shipped_profile
from codesign.profile.tvm_backend import host_llvm_target
from codesign.space import Genome
from codesign.supernet import load_supernet
from codesign.testing import run_cli


@pytest.fixture(scope="module")
def local_profile():
    # re-tuning times kernels here, so the profile must describe this CPU (the shipped one may be another's)
    profile = load_profile(find_shipped_profile(host_llvm_target(), allow_mismatch=True)).profile
    return replace(profile, target=host_llvm_target())


@pytest.fixture(scope="module")
def loaded():
    return load_supernet()


def _export(loaded, splits, profile, out, **kwargs):
    return export_subnet(
        loaded=loaded,
        genome=Genome.smallest(loaded.supernet.space),
        splits=splits,
        out_dir=out,
        parity_images=16,
        evaluate_test=False,
        profile=profile,
        measure_latency=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def first_export(loaded, fmnist_splits, local_profile, tmp_path_factory):
    """A real re-tuning export whose budget (a few ms) lets exactly one kernel be tuned, with 2 trials."""
    out = tmp_path_factory.mktemp("retune") / "one"
    return _export(loaded, fmnist_splits, local_profile, out, retune_trials=2, retune_minutes=1e-5)


def test_the_slowest_kernel_is_tuned_timed_and_journaled(first_export):
    tvm = first_export.manifest["tvm"]
    retuned = tvm["retuned"]
    assert retuned["trials_per_kernel"] == 2 and retuned["kernels_tuned"] == 1
    tasks = retuned["kernels"]  # one kernel; the pooling + classifier kernel lowers to two tasks
    assert len({(t["workload"], t["layout"]) for t in tasks}) == 1
    for task in tasks:
        assert task["chosen_ms"] > 0 and task["tuned_ms"] is not None and task["tuned_ms"] > 0
        assert task["kept"] in ("tuned", "chosen") and task["error"] is None
    assert retuned["kernels_kept"] == any(t["kept"] == "tuned" for t in tasks)
    assert tvm["tvm_vs_onnxruntime_max_abs"] <= 1e-4
    latency = tvm["latency"]
    assert latency["predicted_retuned_ms"] > 0
    records = [json.loads(line) for line in (first_export.out_dir / RETUNE_JOURNAL).read_text().splitlines()]
    assert [r["workload"] for r in records] == [t["workload"] for t in tasks]
    assert all(r["tuned_trace"] is not None for r in records)
    assert RETUNE_JOURNAL in first_export.manifest["files"]
    assert not retune_journal_path(first_export.out_dir).exists()  # shipped in the artifact, sidecar gone


def test_run_time_compares_with_the_retuned_prediction(first_export):
    timed = run_cli("run", str(first_export.out_dir), "--time", "--threads", "1")
    assert timed.returncode == 0, timed.stderr
    predicted = first_export.manifest["tvm"]["latency"]["predicted_retuned_ms"]
    assert f"predicted after re-tuning {predicted:.4f} ms" in timed.stdout


def test_a_resumed_export_reuses_journaled_kernels_and_compiles_kept_schedules(
    first_export, loaded, fmnist_splits, local_profile, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "resumed"
    # as if a killed export had journaled the first kernel, and its own schedule had won
    records = [json.loads(line) for line in (first_export.out_dir / RETUNE_JOURNAL).read_text().splitlines()]
    record = records[0]
    record.update(kept="tuned", chosen_ms=2 * record["tuned_ms"])
    retune_journal_path(out).write_text("".join(json.dumps(r) + "\n" for r in records))
    tuned_now = []

    def no_tuning(kernel, task, target, trials, key):
        tuned_now.append((kernel.workload.key(), kernel.layout))
        return {
            "key": key,
            "workload": kernel.workload.key(),
            "layout": kernel.layout,
            "task": task.name,
            "trials": trials,
            "chosen_ms": 1e-4,  # kept: the prediction does not move, whatever the time
            "tuned_ms": 2e-4,
            "kept": "chosen",
            "seconds": 0.0,
            "tuned_trace": None,
        }

    monkeypatch.setattr(retune_module, "_retune_one", no_tuning)
    result = _export(loaded, fmnist_splits, local_profile, out, retune_trials=2)
    retuned = result.manifest["tvm"]["retuned"]
    assert (record["workload"], record["layout"]) not in tuned_now
    assert len(tuned_now) == len(retuned["kernels"]) - len(records)  # tasks
    assert retuned["kernels_tuned"] == len(set(tuned_now)) + 1  # distinct kernels
    assert re.search(
        r"1 of \d+ kernels not tuned again: 1 from this export's own journal \(resumed\), 0 from",
        capsys.readouterr().out,
    )
    reused = [k for k in retuned["kernels"] if (k["workload"], k["task"]) == (record["workload"], record["task"])]
    assert [(k["kept"], k["speedup"]) for k in reused] == [("tuned", 2.0)]
    assert retuned["kernels_kept"] == 1
    latency = result.manifest["tvm"]["latency"]
    assert latency["predicted_retuned_ms"] < latency["predicted_ms"]
    assert result.manifest["tvm"]["tvm_vs_onnxruntime_max_abs"] <= 1e-4  # compiled with the re-tuned schedule
    shipped = (out / RETUNE_JOURNAL).read_text().splitlines()
    assert len(shipped) == len(retuned["kernels"]) and not retune_journal_path(out).exists()


def test_kept_schedules_outrank_the_profiles_in_the_database(first_export, loaded, local_profile, tmp_path):
    import tvm

    from codesign.compiler.tvm_compile import compiled_choices, schedule_database
    from codesign.latency.model import LatencyModel
    from codesign.latency.workloads import subnet_workloads
    from codesign.profile import tvm_backend as tb

    space = loaded.supernet.space
    genome = LatencyModel.from_profile(local_profile).fastest_schedules(Genome.smallest(space))
    choices = compiled_choices(space, genome, local_profile.tuning_records["families"])
    database = schedule_database(choices.traces, local_profile.target)
    kernels = retune_module.kernels_by_predicted_time(
        LatencyModel.from_profile(local_profile), genome, choices.traces, subnet_workloads(space, genome)
    )
    records = [json.loads(line) for line in (first_export.out_dir / RETUNE_JOURNAL).read_text().splitlines()]
    record = records[0]
    (kernel,) = [k for k in kernels if (k.workload.key(), k.layout) == (record["workload"], record["layout"])]
    record["kept"] = "tuned"
    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    outcomes = retune_module.retune_kernels(database, [kernel], local_profile.target, trials=2, journal_path=journal)
    assert outcomes[0].kept == "tuned" and len(outcomes) == len(records)
    tasks = tb.workload_tasks(kernel.workload, local_profile.target, layout=kernel.layout)
    (task,) = [t for t in tasks if t.name == record["task"]]
    best = database.query_tuning_record(task.mod, tvm.target.Target(local_profile.target), "main")
    assert tb.trace_to_json(best.trace) == tb.trace_to_json(tb.replay_json(task, record["tuned_trace"]).trace)


def test_kernels_are_ordered_by_their_chosen_schedules_timed_here(loaded, local_profile):
    from codesign.compiler.tvm_compile import compiled_choices
    from codesign.latency.model import LatencyModel
    from codesign.latency.workloads import subnet_workloads

    space = loaded.supernet.space
    model = LatencyModel.from_profile(local_profile)
    genome = model.fastest_schedules(Genome.smallest(space))
    traces = compiled_choices(space, genome, local_profile.tuning_records["families"]).traces
    kernels = retune_module.kernels_by_predicted_time(model, genome, traces, subnet_workloads(space, genome))
    keys = {k.workload.key() for k in kernels}
    assert sum(k.uses for k in kernels) == sum(layer["workload"] in keys for layer in model.explain(genome)["layers"])
    assert [k.predicted_ms for k in kernels] == sorted((k.predicted_ms for k in kernels), reverse=True)
    picked = kernels[:4]
    ordered = retune_module.order_by_measured_time(picked, local_profile.target)
    assert {(k.workload, k.layout) for k in ordered} == {(k.workload, k.layout) for k in picked}
    weights = [k.measured_ms * k.uses for k in ordered]
    assert all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)


def test_a_kernel_that_fails_to_tune_keeps_the_profiles_schedule(loaded, local_profile, tmp_path, monkeypatch):
    from codesign.compiler.tvm_compile import compiled_choices, schedule_database
    from codesign.latency.model import LatencyModel
    from codesign.latency.workloads import subnet_workloads
    from codesign.profile import tvm_backend as tb

    def broken(*_args, **_kwargs):
        raise RuntimeError("builder pool died\nsecond line")

    monkeypatch.setattr(tb, "tune_task", broken)
    space = loaded.supernet.space
    model = LatencyModel.from_profile(local_profile)
    genome = model.fastest_schedules(Genome.smallest(space))
    choices = compiled_choices(space, genome, local_profile.tuning_records["families"])
    kernels = retune_module.kernels_by_predicted_time(model, genome, choices.traces, subnet_workloads(space, genome))
    journal = tmp_path / "journal.jsonl"
    lines = []
    (outcome,) = retune_module.retune_kernels(
        schedule_database(choices.traces, local_profile.target),
        kernels[:1],
        local_profile.target,
        trials=2,
        journal_path=journal,
        progress=lines.append,
    )
    assert outcome.kept == "chosen" and outcome.tuned_ms is None and outcome.chosen_ms > 0
    assert outcome.error == "RuntimeError: builder pool died" and "tuning failed" in lines[-1]
    assert json.loads(journal.read_text())["error"] == outcome.error


def test_the_budget_never_stops_between_a_kernels_tasks(loaded, local_profile, tmp_path, monkeypatch):
    from codesign.compiler.tvm_compile import compiled_choices, schedule_database
    from codesign.latency.model import LatencyModel
    from codesign.latency.workloads import subnet_workloads
    from codesign.profile import tvm_backend as tb

    def instant(kernel, task, target, trials, key):
        return {
            **{"key": key, "workload": kernel.workload.key(), "layout": kernel.layout, "task": task.name},
            **{"trials": trials, "chosen_ms": 1e-3, "tuned_ms": None, "kept": "chosen", "seconds": 0.0},
            "tuned_trace": None,
        }

    monkeypatch.setattr(retune_module, "_retune_one", instant)
    space = loaded.supernet.space
    model = LatencyModel.from_profile(local_profile)
    genome = model.fastest_schedules(Genome.smallest(space))
    choices = compiled_choices(space, genome, local_profile.tuning_records["families"])
    kernels = retune_module.kernels_by_predicted_time(model, genome, choices.traces, subnet_workloads(space, genome))
    pooling = [k for k in kernels if k.workload.kind == "pool_fc"]
    tasks = tb.workload_tasks(pooling[0].workload, local_profile.target, layout=pooling[0].layout)
    assert len(tasks) > 1  # the pooling + classifier kernel lowers to several tasks
    outcomes = retune_module.retune_kernels(
        schedule_database(choices.traces, local_profile.target),
        [pooling[0], *(k for k in kernels if k.workload.kind != "pool_fc")],
        local_profile.target,
        trials=2,
        journal_path=tmp_path / "journal.jsonl",
        budget_minutes=1e-9,  # spent as soon as the first kernel starts
    )
    assert [o.task for o in outcomes] == [t.name for t in tasks]


def test_retune_settings_are_checked_before_any_work(loaded, fmnist_splits, local_profile, tmp_path):
    with pytest.raises(ExportError, match="needs --retune-trials"):
        _export(loaded, fmnist_splits, local_profile, tmp_path / "a", retune_minutes=5)
    with pytest.raises(ExportError, match="at least 0"):
        _export(loaded, fmnist_splits, local_profile, tmp_path / "b", retune_trials=-1)
    with pytest.raises(ExportError, match="positive"):
        _export(loaded, fmnist_splits, local_profile, tmp_path / "c", retune_trials=2, retune_minutes=0)
    elsewhere = replace(local_profile, target={**local_profile.target, "mcpu": "cortex-a72", "mtriple": "aarch64"})
    with pytest.raises(ExportError, match="tunes on this machine"):
        _export(loaded, fmnist_splits, elsewhere, tmp_path / "d", retune_trials=2)
    with pytest.raises(ExportError, match="needs a hardware profile"):
        export_subnet(
            loaded=loaded,
            genome=Genome.smallest(loaded.supernet.space),
            splits=fmnist_splits,
            out_dir=tmp_path / "e",
            target=host_llvm_target(),
            retune_trials=2,
        )
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_cli_refuses_retuning_without_tvm(tmp_path):
    done = run_cli("export", "--genome", "smallest", "--retune-trials", "4", "-o", str(tmp_path / "x"))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith("compile with TVM: add --format tvm")
    assert not (tmp_path / "x").exists()


def test_the_retuned_prediction_scales_model_times_by_the_measured_gain(loaded, local_profile):
    from codesign.latency.model import LatencyModel

    model = LatencyModel.from_profile(local_profile)
    genome = model.fastest_schedules(Genome.smallest(loaded.supernet.space))
    layer = max(model.explain(genome)["layers"], key=lambda layer: layer["latency_ms"])
    as_predicted = retune_module.RetunedKernel(
        layer["workload"], layer["layout"], "main", 2, layer["latency_ms"], layer["latency_ms"] / 2, "chosen", 1.0, None
    )
    predicted = float(model.predict([genome])[0])
    assert retune_module.retuned_prediction(model, genome, []) == pytest.approx(predicted)
    assert retune_module.retuned_prediction(model, genome, [as_predicted]) == pytest.approx(predicted)
    faster = retune_module.retuned_prediction(model, genome, [replace(as_predicted, kept="tuned")])
    # each layer running it saves half its time, scaled by the calibration's layer scale (0.89 on the Intel profile)
    assert faster < predicted - 0.99 * model.calibration.layer_scale * layer["latency_ms"] / 2
    # times measured on a machine running 3x slower than the profile: the same gain, the same prediction
    slower = replace(as_predicted, chosen_ms=3 * layer["latency_ms"], tuned_ms=1.5 * layer["latency_ms"], kept="tuned")
    assert retune_module.retuned_prediction(model, genome, [slower]) == pytest.approx(faster)
    assert retune_module.retuned_prediction(model, genome, [replace(slower, kept="chosen")]) == pytest.approx(predicted)


def test_retuned_kernel_speedup_is_one_unless_kept():
    kernel = retune_module.RetunedKernel("w", "NCHW", "main", 2, 0.02, 0.01, "chosen", 1.0, None)
    assert kernel.speedup == 1.0 and replace(kernel, kept="tuned").speedup == 2.0
    assert "tuned_trace" not in kernel.summary()


def test_trials_are_split_into_a_warm_run_and_an_independent_cold_one():
    run = retune_module.TuningRun
    assert retune_module.tuning_runs(16, warm=True) == [run(8, 0, True), run(8, 1, False)]
    assert retune_module.tuning_runs(5, warm=False) == [run(3, 0, False), run(2, 1, False)]
    assert retune_module.tuning_runs(1, warm=True) == [run(1, 0, True)]


def test_a_warm_run_starts_from_the_chosen_schedule_and_returns_another(loaded, local_profile, monkeypatch):
    from codesign.compiler.tvm_compile import compiled_choices
    from codesign.latency.model import LatencyModel
    from codesign.profile import tvm_backend as tb

    space = loaded.supernet.space
    genome = LatencyModel.from_profile(local_profile).fastest_schedules(Genome.smallest(space))
    traces = compiled_choices(space, genome, local_profile.tuning_records["families"]).traces
    (workload, layout), trace = next((key, t) for key, t in traces.items() if key[0].kind == "conv")
    (task,) = tb.workload_tasks(workload, local_profile.target, layout=layout)
    chosen = tb.replay_json(task, trace)
    real_tune, logs = tb.tune_task, []

    def tune_and_read_logs(task, target, work_dir, **kwargs):
        database = real_tune(task, target, work_dir, **kwargs)
        logs.append("".join(p.read_text() for p in (Path(work_dir) / "logs").glob("*task*")))
        return database

    monkeypatch.setattr(tb, "tune_task", tune_and_read_logs)
    found = retune_module._tuned_candidate(
        task, local_profile.target, retune_module.TuningRun(2, 0, True), chosen, chosen_ms=1e-6
    )
    assert "Picked top 1 candidate(s) from database" in logs[0]  # the seed record joined the population
    assert found is not None and found[0] != tb.trace_to_json(chosen.trace) and found[1] > 0


def test_an_export_reuses_the_kernels_an_earlier_export_tuned(
    first_export, loaded, fmnist_splits, local_profile, tmp_path, monkeypatch, capsys
):
    earlier = [json.loads(line) for line in (first_export.out_dir / RETUNE_JOURNAL).read_text().splitlines()]
    tuned_now = []

    def record_only(kernel, task, target, trials, key):
        tuned_now.append((kernel.workload.key(), task.name))
        return {
            **{"key": key, "workload": kernel.workload.key(), "layout": kernel.layout, "task": task.name},
            **{"trials": trials, "chosen_ms": 1e-3, "tuned_ms": None, "kept": "chosen", "seconds": 0.0},
            "tuned_trace": None,
        }

    monkeypatch.setattr(retune_module, "_retune_one", record_only)
    out = tmp_path / "second"
    result = _export(loaded, fmnist_splits, local_profile, out, retune_trials=2, retune_from=(first_export.out_dir,))
    assert not {(r["workload"], r["task"]) for r in earlier} & set(tuned_now)  # not tuned again
    assert re.search(
        r"1 of \d+ kernels not tuned again: 0 from .*, 1 from --retune-from journals", capsys.readouterr().out
    )
    shipped = [json.loads(line) for line in (out / RETUNE_JOURNAL).read_text().splitlines()]
    assert [r for r in shipped if r["key"] in {e["key"] for e in earlier}] == earlier  # copied into this journal
    assert len(shipped) == len(result.manifest["tvm"]["retuned"]["kernels"]) == len(earlier) + len(tuned_now)


def test_retune_from_must_name_a_retuned_export(loaded, fmnist_splits, local_profile, tmp_path):
    with pytest.raises(ExportError, match="no re-tuning journal there"):
        _export(loaded, fmnist_splits, local_profile, tmp_path / "a", retune_trials=2, retune_from=(tmp_path,))
    with pytest.raises(ExportError, match="--retune-from needs --retune-trials"):
        _export(loaded, fmnist_splits, local_profile, tmp_path / "b", retune_from=(tmp_path,))
    assert not any(p.name in ("a", "b") for p in tmp_path.iterdir())
