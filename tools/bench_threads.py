"""Compiled subnets at several CPU thread counts: speed and repeatability, side by side.

A profile predicts latency at the thread count it was measured with (its target's num-cores),
and ``codesign run`` deploys at that count. This checks that choice on this machine. It picks
whole subnets the profile measured (the fastest, the slowest and evenly spaced ones between),
compiles each under the schedules the profile recorded for it, and times them in one process per
thread count for ``--seconds``, the processes alternating over ``--rounds`` rounds (so a slow
spell of a shared VM falls on every count alike). Per subnet and thread count it prints the 10th,
50th and 90th percentile of the timings (each the median of a short burst) and the share of
timings within +-10% of their median (repeatability: the ceiling for any latency model there).

    python tools/bench_threads.py [--profile hw_profiles/llvm-znver4-2c.json] [--threads 1,2]
                                  [--rounds 3] [--seconds 30] [--subnets 4]

Run it on an otherwise idle machine. Last line:
``RESULT threads fastest=<count> speedup=<slowest count's median / fastest's, geomean over
subnets> within10=<share per count, as count:share,...>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def picked_models(profile: Any, count: int) -> list[dict[str, Any]]:
    """``count`` of the profile's measured subnets, evenly spaced by measured latency (both ends kept)."""
    ok = sorted((m for m in profile.models if m.get("status") == "ok"), key=lambda m: float(m["timing"]["median_ms"]))
    if not ok:
        raise SystemExit("the profile has no whole-model measurements to pick subnets from")
    index = np.unique(np.linspace(0, len(ok) - 1, max(1, count)).round().astype(int))
    return [ok[i] for i in index]


def worker(args: argparse.Namespace) -> None:
    """Compile the picked subnets and time them for ``args.seconds`` on this process's thread count."""
    from codesign.compiler.tvm_compile import compile_subnet, time_executable
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile
    from codesign.space import Genome

    profile = load_profile(args.profile).profile
    model = LatencyModel.from_profile(profile)
    space, positions = model.space, model.positions
    families = profile.tuning_records["families"]
    genomes = [Genome.from_dict(m["genome"]) for m in picked_models(profile, args.subnets)]
    executables = [compile_subnet(space, g, profile.target, families, positions=positions) for g in genomes]
    timings: list[list[float]] = [[] for _ in genomes]
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        for i, (g, e) in enumerate(zip(genomes, executables)):
            timings[i].append(time_executable(e, space, g.resolution, repeat=5, min_repeat_ms=20).median_ms)
    Path(args.out).write_text(json.dumps({"threads": os.environ.get("TVM_NUM_THREADS"), "timings": timings}))


def main() -> int:
    """Alternate one worker process per thread count over the rounds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="profile file (default: the shipped one for this CPU)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="timing seconds per process")
    parser.add_argument("--subnets", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile is None:
        from codesign.errors import CodesignError
        from codesign.profile.shipped import find_shipped_profile
        from codesign.profile.tvm_backend import host_llvm_target

        try:
            args.profile = str(find_shipped_profile(host_llvm_target()))
        except CodesignError as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.worker:
        worker(args)
        return 0
    counts = [int(t) for t in args.threads.split(",") if t.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--threads needs positive counts, e.g. 1,2")
    from codesign.errors import CodesignError
    from codesign.profile.profile_file import load_profile

    try:
        profile = load_profile(args.profile).profile
    except CodesignError as exc:
        raise SystemExit(f"error: {exc}") from None
    picked = picked_models(profile, args.subnets)  # checked before any worker starts
    pooled: dict[int, list[list[float]]] = {t: [] for t in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(max(1, args.rounds)):
            for t in counts:
                out = Path(tmp) / f"r{r}-t{t}.json"
                cmd = [sys.executable, __file__, "--profile", args.profile, "--seconds", str(args.seconds)]
                cmd += ["--subnets", str(args.subnets), "--worker", str(t), "--out", str(out)]
                subprocess.run(cmd, check=True, env=dict(os.environ, TVM_NUM_THREADS=str(t)))
                timings = json.loads(out.read_text())["timings"]
                if not pooled[t]:
                    pooled[t] = [[] for _ in timings]
                for i, series in enumerate(timings):
                    pooled[t][i].extend(series)
                print(f"round {r + 1}/{args.rounds}: {t} thread(s) done", flush=True)

    print(f"profile {args.profile}: target {json.dumps(profile.target)}")
    print("per subnet: p10 / median / p90 ms of burst medians, and the share within +-10% of the median")
    medians: dict[int, list[float]] = {t: [] for t in counts}
    within: dict[int, list[float]] = {t: [] for t in counts}
    for i, m in enumerate(picked):
        cells = []
        for t in counts:
            x = np.asarray(pooled[t][i])
            med = float(np.median(x))
            share = float(np.mean(np.abs(x / med - 1.0) <= 0.10))
            medians[t].append(med)
            within[t].append(share)
            p10, p90 = np.percentile(x, [10, 90])
            cells.append(f"{t} thr {p10:.3f} / {med:.3f} / {p90:.3f} ({share:.0%}, n={len(x)})")
        print(f"  {m['key']:>14s} (profiled {m['timing']['median_ms']:.3f} ms): " + " | ".join(cells))
    by_count = {t: float(np.exp(np.mean(np.log(medians[t])))) for t in counts}
    fastest = min(counts, key=lambda t: by_count[t])
    slowest = max(counts, key=lambda t: by_count[t])
    speedup = by_count[slowest] / by_count[fastest]
    shares = ",".join(f"{t}:{np.mean(within[t]):.2f}" for t in counts)
    print(
        f"fastest at {fastest} thread(s): geometric-mean median {by_count[fastest]:.3f} ms against "
        f"{by_count[slowest]:.3f} ms at {slowest} ({speedup:.2f}x)"
    )
    print(f"RESULT threads fastest={fastest} speedup={speedup:.3f} within10={shares}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
