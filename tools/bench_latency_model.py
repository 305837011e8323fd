"""How well a profile's latency model predicts whole compiled subnets, against a FLOPs-proportional baseline.

Draws random subnets that the profile did not fit on (another seed than its calibration models),
with schedule genes half at each kernel's fastest candidate (what the search picks) and half
random (what it explores), compiles each whole with TVM Relax under exactly those schedules,
measures it on this machine (batch 1, median of repeats) and compares with the model's prediction.
The FLOPs baseline predicts latency proportional to MACs, its one factor fitted on the profile's
own whole-model measurements (so it gets the same calibration data as the model).

    python tools/bench_latency_model.py --profile hw_profiles/llvm-znver3-2c.json --subnets 50

The TVM runtime runs on as many threads as the profile's target has cores (``--threads`` to
change it): a profile measured on 2 cores predicts 2-thread runs.

Every subnet is timed twice, in two passes minutes apart (the second in reverse order): the
share of subnets whose two timings agree within +-10% is the machine's own repeatability, the
ceiling any model can reach on it; the model is scored against the mean of the two timings.

Run it on an otherwise idle machine: it measures. Last line:
``RESULT latency_model within10=<share> rmspe=<value> flops_within10=<share> n=<count>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--subnets", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="TVM runtime threads (default: the profile target's num-cores, the count it was measured with)",
    )
    args = parser.parse_args()

    from codesign.compiler.tvm_compile import compile_subnet, time_executable
    from codesign.latency.model import LatencyModel
    from codesign.latency.predictor import error_summary
    from codesign.latency.workloads import subnet_macs
    from codesign.profile.profile_file import load_profile
    from codesign.space import Genome

    profile = load_profile(args.profile).profile
    # read when TVM's thread pool starts, at the first kernel run below
    threads = args.threads or int(profile.target.get("num-cores") or 0) or None
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    model = LatencyModel.from_profile(profile)
    space = model.space
    families = profile.tuning_records["families"]
    target = profile.target

    calib = [m for m in profile.models if m.get("status") == "ok"]
    if not calib:
        print("the profile has no whole-model measurements to fit the FLOPs baseline on", file=sys.stderr)
        return 1
    calib_macs = np.asarray([subnet_macs(space, Genome.from_dict(m["genome"])) for m in calib], dtype=np.float64)
    calib_ms = np.asarray([m["timing"]["median_ms"] for m in calib])
    # least squares in relative error for latency = k * MACs
    k = float(np.sum(calib_macs / calib_ms) / np.sum((calib_macs / calib_ms) ** 2))

    rng = np.random.default_rng(args.seed)
    calib_arch = {Genome.from_dict(m["genome"]).canonical(space).to_json() for m in calib}
    genomes: list[Genome] = []
    while len(genomes) < args.subnets:
        g = Genome.random(space, rng).canonical(space)
        if g.to_json() in calib_arch:
            continue
        if len(genomes) % 2 == 0:
            g = model.fastest_schedules(g)
        else:
            # random schedules among those the profile saw compile on each kernel
            ids = model.positions.workload_ids(model.vectors([g]))[0]
            genes = []
            for p, count in enumerate(model.candidate_counts):
                valid = np.flatnonzero(np.isfinite(model.table[ids[p], :count]))
                genes.append(int(valid[rng.integers(len(valid))]) if len(valid) else 0)
            g = Genome(**{**g.__dict__, "schedules": tuple(genes)})
        genomes.append(g)

    predicted = model.predict(genomes)
    transposes = model.terms(model.vectors(genomes))[2]  # layout changes in each compiled subnet
    rows = []
    executables = []
    started = time.perf_counter()
    for i, g in enumerate(genomes):
        executables.append(compile_subnet(space, g, target, families, positions=model.positions))
        timing = time_executable(executables[-1], space, g.resolution, repeat=args.repeat)
        macs = subnet_macs(space, g)
        rows.append(
            {
                "genome": g.to_dict(),
                "schedules": "fastest" if i % 2 == 0 else "random",
                "first_ms": timing.median_ms,
                "std_ms": timing.std_ms,
                "predicted_ms": float(predicted[i]),
                "flops_ms": k * macs,
                "macs": macs,
                "transposes": int(transposes[i]),
            }
        )
        r = rows[-1]
        print(
            f"[{i + 1:3d}/{len(genomes)}] measured {r['first_ms']:.3f} ms (+-{r['std_ms']:.3f})  "
            f"model {r['predicted_ms']:.3f} ({(r['predicted_ms'] / r['first_ms'] - 1) * 100:+.1f}%)  "
            f"flops {r['flops_ms']:.3f} ({(r['flops_ms'] / r['first_ms'] - 1) * 100:+.1f}%)  {r['schedules']}"
            f"  transposes {r['transposes']}",
            flush=True,
        )
    print("second pass, reverse order (the machine's repeatability):", flush=True)
    for i in reversed(range(len(genomes))):
        timing = time_executable(executables[i], space, genomes[i].resolution, repeat=args.repeat)
        r = rows[i]
        r["second_ms"] = timing.median_ms
        r["measured_ms"] = 0.5 * (r["first_ms"] + r["second_ms"])
        print(
            f"[{i + 1:3d}/{len(genomes)}] {r['first_ms']:.3f} then {r['second_ms']:.3f} ms "
            f"({(r['second_ms'] / r['first_ms'] - 1) * 100:+.1f}%)",
            flush=True,
        )
    first = np.asarray([r["first_ms"] for r in rows])
    second = np.asarray([r["second_ms"] for r in rows])
    repeat = error_summary(second, first)
    measured = np.asarray([r["measured_ms"] for r in rows])
    ours = error_summary(np.asarray([r["predicted_ms"] for r in rows]), measured)
    flops = error_summary(np.asarray([r["flops_ms"] for r in rows]), measured)
    by_kind = {
        kind: error_summary(
            np.asarray([r["predicted_ms"] for r in rows if r["schedules"] == kind]),
            np.asarray([r["measured_ms"] for r in rows if r["schedules"] == kind]),
        )
        for kind in ("fastest", "random")
    }
    print(
        f"device: {profile.device.name}, {profile.device.cores} cores; target {json.dumps(target)}; "
        f"{os.environ.get('TVM_NUM_THREADS', 'default')} runtime threads"
    )
    print(f"measured {len(rows)} compiled subnets twice in {time.perf_counter() - started:.0f} s")
    print(
        f"repeatability : second timing within +-10% of the first for {repeat['within10']:.1%} of subnets, "
        f"RMSPE {repeat['rmspe']:.3f}, worst {repeat['max_abs_pct']:.1f}% (the ceiling for any model here)"
    )
    bias = float(np.median(measured / np.asarray([r["predicted_ms"] for r in rows])))
    print(
        f"latency model : {ours['within10']:.1%} within +-10%, RMSPE {ours['rmspe']:.3f}, "
        f"worst {ours['max_abs_pct']:.1f}%, measured a median {bias:.2f}x the prediction"
    )
    for kind, s in by_kind.items():
        print(f"  schedules={kind:7s}: {s['within10']:.1%} within +-10%, RMSPE {s['rmspe']:.3f}")
    print(
        f"FLOPs baseline: {flops['within10']:.1%} within +-10%, RMSPE {flops['rmspe']:.3f}, "
        f"worst {flops['max_abs_pct']:.1f}%"
    )
    if args.out:
        from codesign.fileio import write_json_atomic

        write_json_atomic(
            Path(args.out),
            {"model": ours, "flops": flops, "by_schedules": by_kind, "repeatability": repeat, "rows": rows},
        )
    print(
        f"RESULT latency_model within10={ours['within10']:.3f} rmspe={ours['rmspe']:.4f} "
        f"flops_within10={flops['within10']:.3f} n={len(rows)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
