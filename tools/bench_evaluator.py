"""Population evaluation: the C++ subnet evaluator against torch eager, same subnets, same threads.

Every subnet is BN-recalibrated on training images, then scored on validation images. Torch runs
two ways (slicing the supernet in place, and extracting static modules as TorchSubnetEvaluator
does); the faster one is the baseline. Each variant runs in its own process, so its peak memory
(VmHWM) is its own, and ``--rounds`` times, interleaved with the others: a shared VM's slow
spells only ever add time, so each variant's fastest round is compared and every round printed.
Also measures batch-1 latency of one subnet. Uses the shipped supernet when present, else a
seeded random one. The C++ evaluator runs with the fastest instruction set this CPU has;
``--compare-isas`` also times it capped at others (e.g. avx2 on an AVX-512 CPU), right after it,
to show what each kernel path buys. GFLOP/s counts the work without the prefixes the C++
evaluator shares, so it is comparable across variants. Ends with
``RESULT evaluator speedup=<torch/cpp> batch1_speedup=<torch/cpp> max_rel_err=<logits> n=<subnets>``.

    python tools/bench_evaluator.py [--subnets 64] [--images 2000] [--calibration 2000] [--threads 2]
                                    [--compare-isas avx2] [--rounds 2]
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

VARIANTS = ("cpp", "torch-slice", "torch-static")


def vm_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmHWM: peak resident set) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def reset_peak() -> int:
    """Reset the peak-RSS counter (Linux clear_refs "5") and return the current RSS in KiB.

    Afterwards VmHWM is the peak since the reset, so ``VmHWM - returned`` is what the measured
    code added at its peak. Without clear_refs, VmHWM stays the process peak (an upper bound).
    """
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return vm_kib("VmRSS")


def build(args: argparse.Namespace) -> tuple[Any, Any, list[Any], str]:
    """The supernet, data splits and population every worker uses."""
    import torch

    from codesign.data import load_splits
    from codesign.supernet import ElasticSupernet, load_supernet
    from codesign.supernet.weights import resolve_supernet_path
    from codesign.testing import random_genomes, randomize_batchnorm

    if args.supernet or resolve_supernet_path(None).is_file():
        loaded = load_supernet(args.supernet)
        net, mean, std, source = loaded.supernet, loaded.mean, loaded.std, str(loaded.path)
    else:
        from codesign.space import get_space

        torch.manual_seed(args.seed)
        net = ElasticSupernet(get_space("fmnist_mbv3"))
        randomize_batchnorm(net, args.seed)
        with torch.no_grad():  # non-trivial residual branches
            for block in net.blocks:
                block.project_bn.weight.uniform_(0.5, 1.5)
        mean = std = None
        source = f"random supernet (seed {args.seed}; no shipped weights)"
    splits = load_splits("fashion-mnist", args.data_root)
    if mean is not None:
        from dataclasses import replace

        splits = replace(splits, mean=tuple(mean), std=tuple(std))
    genomes = random_genomes(net.space, max(0, args.subnets - 2), seed=args.seed)[: args.subnets]
    return net.eval(), splits, genomes, source


def worker(args: argparse.Namespace) -> None:
    """Run one variant and write its timings, memory and logits to ``args.out``."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from codesign.evaluation import CppSubnetEvaluator, TorchSubnetEvaluator, predict_logits, recalibrate_bn
    from codesign.evaluation.cpp_evaluator import active_evaluator_isa

    net, splits, genomes, source = build(args)
    options = dict(
        calibration_images=args.calibration, calibration_batch_size=args.calibration_batch, max_images=args.images
    )
    out = Path(args.out)
    result: dict[str, Any] = {"variant": args.worker, "source": source}
    resolutions = sorted({g.resolution for g in genomes})
    if args.worker.startswith("cpp"):
        result["isa"] = active_evaluator_isa()  # capped by CODESIGN_EVAL_ISA for the cpp-<isa> variants
        from codesign.latency.workloads import subnet_macs

        ev = CppSubnetEvaluator(net, splits, num_threads=args.threads, **options)
        for r in resolutions:  # preprocessing is shared by both evaluators and not timed
            ev._prepared("target", r), ev._prepared("calibration", r)
        images = {r: sum(int(ev._prepared(s, r)[0].shape[0]) for s in ("target", "calibration")) for r in resolutions}
        result["gmacs"] = sum(subnet_macs(net.space, g) * images[g.resolution] for g in genomes) / 1e9
        result["rss_setup_kib"] = reset_peak()
        start = time.perf_counter()
        accuracies, logits = ev.evaluate_many(genomes, return_logits=True)
        result["seconds"] = time.perf_counter() - start
        result["hwm_kib"] = vm_kib("VmHWM")
        # which prefixes the timed run shared (grouping depends only on the plans and resolutions)
        few = {r: ev._prepared("target", r)[0][:8] for r in resolutions}
        depths = ev._ext.run([ev.plan(g) for g in genomes], few, return_sharing=True)[2]
        result["shared_depths"] = [int(d) for d in depths]
        one = genomes[min(2, len(genomes) - 1)]
        image = ev._prepared("target", one.resolution)[0][:1]
        ev.logits(one, image, recalibrate=False)
        start = time.perf_counter()
        for _ in range(args.latency_runs):
            ev.logits(one, image, recalibrate=False)
        result["batch1_call_ms"] = (time.perf_counter() - start) / args.latency_runs * 1e3
        prepared = ev.prepare(one, recalibrate=False)
        prepared.logits(image)
        start = time.perf_counter()
        for _ in range(args.latency_runs):
            prepared.logits(image)
        result["batch1_ms"] = (time.perf_counter() - start) / args.latency_runs * 1e3
    else:
        ev = TorchSubnetEvaluator(net, splits, **options)
        for r in resolutions:
            ev._prepared("target", r), ev._prepared("calibration", r)
        result["rss_setup_kib"] = reset_peak()
        logits, accuracies = [], []
        start = time.perf_counter()
        for g in genomes:
            images, labels = ev._prepared("target", g.resolution)
            if args.worker == "torch-static":
                module = ev.subnet(g)
            else:
                net.set_active_subnet(g)
                calib, _ = ev._prepared("calibration", g.resolution)
                recalibrate_bn(
                    net,
                    calib,
                    batch_size=args.calibration_batch,
                    num_batches=max(1, args.calibration // args.calibration_batch),
                )
                module = net
            z = predict_logits(module, images)
            logits.append(z.numpy())
            accuracies.append(float((z.argmax(dim=1) == labels).float().mean().item()))
        result["seconds"] = time.perf_counter() - start
        result["hwm_kib"] = vm_kib("VmHWM")
        if args.worker == "torch-static":
            # float64 reference for a few subnets: which float32 result is closer to exact arithmetic
            ref64 = []
            for g in genomes[: args.float64_subnets]:
                module = net.extract(g).double()
                calib, _ = ev._prepared("calibration", g.resolution)
                recalibrate_bn(
                    module,
                    calib.double(),
                    batch_size=args.calibration_batch,
                    num_batches=max(1, args.calibration // args.calibration_batch),
                )
                ref64.append(predict_logits(module, ev._prepared("target", g.resolution)[0].double()).numpy())
            np.save(out / "float64-logits.npy", np.stack(ref64) if ref64 else np.zeros((0,)))
            one = genomes[min(2, len(genomes) - 1)]
            module = net.extract(one).eval()
            image = ev._prepared("target", one.resolution)[0][:1]
            with torch.no_grad():
                module(image)
                start = time.perf_counter()
                for _ in range(args.latency_runs):
                    module(image)
            result["batch1_ms"] = (time.perf_counter() - start) / args.latency_runs * 1e3
    np.save(out / f"{args.worker}-logits.npy", np.stack(logits).astype(np.float32))
    result["accuracies"] = [float(a) for a in accuracies]
    (out / f"{args.worker}.json").write_text(json.dumps(result))


def main() -> int:
    """Run every variant in its own process and print the comparison and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=None, help="supernet file (default: the shipped one, else random)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--subnets", type=int, default=64)
    parser.add_argument("--images", type=int, default=2000, help="validation images per subnet")
    parser.add_argument("--calibration", type=int, default=2000, help="BN calibration images per subnet")
    parser.add_argument("--calibration-batch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--float64-subnets", type=int, default=4, help="subnets also run in float64 as a check")
    parser.add_argument(
        "--compare-isas",
        default="avx2",
        help="comma-separated instruction sets the C++ evaluator is also timed with, where this CPU runs them and "
        "they are not already the fastest (default: avx2; '' for none)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="times each variant runs, interleaved; its fastest round counts"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    import numpy as np

    from codesign.evaluation.cpp_evaluator import active_evaluator_isa, evaluator_isas

    fastest = active_evaluator_isa()
    extra = [i for i in filter(None, args.compare_isas.split(",")) if i in evaluator_isas() and i != fastest]
    variants = ["cpp", *(f"cpp-{isa}" for isa in extra), *VARIANTS[1:]]
    passthrough = [a for a in sys.argv[1:]]
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    logits: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(max(1, args.rounds)):
            for variant in variants:
                out = Path(tmp) / f"round{round_index}"
                out.mkdir(exist_ok=True)
                # later rounds only time: the float64 check and the logits come from the first
                extra_args = ["--float64-subnets", "0"] if round_index else []
                cmd = [sys.executable, __file__, *passthrough, *extra_args, "--worker", variant, "--out", str(out)]
                env = dict(os.environ, CODESIGN_EVAL_ISA=variant[4:]) if variant.startswith("cpp-") else None
                subprocess.run(cmd, check=True, env=env)
                rounds[variant].append(json.loads((out / f"{variant}.json").read_text()))
                if not round_index:
                    logits[variant] = np.load(out / f"{variant}-logits.npy")
        ref64 = np.load(Path(tmp) / "round0" / "float64-logits.npy")
    results = {v: min(rs, key=lambda r: r["seconds"]) for v, rs in rounds.items()}
    for v, rs in rounds.items():
        for key in ("batch1_ms", "batch1_call_ms"):
            if key in results[v]:
                results[v][key] = min(r[key] for r in rs)
    cpp = results["cpp"]
    torch_best = min(("torch-slice", "torch-static"), key=lambda v: results[v]["seconds"])
    ref = logits["torch-static"]
    errs = [float(np.abs(logits["cpp"][i] - ref[i]).max() / max(np.abs(ref[i]).max(), 1e-30)) for i in range(len(ref))]
    max_rel_err = max(errs)
    same_acc = sum(a == b for a, b in zip(cpp["accuracies"], results["torch-static"]["accuracies"]))
    n = len(cpp["accuracies"])
    print(f"supernet: {cpp['source']}")
    print(
        f"{n} subnets, {args.images} validation images, BN recalibration on {args.calibration} training images "
        f"(batches of {args.calibration_batch}), {args.threads} threads"
    )
    gflop = 2 * cpp["gmacs"]
    print(
        f"{gflop:.0f} GFLOP without shared prefixes; fastest of {len(rounds['cpp'])} interleaved rounds per variant "
        f"(all rounds in brackets)"
    )
    for v in variants:
        r = results[v]
        label = f"{v} ({r['isa']})" if v == "cpp" else v
        every = ", ".join(f"{x['seconds']:.2f}" for x in rounds[v])
        print(
            f"  {label:13s} {r['seconds']:8.2f} s [{every}]  {r['seconds'] / n * 1e3:6.1f} ms/subnet  "
            f"{gflop / r['seconds']:5.1f} GFLOP/s  peak RSS {r['hwm_kib'] / 1024:7.1f} MiB, "
            f"+{(r['hwm_kib'] - r['rss_setup_kib']) / 1024:6.1f} MiB over the loaded data and model"
        )
    depths = cpp["shared_depths"]
    print(
        f"  C++ shared prefixes: {sum(d >= 0 for d in depths)}/{n} subnets reused a stem computed once per "
        f"resolution, {sum(d > 0 for d in depths)} also leading blocks (deepest {max(depths)})"
    )
    speedup = results[torch_best]["seconds"] / cpp["seconds"]
    batch1 = results["torch-static"]["batch1_ms"] / cpp["batch1_ms"]
    print(f"  speedup vs best torch ({torch_best}): {speedup:.2f}x")
    for v in variants[1 : 1 + len(extra)]:
        print(f"  C++ {fastest} over C++ {v[4:]}: {results[v]['seconds'] / cpp['seconds']:.2f}x faster")
    print(
        f"  batch-1 latency of one subnet: C++ prepared subnet {cpp['batch1_ms']:.3f} ms "
        f"({cpp['batch1_call_ms']:.3f} ms per evaluator.logits call incl. slicing/packing) vs "
        f"torch extracted static module {results['torch-static']['batch1_ms']:.3f} ms -> {batch1:.2f}x"
    )
    print(f"  logits max relative error vs torch {max_rel_err:.2e}; identical accuracies {same_acc}/{n}")
    if len(ref64):

        def err64(z: Any) -> float:
            return max(float(np.abs(z[i] - ref64[i]).max() / np.abs(ref64[i]).max()) for i in range(len(ref64)))

        print(
            f"  vs a float64 torch reference ({len(ref64)} subnets): C++ {err64(logits['cpp']):.2e}, "
            f"torch float32 {err64(ref):.2e}"
        )
    print(f"RESULT evaluator speedup={speedup:.3f} batch1_speedup={batch1:.3f} max_rel_err={max_rel_err:.3e} n={n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
