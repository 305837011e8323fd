"""``codesign search``: the joint architecture + pruning + schedule search under a latency budget."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from codesign.cli.base import Command, add_data_arguments, add_threads_argument, apply_threads


def resolve_target(spec: str) -> dict[str, Any]:
    """``llvm`` (this CPU), ``cuda`` or a TVM target JSON object; a clear error for anything else."""
    from codesign.errors import CodesignError

    if spec == "llvm":
        try:
            from codesign.profile.tvm_backend import host_llvm_target

            return host_llvm_target()
        except CodesignError:  # no TVM here: match shipped profiles by kind and core count only
            import os

            return {"kind": "llvm", "num-cores": os.cpu_count() or 1}
    if spec == "cuda":  # this machine's GPU when it has one; any cuda profile matches on a build machine
        from codesign.compiler.cuda_binary import local_cuda_arch

        arch = local_cuda_arch()
        return {"kind": "cuda", "arch": arch} if arch else {"kind": "cuda"}
    try:
        target = json.loads(spec)
    except json.JSONDecodeError:
        raise CodesignError(f"unknown target {spec!r}: use 'llvm', 'cuda' or a TVM target JSON object") from None
    if not isinstance(target, dict) or target.get("kind") not in ("llvm", "cuda"):
        raise CodesignError(f'unknown target {spec!r}: the target JSON needs "kind": "llvm" or "cuda"')
    return target


class SearchCommand(Command):
    name = "search"
    summary = "find the most accurate subnet within a latency budget on a measured device (joint search)"
    description = (
        "Search architecture (depth, kernel, expand ratio, resolution), per-layer pruning ratios and the\n"
        "TVM schedule of every layer together (each candidate's kernels at their fastest measured\n"
        "schedules for its shapes, see --schedules). Latency comes from the device's measured profile (kernel\n"
        "tables + calibrated whole-model correction), accuracy from a predictor trained on subnets\n"
        "evaluated with inherited weights. The most promising points of the resulting front are then\n"
        "evaluated for real and the best one is recommended. Writes front.json, recommended.json (a\n"
        "genome for `codesign export`), front.png and a checkpoint after every generation (--resume\n"
        "continues a killed search to the same result). Without --profile/--supernet/--predictor the\n"
        "shipped ones are used; a target without a shipped profile fails and says how to measure one.\n"
        "A profile holds the device's speed on the day it was measured; on that device, --speed-probe N\n"
        "re-times N of its subnets first so the budget binds at the speed it runs today."
    )
    examples = (
        "codesign search --target llvm --latency-ms 0.8 -o runs/search",
        "codesign search --latency-ms 0.6 --strategy nsga2 --generations 300 --seed 1 -o runs/nsga2",
        "codesign search --latency-ms 0.8 --max-params 150000 --profile my_cpu.json -o runs/s2 --resume",
        "codesign search --latency-ms 0.25 --speed-probe 4 -o runs/today   # on the profiled machine",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from codesign.search.encoding import SCHEDULE_MODES
        from codesign.search.strategies import available_strategies

        parser.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
        parser.add_argument("--target", default="llvm", help="'llvm' (this CPU), 'cuda', or a TVM target JSON")
        parser.add_argument("--latency-ms", type=float, required=True, help="latency budget (batch 1, as compiled)")
        parser.add_argument("--max-params", type=int, default=None, help="parameter budget (optional)")
        parser.add_argument("--max-memory-mb", type=float, default=None, help="peak inference memory budget (MiB)")
        parser.add_argument("--profile", default=None, metavar="FILE.json", help="hardware profile (default: shipped)")
        parser.add_argument("--allow-mismatch", action="store_true", help="use a profile measured for another device")
        parser.add_argument("--supernet", default=None, metavar="DIR|FILE", help="default: the shipped supernet")
        parser.add_argument(
            "--predictor", default=None, metavar="FILE.json", help="accuracy predictor (default: the shipped one)"
        )
        parser.add_argument(
            "--strategy",
            choices=available_strategies(),
            default="evolution",
            help="evolution (default): aging evolution with parents picked by Pareto rank; nsga2: NSGA-II; "
            "random: uniform sampling, the baseline",
        )
        parser.add_argument("--population", type=int, default=100, help="candidates alive per generation")
        parser.add_argument("--generations", type=int, default=200, help="generations to run (progress bar)")
        parser.add_argument(
            "--schedules",
            choices=SCHEDULE_MODES,
            default="fastest",
            help="fastest (default): every kernel of every candidate at its fastest profiled schedule for its "
            "shapes, the exact optimum for each architecture and pruning; evolve: search schedule genes like "
            "the others; default: TVM's default schedule for every kernel",
        )
        parser.add_argument(
            "--layouts",
            default=None,
            metavar="NCHW[,NHWC][,NCHW8c]",
            help="offer only schedule candidates in these data layouts (default: every layout the profile "
            "has; a network mixes NCHW with one other)",
        )
        parser.add_argument(
            "--finalists",
            type=int,
            default=24,
            help="front points with the highest predicted accuracy evaluated for real on the validation split "
            "(default: 24; about 0.2 s each with the C++ evaluator); the one recommended has the best validation "
            "accuracy combined with the predictor's, each weighted by the inverse of its variance",
        )
        parser.add_argument("--evaluator", choices=("auto", "cpp", "torch"), default="auto")
        parser.add_argument(
            "--speed-probe",
            type=int,
            default=0,
            metavar="N",
            help="first re-time N of the profile's own whole subnets on this machine (the profiled device; half "
            "at the search's schedules, half at random ones), fit how fast its tuned and its one-thread "
            "(default-lowered) kernels run now, and search with every prediction scaled by those factors, so the "
            "budget binds at today's speed (about 10-15 s per subnet; recorded in DIR/speed_probe.json, reused "
            "by --resume)",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.json")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_data_arguments(parser)
        add_threads_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        from pathlib import Path

        from tqdm import tqdm

        from codesign.errors import CodesignError
        from codesign.latency.model import LatencyModel
        from codesign.latency.transposes import canonical_layout
        from codesign.profile.shipped import resolve_profile
        from codesign.profile.speed_probe import model_at_probed_speed
        from codesign.search.accuracy_data import file_sha256, resolve_evaluator_kind
        from codesign.search.accuracy_predictor import AccuracyPredictor
        from codesign.search.encoding import SearchEncoding
        from codesign.search.pipeline import default_predictor_path
        from codesign.search.problem import Budget, SearchProblem
        from codesign.search.report import (
            estimated_accuracy,
            evaluate_finalists,
            format_table,
            front_points,
            pick_finalists,
            recommend,
            write_results,
        )
        from codesign.search.runner import run_search
        from codesign.search.strategies import create_strategy
        from codesign.supernet.weights import resolve_supernet_path

        evaluator_kind = resolve_evaluator_kind(args.evaluator) if args.finalists > 0 else "torch"
        if evaluator_kind == "torch" and args.finalists > 0 and args.evaluator == "auto":
            print("note: the C++ evaluator is not built here; finalists are scored with torch (several times slower)")
        target = resolve_target(args.target)
        loaded_profile = resolve_profile(target, args.profile, allow_mismatch=args.allow_mismatch)
        profile_path = loaded_profile.path
        layouts = [canonical_layout(name) for name in args.layouts.split(",") if name.strip()] if args.layouts else None
        latency_model = LatencyModel.from_profile(loaded_profile.profile, layouts=layouts)
        supernet_file = resolve_supernet_path(args.supernet)
        predictor_path = Path(args.predictor) if args.predictor else default_predictor_path(args.supernet)
        predictor = AccuracyPredictor.load(predictor_path)
        expected = predictor.provenance.get("supernet_sha256")
        if expected and supernet_file.is_file() and expected != file_sha256(supernet_file):
            raise CodesignError(
                f"{predictor_path} was fitted on other supernet weights than {supernet_file}; "
                "fit one for these weights with `codesign fit-predictor`"
            )
        out = Path(args.out)
        speed_probe = _speed_probe(args, loaded_profile.profile, out)  # after the cheap checks: it takes a minute
        if speed_probe is not None:
            latency_model = model_at_probed_speed(latency_model, speed_probe)
        space = latency_model.space
        budget = Budget(
            latency_ms=args.latency_ms,
            max_params=args.max_params,
            max_memory_bytes=int(args.max_memory_mb * 2**20) if args.max_memory_mb else None,
        )
        encoding = SearchEncoding(space, latency_model, schedules=args.schedules)
        problem = SearchProblem(encoding, latency_model, predictor, budget)
        fastest, _ = problem.fastest_reachable(seed=args.seed)
        if fastest > budget.latency_ms:
            raise CodesignError(
                f"infeasible budget: the fastest subnet reachable on {latency_model.name or 'this device'} is "
                f"predicted at {fastest:.3f} ms (> {budget.latency_ms:g} ms) within the other budgets"
            )
        problem.scored = 0
        strategy = create_strategy(args.strategy, population_size=args.population)
        out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=args.generations, desc=f"{args.strategy} search", unit="gen", disable=args.no_progress)

        def progress(generation: int, archive: Any) -> None:
            bar.update(generation - bar.n)
            if len(archive.vectors):
                bar.set_postfix(front=len(archive.vectors), best=f"{archive.scores.accuracy.max() * 100:.2f}%")

        outcome = run_search(
            problem,
            strategy,
            generations=args.generations,
            seed=args.seed,
            checkpoint=out / "checkpoint.json",
            resume=args.resume,
            progress=progress,
        )
        bar.close()
        if not len(outcome.archive.vectors):
            raise CodesignError(
                f"no candidate within the budget was found in {outcome.generations} generations "
                f"(the fastest reachable is predicted at {fastest:.3f} ms): raise the budget or --generations"
            )
        points = front_points(problem, outcome.archive)
        finalists = pick_finalists(points, args.finalists)
        if finalists:
            from codesign.data import load_splits
            from codesign.search.accuracy_data import make_evaluator
            from codesign.supernet import load_supernet

            supernet = load_supernet(args.supernet).supernet
            splits = load_splits(
                args.dataset, args.data_root, val_size=args.val_size, seed=args.data_seed, channels=space.in_channels
            )
            evaluator = make_evaluator(supernet, splits, kind=evaluator_kind, threads=args.threads)
            print(f"evaluating {len(finalists)} finalists on the validation split ...")
            points = evaluate_finalists(points, finalists, evaluator)
        best = recommend(points, predictor_rmse=predictor.rmse)
        summary = {
            "target": target,
            "profile": str(profile_path),
            "device": latency_model.name,
            "supernet": str(supernet_file),
            "predictor": str(predictor_path),
            "budget": {
                "latency_ms": budget.latency_ms,
                "max_params": budget.max_params,
                "max_memory_bytes": budget.max_memory_bytes,
            },
            "fastest_reachable_ms": fastest,
            "pick": {
                "rule": "validation+predictor"
                if predictor.rmse and finalists
                else "validation"
                if finalists
                else "predicted",
                "predictor_rmse_pts": None if predictor.rmse is None else round(predictor.rmse * 100, 4),
            },
            **({"speed_probe": speed_probe} if speed_probe is not None else {}),
            "search": {
                **strategy.settings(),
                "generations": outcome.generations,
                "seed": args.seed,
                "schedules": args.schedules,
                "scored": outcome.scored,
                "seconds": round(outcome.seconds, 2),
            },
        }
        written = write_results(out, points=points, recommended=best, space=space, summary=summary)
        print(format_table(points, space, best))
        p = points[best]
        estimate = estimated_accuracy(p, predictor_rmse=predictor.rmse)
        acc = (
            f"{p.val_accuracy * 100:.2f}% validation accuracy"
            + (f" ({estimate * 100:.2f}% with the predictor's estimate)" if estimate != p.val_accuracy else "")
            if p.val_accuracy is not None
            else (f"{p.predicted_accuracy * 100:.2f}% predicted accuracy")
        )
        speed = f" at its probed speed ({speed_probe['factor']:.3f}x the profile's time)" if speed_probe else ""
        print(
            f"recommended (*): {acc}, {p.latency_ms:.3f} ms predicted on "
            f"{latency_model.name or target['kind']}{speed}, "
            f"{p.params / 1e3:.1f}k parameters: {p.genome.short(space)}"
        )
        print(
            f"scored {outcome.scored} candidates in {outcome.seconds:.1f} s; wrote "
            + ", ".join(str(path) for path in written.values())
        )
        return 0


SPEED_PROBE_FILE = "speed_probe.json"


def _speed_probe(args: argparse.Namespace, profile: Any, out: Any) -> dict[str, Any] | None:
    """``--speed-probe N``: this machine's speed relative to ``profile`` (reused from ``out`` on ``--resume``)."""
    import math
    import os

    from codesign.errors import CodesignError
    from codesign.fileio import read_json_file, write_json_atomic
    from codesign.profile.speed_probe import probe_device_speed, profiled_here_problems

    if args.speed_probe < 0:
        raise CodesignError("--speed-probe takes a number of subnets, 0 or more")
    path = out / SPEED_PROBE_FILE
    if args.resume and path.is_file():  # the same factor (probed or not asked), so the resumed search is the same
        record = read_json_file(
            path,
            error=CodesignError,
            missing="{path} missing",
            corrupt="{path}: corrupt speed probe ({exc}); delete it to probe again",
        )
        factor = record.get("factor") if isinstance(record, dict) else None
        if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
            raise CodesignError(f"{path}: corrupt speed probe (no positive factor); delete it to probe again")
        print(f"speed probe reused from {path}: {factor:.3f}x the profile's time")
        return dict(record)
    if not args.speed_probe:
        path.unlink(missing_ok=True)  # a new search without a probe: an earlier run's factor must not be resumed
        return None
    problems = profiled_here_problems(profile)
    if problems and args.allow_mismatch:  # another device's profile, accepted as such: its own speed is all there is
        print(
            f"warning: --speed-probe skipped: the profile was not measured with this machine and TVM "
            f"({'; '.join(problems)}); searching at the profile's speed",
            file=sys.stderr,
        )
        path.unlink(missing_ok=True)
        return None
    if problems:
        raise CodesignError(
            f"--speed-probe: the profile was not measured with this machine and TVM ({'; '.join(problems)}): "
            "probe on the profiled device, search without --speed-probe, or add --allow-mismatch to search at "
            "the profile's speed"
        )
    os.environ["TVM_NUM_THREADS"] = str(profile.target.get("num-cores") or os.cpu_count() or 1)
    probe = probe_device_speed(profile, subnets=args.speed_probe, kernels=args.speed_probe, progress=print)
    print(probe.describe())
    warning = probe.warning()
    if warning is not None:
        raise CodesignError(f"--speed-probe: {warning}")
    record = probe.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return record
