"""Search results: finalists re-evaluated for real, the recommended subnet, the table, JSON and the plot."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from codesign.fileio import write_json_atomic
from codesign.search.problem import SearchProblem
from codesign.search.runner import Archive
from codesign.space import Genome


@dataclass(frozen=True)
class FrontPoint:
    """One candidate of the front: predicted and (for finalists) measured accuracy, predicted cost."""

    genome: Genome
    predicted_accuracy: float
    latency_ms: float
    params: int
    memory_bytes: int
    val_accuracy: float | None = None
    val_images: int | None = None

    def to_dict(self, space: Any) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "predicted_accuracy": self.predicted_accuracy,
            "val_accuracy": self.val_accuracy,
            "val_images": self.val_images,
            "predicted_latency_ms": self.latency_ms,
            "params": self.params,
            "peak_memory_bytes": self.memory_bytes,
            "short": self.genome.short(space),
            "genome": self.genome.to_dict(),
        }


def front_points(problem: SearchProblem, archive: Archive) -> list[FrontPoint]:
    """The archive as :class:`FrontPoint` s, fastest first."""
    s = archive.scores
    return [
        FrontPoint(
            problem.encoding.to_genome(v),
            float(s.accuracy[i]),
            float(s.latency_ms[i]),
            int(s.params[i]),
            int(s.memory_bytes[i]),
        )
        for i, v in enumerate(archive.vectors)
    ]


def pick_finalists(points: list[FrontPoint], count: int) -> list[int]:
    """Indices of the ``count`` points with the highest predicted accuracy (all are within budget)."""
    order = np.argsort([-p.predicted_accuracy for p in points], kind="stable")
    return sorted(int(i) for i in order[:count])


def evaluate_finalists(points: list[FrontPoint], indices: list[int], evaluator: Any) -> list[FrontPoint]:
    """``points`` with the real validation accuracy (and the number of images it was scored on) filled in."""
    measured = evaluator.evaluate_many([points[i].genome for i in indices]) if indices else []
    images = getattr(evaluator, "image_count", None)
    out = list(points)
    for i, acc in zip(indices, measured, strict=True):
        out[i] = replace(out[i], val_accuracy=float(acc), val_images=images)
    return out


def estimated_accuracy(point: FrontPoint, *, predictor_rmse: float | None = None) -> float:
    """Best estimate of ``point``'s accuracy on unseen images, from what is known of it.

    A measured validation accuracy is an estimate with binomial variance ``a (1 - a) / n`` on its
    ``n`` images; the accuracy predictor is another, independent one, with its held-out RMSE as
    its error. With both known they are combined weighted by inverse variance, so that a finalist
    whose validation score is high by the luck of one split is pulled toward what the predictor
    says (on 5,000 images the binomial error, about 0.4 points, equals the predictor's RMSE).
    Without an RMSE or an image count the validation accuracy stands alone; without a measurement
    the prediction does.
    """
    if point.val_accuracy is None:
        return point.predicted_accuracy
    if not predictor_rmse or not point.val_images:
        return point.val_accuracy
    a = min(max(point.val_accuracy, 1e-4), 1 - 1e-4)
    val_var = a * (1 - a) / point.val_images
    pred_var = predictor_rmse**2
    weight = pred_var / (pred_var + val_var)
    return weight * point.val_accuracy + (1 - weight) * point.predicted_accuracy


def recommend(points: list[FrontPoint], *, predictor_rmse: float | None = None) -> int:
    """The point to deploy among those evaluated for real (all, if none was): best
    :func:`estimated_accuracy`, then lower latency.

    ``predictor_rmse`` (a fraction, e.g. 0.004 for 0.4 points) is the accuracy predictor's
    held-out RMSE (:attr:`AccuracyPredictor.rmse`); ``None`` picks on validation accuracy alone.
    """
    measured = [i for i, p in enumerate(points) if p.val_accuracy is not None]
    pool = measured or list(range(len(points)))

    def key(i: int) -> tuple[float, float]:
        return (-estimated_accuracy(points[i], predictor_rmse=predictor_rmse), points[i].latency_ms)

    return min(pool, key=key)


def format_table(points: list[FrontPoint], space: Any, recommended: int) -> str:
    """The front as a text table (one line per point)."""
    lines = [f"{'':2}{'pred acc':>9} {'val acc':>8} {'latency':>10} {'params':>8} {'memory':>9}  genome"]
    for i, p in enumerate(points):
        val = f"{p.val_accuracy * 100:7.2f}%" if p.val_accuracy is not None else f"{'-':>8}"
        mark = "*" if i == recommended else " "
        lines.append(
            f"{mark} {p.predicted_accuracy * 100:8.2f}% {val} {p.latency_ms:7.3f} ms {p.params / 1e3:7.1f}k "
            f"{p.memory_bytes / 2**20:6.2f} MiB  {p.genome.short(space)}"
        )
    return "\n".join(lines)


def write_results(
    out_dir: Path,
    *,
    points: list[FrontPoint],
    recommended: int,
    space: Any,
    summary: dict[str, Any],
) -> dict[str, Path]:
    """``front.json``, ``recommended.json`` (a genome for ``codesign export``) and ``front.png`` when possible."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    written["front"] = out_dir / "front.json"
    write_json_atomic(
        written["front"], {**summary, "recommended": recommended, "front": [p.to_dict(space) for p in points]}
    )
    written["recommended"] = out_dir / "recommended.json"
    write_json_atomic(written["recommended"], points[recommended].genome.to_dict())
    plot = plot_front(out_dir / "front.png", points, recommended, summary["budget"]["latency_ms"])
    if plot is not None:
        written["plot"] = plot
    return written


def plot_front(path: Path, points: list[FrontPoint], recommended: int, budget_ms: float) -> Path | None:
    """Accuracy vs predicted latency with the budget line and the recommended point; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from codesign.fileio import atomic_path

    fig = front_figure(points, recommended, budget_ms)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def front_figure(points: list[FrontPoint], recommended: int, budget_ms: float) -> Any:
    """The front plot as a matplotlib figure (the caller saves and closes it; needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    lat = [p.latency_ms for p in points]
    ax.plot(lat, [p.predicted_accuracy * 100 for p in points], "o-", ms=3, label="front (predicted accuracy)")
    measured = [(p.latency_ms, p.val_accuracy) for p in points if p.val_accuracy is not None]
    if measured:
        ax.plot(
            [latency for latency, _ in measured],
            [accuracy * 100 for _, accuracy in measured],
            "s",
            ms=5,
            label="finalists (validation accuracy)",
        )
    best = points[recommended]
    best_acc = best.val_accuracy if best.val_accuracy is not None else best.predicted_accuracy
    ax.plot([best.latency_ms], [best_acc * 100], "*", ms=14, color="crimson", label="recommended")
    ax.axvline(budget_ms, color="gray", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("predicted compiled latency (ms, batch 1)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
