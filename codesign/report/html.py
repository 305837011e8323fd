"""Rendering a :class:`ReportInputs` as one self-contained HTML page (plots embedded as PNG data)."""

from __future__ import annotations

import base64
import collections
import html
import json
import time
from pathlib import Path
from typing import Any

from codesign.fileio import write_text_atomic
from codesign.report import figures
from codesign.report.collect import ReportInputs
from codesign.space import Genome

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
td, th { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
td.l, th.l { text-align: left; } tr.rec { background: #fff3d6; font-weight: 600; }
code, .g { font-family: ui-monospace, monospace; font-size: 0.8rem; }
.note { color: #666; font-size: 0.85rem; } img { max-width: 100%; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _table(header: list[str], rows: list[list[str]], *, left: set[int], highlight: int | None = None) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        return f"<{tag}{' class=l' if i in left else ''}>{text}</{tag}>"

    out = ["<table><tr>" + "".join(cell("th", i, _e(h)) for i, h in enumerate(header)) + "</tr>"]
    for r, row in enumerate(rows):
        css = ' class="rec"' if r == highlight else ""
        out.append(f"<tr{css}>" + "".join(cell("td", i, text) for i, text in enumerate(row)) + "</tr>")
    return "\n".join(out) + "</table>"


def _summary(inputs: ReportInputs) -> str:
    s = inputs.search
    rec = inputs.recommended
    budget = s["budget"]
    limits = [f"latency &le; {budget['latency_ms']:g} ms"]
    if "speed_probe" in s:  # the search's latencies were scaled to the device's speed when it ran
        limits[0] += f" at the probed speed ({s['speed_probe']['factor']:.3f}x the profiled time)"
    if budget.get("max_params"):
        limits.append(f"parameters &le; {budget['max_params']:,}")
    if budget.get("max_memory_bytes"):
        limits.append(f"peak memory &le; {budget['max_memory_bytes'] / 2**20:.2f} MiB")
    device = s.get("device") or s["target"].get("kind")
    search = s.get("search", {})
    rows = [
        ["device", _e(device)],
        ["target", f"<code>{_e(json.dumps(s['target'], sort_keys=True))}</code>"],
        ["budget", ", ".join(limits)],
        ["fastest reachable", f"{s['fastest_reachable_ms']:.3f} ms" if "fastest_reachable_ms" in s else "-"],
        [
            "search",
            _e(
                f"{search.get('strategy', '?')}, {search.get('generations', '?')} generations, "
                f"{search.get('scored', '?')} candidates scored in {search.get('seconds', '?')} s, "
                f"seed {search.get('seed', '?')}"
            ),
        ],
        [
            "recommended",
            f"<span class=g>{_e(rec['short'])}</span><br>validation accuracy {_pct(rec.get('val_accuracy'))}, "
            f"predicted latency {rec['predicted_latency_ms']:.3f} ms, {rec['params']:,} parameters, "
            f"peak activation memory {rec['peak_memory_bytes'] / 2**20:.2f} MiB",
        ],
    ]
    return _table(["", ""], rows, left={0, 1})


def _export_rows(inputs: ReportInputs) -> tuple[str, list[tuple[str, float, float]]]:
    if not inputs.exports:
        return (
            '<p class="note">No export given. <code>codesign export --genome SEARCH/recommended.json '
            "--format tvm -o DIR</code> compiles the recommended subnet and measures it; pass DIR with "
            "<code>--export</code>.</p>",
            [],
        )
    rows, points = [], []
    for path, manifest in inputs.exports:
        metrics = manifest["metrics"]
        tvm = manifest.get("tvm") or {}
        latency = tvm.get("latency") or {}
        predicted = latency.get("predicted_retuned_ms", latency.get("predicted_ms"))  # re-tuned: measured kernels
        measured = latency.get("measured")
        factor = (latency.get("speed_probe") or {}).get("factor")
        at_speed = predicted * factor if factor is not None and predicted is not None else None
        error = "-"
        if predicted is not None and measured:
            error = f"{(predicted / measured['median_ms'] - 1) * 100:+.1f}%"
            if at_speed is not None:
                error += (
                    f" <span class=note>({(at_speed / measured['median_ms'] - 1) * 100:+.1f}% at probed speed)</span>"
                )
            points.append((path.name, float(measured["median_ms"]), float(predicted)))
        predicted_cell = "-" if predicted is None else f"{predicted:.3f}"
        if at_speed is not None:
            predicted_cell += (
                f" <span class=note>({at_speed:.3f} at this machine's probed speed, "
                f"{factor:.3f}x the profile's time"
                + (
                    "; the device was busy while probing: not to be trusted"
                    if latency["speed_probe"].get("warning")
                    else ""
                )
                + ")</span>"
            )
        same = manifest["genome_short"] == inputs.recommended["short"]
        rows.append(
            [
                _e(path.name) + ("" if same else " <span class=note>(not the recommended genome)</span>"),
                f"<span class=g>{_e(manifest['genome_short'])}</span>",
                _pct(metrics.get("test_accuracy_onnxruntime")),
                "-" if tvm.get("tvm_vs_onnxruntime_max_abs") is None else f"{tvm['tvm_vs_onnxruntime_max_abs']:.1e}",
                predicted_cell,
                "-"
                if not measured
                else f"{measured['median_ms']:.3f} &plusmn; {measured['std_ms']:.3f} ({measured['repeats']})"
                + _budget_note(latency),
                error,
                _threads_cell(latency),
                _e(tvm.get("schedules_from", "-")),
            ]
        )
    header = [
        "export",
        "genome",
        "test accuracy (onnxruntime)",
        "TVM vs onnxruntime max |diff|",
        "predicted ms",
        "measured ms (repeats)",
        "error",
        "runs on (median ms per thread count)",
        "schedules",
    ]
    return _table(header, rows, left={0, 1, 7, 8}), points


def _budget_note(latency: dict[str, Any]) -> str:
    """Whether the measured latency kept the search's budget (exports of a search's recommended.json)."""
    ratio = latency.get("measured_over_budget")
    if ratio is None:
        return ""
    verdict = "<b>over</b>" if ratio > 1.0 else "within"
    return f" <span class=note>({verdict} the {latency['budget_ms']:g} ms budget: {ratio:.2f}x)</span>"


def _threads_cell(latency: dict[str, Any]) -> str:
    """The thread count export recommends and the medians it chose from, or where it was measured."""
    if "by_threads" not in latency:
        measured = latency.get("measured") or {}
        return f"{measured['threads']} threads" if "threads" in measured else "-"
    medians = ", ".join(f"{t}: {v['median_ms']:.3f}" for t, v in latency["by_threads"]["timings"].items())
    return f"{latency['recommended_threads']} ({_e(medians)})"


def _front_table(inputs: ReportInputs) -> str:
    rows = [
        [
            f"{p['predicted_accuracy'] * 100:.2f}%",
            _pct(p.get("val_accuracy")),
            f"{p['predicted_latency_ms']:.3f}",
            f"{p['params'] / 1e3:.1f}k",
            f"{p['peak_memory_bytes'] / 2**20:.2f}",
            f"<span class=g>{_e(p['short'])}</span>",
        ]
        for p in inputs.front
    ]
    header = ["predicted accuracy", "validation accuracy", "latency ms", "params", "memory MiB", "genome"]
    return _table(header, rows, left={5}, highlight=int(inputs.search["recommended"]))


def _breakdown(inputs: ReportInputs) -> str:
    if inputs.latency_model is None:
        return f'<p class="note">The profile {_e(inputs.search.get("profile", "?"))} is not readable here: ' + (
            "no per-kernel breakdown (pass <code>--profile FILE</code>).</p>"
        )
    explanation = inputs.latency_model.explain(Genome.from_dict(inputs.recommended["genome"]))
    chosen = sum(layer["latency_ms"] for layer in explanation["layers"])
    default = sum(layer["default_ms"] for layer in explanation["layers"])
    calibration = explanation["calibration"]
    transposes = int(explanation.get("transposes", 0))
    layers = explanation["layers"]
    others = collections.Counter(str(layer.get("layout", "NCHW")) for layer in layers if layer.get("layout") != "NCHW")
    in_layouts = ", ".join(f"{count} {name}" for name, count in sorted(others.items()))
    layouts = (
        f": {len(layers)} layers ({in_layouts or 'all NCHW'}) and {transposes} layout changes between them, "
        f"measured at {explanation.get('transpose_ms', 0.0) * 1e3:.1f} us in all"
        if others or transposes
        else ""
    )
    per_transpose = calibration.get("per_transpose_ms", 0.0)
    transpose_term = f" + {per_transpose * 1e3:.2f} us per transpose" if per_transpose else ""
    per_activations = calibration.get("per_million_activations_ms", 0.0)
    if per_activations:
        transpose_term += (
            f" + {per_activations * 1e3:.1f} us per million activation elements "
            f"({explanation.get('activations', 0) / 1e6:.2f} million)"
        )
    text = (
        f"<p>{explanation['kernels']} fused kernels{layouts}. The layers' measured (or kernel-model) latencies "
        f"under the chosen schedules sum to {chosen:.3f} ms; under TVM's default lowering the same kernels sum "
        f"to {default:.3f} ms ({default / chosen:.1f}x). The whole-model calibration fitted on compiled subnets "
        f"turns the sum into the prediction: {calibration['layer_scale']:.3f} x sum + "
        f"{calibration['per_kernel_ms'] * 1e3:.2f} us per kernel{transpose_term} + "
        f"{calibration['constant_ms'] * 1e3:.2f} us = <b>{explanation['predicted_ms']:.3f} ms</b>.</p>"
    )
    return text + _img(figures.layers_png(explanation), "per-kernel latency of the recommended subnet")


def _trust(inputs: ReportInputs, export_points: list[tuple[str, float, float]]) -> str:
    if inputs.latency_model is None or inputs.profile is None:
        return '<p class="note">No profile: no latency-model validation to show.</p>'
    profile = inputs.profile
    ok = [m for m in profile.models if m.get("status") == "ok" and m.get("timing")]
    predicted = inputs.latency_model.predict([Genome.from_dict(m["genome"]) for m in ok]) if ok else []
    calibration = [(float(m["timing"]["median_ms"]), float(p)) for m, p in zip(ok, predicted, strict=True)]
    fitted = profile.predictor or {}
    lines = []
    held_out = fitted.get("model_validation", {}).get("calibrated")
    if held_out:
        lines.append(
            f"whole subnets, leave-one-out: {held_out['within10'] * 100:.0f}% within +-10%, "
            f"RMSPE {held_out['rmspe']:.3f} (n={held_out['n']})"
        )
    kernels = fitted.get("kernel_validation", {}).get("all")
    if kernels:
        lines.append(
            f"kernel model, 5-fold cross-validation: {kernels['within10'] * 100:.0f}% within +-10%, "
            f"RMSPE {kernels['rmspe']:.3f} (n={kernels['n']})"
        )
    stored = "".join(f"<li>{_e(line)}</li>" for line in lines)
    body = f"<p>Stored in the profile, measured when it was made:</p><ul>{stored}</ul>" if lines else ""
    if calibration or export_points:
        body += _img(figures.latency_png(calibration, export_points), "predicted vs measured latency")
    body += (
        '<p class="note">The circles are the subnets the calibration was fitted on (in-sample); exported models '
        "are timed when exported. <code>python tools/bench_latency_model.py</code> measures held-out subnets and "
        "how well this machine repeats its own timings.</p>"
    )
    return body


def _provenance(inputs: ReportInputs) -> str:
    rows = [["search directory", _e(inputs.search_dir)], ["supernet", _e(inputs.search.get("supernet", "-"))]]
    rows.append(["accuracy predictor", _e(inputs.search.get("predictor", "-"))])
    if inputs.profile is not None:
        p = inputs.profile
        rows += [
            ["profile", _e(inputs.search.get("profile", "-"))],
            ["profiled device", _e(f"{p.device.name}, {p.device.cores} cores, {p.device.arch}")],
            ["profile created", _e(p.created)],
            ["profiled with", _e(f"TVM {p.software.tvm}, apache-tvm-ffi {p.software.tvm_ffi}")],
        ]
    return _table(["", ""], rows, left={0, 1})


def render_report(inputs: ReportInputs) -> str:
    """The report as one HTML document (plots embedded, no external resources)."""
    exports, export_points = _export_rows(inputs)
    sections = [
        ("Result", _summary(inputs)),
        ("Exported artifacts: predicted next to measured", exports),
        ("The front", _img(figures.front_png(inputs.search), "accuracy vs latency front") + _front_table(inputs)),
        ("Where the recommended subnet's time goes", _breakdown(inputs)),
        ("How far to trust the latency model", _trust(inputs, export_points)),
        ("Provenance", _provenance(inputs)),
    ]
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = "\n".join(f"<h2>{_e(title)}</h2>\n{content}" for title, content in sections)
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>codesign report: {_e(inputs.search_dir)}"
        f"</title><style>{_STYLE}</style></head><body>\n<h1>codesign report</h1>\n"
        f'<p class="note">{_e(inputs.search_dir)}, written {created}</p>\n{body}\n</body></html>\n'
    )


def write_report(inputs: ReportInputs, path: str | Path) -> Path:
    """Render and write the report atomically; returns its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render_report(inputs))
    return out
