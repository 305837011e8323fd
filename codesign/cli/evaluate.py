"""``codesign evaluate``: accuracy of subnets with inherited weights and BN recalibration."""

from __future__ import annotations

import argparse
import json

from codesign.cli.base import Command, add_data_arguments, add_threads_argument, apply_threads


class EvaluateCommand(Command):
    name = "evaluate"
    summary = "measure the accuracy of subnets of a supernet (BN recalibrated)"
    description = (
        "Score subnets of a supernet (default: the shipped one) on the validation split (used inside\n"
        "search) or the official test split (for final numbers). Each subnet is extracted, its\n"
        "BatchNorm statistics are recalibrated on --calibration-images training images, then scored."
    )
    examples = (
        "codesign evaluate                                   # largest and smallest on the validation split",
        "codesign evaluate --split test --genome largest --genome smallest --random 20 --seed 0",
        "codesign evaluate --genome '{\"resolution\": 24, ...}' --json",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--genome",
            action="append",
            default=None,
            metavar="SPEC",
            help="largest | smallest | random:SEED | short form ('r24 | w0 k7e6p25 | ...') | JSON file | "
            "inline JSON (repeatable; "
            "default: largest and smallest)",
        )
        parser.add_argument("--random", type=int, default=0, metavar="N", help="also score N random subnets")
        parser.add_argument("--seed", type=int, default=0, help="seed for --random (default: 0)")
        parser.add_argument("--split", choices=("val", "test"), default="val")
        parser.add_argument("--supernet", default=None, metavar="PATH", help="supernet file or run directory")
        parser.add_argument("--calibration-images", type=int, default=2000, metavar="N")
        parser.add_argument("--json", action="store_true", help="print one JSON object per subnet")
        add_data_arguments(parser)
        add_threads_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        import numpy as np

        from codesign.data import load_splits
        from codesign.evaluation import TorchSubnetEvaluator
        from codesign.space import Genome, parse_genome_spec
        from codesign.supernet import load_supernet

        loaded = load_supernet(args.supernet)
        space = loaded.supernet.space
        genomes = [parse_genome_spec(s, space) for s in (args.genome or ["largest", "smallest"])]
        rng = np.random.default_rng(args.seed)
        genomes += [Genome.random(space, rng) for _ in range(args.random)]
        splits = load_splits(
            args.dataset, args.data_root, val_size=args.val_size, seed=args.data_seed, channels=space.in_channels
        )
        evaluator = TorchSubnetEvaluator(
            loaded.supernet, splits, split=args.split, calibration_images=args.calibration_images
        )
        accs = []
        for genome in genomes:
            score = evaluator.evaluate(genome)
            accs.append(score.accuracy)
            if args.json:
                print(
                    json.dumps(
                        {
                            "accuracy": score.accuracy,
                            "split": score.split,
                            "images": score.images,
                            "genome": genome.to_dict(),
                        }
                    )
                )
            else:
                print(f"{score.accuracy * 100:6.2f}%  {genome.short(space)}")
        if not args.json and len(accs) > 1:
            print(
                f"mean {np.mean(accs) * 100:.2f}% over {len(accs)} subnets on the {args.split} split "
                f"({evaluator.evaluate(genomes[0]).images} images)"
            )
        return 0
