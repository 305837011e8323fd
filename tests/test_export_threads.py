"""Choosing an artifact's runtime thread count from measurements (the sweep itself runs in test_export_tvm)."""

import numpy as np
import pytest

from codesign.errors import CodesignError
from codesign.export.threads import EQUAL_WITHIN, ThreadSweep, candidate_thread_counts, sweep_threads


@pytest.mark.parametrize(
    ("cores", "counts"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12])],
)
def test_candidate_counts_are_one_powers_of_two_and_all_cores(cores, counts):
    assert candidate_thread_counts(cores) == counts


def test_candidate_counts_need_a_core():
    with pytest.raises(ValueError, match="at least 1"):
        candidate_thread_counts(0)


def test_the_fastest_median_is_recommended_not_the_most_threads():
    sweep = ThreadSweep({1: [1.0, 1.1, 0.9], 2: [1.4, 1.5, 0.5]}, rounds=3)
    assert sweep.median_ms(2) == 1.4
    assert sweep.recommended() == 1  # one fast outlier at 2 threads does not win


def test_near_ties_go_to_fewer_threads():
    close = 1.0 / (1 + EQUAL_WITHIN / 2)
    assert ThreadSweep({1: [1.0], 2: [close], 4: [0.5]}, rounds=1).recommended() == 4
    assert ThreadSweep({1: [1.0], 2: [close]}, rounds=1).recommended() == 1
    assert ThreadSweep({1: [1.0], 2: [0.9]}, rounds=1).recommended() == 2


def test_timings_are_json_ready_statistics():
    sweep = ThreadSweep({1: [float(v) for v in range(1, 11)], 2: [2.0] * 10}, rounds=2)
    out = sweep.to_dict()
    assert out["rounds"] == 2 and list(out["timings"]) == ["1", "2"]
    one = out["timings"]["1"]
    assert one["median_ms"] == 5.5 and one["mean_ms"] == 5.5 and one["repeats"] == 10
    assert one["p10_ms"] < one["median_ms"] < one["p90_ms"]
    assert out["timings"]["2"]["std_ms"] == 0.0


def test_a_library_that_cannot_load_is_a_clear_error(tmp_path):
    broken = tmp_path / "model_tvm.so"
    broken.write_bytes(b"not a shared library")
    with pytest.raises(CodesignError, match="timing model_tvm.so on 1 thread failed"):
        sweep_threads(broken, [1, 1, 28, 28], counts=[1], rounds=1)


def test_a_timing_process_that_hangs_or_prints_nothing_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    from codesign.export import threads

    library = tmp_path / "model_tvm.so"
    library.write_bytes(b"")

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], threads.TIMEOUT_S)

    monkeypatch.setattr(threads.subprocess, "run", hangs)
    with pytest.raises(CodesignError, match="on 2 threads took over 600 s"):
        sweep_threads(library, [1, 1, 28, 28], counts=[2], rounds=1)

    def silent(*args, **kwargs):
        return subprocess.CompletedProcess(args[0], 0, stdout="", stderr="")

    monkeypatch.setattr(threads.subprocess, "run", silent)
    with pytest.raises(CodesignError, match="printed no timings"):
        sweep_threads(library, [1, 1, 28, 28], counts=[1], rounds=1)


def test_libraries_swept_together_are_timed_in_the_same_interleaved_rounds(tmp_path, monkeypatch):
    """Each round times every library at each of its counts, those at one count in one process with their
    windows alternating, so a change of the machine's speed falls on all."""
    from pathlib import Path

    from codesign.export import threads

    calls = []

    def fake(libraries, threads_, repeat):
        calls.append(([Path(library.path).name for library in libraries], threads_))
        return [[float(len(calls) * 10 + i)] * repeat for i, _ in enumerate(libraries)]

    monkeypatch.setattr(threads, "_time_together", fake)
    model = threads.TimedLibrary(tmp_path / "model.so", (1, 1, 28, 28), (1, 2))
    probe = threads.TimedLibrary(tmp_path / "probe.so", (1, 1, 24, 24), (2,))
    swept = threads.sweep_libraries([model, probe], rounds=2, repeat=3)
    round_ = [(["model.so"], 1), (["model.so", "probe.so"], 2)]
    assert calls == round_ + round_
    assert swept[0].samples_ms == {1: [10.0] * 3 + [30.0] * 3, 2: [20.0] * 3 + [40.0] * 3}
    assert swept[1].samples_ms == {2: [21.0] * 3 + [41.0] * 3} and swept[1].rounds == 2
    with pytest.raises(ValueError):
        threads.sweep_libraries([model, threads.TimedLibrary(tmp_path / "p.so", (1,), ())])


def test_libraries_timed_together_for_real(tmp_path):
    """Two exported libraries in one timing process: one list of samples each, the heavier one slower."""
    import tvm
    from tvm.script import relax as R

    from codesign.export.threads import TimedLibrary, sweep_libraries

    small = np.random.default_rng(0).standard_normal((16, 16)).astype("float32")
    large = np.random.default_rng(1).standard_normal((768, 768)).astype("float32")

    @tvm.script.ir_module
    class Light:
        @R.function
        def main(x: R.Tensor((1, 16), "float32")):
            with R.dataflow():
                y = R.matmul(x, R.const(small))
                R.output(y)
            return y

    @tvm.script.ir_module
    class Heavy:
        @R.function
        def main(x: R.Tensor((1, 768), "float32")):
            with R.dataflow():
                y = R.matmul(R.matmul(x, R.const(large)), R.const(large))
                R.output(y)
            return y

    def library(name, module):
        path = tmp_path / name
        tvm.compile(module, target=tvm.target.Target({"kind": "llvm"})).export_library(str(path))
        return path

    light = TimedLibrary(library("light.so", Light), (1, 16), (1,))
    heavy = TimedLibrary(library("heavy.so", Heavy), (1, 768), (1, 2))
    light_sweep, heavy_sweep = sweep_libraries([light, heavy], rounds=1, repeat=3)
    assert len(light_sweep.samples_ms[1]) == 3 and sorted(heavy_sweep.samples_ms) == [1, 2]
    assert light_sweep.median_ms(1) < heavy_sweep.median_ms(1)
