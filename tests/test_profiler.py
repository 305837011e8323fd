"""The profiling run, for real on this CPU with a tiny space and budget (TVM, MetaSchedule)."""

from codesign.profile.journal import read_journal
from codesign.profile.profiler import ProfileConfig, Profiler, kernel_family, rank_workloads
from codesign.profile.tvm_backend import host_llvm_target


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
    more = ProfileConfig(**{**config.__dict__, "max_workloads": 8})
    again = Profiler(tiny_space, more, tmp_path).run()
    assert again["tuned"] == 1 and again["measured"] == 8
    keys = [r["key"] for r in read_journal(tmp_path / "journal.jsonl").records if r["type"] == "measured"]
    assert len(keys) == len(set(keys)) == 8
    assert kernel_family(ranked_first(tiny_space)) in {r["family"] for r in measured}


def ranked_first(space):
    return rank_workloads(space, 200, 0)[0][0]
