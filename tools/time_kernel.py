"""Time one kernel's schedule candidates here, the way ``codesign profile`` times them, beside the profile's values.

When a subnet measures far off its prediction, ``LatencyModel.explain`` names the kernels it
predicted rather than timed; this times such a kernel under the profile's candidates (its
MetaSchedule traces replayed, each layout's default lowering) on this machine and prints the
profile's value for each (measured, predicted by the kernel predictor, or failed) next to the
time now. Run it on the profiled device (the profile's target must be this CPU).

    TVM_NUM_THREADS=2 python tools/time_kernel.py --profile hw_profiles/llvm-rocketlake-2c.json \\
        --kernel conv_i48_o216_r3_k1_s1_hswish [--candidates 0,9,10,11]

Each replayed candidate also lists the tilings TVM drew again on this shape because the tuned ones
do not divide its loops (``tiles redrawn: [4, 3, 1, 2]->[1, 1, 1, 27]``): what a kernel predictor
trained on shapes where the trace fits cannot foresee.

Last line: ``RESULT time_kernel worst_now_over_profile=<ratio> candidate=<index>`` (the candidate
whose time now most exceeds the profile's value).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="a profile measured on this machine")
    parser.add_argument("--kernel", required=True, help="a kernel key, as explain() and the profile name it")
    parser.add_argument("--candidates", default=None, help="comma-separated candidate indices (default: all)")
    parser.add_argument("--repeat", type=int, default=5, help="timing repeats per candidate (default 5)")
    args = parser.parse_args()

    from codesign.errors import CodesignError
    from codesign.latency.model import FAILED, MEASURED, PREDICTED, UNVERIFIED, LatencyModel
    from codesign.latency.workloads import Workload, kernel_family
    from codesign.profile import tvm_backend as tb
    from codesign.profile.profile_file import load_profile

    try:
        profile = load_profile(args.profile).profile
        model = LatencyModel.from_profile(profile)
    except CodesignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    records = [r for r in profile.measurements if r["key"] == args.kernel]
    workloads = [w for w in model.positions.workloads if w.key() == args.kernel]
    if not workloads:
        print(f"error: the profile's space has no kernel {args.kernel!r}", file=sys.stderr)
        return 1
    workload = Workload.from_dict(records[0]["workload"]) if records else workloads[0]
    row = model.positions.workloads.index(workloads[0])
    options = profile.tuning_records.get("families", {}).get(kernel_family(workload), [])
    options = options or [{"source": "default", "trace": None}]
    chosen = [int(c) for c in args.candidates.split(",") if c.strip()] if args.candidates else list(range(len(options)))
    if any(not 0 <= c < len(options) for c in chosen):
        print(f"error: candidates must be in 0..{len(options) - 1} for {args.kernel}", file=sys.stderr)
        return 1
    names = {MEASURED: "measured", PREDICTED: "predicted", FAILED: "failed", UNVERIFIED: "unverified"}
    print(
        f"{args.kernel} on {profile.device.name}: {len(options)} candidates, margin on untimed pairs "
        f"{model.untimed_margin:.3f}"
    )
    print(f"{'cand':>4} {'layout':7s} {'profile us':>10} {'source':9s} {'now us':>9} {'now/profile':>11}  schedule")
    worst, worst_candidate = 0.0, -1
    for c in chosen:
        option = options[c]
        layout = str(option.get("layout", "NCHW"))
        recorded = float(model.table[row, c]) if c < model.table.shape[1] else float("inf")
        source = names.get(int(model.sources[row, c]), "?") if c < model.sources.shape[1] else "?"
        try:
            tasks = tb.workload_tasks(workload, profile.target, layout=layout)
            trace = option.get("trace")
            redrawn = [d for t in tasks for d in tb.resampled_tiles(t, trace).values()] if trace else []
            now = sum(
                tb.time_kernel(
                    tb.build_from_json(t, profile.target, option.get("trace")), t, repeat=args.repeat
                ).median_ms
                for t in tasks
            )
        except Exception as exc:  # a trace that does not replay on this shape, a layout that does not fit
            print(f"{c:4d} {layout:7s} {recorded * 1e3:10.1f} {source:9s} {'failed':>9}  {type(exc).__name__}: {exc}")
            continue
        offered = 0 < recorded < float("inf")  # an unverified or failed pair is never offered: no ratio
        ratio = now / recorded if offered else float("nan")
        if offered and ratio > worst:
            worst, worst_candidate = ratio, c
        shown = f"{ratio:11.2f}" if offered else f"{'-':>11}"
        tilings = "  tiles redrawn: " + ", ".join(f"{a}->{b}" for a, b in redrawn) if redrawn else ""
        print(
            f"{c:4d} {layout:7s} {recorded * 1e3:10.1f} {source:9s} {now * 1e3:9.1f} {shown}  {option['source']}"
            f"{tilings}"
        )
    print(f"RESULT time_kernel worst_now_over_profile={worst:.2f} candidate={worst_candidate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
