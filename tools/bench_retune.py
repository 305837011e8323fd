"""How much a subnet's kernels gain from being tuned on their own, against the profile's schedules.

A profile tunes a few representatives per kernel family and replays their schedules onto the
other shapes of the family. This times, for the kernels of one subnet (default: the largest at its
fastest profiled schedules; ``--kernels N`` of them, slowest first by the latency model), the
profile's chosen schedule replayed on the kernel, TVM's default lowering, the best of one
MetaSchedule run of ``--trials`` trials spent on that kernel alone ("one run"), and the best of
what ``codesign export --retune-trials`` spends the same trials on ("split": two runs of half the
trials, one warm-started from the chosen schedule, one from scratch with another seed,
``codesign.export.retune.tuning_runs``), all built here and timed in alternating rounds. It is the
measurement behind the per-export re-tuning step (issue 6: TVM against onnxruntime).

    TVM_NUM_THREADS=2 python tools/bench_retune.py --kernels 4 --trials 32

Last line: ``RESULT retune speedup=<geometric mean of chosen/own, one run> kernels=<n> trials=<t>
kept_one=<chosen/faster of chosen and one run's> kept_split=<chosen/faster of chosen and split's>``
(what an export keeps is the faster of its own and the chosen schedule).
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
    from codesign.export.retune import median_of_alternating, tuned_candidates
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
    header = f"{'kernel':<44} {'model':>7} {'chosen':>7} {'default':>7} {'one':>7} {'split':>7}"
    print(f"{header} {'chosen/one':>10} {'chosen/split':>12}   (us)")
    ratios, kept_one, kept_split = [], [], []
    for layer in layers:
        workload = by_key[layer["workload"]]
        task = tb.workload_tasks(workload, target, layout=layer["layout"])[0]
        chosen_trace = traces.get((workload, layer["layout"]))
        chosen_build = tb.build_from_json(task, target, chosen_trace)
        default_build = tb.build_kernel(task, target)
        seed_ms = tb.time_kernel(chosen_build, task, repeat=3, min_repeat_ms=20).median_ms
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="codesign-retune-") as work:
            best = tb.distinct_top_records(tb.tune_task(task, target, work, trials=args.trials), task, 1)
        one_build = tb.build_kernel(task, target, best[0].trace) if best else None
        one_s = time.perf_counter() - started
        started = time.perf_counter()
        chosen_schedule = tb.replay_json(task, chosen_trace) if chosen_trace is not None else None
        found, _runs = tuned_candidates(task, target, args.trials, chosen_schedule, seed_ms)
        split_builds = [tb.build_from_json(task, target, trace) for trace, _ in found]
        split_s = time.perf_counter() - started
        builds = [chosen_build, default_build, *([one_build] if one_build else []), *split_builds]
        us = [t * 1e3 for t in median_of_alternating(builds, task, rounds=3)]
        chosen_us, default_us = us[0], us[1]
        one_us = us[2] if one_build else float("nan")
        split_us = min(us[2 + bool(one_build) :], default=float("nan"))
        ratios.append(chosen_us / one_us)
        kept_one.append(chosen_us / np.nanmin([chosen_us, one_us]))
        kept_split.append(chosen_us / np.nanmin([chosen_us, split_us]))
        name = f"{layer['workload']} [{layer['layout']}]"
        print(
            f"{name:<44} {layer['latency_ms'] * 1e3:7.1f} {chosen_us:7.1f} {default_us:7.1f} {one_us:7.1f} "
            f"{split_us:7.1f} {chosen_us / one_us:10.2f} {chosen_us / split_us:12.2f}   "
            f"tuned in {one_s:.0f} / {split_s:.0f} s",
            flush=True,
        )
    print(
        f"RESULT retune speedup={_geomean(ratios):.3f} kernels={len(layers)} trials={args.trials} "
        f"kept_one={_geomean(kept_one):.3f} kept_split={_geomean(kept_split):.3f}"
    )
    return 0


def _geomean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.exp(np.mean(np.log(finite)))) if finite else float("nan")


if __name__ == "__main__":
    sys.exit(main())
