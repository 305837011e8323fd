"""How well a profile's latency model predicts whole compiled subnets, against a FLOPs-proportional baseline.

Draws random subnets that the profile did not fit on (another seed than its calibration models),
with schedule genes half at each kernel's fastest candidate (what the search picks) and half
random (what it explores), compiles each whole with TVM Relax under exactly those schedules,
measures it on this machine (batch 1, the median of windows interleaved over all subnets) and
compares with the model's prediction.
The FLOPs baseline predicts latency proportional to MACs, its one factor fitted on the profile's
own whole-model measurements (so it gets the same calibration data as the model).

    python tools/bench_latency_model.py --profile hw_profiles/llvm-znver3-2c.json --subnets 50

The TVM runtime runs on as many threads as the profile's target has cores (``--threads`` to
change it): a profile measured on 2 cores predicts 2-thread runs.

Every subnet is timed in ``--passes`` passes (2 by default; every other one in reverse order), each
pass alternating 50 ms windows over all subnets so that a slow spell of a shared VM is spread over
them. The model is scored against the mean of all passes (``--truth mean``, the default) or against
each subnet's fastest pass (``--truth fastest``: what the profile records for its own whole subnets
with ``--retime-rule fastest``, the machine's undisturbed speed, for a VM that switches between
speed states minutes apart). The same rule applied to the odd and to the even passes separately
gives two timings of every subnet: the share that agree within +-10% is the machine's own
repeatability, the ceiling any model can reach on it (with 2 passes: the first against the second).

A shared or virtual machine's speed drifts by 10-15% over hours, which alone moves predictions out
of +-10%. ``--speed-probe N`` times N of the profile's own subnets (never the held-out ones; half at
the search's schedules, half at random ones) in the same two passes, their windows interleaved with
the held-out subnets' windows, fits on them the factors by which tuned and one-thread
(default-lowered) kernels run slower now than recorded
(``codesign.profile.speed_probe.speed_from_subnet_timings``), and scales the model's predictions by
them, the FLOPs baseline's by the tuned one (see ``LatencyModel.at_speed``). The probe subnets are
a reference measured beside the predicted ones: what the model is judged on is how each held-out
subnet compares with the profile's own subnets on the machine as it runs. The report also scores,
on the same timings, the model as profiled, with every kernel at the tuned factor, and at the speed
of a separate probe of the same subnets right before the passes (how this benchmark probed before
2026-12-07 evening); the RESULT line scores the in-pass probe.

Run it on an otherwise idle machine: it measures. Last line:
``RESULT latency_model within10=<share> rmspe=<value> flops_within10=<share> n=<count>``.

For a device without TVM (a GPU reached briefly, see ``hw_profiles/README.md``) the same test
runs in three steps: ``--build-bundle DIR`` compiles the same random held-out subnets here into a
models-only measurement bundle (CUDA kernels as nvcc fatbins), ``python3 DIR/measure.py`` times
them on the device (TVM's time evaluator over rotated inputs, torch eager beside them), and
``--bundle DIR --results DIR/results.json`` scores the profile's predictions against those
timings. There the second timing is the device's host loop over rotated inputs, not a second
pass minutes later:

    python tools/bench_latency_model.py --profile hw_profiles/cuda-sm90-h200.json --subnets 30 \
        --build-bundle .device/heldout --runtime-wheels wheels
    python3 .device/heldout/measure.py          # on the GPU machine
    python tools/bench_latency_model.py --profile hw_profiles/cuda-sm90-h200.json \
        --bundle .device/heldout --results results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def draw_held_out(model: Any, profile: Any, count: int, seed: int) -> list[tuple[Any, str]]:
    """``count`` random subnets not among the profile's calibration models, alternately at each
    kernel's fastest schedule (what the search picks) and at random valid schedules (what it explores)."""
    from codesign.space import Genome

    space = model.space
    rng = np.random.default_rng(seed)
    calib_arch = {Genome.from_dict(m["genome"]).architecture(space).to_json() for m in profile.models}
    drawn: list[tuple[Any, str]] = []
    while len(drawn) < count:
        g = Genome.random(space, rng).canonical(space)
        if g.to_json() in calib_arch:
            continue
        if len(drawn) % 2 == 0:
            drawn.append((model.fastest_schedules(g), "fastest"))
            continue
        drawn.append((model.random_schedules(g, rng), "random"))
    return drawn


def kernel_shares(model: Any, genome: Any) -> tuple[float, float]:
    """Shares of ``genome``'s per-kernel sum in kernel/schedule pairs the profile only predicted (never timed),
    and in kernels at TVM's default lowering (no schedule: one thread)."""
    layers = model.explain(genome)["layers"]
    total = sum(layer["latency_ms"] for layer in layers)
    if not total:
        return 0.0, 0.0
    predicted = sum(layer["latency_ms"] for layer in layers if layer["source"] == "predicted")
    default = sum(layer["latency_ms"] for layer in layers if layer["schedule_source"] == "default")
    return predicted / total, default / total


def flops_factor(model: Any, profile: Any, speed: float = 1.0) -> float:
    """ms per MAC of the FLOPs-proportional baseline, least squares in relative error on the calibration models,
    times ``speed`` (the device's probed speed, as the latency model gets it)."""
    from codesign.latency.workloads import subnet_macs
    from codesign.space import Genome

    calib = [m for m in profile.models if m.get("status") == "ok"]
    if not calib:
        raise SystemExit("the profile has no whole-model measurements to fit the FLOPs baseline on")
    macs = np.asarray([subnet_macs(model.space, Genome.from_dict(m["genome"])) for m in calib], dtype=np.float64)
    ms = np.asarray([m["timing"]["median_ms"] for m in calib])
    return speed * float(np.sum(macs / ms) / np.sum((macs / ms) ** 2))


def repeat_label(rows: list[dict[str, Any]]) -> str:
    """How ``rows``' two timings of a subnet (``first_ms``, ``second_ms``) were taken, as a phrase."""
    passes = len(rows[0].get("passes_ms", ())) if rows else 0
    if passes <= 2:
        return "the second pass within +-10% of the first"
    rule = rows[0].get("truth", "mean")
    return f"the {rule} of the even passes within +-10% of the {rule} of the odd ones"


def report(rows: list[dict[str, Any]], profile: Any, second_label: str) -> int:
    """Print the scores of ``rows`` (``measured_ms``, ``first_ms``, ``second_ms``, ``predicted_ms``, ``flops_ms``);
    ``second_label`` says how the two timings behind the repeatability line were taken."""
    from codesign.latency.predictor import error_summary

    def summary(key: str, kind: str | None = None) -> dict[str, float]:
        chosen = [r for r in rows if kind is None or r["schedules"] == kind]
        return error_summary(np.asarray([r[key] for r in chosen]), np.asarray([r["measured_ms"] for r in chosen]))

    def by_schedules(key: str) -> None:
        for kind in ("fastest", "random"):
            s = summary(key, kind)
            chosen = [r for r in rows if r["schedules"] == kind]
            ratio = float(np.median([r["measured_ms"] / r[key] for r in chosen])) if chosen else float("nan")
            print(
                f"  schedules={kind:7s}: {s['within10']:.1%} within +-10%, RMSPE {s['rmspe']:.3f} (n={s['n']}), "
                f"measured a median {ratio:.2f}x the prediction"
            )

    def by_share(field: str, what: str, bins: tuple[tuple[float, float], ...]) -> None:
        for lo, hi in bins:
            chosen = [r for r in rows if lo <= r[field] < hi]
            if not chosen:
                continue
            measured = np.asarray([r["measured_ms"] for r in chosen])
            predicted = np.asarray([r["predicted_ms"] for r in chosen])
            part = error_summary(predicted, measured)
            randoms = sum(r["schedules"] == "random" for r in chosen)
            print(
                f"  {what} {f'{lo:.0%}-{min(hi, 1):.0%}':>8s} of the sum: {part['within10']:.1%} within +-10%, "
                f"RMSPE {part['rmspe']:.3f}, measured a median {float(np.median(measured / predicted)):.2f}x the "
                f"prediction (n={part['n']}, {randoms} random)"
            )

    repeat = error_summary(np.asarray([r["second_ms"] for r in rows]), np.asarray([r["first_ms"] for r in rows]))
    ours = summary("predicted_ms")
    flops = summary("flops_ms")
    measured = np.asarray([r["measured_ms"] for r in rows])
    bias = float(np.median(measured / np.asarray([r["predicted_ms"] for r in rows])))
    print(f"device: {profile.device.name}, {profile.device.cores} cores; target {json.dumps(profile.target)}")
    if rows and "passes_ms" in rows[0]:
        rule = rows[0].get("truth", "mean")
        print(f"measured latency of a subnet: the {rule} of its {len(rows[0]['passes_ms'])} passes")
    print(
        f"repeatability : {second_label} for {repeat['within10']:.1%} of subnets, "
        f"RMSPE {repeat['rmspe']:.3f}, worst {repeat['max_abs_pct']:.1f}%"
    )
    print(
        f"latency model : {ours['within10']:.1%} within +-10%, RMSPE {ours['rmspe']:.3f}, "
        f"worst {ours['max_abs_pct']:.1f}%, measured a median {bias:.2f}x the prediction"
    )
    by_schedules("predicted_ms")
    if all("predicted_share" in r for r in rows):
        # what limits the model: kernel/schedule pairs it never timed (the kernel predictor stands in)
        by_share("predicted_share", "untimed kernel/schedule pairs", ((0.0, 0.2), (0.2, 0.4), (0.4, 1.01)))
    if all("default_share" in r for r in rows):
        # kernels at TVM's default lowering run on one thread; the speed probe's subnets on all of them
        by_share("default_share", "default-lowered kernels", ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01)))
    alternatives = (
        ("compare_ms", "--compare-profile on the same timings", True),
        ("profile_ms", "  as profiled (no speed probe)", False),
        ("one_factor_ms", "  every kernel at the tuned kernels' probed factor (no one-thread factor)", True),
        ("probe_before_ms", "  at the speed of a separate probe right before the passes", True),
        ("kernels_alone_ms", "  the probe before (one-thread kernels timed alone, not fitted on subnets)", True),
    )
    for key, label, per_schedules in alternatives:
        if all(key in r for r in rows):
            other = summary(key)
            print(
                f"{label}: {other['within10']:.1%} within +-10%, RMSPE {other['rmspe']:.3f}, "
                f"worst {other['max_abs_pct']:.1f}%"
            )
            if per_schedules:
                by_schedules(key)
    print(
        f"FLOPs baseline: {flops['within10']:.1%} within +-10%, RMSPE {flops['rmspe']:.3f}, "
        f"worst {flops['max_abs_pct']:.1f}%"
    )
    return 0


def print_misses(rows: list[dict[str, Any]], model: Any, *, kernels: int = 4) -> None:
    """Each subnet predicted outside +-10%, worst first, with its ``kernels`` largest kernels as the model sees them
    (:meth:`LatencyModel.explain`): schedule, layout, whether timed or predicted, share of the kernel sum."""
    from codesign.space import Genome

    misses = [r for r in rows if abs(r["predicted_ms"] / r["measured_ms"] - 1) > 0.10]
    if not misses:
        return
    print(f"outside +-10% ({len(misses)}), the largest kernels of each as the model sees them:")
    for r in sorted(misses, key=lambda r: -abs(r["predicted_ms"] / r["measured_ms"] - 1)):
        explained = model.explain(Genome.from_dict(r["genome"]))
        total = sum(layer["latency_ms"] for layer in explained["layers"]) or 1.0
        print(
            f"  measured {r['measured_ms']:.3f} ms, predicted {r['predicted_ms']:.3f} "
            f"({(r['predicted_ms'] / r['measured_ms'] - 1) * 100:+.1f}%), schedules={r['schedules']}, "
            f"{explained['kernels']} kernels, {explained['transposes']} layout changes"
        )
        for layer in sorted(explained["layers"], key=lambda layer: -layer["latency_ms"])[:kernels]:
            print(
                f"    {layer['latency_ms'] / total:5.1%} {layer['workload']} #{layer['schedule']} "
                f"({layer['schedule_source']}, {layer['layout']}, {layer['source']}) {layer['latency_ms'] * 1e3:.1f} us"
            )


def truth_of(timings: Any, rule: str) -> float:
    """One subnet's latency from its passes' timings: their mean, or the fastest (``rule`` "mean" or "fastest")."""
    values = np.asarray(timings, dtype=np.float64)
    return float(values.min() if rule == "fastest" else values.mean())


def measure_here(
    args: argparse.Namespace,
    model: Any,
    profile: Any,
    drawn: list[tuple[Any, str]],
    compare: Any = None,
) -> list[dict]:
    """Compile every drawn subnet, then time all on this machine twice, in two interleaved passes.

    With ``--speed-probe N``, N of the profile's own subnets (:func:`probe_subnets`, never held-out ones) are
    compiled too and timed in the same passes, their windows interleaved with the held-out subnets' windows, so
    that the factors fitted on them (``speed_from_subnet_timings``, on the mean of their two timings) are the
    machine's speed during exactly those timings: ``predicted_ms``. Beside it, from the same timings: the model
    as profiled (``profile_ms``), with every kernel at the tuned factor (``one_factor_ms``), and at the speed of
    a separate probe, the same subnets timed alone right before the passes (``probe_before_ms``: how this
    benchmark probed until 2026-12-07; a probe minutes before the timings was up to 8% off them).
    A ``compare`` model's predictions of the same subnets (at the in-pass speed) are kept as ``compare_ms``.
    """
    from codesign.compiler.tvm_compile import compile_subnet, time_executables
    from codesign.errors import CodesignError
    from codesign.latency.workloads import subnet_macs
    from codesign.profile.speed_probe import (
        SpeedProbe,
        model_at_probed_speed,
        probe_subnets,
        speed_from_subnet_timings,
    )
    from codesign.space import Genome

    space = model.space
    families = profile.tuning_records["families"]
    genomes = [g for g, _ in drawn]
    try:  # before compiling: a profile without whole subnets to probe fails now, not ten minutes later
        probe_records = probe_subnets(profile, args.speed_probe) if args.speed_probe else []
    except CodesignError as error:
        raise SystemExit(f"--speed-probe: {error}") from None
    executables = []
    for i, (g, _) in enumerate(drawn):
        executables.append(compile_subnet(space, g, profile.target, families, positions=model.positions))
        print(f"[{i + 1:3d}/{len(drawn)}] compiled", flush=True)
    probe_genomes = [Genome.from_dict(record["genome"]) for record in probe_records]
    probe_executables = [
        compile_subnet(space, g, profile.target, families, positions=model.positions) for g in probe_genomes
    ]
    before = None
    if probe_records:
        started = time.perf_counter()
        alone = time_executables(
            [(e, g.resolution) for e, g in zip(probe_executables, probe_genomes, strict=True)],
            space,
            windows=args.repeat,
        )
        probe = speed_from_subnet_timings(
            profile, probe_records, [t.median_ms for t in alone], seconds=time.perf_counter() - started
        )
        print(f"right before the passes: {probe.describe()}", flush=True)
        before = probe.to_dict()
    timed = [(e, g.resolution) for e, g in zip(executables + probe_executables, genomes + probe_genomes, strict=True)]
    held_out = len(drawn)

    def in_pass_speed(times: list[float]) -> dict[str, Any] | None:
        if not probe_records:
            return None
        seconds = time.perf_counter() - started  # the passes' time so far, the probe subnets' share of it
        return speed_from_subnet_timings(
            profile, probe_records, times, seconds=seconds * len(probe_records) / len(timed)
        ).to_dict()

    def at(speed: dict[str, Any] | None, of: Any = model) -> np.ndarray:
        return (model_at_probed_speed(of, speed) if speed else of).predict(genomes)

    started = time.perf_counter()
    first = [t.median_ms for t in time_executables(timed, space, windows=args.repeat)]
    first_pass_predicted = at(in_pass_speed(first[held_out:]))
    for i, (_, kind) in enumerate(drawn):
        print(
            f"[{i + 1:3d}/{len(drawn)}] measured {first[i]:.3f} ms  model at this pass's probed speed "
            f"{first_pass_predicted[i]:.3f} ({(first_pass_predicted[i] / first[i] - 1) * 100:+.1f}%)  {kind}",
            flush=True,
        )
    passes = [first]
    for number in range(2, args.passes + 1):
        order = list(range(len(timed)))
        if number % 2 == 0:
            order.reverse()
        print(f"pass {number} of {args.passes}{', reverse order' if number % 2 == 0 else ''}:", flush=True)
        timings = [0.0] * len(timed)
        for i, timing in zip(
            order, time_executables([timed[i] for i in order], space, windows=args.repeat), strict=True
        ):
            timings[i] = timing.median_ms
        passes.append(timings)
    print(
        f"measured {held_out} compiled subnets and {len(probe_records)} probe subnets {args.passes} times in "
        f"{time.perf_counter() - started:.0f} s on {os.environ.get('TVM_NUM_THREADS', 'default')} runtime threads"
    )
    per_subnet = np.asarray(passes).T  # subnet x pass
    truth_times = [truth_of(row, args.truth) for row in per_subnet]
    odd_times = [truth_of(row[0::2], args.truth) for row in per_subnet]
    even_times = [truth_of(row[1::2], args.truth) for row in per_subnet]
    speed = in_pass_speed(truth_times[held_out:])
    if speed:
        in_passes = SpeedProbe.from_dict(speed)
        print(f"in the passes: {in_passes.describe()}", flush=True)
        if (warning := in_passes.warning()) is not None:
            print(f"warning: {warning}", flush=True)
    k = flops_factor(model, profile, speed["factor"] if speed else 1.0)
    predicted = at(speed)
    as_profiled = model.predict(genomes)
    one_factor = model.at_speed(speed["factor"]).predict(genomes) if speed else as_profiled
    probed_before = at(before) if before else None
    compared = None if compare is None else at(speed, compare)
    transposes = model.terms(model.vectors(genomes))[2]  # layout changes in each compiled subnet
    rows = []
    for i, (g, kind) in enumerate(drawn):
        macs = subnet_macs(space, g)
        rows.append(
            {
                "genome": g.to_dict(),
                "schedules": kind,
                "passes_ms": [float(t) for t in per_subnet[i]],
                "truth": args.truth,
                "first_ms": odd_times[i],
                "second_ms": even_times[i],
                "measured_ms": truth_times[i],
                "predicted_ms": float(predicted[i]),
                **({"profile_ms": float(as_profiled[i]), "one_factor_ms": float(one_factor[i])} if speed else {}),
                **({"probe_before_ms": float(probed_before[i])} if probed_before is not None else {}),
                **({"compare_ms": float(compared[i])} if compared is not None else {}),
                "flops_ms": k * macs,
                "macs": macs,
                "transposes": int(transposes[i]),
                **dict(zip(("predicted_share", "default_share"), kernel_shares(model, g), strict=True)),
            }
        )
        r = rows[-1]
        print(
            f"[{i + 1:3d}/{len(drawn)}] {r['first_ms']:.3f} then {r['second_ms']:.3f} ms "
            f"({(r['second_ms'] / r['first_ms'] - 1) * 100:+.1f}%)  model {r['predicted_ms']:.3f} "
            f"({(r['predicted_ms'] / r['measured_ms'] - 1) * 100:+.1f}%)  flops {r['flops_ms']:.3f} "
            f"({(r['flops_ms'] / r['measured_ms'] - 1) * 100:+.1f}%)  {kind}  transposes {r['transposes']}",
            flush=True,
        )
    return rows


def build_held_out_bundle(args: argparse.Namespace, model: Any, profile: Any, drawn: list[tuple[Any, str]]) -> int:
    """Compile the drawn subnets into a models-only bundle for a device without TVM."""
    from codesign.latency.workloads import subnet_macs
    from codesign.profile.bundle import build_model_bundle

    k = flops_factor(model, profile)
    genomes = [g for g, _ in drawn]
    predicted = model.predict(genomes)
    labels = [
        {"schedules": kind, "predicted_ms": float(p), "flops_ms": k * subnet_macs(model.space, g)}
        for (g, kind), p in zip(drawn, predicted, strict=True)
    ]
    summary = build_model_bundle(
        model.space,
        profile.target,
        profile.tuning_records["families"],
        genomes,
        args.build_bundle,
        labels=labels,
        runtime_wheels=args.runtime_wheels,
        progress=print,
    )
    print(
        f"held-out bundle written to {summary['bundle']}: {summary['models']} subnets, "
        f"{summary['bytes'] / 2**20:.1f} MiB, built in {summary['seconds']:.0f} s; "
        f"next, on the device: python3 {summary['bundle']}/measure.py"
    )
    return 0


def rows_from_bundle(args: argparse.Namespace, model: Any, profile: Any) -> list[dict]:
    """Rows for the subnets of a measured held-out bundle (its results file from the device)."""
    from codesign.latency.workloads import subnet_macs
    from codesign.profile.bundle import load_bundle_index
    from codesign.space import Genome

    index = load_bundle_index(args.bundle)
    results = json.loads(Path(args.results or Path(args.bundle) / "results.json").read_text(encoding="utf-8"))
    if results.get("bundle_id") != index["bundle_id"]:
        raise SystemExit(f"{args.results} measured bundle {results.get('bundle_id')}, not {index['bundle_id']}")
    k = flops_factor(model, profile)
    rows = []
    failed = []
    for entry in index["models"]:
        record = results.get("models", {}).get(entry["key"])
        if record is None or record.get("status") != "ok":
            failed.append(f"{entry['key']}: {'not measured' if record is None else record.get('error')}")
            continue
        g = Genome.from_dict(entry["genome"])
        predicted = float(model.predict([g])[0])
        if abs(predicted - entry["predicted_ms"]) > 1e-6 * max(1.0, predicted):
            raise SystemExit(
                f"{entry['key']}: the profile predicts {predicted:.4f} ms, the bundle was built with "
                f"{entry['predicted_ms']:.4f} ms: score with the profile the bundle was built from"
            )
        torch_eager = record.get("torch_eager") or {}
        rows.append(
            {
                "genome": entry["genome"],
                "schedules": entry["schedules"],
                "first_ms": record["timing"]["median_ms"],
                "second_ms": record["host_loop_rotated"]["median_ms"],
                "measured_ms": record["timing"]["median_ms"],
                "p10_ms": record["timing"]["p10_ms"],
                "p90_ms": record["timing"]["p90_ms"],
                "check_error": record.get("check_error"),
                "torch_eager_ms": torch_eager.get("median_ms"),
                "predicted_ms": predicted,
                "flops_ms": k * subnet_macs(model.space, g),
            }
        )
        r = rows[-1]
        eager = f"  torch eager {r['torch_eager_ms']:.3f} ms" if r["torch_eager_ms"] else ""
        print(
            f"[{len(rows):3d}] measured {r['measured_ms']:.4f} ms (p10-p90 {r['p10_ms']:.4f}-{r['p90_ms']:.4f})  "
            f"model {predicted:.4f} ({(predicted / r['measured_ms'] - 1) * 100:+.1f}%)  "
            f"flops {r['flops_ms']:.4f} ({(r['flops_ms'] / r['measured_ms'] - 1) * 100:+.1f}%)  {r['schedules']}{eager}"
        )
    for line in failed:
        print(f"not scored: {line}")
    info = results.get("device_info", {})
    print(
        f"measured on {info.get('name', '?')} (driver {info.get('driver_version', '?')}) in {results.get('seconds')} s"
    )
    eager = [r["torch_eager_ms"] / r["measured_ms"] for r in rows if r["torch_eager_ms"]]
    if eager:
        print(
            f"torch eager / TVM, geometric mean over {len(eager)} subnets: {float(np.exp(np.mean(np.log(eager)))):.3f}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--subnets", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10, help="50 ms windows per subnet in each pass")
    parser.add_argument(
        "--passes",
        type=int,
        default=2,
        help="times every subnet is timed, each time in a pass over all of them (default 2, at least 2)",
    )
    parser.add_argument(
        "--truth",
        choices=("mean", "fastest"),
        default="mean",
        help="a subnet's measured latency: the mean of its passes (default) or the fastest of them, as the "
        "profile records its own whole subnets with --retime-rule fastest",
    )
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="TVM runtime threads (default: the profile target's num-cores, the count it was measured with)",
    )
    parser.add_argument(
        "--speed-probe",
        type=int,
        default=0,
        metavar="N",
        help="time N of the profile's own subnets in the same passes and score the model at the speed they show "
        "(default 0: off); a separate probe of them right before the passes is scored beside it",
    )
    parser.add_argument(
        "--compare-profile",
        metavar="FILE",
        default=None,
        help="also score this profile's predictions of the same measured subnets (e.g. the same profile before a "
        "re-fit: `codesign profile --refit`); the subnets and their schedules are drawn with --profile",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        default=None,
        help="measure nothing: print the scores of an earlier run's --out FILE again (with --profile: the profile "
        "that run drew and scored with)",
    )
    remote = parser.add_argument_group("devices without TVM (measured through a models-only bundle)")
    remote.add_argument(
        "--build-bundle", metavar="DIR", help="compile the held-out subnets into a bundle, measure nothing"
    )
    remote.add_argument("--runtime-wheels", metavar="DIR", help="with --build-bundle: tvm_ffi wheels for the device")
    remote.add_argument("--bundle", metavar="DIR", help="score the held-out bundle DIR measured on the device")
    remote.add_argument("--results", metavar="FILE", help="with --bundle: its results file (default DIR/results.json)")
    args = parser.parse_args()
    if args.passes < 2:
        parser.error("--passes must be at least 2: the odd and the even passes are the repeatability check")

    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile
    from codesign.space import Genome

    profile = load_profile(args.profile).profile
    # read when TVM's thread pool starts, at the first kernel run below
    threads = args.threads or int(profile.target.get("num-cores") or 0) or None
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    model = LatencyModel.from_profile(profile)
    if args.report:
        try:
            rows = json.loads(Path(args.report).read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--report {args.report}: not a readable --out file of this tool ({exc})") from None
        for r in rows:  # rows saved before a share was recorded: computed with --profile's model
            shares = kernel_shares(model, Genome.from_dict(r["genome"]))
            r.setdefault("predicted_share", shares[0])
            r.setdefault("default_share", shares[1])
        second_label = repeat_label(rows)
    elif args.bundle:
        rows = rows_from_bundle(args, model, profile)
        second_label = "the host loop over rotated inputs within +-10% of the first timing"
    else:
        drawn = draw_held_out(model, profile, args.subnets, args.seed)
        if args.build_bundle:
            return build_held_out_bundle(args, model, profile, drawn)

        compare = None
        if args.compare_profile:
            compare = LatencyModel.from_profile(load_profile(args.compare_profile, allow_mismatch=True).profile)
        rows = measure_here(args, model, profile, drawn, compare)
        second_label = repeat_label(rows)
    if not rows:
        print("no subnet was measured", file=sys.stderr)
        return 1
    report(rows, profile, second_label)
    print_misses(rows, model)
    if args.out:
        from codesign.fileio import write_json_atomic

        write_json_atomic(Path(args.out), {"rows": rows})
    from codesign.latency.predictor import error_summary

    ours = error_summary(np.asarray([r["predicted_ms"] for r in rows]), np.asarray([r["measured_ms"] for r in rows]))
    flops = error_summary(np.asarray([r["flops_ms"] for r in rows]), np.asarray([r["measured_ms"] for r in rows]))
    print(
        f"RESULT latency_model within10={ours['within10']:.3f} rmspe={ours['rmspe']:.4f} "
        f"flops_within10={flops['within10']:.3f} n={len(rows)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
