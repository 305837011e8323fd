"""The command contract: one :class:`Command` subclass per subcommand, returning an exit code."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod


class Command(ABC):
    """A ``codesign`` subcommand: declares its options and runs with parsed arguments."""

    name: str = ""
    summary: str = ""
    description: str = ""
    examples: tuple[str, ...] = ()

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's options on ``parser``."""

    @abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the process exit code (0 on success)."""

    def epilog(self) -> str:
        """The examples block shown at the end of ``--help``."""
        if not self.examples:
            return ""
        return "examples:\n" + "\n".join(f"  {e}" for e in self.examples)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (default 1: steady timings when several jobs share the machine)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads for torch (default: 1; use your core count when the machine is otherwise idle)",
    )


def apply_threads(threads: int) -> None:
    """Set torch's intra-op thread count."""
    import torch

    torch.set_num_threads(max(1, threads))


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` / ``--data-root`` / ``--val-size`` / ``--data-seed``."""
    from codesign.data import DATASETS

    parser.add_argument(
        "--dataset", choices=DATASETS, default="fashion-mnist", help="dataset format (default: fashion-mnist)"
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="dataset directory (default for fashion-mnist: /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument(
        "--val-size",
        type=int,
        default=5000,
        metavar="N",
        help="training images held out as the validation split (default: 5000)",
    )
    parser.add_argument(
        "--data-seed", type=int, default=0, metavar="S", help="seed of the train/validation split (default: 0)"
    )
