"""Search speed and search quality on the shipped profile, supernet and accuracy predictor.

Speed: candidates scored per second (latency model + accuracy predictor + costs, one call over a
population of 100,000) and the wall time of a 100-population x 500-generation evolution.

Quality: for several seeds, random search, aging evolution and NSGA-II get the same number of
scored candidates at one latency budget; every point of each final front is then evaluated for
real (inherited weights, BN recalibration, validation split) and the hypervolume of the real
front (accuracy vs predicted latency, reference = 0 accuracy at the budget) is compared. All of
them put every kernel at its fastest schedule (``--schedules fastest``, the search's default);
aging evolution is run once more evolving the schedule genes like the others (``evolve``), to
show what that default buys at the same number of scored candidates, once with its earlier
parent selection (``selection="spread-budgets"``) next to the default Pareto-rank tournaments,
once with the earlier mutation probability (0.1 instead of 0.025) and once starting from uniform
samples only (without the space's largest and smallest subnets in the first population).
``--latency-ms`` sets the budget (default: the median of random subnets' latency); large budgets
show the corners' effect, since only there is the largest subnet within reach.

    python tools/bench_search.py --threads 2

Last line: ``RESULT search scored_per_s=<value> evolution_s=<seconds>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="default: the shipped profile of this CPU")
    parser.add_argument("--latency-ms", type=float, default=None, help="default: median latency of random subnets")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scored", type=int, default=3000, help="scored candidates per run in the quality part")
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from codesign.latency.model import LatencyModel
    from codesign.profile.shipped import find_shipped_profile
    from codesign.profile.tvm_backend import host_llvm_target
    from codesign.search.accuracy_predictor import AccuracyPredictor
    from codesign.search.encoding import SearchEncoding
    from codesign.search.pareto import hypervolume
    from codesign.search.pipeline import default_predictor_path
    from codesign.search.problem import Budget, SearchProblem
    from codesign.search.runner import run_search
    from codesign.search.strategies import create_strategy

    profile = args.profile or find_shipped_profile(host_llvm_target(), allow_mismatch=True)
    model = LatencyModel.from_profile(profile, allow_mismatch=True)
    predictor = AccuracyPredictor.load(default_predictor_path(None))
    encoding = SearchEncoding(model.space, model)
    rng = np.random.default_rng(0)
    sampled = model.predict(encoding.sample(rng, 5000))
    budget = args.latency_ms or float(np.median(sampled[np.isfinite(sampled)]))
    problem = SearchProblem(encoding, model, predictor, Budget(latency_ms=budget))

    vectors = encoding.sample(rng, 100_000)
    problem.score(vectors[:1000])
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        problem.score(vectors)
        best = min(best, time.perf_counter() - t)
    scored_per_s = len(vectors) / best
    lat_t = min(_timed(lambda: model.predict_vectors(vectors)) for _ in range(3))
    acc_t = min(_timed(lambda: predictor.predict_features(encoding.arch_features(vectors))) for _ in range(3))
    print(
        f"scoring 100,000 candidates: {best:.3f} s ({scored_per_s:,.0f}/s); latency model alone {lat_t:.3f} s, "
        f"accuracy predictor alone {acc_t:.3f} s"
    )
    evolution_s = min(
        _timed(lambda: run_search(problem, create_strategy("evolution", population_size=100), generations=500, seed=0))
        for _ in range(2)
    )
    print(f"evolution, population 100 x 500 generations: {evolution_s:.2f} s (budget {budget:.3f} ms)")

    if not args.skip_quality:
        from codesign.data import load_splits
        from codesign.search.accuracy_data import make_evaluator
        from codesign.supernet import load_supernet

        supernet = load_supernet(None).supernet
        splits = load_splits("fashion-mnist", channels=model.space.in_channels)
        evaluator = make_evaluator(supernet, splits, threads=args.threads, max_images=args.val_images)
        cache: dict[bytes, float] = {}
        table: dict[str, list[float]] = {}
        population = 50
        evolve_encoding = SearchEncoding(model.space, model, schedules="evolve")
        evolve_problem = SearchProblem(evolve_encoding, model, predictor, Budget(latency_ms=budget))
        runs = [
            ("random", "random", problem, {}),
            ("evolution", "evolution", problem, {}),
            ("nsga2", "nsga2", problem, {}),
            ("evolution/evolve", "evolution", evolve_problem, {}),
            ("evolution/spread", "evolution", problem, {"selection": "spread-budgets"}),
            ("evolution/mut0.1", "evolution", problem, {"mutation_probability": 0.1}),
            ("evolution/uniform", "evolution", problem, {"start_from_corners": False}),
        ]
        for label, name, run_problem, knobs in runs:
            strategy = create_strategy(name, population_size=population, **knobs)
            per_generation = strategy.offspring if name == "evolution" else population
            generations = 1 + (args.scored - population) // per_generation
            for seed in range(args.seeds):
                run_problem.scored = 0
                out = run_search(run_problem, strategy, generations=generations, seed=seed)
                todo = [v for v in out.archive.vectors if v[: encoding.arch_length].tobytes() not in cache]
                if todo:
                    accs = evaluator.evaluate_many([encoding.to_genome(v) for v in todo])
                    for v, a in zip(todo, accs, strict=True):
                        cache[v[: encoding.arch_length].tobytes()] = float(a)
                real = np.asarray([cache[v[: encoding.arch_length].tobytes()] for v in out.archive.vectors])
                hv = hypervolume(real, out.archive.scores.latency_ms, reference_latency=budget)
                table.setdefault(label, []).append(hv)
                print(
                    f"{label:16s} seed {seed}: scored {out.scored}, front {len(out.archive.vectors)}, "
                    f"real hypervolume {hv:.5f}, best real accuracy {real.max() * 100:.2f}%",
                    flush=True,
                )
        base = np.mean(table["random"])
        for name, values in table.items():
            wins = sum(v > r for v, r in zip(values, table["random"], strict=True))
            print(
                f"{name:16s}: mean real hypervolume {np.mean(values):.5f} ({np.mean(values) / base:.3f}x random), "
                f"beats random on {wins}/{len(values)} seeds"
            )
        for other, what in (
            ("evolution/evolve", "fastest vs evolved schedule genes"),
            ("evolution/spread", "Pareto-rank vs spread-budget parent selection"),
            ("evolution/mut0.1", "mutation probability 0.025 vs 0.1"),
            ("evolution/uniform", "first population with the largest and smallest subnets vs uniform only"),
        ):
            ours, theirs = table["evolution"], table[other]
            wins = sum(f > e for f, e in zip(ours, theirs, strict=True))
            print(
                f"{what} (aging evolution): {np.mean(ours) / np.mean(theirs):.3f}x "
                f"hypervolume, higher on {wins}/{len(ours)} seeds"
            )
    print(f"RESULT search scored_per_s={scored_per_s:.0f} evolution_s={evolution_s:.3f}")
    return 0


def _timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
