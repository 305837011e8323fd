"""``codesign report``: one HTML page about a search and the artifacts exported from it."""

from __future__ import annotations

import argparse

from codesign.cli.base import Command


class ReportCommand(Command):
    name = "report"
    summary = "write an HTML report of a search (front, exports, where the time goes, latency-model trust)"
    description = (
        "Read a `codesign search -o DIR` result (front.json), any `codesign export -o DIR` artifacts made\n"
        "from it (--export, repeatable) and the hardware profile the search used, and write one\n"
        "self-contained HTML page (plots embedded): the budget and the recommended subnet; each export's\n"
        "test accuracy, TVM-vs-onnxruntime parity and predicted next to measured latency; the front as a\n"
        "plot and a table; the recommended subnet's latency per fused kernel under its chosen schedule\n"
        "next to TVM's default lowering (what tuning buys, layer by layer); and how well the latency\n"
        "model matched the whole subnets the profile measured. Nothing is recomputed but the latency\n"
        "model's breakdown, so it takes seconds."
    )
    examples = (
        "codesign report out/search --export out/best -o out/report.html",
        "codesign report runs/s2 --profile my_cpu.json -o runs/s2/report.html",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("search_dir", metavar="SEARCH_DIR", help="output directory of `codesign search`")
        parser.add_argument(
            "--export",
            action="append",
            default=[],
            metavar="DIR",
            help="an artifact directory of `codesign export` (repeatable)",
        )
        parser.add_argument(
            "--profile",
            default=None,
            metavar="FILE.json",
            help="the hardware profile (default: the one the search recorded in front.json)",
        )
        parser.add_argument("-o", "--out", default=None, metavar="FILE.html", help="default: SEARCH_DIR/report.html")

    def run(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        from codesign.report import collect_inputs, write_report

        inputs = collect_inputs(args.search_dir, export_dirs=args.export, profile_path=args.profile)
        path = write_report(inputs, args.out or Path(args.search_dir) / "report.html")
        print(f"wrote {path}")
        return 0
