"""``codesign report``: one self-contained HTML page about a search (and the exports made from it)."""

from codesign.report.collect import ReportInputs, collect_inputs
from codesign.report.html import render_report, write_report

__all__ = ["ReportInputs", "collect_inputs", "render_report", "write_report"]
