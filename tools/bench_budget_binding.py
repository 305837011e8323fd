"""Does the latency budget bind on this device today? ``codesign search`` with and without ``--speed-probe``.

A profile records its device's speed on the day it was measured; a shared VM (or a fresh VM of the
same class) runs 10-20% off it, so a search bound at B ms can ship a subnet that runs over B here.
For each budget B (``--budgets``), this runs, on the shipped supernet and this CPU's profile:

- ``codesign search --latency-ms B`` (as profiled) and ``codesign search --latency-ms B
  --speed-probe N`` (the model scaled by this machine's speed now),
- ``codesign export --format tvm`` of each recommended subnet, which compiles it with TVM and times
  the shipped library here at the profile's core count (30 repeats),

and prints each pick's measured latency over B side by side (over 1: the budget did not bind).
The two searches of a budget run back to back, so both see the same machine. Run it on an
otherwise idle machine. Last line:
``RESULT budget_binding plain_within=<share of picks measured <= B> probed_within=<share>
plain_worst=<max measured/B> probed_worst=<max measured/B>``.

    python tools/bench_budget_binding.py [--budgets 0.20,0.25,0.30] [--probe-subnets 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _codesign(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"codesign {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _search_and_export(budget: float, out: Path, common: list[str], probe: int) -> dict[str, Any]:
    """The recommended subnet's predicted and measured latency (ms), searched with or without a probe."""
    search = out / "search"
    probe_args = ["--speed-probe", str(probe)] if probe else []
    _codesign("search", "--latency-ms", f"{budget:g}", *common, *probe_args, "--no-progress", "-o", str(search))
    front = json.loads((search / "front.json").read_text())
    pick = front["front"][front["recommended"]]
    _codesign(
        "export",
        "--genome",
        str(search / "recommended.json"),
        "--format",
        "tvm",
        "--skip-test-accuracy",
        *common,
        "-o",
        str(out / "export"),
    )
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    measured = manifest["tvm"]["latency"]["measured"]
    return {
        "predicted_ms": float(pick["predicted_latency_ms"]),
        "measured_ms": float(measured["median_ms"]),
        "std_ms": float(measured["std_ms"]),
        "factor": front.get("speed_probe", {}).get("factor"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="0.20,0.25,0.30", help="latency budgets in ms (comma-separated)")
    parser.add_argument("--probe-subnets", type=int, default=4, help="subnets re-timed by each probed search")
    parser.add_argument("--profile", default=None, help="default: the shipped profile of this CPU")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the searches' finalists")
    args = parser.parse_args()
    try:
        budgets = [float(b) for b in args.budgets.split(",")]
    except ValueError:
        parser.error(f"--budgets takes comma-separated numbers, got {args.budgets!r}")
    common = ["--allow-mismatch", "--threads", str(args.threads)]
    if args.profile:
        common += ["--profile", args.profile]
    plain_ratios, probed_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="bench_budget_") as scratch:
        for budget in budgets:
            plain = _search_and_export(budget, Path(scratch) / f"plain_{budget:g}", common, 0)
            probed = _search_and_export(budget, Path(scratch) / f"probed_{budget:g}", common, args.probe_subnets)
            plain_ratios.append(plain["measured_ms"] / budget)
            probed_ratios.append(probed["measured_ms"] / budget)
            print(f"budget {budget:g} ms (probe factor {probed['factor']:.3f})", flush=True)
            for name, row in (("as profiled", plain), ("probed", probed)):
                print(
                    f"  {name:<12} predicted {row['predicted_ms']:.3f} ms  measured {row['measured_ms']:.3f} ms "
                    f"(+-{row['std_ms']:.3f})  measured/budget {row['measured_ms'] / budget:.3f}",
                    flush=True,
                )
    n = len(budgets)
    plain_within = sum(r <= 1.0 for r in plain_ratios) / n
    probed_within = sum(r <= 1.0 for r in probed_ratios) / n
    print(
        f"RESULT budget_binding plain_within={plain_within:.2f} probed_within={probed_within:.2f} "
        f"plain_worst={max(plain_ratios):.3f} probed_worst={max(probed_ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
