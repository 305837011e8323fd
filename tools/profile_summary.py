"""Summarize a hardware profile: coverage, failures, and how much tuned schedules beat TVM's default lowering.

python tools/profile_summary.py hw_profiles/llvm-znver3-2c.json
"""

from __future__ import annotations

import argparse
import collections

import numpy as np


def print_occasions(models: list[dict]) -> None:
    """Subnets timed on several occasions (``--retime-rule fastest``): slowest over fastest occasion, per scheduling."""
    for schedules in sorted({str(m.get("schedules")) for m in models}):
        spans = [
            max(m["timing_occasions_ms"]) / min(m["timing_occasions_ms"])
            for m in models
            if m.get("schedules") == schedules and len(m.get("timing_occasions_ms") or []) >= 2
        ]
        if spans:
            q10, q50, q90 = np.percentile(spans, [10, 50, 90])
            print(
                f"{len(spans)} {schedules}-scheduled subnets timed on several occasions: slowest / fastest occasion "
                f"median {q50:.2f}x (10th-90th percentile {q10:.2f}-{q90:.2f}x), over 1.3x for "
                f"{np.mean(np.asarray(spans) > 1.3):.0%}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    args = parser.parse_args()
    from codesign.profile.profile_file import load_profile

    profile = load_profile(args.profile).profile
    statuses = collections.Counter(r["status"] for m in profile.measurements for r in m["results"])
    print(f"{profile.device.name}: {len(profile.measurements)} kernels, result statuses {dict(statuses)}")
    families = profile.tuning_records.get("families", {})
    ratios, spreads = [], []
    for m in profile.measurements:
        ok = {r["candidate"]: r["timing"]["median_ms"] for r in m["results"] if r["status"] == "ok"}
        options = families.get(m["family"], [])
        tuned = [v for c, v in ok.items() if c < len(options) and options[c].get("trace") is not None]
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
    print_layouts(profile, families)
    print_tilings(profile, families)
    print_disturbed(profile)
    models = [m for m in profile.models if m.get("status") == "ok"]
    minutes = profile.validation.get("measurement_minutes")
    print(f"{len(models)} of {len(profile.models)} whole subnets measured; {minutes} minutes of measurement")
    print_occasions(models)
    print_model_validation(profile.predictor or {})
    print_torch_comparison(models)
    return 0


def print_tilings(profile: object, families: dict) -> None:
    """Replayed kernel/schedule pairs whose recorded tilings differ from the tuned ones, and those that collapsed."""
    from codesign.latency.predictor import collapsed_tilings, trace_tilings

    pairs: dict[tuple[str, int], tuple[bool, bool]] = {}
    for m in profile.measurements:  # type: ignore[attr-defined]
        options = families.get(m["family"], [])
        for r in m["results"]:
            c = r["candidate"]
            if "tilings" in r and c < len(options) and options[c].get("trace") is not None:
                tuned = trace_tilings(options[c]["trace"])
                pairs[(m["key"], c)] = (r["tilings"] != tuned, bool(collapsed_tilings(tuned, r["tilings"])))
    if not pairs:
        print("no replayed tilings recorded (made before they were: `codesign profile --refit F --kernel-predictor`)")
        return
    moved = sum(1 for m, _ in pairs.values() if m)
    collapsed = sum(1 for _, c in pairs.values() if c)
    print(
        f"replayed kernel/schedule pairs: {len(pairs)}; tilings other than the tuned ones on {moved}, "
        f"collapsed (all outer factors 1) on {collapsed}"
    )


def print_disturbed(profile: object) -> None:
    """Kernel timings whose repeats spread beyond ``NOISY_SPREAD`` (disturbed while timed), the worst against the
    kernel predictor's fill of the same pair, which the latency model uses instead."""
    from codesign.latency.model import NOISY_SPREAD, timing_disturbed

    timed, disturbed = 0, []
    filled = (profile.predictor or {}).get("filled", {})  # type: ignore[attr-defined]
    for m in profile.measurements:  # type: ignore[attr-defined]
        for r in m["results"]:
            t = r.get("timing")
            if r["status"] != "ok" or not t:
                continue
            timed += 1
            if timing_disturbed(t):
                fill = (filled.get(m["key"]) or [])[r["candidate"] : r["candidate"] + 1]
                disturbed.append((m["key"], r["candidate"], t, fill[0] if fill else float("nan")))
    print(
        f"kernel timings spread beyond {NOISY_SPREAD:.0%} of their median: {len(disturbed)} of {timed} (predicted "
        "instead; `codesign profile --recalibrate F --kernel-schedules disturbed` times them again)"
    )
    for key, c, t, fill in sorted(disturbed, key=lambda d: -d[2]["median_ms"] / d[3])[:3]:
        print(
            f"  {key} candidate {c}: median {t['median_ms'] * 1e3:.1f} us, mean {t['mean_ms'] * 1e3:.1f}, "
            f"deviation {t['std_ms'] * 1e3:.1f} over {t['repeats']} repeats; predicted at {fill * 1e3:.1f} us"
        )


def print_layouts(profile: object, families: dict) -> None:
    """Per family, the fastest candidate of each other layout against the fastest NCHW one, and layout changes."""
    if not any(c.get("layout", "NCHW") != "NCHW" for options in families.values() for c in options):
        print("one data layout (NCHW): no layout candidates in this profile")
        return
    by_family: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for m in profile.measurements:  # type: ignore[attr-defined]
        options = families.get(m["family"], [])
        best: dict[str, float] = {}
        for r in m["results"]:
            if r["status"] == "ok" and r["candidate"] < len(options):
                layout = options[r["candidate"]].get("layout", "NCHW")
                best[layout] = min(best.get(layout, np.inf), r["timing"]["median_ms"])
        for layout, ms in best.items():
            if layout != "NCHW" and "NCHW" in best:
                by_family[(m["family"], layout)].append(ms / best["NCHW"])
    for (family, layout), ratios in sorted(by_family.items()):
        r = np.asarray(ratios)
        print(
            f"  {family}: fastest {layout} / fastest NCHW candidate over {len(r)} kernels: median "
            f"{np.median(r):.2f}x, {layout} faster on {np.mean(r < 1):.0%}"
        )
    for change in sorted(
        {
            (t.get("from_layout") or ("NHWC" if t["to_layout"] == "NCHW" else "NCHW"), t["to_layout"])
            for t in profile.transposes
        }
    ):  # type: ignore[attr-defined]
        timed = [
            t["timing"]["median_ms"] * 1e3
            for t in profile.transposes  # type: ignore[attr-defined]
            if t.get("status") == "ok"
            and (t.get("from_layout") or ("NHWC" if t["to_layout"] == "NCHW" else "NCHW"), t["to_layout"]) == change
        ]
        if timed:
            print(
                f"layout changes {change[0]} -> {change[1]}: {len(timed)} timed, median {np.median(timed):.1f} us "
                f"(range {min(timed):.1f}-{max(timed):.1f} us)"
            )
    terms = ((profile.predictor or {}).get("calibration") or {}).get("terms", {})  # type: ignore[attr-defined]
    print(f"calibration: {terms}")


def print_model_validation(predictor: dict) -> None:
    """The latency model against the profile's measured whole subnets, as the profile stored it."""
    validation = predictor.get("model_validation")
    if not validation:
        print("no whole-subnet validation stored (no subnet measured)")
        return
    for name, label in (("calibrated", "latency model, leave-one-out"), ("layer_sum_only", "per-kernel sum alone")):
        e = validation[name]
        print(
            f"{label}: {e['within10']:.1%} of {e['n']} subnets within +-10%, RMSPE {e['rmspe']:.3f}, "
            f"largest error {e['max_abs_pct']:.1f}%"
        )
    kernel = predictor.get("kernel_validation", {}).get("all")
    if kernel:
        print(
            f"kernel predictor, 5-fold grouped CV: {kernel['within10']:.1%} of {kernel['n']} within +-10%, "
            f"RMSPE {kernel['rmspe']:.3f}"
        )


def print_torch_comparison(models: list[dict]) -> None:
    """Compiled subnets next to torch eager on the same device, where the measurement ran both."""
    pairs = [
        (m["host_loop_rotated"]["median_ms"], m["timing"]["median_ms"], m["torch_eager"]["median_ms"])
        for m in models
        if (m.get("torch_eager") or {}).get("status") == "ok" and m.get("host_loop_rotated")
    ]
    if not pairs:
        return
    loop, evaluator, torch = (np.asarray(v) for v in zip(*pairs, strict=True))
    print(
        f"TVM / torch eager over {len(pairs)} subnets (both timed by a host loop, batch 1): geometric mean "
        f"{np.exp(np.mean(np.log(loop / torch))):.2f}x (range {np.min(loop / torch):.2f}-{np.max(loop / torch):.2f}x); "
        f"host loop / time evaluator {np.exp(np.mean(np.log(loop / evaluator))):.2f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
