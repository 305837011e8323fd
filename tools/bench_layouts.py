"""NCHW against NHWC and packed NCHW8c on this CPU: per kernel family with equal tuning, and in a whole subnet.

Part 1, kernels: for each kernel family of the space's largest subnet (kind, kernel size,
activation, residual), its largest workload whose channels divide by 8 is tuned with MetaSchedule
in NCHW, NHWC and NCHW8c with the same number of trials, and the fastest schedule of each is timed
(and TVM's default lowering of each, for orientation). The transposes a change of layout costs
are timed for the activations of the same subnet.

Part 2, a whole subnet (``--genome``, default the smallest): compiled all-NCHW under schedules
tuned here, then with the depthwise kernels NHWC under schedules tuned here (a transpose before
and after each), both timed side by side in the same run; every kernel is tuned with the same
``--whole-trials`` in both variants, so the comparison is of layouts, not of tuning effort.

    TVM_NUM_THREADS=2 python tools/bench_layouts.py --trials 24

Run it on an otherwise idle machine: it measures. Last line:
``RESULT layouts nhwc_over_nchw=<geomean of tuned kernel ratios> depthwise_nhwc_over_nchw=<geomean>
pointwise_nhwc_over_nchw=<geomean> nchw8c_over_nchw=<geomean> depthwise_nchw8c_over_nchw=<geomean>
pointwise_nchw8c_over_nchw=<geomean> transpose_us=<median> whole_mixed_over_nchw=<ratio>``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def tuned_and_default(
    task: Any, target: dict[str, Any], trials: int, repeat: int, *, time_default: bool = True
) -> dict[str, Any]:
    """Tune ``task``; time its fastest record and (``time_default``) its default lowering (ms); keep the record."""
    from codesign.profile import tvm_backend as tb

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="codesign-layout-") as work:
        records = tb.distinct_top_records(tb.tune_task(task, target, work, trials=trials), task, 1)
    tune_s = time.time() - started
    default = (
        tb.time_kernel(tb.build_kernel(task, target, None), task, repeat=repeat).median_ms if time_default else None
    )
    if not records:
        return {"tuned_ms": None, "default_ms": default, "tune_s": tune_s, "record": None}
    tuned = tb.time_kernel(tb.build_kernel(task, target, records[0].trace), task, repeat=repeat).median_ms
    return {"tuned_ms": tuned, "default_ms": default, "tune_s": tune_s, "record": records[0]}


def transpose_ms(channels: int, resolution: int, target: dict[str, Any], repeat: int) -> float:
    """Median time of the NCHW -> NHWC transpose of one activation (TVM's default lowering, as compiled)."""
    from codesign.profile import tvm_backend as tb

    task = tb.transpose_task(channels, resolution, target)
    return tb.time_kernel(tb.build_kernel(task, target, None), task, repeat=repeat).median_ms


def geomean(values: list[float]) -> float:
    """Geometric mean (nan when empty)."""
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=None, help="search space (default: the shipped one)")
    parser.add_argument("--genome", default=None, help="subnet genome JSON for part 2 (default: the smallest)")
    parser.add_argument("--trials", type=int, default=24, help="MetaSchedule trials per kernel and layout")
    parser.add_argument("--whole-trials", type=int, default=16, help="trials per kernel and layout in part 2")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--skip-whole", action="store_true", help="part 1 only")
    parser.add_argument("--skip-kernels", action="store_true", help="part 2 only")
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    args = parser.parse_args()

    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from codesign.compiler.layouts import apply_layouts, conv_calls
    from codesign.compiler.tvm_compile import subnet_relax_module, time_executable
    from codesign.latency.workloads import kernel_family, subnet_workloads
    from codesign.profile import tvm_backend as tb
    from codesign.space import Genome
    from codesign.space.registry import get_space

    space = get_space(args.space) if args.space else get_space()
    genome = Genome.from_dict(json.loads(Path(args.genome).read_text())) if args.genome else Genome.smallest(space)
    target = tb.host_llvm_target()
    print(f"target {json.dumps(target)}, {args.trials} MetaSchedule trials per kernel and layout")
    workloads = [w for w in subnet_workloads(space, Genome.largest(space)) if w.kind != "pool_fc"]

    # ---- part 1: one representative per family, both layouts, equal tuning
    representatives: dict[str, Any] = {}
    for w in sorted(set(workloads), key=lambda w: -w.macs):
        if w.in_channels % 8 == 0 and w.out_channels % 8 == 0:  # every layout, NCHW8c included, can run it
            representatives.setdefault(kernel_family(w), w)
    rows = []
    if args.skip_kernels:
        representatives = {}
    header = ("kernel", "NCHW tuned", "NHWC tuned", "NCHW8c tuned", "NHWC/NCHW", "8c/NCHW", "NCHW dflt")
    print(f"{header[0]:42s} " + " ".join(f"{h:>12s}" for h in header[1:]))
    for family, w in sorted(representatives.items()):
        row: dict[str, Any] = {"family": family, "workload": w.key()}
        for layout in ("NCHW", "NHWC", "NCHW8c"):
            (task,) = tb.workload_tasks(w, target, layout=layout)
            result = tuned_and_default(task, target, args.trials, args.repeat, time_default=layout == "NCHW")
            result.pop("record")
            row[layout] = result
        nchw, nhwc, packed = (row[name]["tuned_ms"] for name in ("NCHW", "NHWC", "NCHW8c"))
        row["ratio"] = nhwc / nchw if nchw and nhwc else None
        row["packed_ratio"] = packed / nchw if nchw and packed else None
        rows.append(row)
        cells = [nchw, nhwc, packed]
        us = [f"{1e3 * v:10.1f}us" if v else "   no record" for v in cells]  # tuning found no valid schedule
        ratios = [f"{r:12.2f}" if r else f"{'-':>12s}" for r in (row["ratio"], row["packed_ratio"])]
        default = row["NCHW"]["default_ms"]
        print(f"{w.key():42s} {' '.join(us)} {' '.join(ratios)} {1e3 * default:10.1f}us", flush=True)
    shapes = [] if args.skip_kernels else sorted({(w.in_channels, w.resolution) for w in workloads})
    transposes = {f"c{c}_r{r}": transpose_ms(c, r, target, args.repeat) for c, r in shapes}
    transpose_us = 1e3 * float(np.median(list(transposes.values()))) if transposes else float("nan")
    if transposes:
        print(
            f"transpose NCHW->NHWC of the subnet's {len(shapes)} activation shapes: median {transpose_us:.1f}us "
            f"(range {1e3 * min(transposes.values()):.1f}-{1e3 * max(transposes.values()):.1f}us)"
        )
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    depthwise = [r["ratio"] for r in rows if r["ratio"] and r["workload"].startswith("depthwise")]
    pointwise = [
        r["ratio"] for r in rows if r["ratio"] and r["workload"].startswith("conv") and "_k1_" in r["workload"]
    ]
    packed = [r["packed_ratio"] for r in rows if r["packed_ratio"]]
    packed_depthwise = [r["packed_ratio"] for r in rows if r["packed_ratio"] and r["workload"].startswith("depthwise")]
    packed_pointwise = [
        r["packed_ratio"]
        for r in rows
        if r["packed_ratio"] and r["workload"].startswith("conv") and "_k1_" in r["workload"]
    ]

    # ---- part 2: the whole subnet, all NCHW against depthwise NHWC, every kernel tuned alike
    whole: dict[str, Any] = {}
    if not args.skip_whole:
        raw = subnet_relax_module(space, genome)
        convs = [w for w in subnet_workloads(space, genome) if w.kind != "pool_fc"]
        assert len(convs) == len(conv_calls(raw)), "kernel positions and convolutions disagree"
        mixed = ["NHWC" if w.kind == "depthwise" else "NCHW" for w in convs]
        tvm_target = tvm.target.Target(target)
        database = ms.database.MemoryDatabase()
        tuned: dict[tuple[Any, str], float] = {}
        pairs = {(w, "NCHW") for w in convs} | set(zip(convs, mixed, strict=True))
        for w, layout in sorted(pairs, key=lambda pair: (pair[0].key(), pair[1])):
            (task,) = tb.workload_tasks(w, target, layout=layout)
            result = tuned_and_default(task, target, args.whole_trials, 3, time_default=False)
            tuned[(w, layout)] = result["tune_s"]
            if result["record"] is not None:
                record = result["record"]
                database.commit_tuning_record(
                    ms.database.TuningRecord(
                        record.trace,
                        database.commit_workload(task.mod),
                        run_secs=record.run_secs,
                        target=tvm_target,
                        args_info=ArgInfo.from_prim_func(task.mod["main"]),
                    )
                )
        print(f"tuned {len(tuned)} kernel/layout pairs for the whole subnet in {sum(tuned.values()) / 60:.1f} min")
        timings = {}
        for name, layouts in (("all NCHW", ["NCHW"] * len(convs)), ("depthwise NHWC", mixed)):
            converted = apply_layouts(raw, layouts)
            # a kernel without a record compiles to TVM's default lowering: say how many do
            kernels = ms.relax_integration.extract_tasks(relax.get_pipeline("zero")(converted), tvm_target)
            convolutions = [t for t in kernels if "conv2d" in t.task_name]
            covered = sum(database.has_workload(t.dispatched[0]) for t in convolutions)
            others = sorted({t.task_name for t in kernels if "conv2d" not in t.task_name})
            print(
                f"{name}: {covered} of {len(convolutions)} convolution kernels have a tuned record; "
                f"{len(kernels) - len(convolutions)} other kernels ({', '.join(others)}) use the default lowering"
            )
            timings[name] = ms.relax_integration.compile_relax(database, converted, tvm_target, params=None)
        medians: dict[str, list[float]] = {name: [] for name in timings}
        for _ in range(3):  # interleaved passes: the machine's drift hits both alike
            for name, executable in timings.items():
                medians[name].append(
                    time_executable(executable, space, genome.resolution, repeat=args.repeat).median_ms
                )
        whole = {name: float(np.median(values)) for name, values in medians.items()}
        whole["ratio"] = whole["depthwise NHWC"] / whole["all NCHW"]
        print(
            f"whole subnet ({genome.resolution}px, {len(convs)} convolutions): all NCHW {whole['all NCHW']:.3f} ms, "
            f"depthwise NHWC {whole['depthwise NHWC']:.3f} ms (incl. {2 * mixed.count('NHWC')} transposes at most) "
            f"-> {whole['ratio']:.2f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"kernels": rows, "transposes_ms": transposes, "whole": whole}, indent=1))
    print(
        f"RESULT layouts nhwc_over_nchw={geomean(ratios):.3f} depthwise_nhwc_over_nchw={geomean(depthwise):.3f} "
        f"pointwise_nhwc_over_nchw={geomean(pointwise):.3f} nchw8c_over_nchw={geomean(packed):.3f} "
        f"depthwise_nchw8c_over_nchw={geomean(packed_depthwise):.3f} "
        f"pointwise_nchw8c_over_nchw={geomean(packed_pointwise):.3f} transpose_us={transpose_us:.1f} "
        f"whole_mixed_over_nchw={whole.get('ratio', float('nan')):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
