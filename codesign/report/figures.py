"""The report's plots, as PNG bytes (matplotlib, imported lazily with an install hint)."""

from __future__ import annotations

import io
from typing import Any

from codesign.errors import CodesignError
from codesign.space import Genome


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CodesignError("the report's plots need matplotlib: pip install 'codesign[report]'") from None
    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def front_png(search: dict[str, Any]) -> bytes:
    """Accuracy vs predicted latency of the front, with the budget line and the recommended point."""
    from codesign.search.report import FrontPoint, front_figure

    points = [
        FrontPoint(
            Genome.from_dict(p["genome"]),
            float(p["predicted_accuracy"]),
            float(p["predicted_latency_ms"]),
            int(p["params"]),
            int(p["peak_memory_bytes"]),
            None if p.get("val_accuracy") is None else float(p["val_accuracy"]),
            None if p.get("val_images") is None else int(p["val_images"]),
        )
        for p in search["front"]
    ]
    _pyplot()
    return _png(front_figure(points, int(search["recommended"]), float(search["budget"]["latency_ms"])))


def layers_png(explanation: dict[str, Any]) -> bytes:
    """Per kernel of one subnet: predicted latency under its chosen schedule next to TVM's default lowering."""
    plt = _pyplot()
    layers = explanation["layers"]
    names = [f"{layer['position']}  {layer['workload']}" for layer in layers]
    chosen = [layer["latency_ms"] * 1e3 for layer in layers]
    default = [layer["default_ms"] * 1e3 for layer in layers]
    fig, ax = plt.subplots(figsize=(8.0, 0.9 + 0.24 * len(layers)), dpi=110)
    rows = range(len(layers))
    ax.barh([r + 0.2 for r in rows], default, height=0.4, color="#c8c8c8", label="TVM default lowering")
    measured = [layer["source"] == "measured" for layer in layers]
    for is_measured, color, label in (
        (True, "#1f77b4", "chosen schedule, measured"),
        (False, "#ff7f0e", "chosen schedule, kernel model"),
    ):
        picked = [r for r in rows if measured[r] == is_measured]
        if picked:
            ax.barh([r - 0.2 for r in picked], [chosen[r] for r in picked], height=0.4, color=color, label=label)
    ax.set_yticks(list(rows), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("kernel latency (us, log scale)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def latency_png(calibration: list[tuple[float, float]], exports: list[tuple[str, float, float]]) -> bytes:
    """Predicted vs measured whole-model latency: the profile's measured subnets and the exported models."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    values = [v for pair in calibration for v in pair] + [v for _, m, p in exports for v in (m, p)]
    low, high = min(values) * 0.9, max(values) * 1.1
    ax.plot([low, high], [low, high], color="gray", lw=1)
    ax.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="gray", alpha=0.15)
    if calibration:
        ax.plot(
            [m for m, _ in calibration],
            [p for _, p in calibration],
            "o",
            ms=4,
            alpha=0.7,
            label="profile's measured subnets (fit on these)",
        )
    for name, measured, predicted in exports:
        ax.plot([measured], [predicted], "*", ms=13, label=f"export {name}")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured latency (ms, batch 1)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title("band: +-10%", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)
