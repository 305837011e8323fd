"""Entry point of the ``codesign`` command line."""

from __future__ import annotations

import argparse
import sys

from codesign import __version__
from codesign.cli.base import Command
from codesign.cli.evaluate import EvaluateCommand
from codesign.cli.export import ExportCommand
from codesign.cli.fit_predictor import FitPredictorCommand
from codesign.cli.profile import ProfileCommand
from codesign.cli.report import ReportCommand
from codesign.cli.run import RunCommand
from codesign.cli.search import SearchCommand
from codesign.cli.space import SpaceCommand
from codesign.cli.train import TrainCommand
from codesign.errors import CodesignError

COMMANDS: tuple[type[Command], ...] = (
    TrainCommand,
    EvaluateCommand,
    FitPredictorCommand,
    ProfileCommand,
    SearchCommand,
    ExportCommand,
    ReportCommand,
    RunCommand,
    SpaceCommand,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="codesign",
        description="Hardware/model co-design: find the most accurate network within a latency budget on your "
        "device, as compiled.",
        epilog="Run 'codesign COMMAND --help' for each command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"codesign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cls in COMMANDS:
        command = cls()
        p = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            epilog=command.epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; errors become one line on stderr and a non-zero exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    try:
        return command.run(args)
    except CodesignError as exc:
        print(f"codesign {command.name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"codesign {command.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
