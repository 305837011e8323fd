"""The profiler's TVM primitives, for real on this CPU (tiny workloads, tiny budgets)."""

import math

import pytest

from codesign.latency import Workload
from codesign.latency.predictor import trace_tilings
from codesign.profile.tvm_backend import (
    build_in_child,
    build_kernel,
    changed_tile_decisions,
    distinct_top_records,
    host_llvm_target,
    replayed_tilings,
    resampled_tiles,
    time_kernel,
    trace_to_json,
    transpose_task,
    tune_task,
    workload_tasks,
)


@pytest.fixture(scope="module")
def target():
    t = host_llvm_target(1)
    assert t["mcpu"] and t["mcpu"] != "generic"
    return t


@pytest.mark.parametrize(
    "workload, kernels",
    [
        (Workload("conv", 8, 24, 6, 1, 1, "relu"), ["fused_conv2d_add_relu"]),
        (Workload("depthwise", 24, 24, 6, 5, 2, "relu6"), ["fused_conv2d_add_maximum_minimum"]),
        (Workload("conv", 24, 8, 3, 1, 1, "none", residual=True), ["fused_conv2d_add_add1"]),
        (Workload("pool_fc", 32, 10, 3, 1, 1, "none"), ["fused_matmul_add", "mean", "reshape"]),
    ],
)
def test_workloads_lower_to_one_fused_kernel_each(workload, kernels, target):
    tasks = workload_tasks(workload, target)
    assert sorted(t.name for t in tasks) == sorted(kernels)
    for task in tasks:
        timing = time_kernel(build_kernel(task, target), task, repeat=3, min_repeat_ms=5)
        assert timing.repeats == 3 and 0 < timing.median_ms < 1000 and math.isfinite(timing.std_ms)


def test_tune_and_replay_distinct_schedules(target, tmp_path):
    (first,) = workload_tasks(Workload("conv", 8, 16, 4, 1, 1, "relu"), target)
    tune_task(first, target, tmp_path / "first", trials=2, cost_model="random")  # several tunings per process
    (task,) = workload_tasks(Workload("conv", 16, 32, 4, 1, 1, "relu"), target)
    db = tune_task(task, target, tmp_path / "ms", trials=6, cost_model="random", trials_per_iter=6)
    records = distinct_top_records(db, task, 3)
    assert 1 <= len(records) <= 3
    assert len({str(r.trace) for r in records}) == len(records)
    for record in records:
        timing = time_kernel(build_kernel(task, target, record.trace), task, repeat=3, min_repeat_ms=5)
        assert timing.median_ms > 0
    # replayed on its own shape every tiling fits; on 28 channels at 5 px none of the 32-channel, 4 px ones can
    (other,) = workload_tasks(Workload("conv", 16, 28, 5, 1, 1, "relu"), target)
    for record in records:
        trace = trace_to_json(record.trace)
        assert resampled_tiles(task, trace) == {}
        redrawn = resampled_tiles(other, trace)
        assert redrawn and all(math.prod(new) != math.prod(old) for old, new in redrawn.values())
        # the tilings replayed: the tuned ones on its own shape, on the other shape the redrawn ones in their place
        assert replayed_tilings([task], trace) == trace_tilings(trace)
        elsewhere = replayed_tilings([other], trace)
        assert len(elsewhere) == len(trace_tilings(trace))
        assert sorted(map(tuple, elsewhere)) != sorted(map(tuple, trace_tilings(trace)))
        assert all(list(new) in elsewhere for _, new in redrawn.values())


def test_changed_tile_decisions_are_the_perfect_tilings_that_differ():
    traced = [
        [
            ["GetBlock", [], [], ["b0"]],
            ["SamplePerfectTile", ["l1"], [4, 64], ["v2"]],
            ["SampleCategorical", [], [], []],
        ],
        [[1, [4, 3, 1, 2]], [2, 1]],
    ]
    assert changed_tile_decisions(traced, traced) == {}
    replayed = [traced[0], [[1, [1, 1, 1, 27]], [2, 0]]]  # a categorical drawn again is no tiling
    assert changed_tile_decisions(traced, replayed) == {1: ([4, 3, 1, 2], [1, 1, 1, 27])}


def test_nhwc_kernels_and_the_transposes_between_layouts_build_and_time(target):
    (nhwc,) = workload_tasks(Workload("depthwise", 24, 24, 6, 3, 1, "hswish"), target, layout="NHWC")
    assert "conv2d_nhwc" in nhwc.mod.script() or "group_conv2d_nhwc" in nhwc.mod.script()
    (residual,) = workload_tasks(Workload("conv", 24, 8, 3, 1, 1, "none", residual=True), target, layout="NHWC")
    assert "T_transpose" not in residual.mod.script(), "the block input arrives NHWC: no transpose inside"
    for task in (nhwc, residual, transpose_task(24, 6, target), transpose_task(24, 6, target, to_layout="NCHW")):
        assert time_kernel(build_kernel(task, target), task, repeat=3, min_repeat_ms=5).median_ms > 0
    packing = transpose_task(24, 6, target, to_layout="NCHW8c")
    unpacking = transpose_task(24, 6, target, to_layout="NCHW", from_layout="NCHW8c")
    for task in (packing, unpacking):
        assert "T_layout_trans" in task.mod.script() and "conv2d" not in task.mod.script()
        assert time_kernel(build_kernel(task, target), task, repeat=3, min_repeat_ms=5).median_ms > 0
    with pytest.raises(ValueError, match="no layout change from 'NHWC' to 'NCHW8c'"):
        transpose_task(24, 6, target, to_layout="NCHW8c", from_layout="NHWC")
    with pytest.raises(ValueError, match="12 channels do not divide into 8-channel blocks"):
        transpose_task(12, 6, target, to_layout="NCHW8c")


def test_builds_run_in_a_child_with_a_time_limit(target):
    """A build that never ends is killed at its deadline; errors come back with their message."""
    import time

    task = transpose_task(8, 4, target)
    module = build_in_child(lambda: build_kernel(task, target), timeout_s=60)
    assert time_kernel(module, task, repeat=2, min_repeat_ms=1).median_ms > 0
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 0.5 s"):
        build_in_child(lambda: time.sleep(30), timeout_s=0.5)
    assert time.monotonic() - started < 10
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        build_in_child(lambda: 1 / 0, timeout_s=60)
