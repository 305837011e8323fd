"""``codesign train``: train a weight-sharing supernet on a real dataset."""

from __future__ import annotations

import argparse
import json

from codesign.cli.base import Command, add_data_arguments, add_threads_argument, apply_threads


class TrainCommand(Command):
    name = "train"
    summary = "train an elastic supernet (sandwich rule + in-place distillation), resumably"
    description = (
        "Train the weight-sharing supernet of a search space on a dataset's training split. The largest\n"
        "subnet is warmed up alone, then channels are ranked by importance and every step trains the\n"
        "largest, the smallest and random subnets, the smaller ones distilled from the largest.\n"
        "A checkpoint is written to OUT every --checkpoint-every steps and at each epoch end; running the\n"
        "same command again resumes where a killed run stopped. The result is OUT/supernet.safetensors."
    )
    examples = (
        "codesign train -o runs/fmnist --threads 2                    # the shipped default's recipe",
        "codesign train --space tiny --epochs-full 1 --epochs-sandwich 1 --max-train-images 2048 -o runs/smoke",
        "codesign train --init runs/fmnist --epochs-full 0 --epochs-sandwich 2 --lr 1e-3 -o runs/ft  # fine-tune",
        "codesign train --dataset cifar10 --data-root ~/data/cifar-10-batches-py --space my_space.json -o runs/c10",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from codesign.space import DEFAULT_SPACE

        parser.add_argument("-o", "--out", required=True, metavar="DIR", help="run directory (checkpoint and result)")
        parser.add_argument(
            "--space",
            default=DEFAULT_SPACE,
            metavar="NAME|FILE.json",
            help=f"search space: a shipped name or a description file (default: {DEFAULT_SPACE})",
        )
        add_data_arguments(parser)
        parser.add_argument(
            "--epochs-full", type=int, default=2, help="warm-up epochs of the largest subnet alone (default: 2)"
        )
        parser.add_argument("--epochs-sandwich", type=int, default=5, help="sandwich-rule epochs (default: 5)")
        parser.add_argument(
            "--random-subnets", type=int, default=1, help="random subnets per sandwich step (default: 1)"
        )
        parser.add_argument("--batch-size", type=int, default=128)
        parser.add_argument(
            "--lr", type=float, default=3e-3, help="peak AdamW learning rate (cosine decay; default: 3e-3)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and sampling")
        parser.add_argument(
            "--max-train-images",
            type=int,
            default=None,
            metavar="N",
            help="train on the first N training images only (smoke runs)",
        )
        parser.add_argument("--checkpoint-every", type=int, default=200, metavar="STEPS")
        parser.add_argument(
            "--init",
            default=None,
            metavar="PATH",
            help="start from this supernet's weights (fine-tuning); implies --no-reorganize",
        )
        parser.add_argument(
            "--no-reorganize",
            action="store_true",
            help="keep the channel order (do not re-rank channels when the sandwich phase starts)",
        )
        parser.add_argument(
            "--no-resume", action="store_true", help="ignore an existing checkpoint in OUT and start over"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_threads_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        import torch

        from codesign.data import load_splits
        from codesign.space import get_space
        from codesign.supernet import ElasticSupernet
        from codesign.training import SupernetTrainer, TrainConfig

        space = get_space(args.space)
        splits = load_splits(
            args.dataset, args.data_root, val_size=args.val_size, seed=args.data_seed, channels=space.in_channels
        )
        try:
            config = TrainConfig(
                epochs_full=args.epochs_full,
                epochs_sandwich=args.epochs_sandwich,
                num_random_subnets=args.random_subnets,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                checkpoint_every_steps=args.checkpoint_every,
                max_train_images=args.max_train_images,
                reorganize_channels=not (args.no_reorganize or args.init),
                init_from=str(args.init) if args.init else None,
            )
        except ValueError as exc:
            from codesign.errors import CodesignError

            raise CodesignError(f"bad training options: {exc}") from None
        torch.manual_seed(config.seed)
        supernet = ElasticSupernet(space)
        if args.init:
            from codesign.errors import CheckpointError
            from codesign.supernet import load_supernet

            start = load_supernet(args.init)
            if start.supernet.space != space:
                raise CheckpointError(
                    f"--init {args.init} was trained on space {start.supernet.space.name!r}, "
                    f"not {space.name!r} (pass the same --space)"
                )
            supernet = start.supernet
        trainer = SupernetTrainer(supernet, splits, config, args.out, progress=not args.no_progress)
        summary = trainer.run(resume=not args.no_resume)
        last = summary["history"][-1] if summary["history"] else {}
        print(json.dumps({"out": args.out, "finished": summary["finished"], "steps": summary["steps"], **last}))
        return 0
