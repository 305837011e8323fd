"""Summarize a hardware profile: coverage, failures, and how much tuned schedules beat TVM's default lowering.

python tools/profile_summary.py hw_profiles/llvm-znver3-2c.json
"""

from __future__ import annotations

import argparse
import collections

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    args = parser.parse_args()
    from codesign.profile.profile_file import load_profile

    profile = load_profile(args.profile).profile
    statuses = collections.Counter(r["status"] for m in profile.measurements for r in m["results"])
    print(f"{profile.device.name}: {len(profile.measurements)} kernels, result statuses {dict(statuses)}")
    ratios, spreads = [], []
    for m in profile.measurements:
        ok = {r["candidate"]: r["timing"]["median_ms"] for r in m["results"] if r["status"] == "ok"}
        tuned = [v for c, v in ok.items() if c > 0]
        if 0 in ok and tuned:
            ratios.append(ok[0] / min(tuned))
        if len(tuned) >= 2:
            spreads.append(max(tuned) / min(tuned))
    r = np.asarray(ratios)
    q = np.percentile(r, [25, 50, 75])
    print(
        f"default lowering / fastest tuned schedule over {len(r)} kernels: median {q[1]:.1f}x "
        f"(interquartile {q[0]:.1f}-{q[2]:.1f}x); default faster on {np.mean(r < 1):.1%}"
    )
    s = np.asarray(spreads)
    print(f"slowest / fastest tuned schedule of one kernel: median {np.median(s):.1f}x, largest {s.max():.0f}x")
    models = [m for m in profile.models if m.get("status") == "ok"]
    minutes = profile.validation.get("measurement_minutes")
    print(f"{len(models)} of {len(profile.models)} whole subnets measured; {minutes} minutes of measurement")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
