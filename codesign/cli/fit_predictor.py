"""``codesign fit-predictor``: evaluate subnets with inherited weights and fit the accuracy predictor."""

from __future__ import annotations

import argparse

from codesign.cli.base import Command, add_data_arguments, add_threads_argument, apply_threads


class FitPredictorCommand(Command):
    name = "fit-predictor"
    summary = "evaluate random subnets of a supernet and fit the search's accuracy predictor (JSON)"
    description = (
        "Evaluate --samples subnets (the largest, the smallest, then distinct random ones) of a supernet\n"
        "with inherited weights and BN recalibration on the validation split (C++ evaluator when built),\n"
        "hold out the last --holdout of them, fit an MLP ensemble on the rest and report its RMSE and\n"
        "Kendall tau on the held-out subnets. Evaluations are journaled in --work-dir: rerunning resumes.\n"
        "The predictor (JSON, with its validation and the supernet's hash) is written to -o; `codesign\n"
        "search --predictor FILE` uses it."
    )
    examples = (
        "codesign fit-predictor -o runs/acc_predictor.json --threads 2",
        "codesign fit-predictor --supernet runs/fmnist --samples 800 --holdout 150 -o runs/fmnist/predictor.json",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--out", required=True, metavar="FILE.json", help="predictor file to write")
        parser.add_argument("--supernet", default=None, metavar="DIR|FILE", help="default: the shipped supernet")
        parser.add_argument("--samples", type=int, default=600, help="subnets to evaluate (default: 600)")
        parser.add_argument("--holdout", type=int, default=100, help="of which held out for validation (default: 100)")
        parser.add_argument(
            "--images", type=int, default=None, metavar="N", help="validation images used (default: all)"
        )
        parser.add_argument(
            "--hidden", default="64,64", help="hidden layer widths of each MLP, comma separated (default: 64,64)"
        )
        parser.add_argument("--ensemble", type=int, default=3, help="MLPs averaged (default: 3)")
        parser.add_argument("--evaluator", choices=("auto", "cpp", "torch"), default="auto")
        parser.add_argument("--work-dir", default=None, metavar="DIR", help="journal (default: FILE.json + '.work')")
        parser.add_argument("--seed", type=int, default=0)
        add_data_arguments(parser)
        add_threads_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        from pathlib import Path

        import numpy as np
        from tqdm import tqdm

        from codesign.data import load_splits
        from codesign.errors import CodesignError
        from codesign.search.accuracy_data import evaluate_subnets, file_sha256, make_evaluator, sample_genomes
        from codesign.search.accuracy_predictor import AccuracyPredictor, kendall_tau
        from codesign.space import Genome
        from codesign.supernet import load_supernet
        from codesign.supernet.weights import resolve_supernet_path

        if not 0 < args.holdout < args.samples - 8:
            raise CodesignError(f"--holdout must be between 1 and --samples - 9 ({args.samples - 9})")
        loaded = load_supernet(args.supernet)
        space = loaded.supernet.space
        splits = load_splits(
            args.dataset, args.data_root, val_size=args.val_size, seed=args.data_seed, channels=space.in_channels
        )
        evaluator = make_evaluator(
            loaded.supernet, splits, kind=args.evaluator, threads=args.threads, max_images=args.images
        )
        out = Path(args.out)
        work = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
        genomes = sample_genomes(space, args.samples, args.seed)
        with tqdm(total=len(genomes), desc="evaluating subnets", unit="subnet") as bar:

            def advance(done: int, _total: int) -> None:
                bar.update(done - bar.n)

            records = evaluate_subnets(evaluator, genomes, work / "journal.jsonl", progress=advance)
        genomes = [Genome.from_dict(r["genome"]) for r in records]
        accuracy = np.asarray([r["accuracy"] for r in records])
        n_train = len(genomes) - args.holdout
        hidden = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
        predictor = AccuracyPredictor.fit(
            space, genomes[:n_train], accuracy[:n_train], hidden=hidden, ensemble=args.ensemble, seed=args.seed
        )
        predicted = predictor.predict(space, genomes[n_train:])
        truth = accuracy[n_train:]
        rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
        tau = kendall_tau(predicted, truth)
        predictor.validation = {
            "holdout_subnets": int(len(truth)),
            "rmse_pts": rmse * 100,
            "kendall_tau": tau,
            "accuracy_range_pts": [float(truth.min() * 100), float(truth.max() * 100)],
        }
        predictor.provenance = {
            "supernet_sha256": file_sha256(resolve_supernet_path(args.supernet)),
            "train_subnets": n_train,
            "split": "val",
            "images": args.images,
            "dataset": args.dataset,
            "val_size": args.val_size,
            "data_seed": args.data_seed,
            "seed": args.seed,
            "hidden": list(hidden),
            "ensemble": args.ensemble,
            "samples": [{"genome": r["genome"], "accuracy": r["accuracy"]} for r in records],
        }
        predictor.save(out)
        print(
            f"accuracy predictor written to {out}: held-out RMSE {rmse * 100:.2f} points, Kendall tau {tau:.3f} "
            f"over {len(truth)} subnets (trained on {n_train})"
        )
        return 0
