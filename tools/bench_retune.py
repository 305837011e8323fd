"""How much a subnet's kernels gain from being tuned on their own, against the profile's schedules.

A profile tunes a few representatives per kernel family and replays their schedules onto the
other shapes of the family. This times, for the kernels of one subnet (default: the largest at its
fastest profiled schedules; ``--kernels N`` of them, slowest first by the latency model), the
profile's chosen schedule replayed on the kernel, TVM's default lowering, and the best of
``--trials`` MetaSchedule trials spent on that kernel alone, all built and timed here in one run.
It is the measurement behind a per-export re-tuning step (issue 6: TVM against onnxruntime).

    TVM_NUM_THREADS=2 python tools/bench_retune.py --kernels 4 --trials 32

Last line: ``RESULT retune speedup=<geometric mean of chosen/own-tuned> kernels=<n> trials=<t>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="default: the shipped profile of this CPU")
    parser.add_argument("--genome", default="largest", help="largest | smallest | random:SEED | short form")
    parser.add_argument("--kernels", type=int, default=4, help="how many distinct kernels, slowest first")
    parser.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per kernel")
    args = parser.parse_args()
    if args.kernels < 1 or args.trials < 1:
        parser.error("--kernels and --trials must be at least 1")

    from codesign.compiler.tvm_compile import compiled_choices
    from codesign.latency.model import LatencyModel
    from codesign.latency.workloads import subnet_workloads
    from codesign.profile import tvm_backend as tb
    from codesign.profile.profile_file import load_profile
    from codesign.profile.shipped import find_shipped_profile
    from codesign.space import parse_genome_spec

    path = args.profile or find_shipped_profile(tb.host_llvm_target(), allow_mismatch=True)
    profile = load_profile(path, allow_mismatch=True).profile
    target = profile.target
    os.environ.setdefault("TVM_NUM_THREADS", str(target.get("num-cores", 1)))
    model = LatencyModel.from_profile(profile)
    space = model.space
    genome = model.fastest_schedules(parse_genome_spec(args.genome, space))
    families = profile.tuning_records["families"]
    traces = compiled_choices(space, genome, families, positions=model.positions).traces
    by_key = {w.key(): w for w in subnet_workloads(space, genome)}
    layers, seen = [], set()
    for layer in sorted(model.explain(genome)["layers"], key=lambda item: -item["latency_ms"]):
        key = (layer["workload"], layer["layout"])
        if key in seen or layer["workload"] not in by_key:
            continue
        seen.add(key)
        layers.append(layer)
        if len(layers) == args.kernels:
            break
    print(
        f"profile {path}, subnet {genome.short(space)}, {os.environ['TVM_NUM_THREADS']} threads, "
        f"{args.trials} trials per kernel"
    )
    print(f"{'kernel':<44} {'model':>8} {'chosen':>8} {'default':>8} {'own':>8} {'chosen/own':>10}   (us)")
    ratios = []
    for layer in layers:
        workload = by_key[layer["workload"]]
        task = tb.workload_tasks(workload, target, layout=layer["layout"])[0]
        chosen = tb.time_kernel(tb.build_from_json(task, target, traces.get((workload, layer["layout"]))), task)
        default = tb.time_kernel(tb.build_kernel(task, target), task)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="codesign-retune-") as work:
            database = tb.tune_task(task, target, work, trials=args.trials)
            best = tb.distinct_top_records(database, task, 1)
            own = tb.time_kernel(tb.build_kernel(task, target, best[0].trace), task) if best else None
        seconds = time.perf_counter() - started
        own_us = own.median_ms * 1e3 if own else float("nan")
        ratio = chosen.median_ms * 1e3 / own_us if own else float("nan")
        ratios.append(ratio)
        name = f"{layer['workload']} [{layer['layout']}]"
        print(
            f"{name:<44} {layer['latency_ms'] * 1e3:8.1f} {chosen.median_ms * 1e3:8.1f} "
            f"{default.median_ms * 1e3:8.1f} {own_us:8.1f} {ratio:10.2f}   tuned in {seconds:.0f} s",
            flush=True,
        )
    finite = [r for r in ratios if np.isfinite(r)]
    speedup = float(np.exp(np.mean(np.log(finite)))) if finite else float("nan")
    print(f"RESULT retune speedup={speedup:.3f} kernels={len(layers)} trials={args.trials}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
