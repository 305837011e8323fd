"""Co-design payoff: the joint search against the sequential recipe the field uses, on the shipped CPU profile.

Sequential recipe, per latency budget B (also shown: the same recipe when step 1 already knows
every kernel's fastest schedule, the best case for a schedule-unaware search):
  1. architecture search (no pruning) with TVM's default schedule for every layer, under B;
  2. uniform pruning (one ratio for every block and stage) until the default-schedule latency <= B;
  3. tuning: every layer of the result gets its fastest measured schedule.
Joint: one search over architecture and per-layer pruning under B, every candidate's kernels at
their fastest schedules for its shapes (the search's default ``--schedules fastest``).

Both pick their subnet the same way: the 24 (``--finalists``, as ``codesign search``) front points
with the highest predicted accuracy are evaluated for real on the validation split, and the one
with the best estimated accuracy is kept (validation accuracy and the accuracy predictor combined by
inverse variance, ``codesign.search.report.estimated_accuracy``). Reported per subnet: test
accuracy (inherited weights + BN recalibration), predicted latency and the latency measured on
this machine after compiling the whole subnet with TVM under its schedules. Because the
sequential result usually lands well under B, the joint search is also run with the sequential
result's own predicted latency as its budget (equal latency), and on a ladder of smaller budgets
(larger ones when it is less accurate there) to find the fastest joint subnet at least as
accurate (equal accuracy).

The budgets are quantiles of random subnets' predicted latency under TVM's default schedules
(``--budgets-from default``): the recipe's own view of the space, so its architecture search has
room at every budget. With ``--budgets-from fastest`` they are quantiles under every kernel's
fastest schedule: budgets that tight leave the recipe (whose step 1 sees default-schedule
latencies) nothing but the space's fastest corner, so "equal latency" there compares that corner
with what the joint search finds at the same latency.

Each budget is run with several search seeds (``--seeds``, default 0,1,2): the picks differ by
fractions of a point of test accuracy from seed to seed, as much as the effect measured.

    python tools/bench_codesign.py --threads 2 [--budgets-from default|fastest] [--seeds 0,1,2]

Last line: ``RESULT codesign acc_gain_pts=<joint minus sequential at equal latency, mean over budgets
and seeds> latency_ratio=<sequential/joint latency at equal accuracy, mean over budgets and seeds>``.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="default: the shipped profile of this CPU")
    parser.add_argument("--quantiles", default="0.2,0.5,0.8", help="budgets as quantiles of random subnets' latency")
    parser.add_argument(
        "--budgets-from",
        choices=("default", "fastest"),
        default="default",
        help="latency of the random subnets the quantiles are taken over: under TVM's default schedules (the "
        "sequential recipe's own table, so that its step 1 has room at every budget) or with every kernel at its "
        "fastest schedule (tight budgets, under which the recipe can only return the space's fastest corner)",
    )
    parser.add_argument("--generations", type=int, default=150)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="search seeds (comma-separated); every budget is run with each, and the RESULT means over all of them",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-measure", action="store_true", help="skip compiling and measuring the picks")
    parser.add_argument(
        "--finalists", type=int, default=24, help="front points evaluated for real before each pick (default 24)"
    )
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")

    import torch

    torch.set_num_threads(args.threads)
    from codesign.data import load_splits
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile
    from codesign.profile.shipped import find_shipped_profile
    from codesign.profile.tvm_backend import host_llvm_target
    from codesign.search.accuracy_data import make_evaluator
    from codesign.search.accuracy_predictor import AccuracyPredictor
    from codesign.search.encoding import SearchEncoding
    from codesign.search.pipeline import default_predictor_path
    from codesign.search.problem import Budget, SearchProblem
    from codesign.search.report import evaluate_finalists, front_points, pick_finalists, recommend
    from codesign.search.runner import run_search
    from codesign.search.strategies import create_strategy
    from codesign.space import Genome
    from codesign.supernet import load_supernet

    profile_path = args.profile or find_shipped_profile(host_llvm_target(), allow_mismatch=True)
    profile = load_profile(profile_path, allow_mismatch=True).profile
    model = LatencyModel.from_profile(profile)
    space = model.space
    predictor = AccuracyPredictor.load(default_predictor_path(None))
    supernet = load_supernet(None).supernet
    splits = load_splits("fashion-mnist", channels=space.in_channels)
    val = make_evaluator(supernet, splits, threads=args.threads)
    test = make_evaluator(supernet, splits, threads=args.threads, split="test")
    joint_encoding = SearchEncoding(space, model)
    arch_encoding = SearchEncoding(space, model, schedules="default", search_pruning=False)
    # the field's best case for step 1: a latency table where every kernel already has its fastest schedule
    tuned_model = copy.copy(model)
    tuned_model.table = model.table.copy()
    tuned_model.table[:, 0] = model.table.min(axis=1)
    tuned_model.candidate_counts = np.ones_like(model.candidate_counts)
    tuned_arch_encoding = SearchEncoding(space, tuned_model, schedules="default", search_pruning=False)
    rng = np.random.default_rng(0)
    sampled = joint_encoding.sample(rng, 5000)  # every kernel at its fastest schedule
    if args.budgets_from == "default":
        sampled[:, joint_encoding.arch_length :] = 0
    random_latency = model.predict_vectors(sampled)
    random_latency = random_latency[np.isfinite(random_latency)]
    budgets = [float(np.quantile(random_latency, float(q))) for q in args.quantiles.split(",")]

    def search(encoding: SearchEncoding, budget: float, seed: int) -> object:
        problem = SearchProblem(encoding, encoding.latency_model, predictor, Budget(latency_ms=budget))
        out = run_search(
            problem,
            create_strategy("evolution", population_size=args.population),
            generations=args.generations,
            seed=seed,
        )
        if not len(out.archive.vectors):
            return None
        points = front_points(problem, out.archive)
        points = evaluate_finalists(points, pick_finalists(points, args.finalists), val)
        return points[recommend(points, predictor_rmse=predictor.rmse)]

    def describe(genome: Genome, *, measure: bool = True) -> dict[str, float]:
        latency = float(model.predict([genome])[0])
        accuracy = float(test.evaluate_many([genome])[0])
        measured = float("nan")
        if measure and not args.no_measure:
            from codesign.compiler.tvm_compile import compile_subnet, time_executable

            ex = compile_subnet(
                space, genome, profile.target, profile.tuning_records["families"], positions=model.positions
            )
            measured = time_executable(ex, space, genome.resolution).median_ms
        return {"test_acc": accuracy, "predicted_ms": latency, "measured_ms": measured}

    gains, ratios, same_budget, vs_tuned = [], [], [], []
    print(
        f"profile: {profile_path} ({profile.device.name}); budgets (ms, quantiles {args.quantiles} of random subnets "
        f"under {args.budgets_from} schedules): {', '.join(f'{b:.3f}' for b in budgets)}"
    )
    for seed, budget in ((seed, budget) for seed in seeds for budget in budgets):
        # --- sequential: arch search with default schedules, uniform pruning, then tuning
        arch = search(arch_encoding, budget, seed)
        # nothing meets the budget under default schedules: start pruning from the smallest architecture
        arch_genome = arch.genome if arch is not None else replace(Genome.smallest(space), schedules=())
        pruned = arch_genome
        for ratio_index in range(len(space.stages[0].block_prune_ratios)):
            candidate = _uniform_prune(space, arch_genome, ratio_index)
            pruned = candidate
            if model.predict([replace(candidate, schedules=())])[0] <= budget:
                break
        sequential = model.fastest_schedules(replace(pruned, schedules=()))
        seq = describe(sequential)
        # --- joint at the same budget, and at the sequential result's own latency
        joint_b = search(joint_encoding, budget, seed)
        joint_eq = search(joint_encoding, seq["predicted_ms"], seed)
        jb = describe(joint_b.genome)
        # nothing found at the sequential result's latency: it sits at the space's fastest corner,
        # which the joint space contains too, so equal latency means equal subnet (gain 0)
        je = describe(joint_eq.genome) if joint_eq is not None else dict(seq)
        gains.append((je["test_acc"] - seq["test_acc"]) * 100)
        same_budget.append((jb["test_acc"] - seq["test_acc"]) * 100)
        # --- the same recipe with schedule-aware tables (each kernel at its fastest schedule) for step 1
        tuned_arch = search(tuned_arch_encoding, budget, seed)
        tuned_seq = describe(model.fastest_schedules(replace(tuned_arch.genome, schedules=()))) if tuned_arch else None
        if tuned_seq is not None:
            vs_tuned.append((jb["test_acc"] - tuned_seq["test_acc"]) * 100)
        # --- equal accuracy: fastest joint subnet at least as accurate (test) as the sequential one
        ratio = _equal_accuracy_ratio(
            seq, je if joint_eq is not None else None, lambda b, s=seed: search(joint_encoding, b, s), describe
        )
        ratios.append(ratio)
        print(f"\nbudget {budget:.3f} ms, seed {seed}", flush=True)
        print(f"  sequential       : {_fmt(seq)}  {sequential.short(space)}")
        print(f"  joint @ budget   : {_fmt(jb)}  {joint_b.genome.short(space)}")
        print(f"  joint @ seq. lat.: {_fmt(je)}  gain {gains[-1]:+.2f} pts at equal latency")
        if tuned_seq is not None:
            print(f"  seq., tuned LUT  : {_fmt(tuned_seq)}  {tuned_arch.genome.short(space)}")
        print(f"  equal accuracy   : sequential/joint latency = {ratio:.2f}x")
    gain = float(np.nanmean(gains))
    ratio = float(np.nanmean(ratios)) if not all(np.isnan(ratios)) else float("nan")
    print()
    for i, budget in enumerate(budgets):
        g, r = np.asarray(gains).reshape(len(seeds), -1)[:, i], np.asarray(ratios).reshape(len(seeds), -1)[:, i]
        print(
            f"budget {budget:.3f} ms over seeds {args.seeds}: gain {', '.join(f'{x:+.2f}' for x in g)} pts, "
            f"ratio {', '.join(f'{x:.2f}' for x in r)}x"
        )
    print(
        f"mean over {len(budgets)} budgets x {len(seeds)} seeds: {gain:+.2f} accuracy points at equal latency, "
        f"{ratio:.2f}x faster at equal accuracy"
    )
    print(
        f"at the same budget (the sequential result uses less of it): joint {np.mean(same_budget):+.2f} points vs the "
        f"sequential recipe, {np.mean(vs_tuned) if vs_tuned else float('nan'):+.2f} vs the recipe on tuned tables"
    )
    print(f"RESULT codesign acc_gain_pts={gain:.2f} latency_ratio={ratio:.3f}")
    return 0


def _equal_accuracy_ratio(
    seq: dict[str, float],
    at_seq_latency: dict[str, float] | None,
    search: Callable[[float], Any],
    describe: Callable[..., dict[str, float]],
) -> float:
    """Sequential latency over the latency of the fastest joint pick at least as accurate (test).

    From the joint pick at the sequential latency, budgets step down (0.9x, 0.8x, ... of it) while
    the pick stays as accurate; when it is less accurate, they step up (1.1x ... 2x) until one is,
    so a joint search that needs more latency for the same accuracy gives a ratio below 1 (at most
    0.5 when even 2x is not enough). No pick at the sequential latency means the sequential subnet
    is the space's fastest corner, which the joint space contains too: ratio 1.
    """
    if at_seq_latency is None:
        return 1.0
    base = seq["predicted_ms"]
    if at_seq_latency["test_acc"] < seq["test_acc"]:
        for factor in (1.1, 1.2, 1.35, 1.5, 1.75, 2.0):
            pick = search(base * factor)
            d = describe(pick.genome, measure=False) if pick is not None else None
            if d is not None and d["test_acc"] >= seq["test_acc"]:
                return base / d["predicted_ms"]
        return 0.5
    ratio = base / at_seq_latency["predicted_ms"]
    for factor in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        pick = search(base * factor)
        if pick is None:
            break
        d = describe(pick.genome, measure=False)
        if d["test_acc"] < seq["test_acc"]:
            break
        ratio = base / d["predicted_ms"]
    return ratio


def _fmt(d: dict[str, float]) -> str:
    return f"test {d['test_acc'] * 100:6.2f}%  predicted {d['predicted_ms']:.3f} ms  measured {d['measured_ms']:.3f} ms"


def _uniform_prune(space: object, genome: object, ratio_index: int) -> object:
    from codesign.space import Genome

    s = space  # SearchSpace
    g: Genome = genome  # type: ignore[assignment]
    return replace(
        g,
        block_prune=tuple(s.stages[si].block_prune_ratios[ratio_index] for si, _ in s.block_slots()),  # type: ignore[attr-defined]
        width_prune=tuple(st.width_prune_ratios[ratio_index] for st in s.stages),  # type: ignore[attr-defined]
    )


if __name__ == "__main__":
    raise SystemExit(main())
