"""What a change of data layout costs on a device: measured transpose kernels, and a fit for the rest.

Where neighbouring kernels of a subnet run in different layouts (NCHW, NHWC, or the packed
NCHW8c), the compiled model changes the activation's layout between them in a kernel of its own
(a transpose, or a ``layout_transform`` for packed layouts; see :mod:`codesign.compiler.layouts`).
A network mixes NCHW with one other layout, never NHWC with a packed one, so every change goes
to or from NCHW. The profiler times that kernel for the activation shapes of its space, in both
directions; :class:`TransposeCosts` answers for any shape: the measured median where there is
one, else a power law in the element count fitted on the measurements of that direction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.latency.workloads import Workload

LAYOUT_NAMES: tuple[str, ...] = ("NCHW", "NHWC", "NCHW8c")  # layout ids: the index in this tuple


def layout_id(name: str) -> int:
    """The integer id of a layout name (0 NCHW, 1 NHWC, 2 NCHW8c); unknown names are a clear error."""
    try:
        return LAYOUT_NAMES.index(name)
    except ValueError:
        raise CodesignError(f"unknown data layout {name!r}; use one of {', '.join(LAYOUT_NAMES)}") from None


def default_source(to_layout: str) -> str:
    """Where a change into ``to_layout`` comes from when the record does not say: NCHW, or NHWC into NCHW."""
    return "NHWC" if to_layout == "NCHW" else "NCHW"


def layout_changes(layouts: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(from, to)`` layout changes a network over ``layouts`` can contain: to and from NCHW."""
    return [pair for name in layouts if name != "NCHW" for pair in (("NCHW", name), (name, "NCHW"))]


def change_fits(channels: int, from_layout: str, to_layout: str) -> bool:
    """Whether an activation of ``channels`` can be changed between the two layouts (packed: whole blocks)."""
    from codesign.compiler.layouts import packed_block

    block = packed_block(from_layout) or packed_block(to_layout)
    return block is None or channels % block == 0


def canonical_layout(name: str) -> str:
    """``name`` as :data:`LAYOUT_NAMES` spells it (``nchw8c`` -> ``NCHW8c``); unknown names are a clear error."""
    spelled = {known.upper(): known for known in LAYOUT_NAMES}
    canonical = spelled.get(name.strip().upper(), name.strip())
    layout_id(canonical)
    return canonical


def transpose_key(channels: int, resolution: int, to_layout: str, from_layout: str | None = None) -> str:
    """The journal and profile key of one layout change, e.g. ``transpose_c24_r14_to_NHWC``.

    A change from another layout than :func:`default_source` names it: ``transpose_c24_r14_NCHW8c_to_NCHW``.
    """
    if from_layout is None or from_layout == default_source(to_layout):
        return f"transpose_c{channels}_r{resolution}_to_{to_layout}"
    return f"transpose_c{channels}_r{resolution}_{from_layout}_to_{to_layout}"


def activation_shapes(workloads: Iterable[Workload]) -> list[tuple[int, int]]:
    """Every ``(channels, resolution)`` a transpose can meet in subnets made of ``workloads``, largest first.

    Those are the inputs and outputs of the convolution kernels (the image included) and the
    pooled vector (channels x 1 x 1) an NHWC head hands to the classifier.
    """
    shapes: set[tuple[int, int]] = set()
    for w in workloads:
        if w.kind == "pool_fc":
            shapes.add((w.in_channels, 1))
            continue
        shapes.add((w.in_channels, w.resolution))
        shapes.add((w.out_channels, w.out_resolution))
    return sorted(shapes, key=lambda s: (-s[0] * s[1] * s[1], s))


@dataclass(frozen=True)
class TransposeCosts:
    """Median latency (ms) of a layout change per ``(channels, resolution, from, to)``, with a fitted fallback."""

    measured: dict[tuple[int, int, str, str], float]
    fits: dict[tuple[str, str], tuple[float, float]]  # (from, to) -> (log-ms intercept, slope in log elements)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> TransposeCosts:
        """From profile ``transposes`` records (those with status ``ok``)."""
        measured: dict[tuple[int, int, str, str], float] = {}
        for r in records:
            if r.get("status") == "ok" and r.get("timing"):
                to_layout = str(r["to_layout"])
                from_layout = str(r.get("from_layout") or default_source(to_layout))
                measured[(int(r["channels"]), int(r["resolution"]), from_layout, to_layout)] = float(
                    r["timing"]["median_ms"]
                )
        fits: dict[tuple[str, str], tuple[float, float]] = {}
        for change in {(f, t) for _, _, f, t in measured}:
            points = [(c * h * h, ms) for (c, h, f, t), ms in measured.items() if (f, t) == change and ms > 0]
            if len(points) >= 2:
                x = np.log([p[0] for p in points])
                y = np.log([p[1] for p in points])
                slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))
                fits[change] = (float(intercept), float(slope))
            elif points:
                fits[change] = (float(np.log(points[0][1])), 0.0)
        return cls(measured, fits)

    def __bool__(self) -> bool:
        return bool(self.measured)

    def has(self, from_layout: str, to_layout: str) -> bool:
        """Whether the profile timed changes from ``from_layout`` to ``to_layout``."""
        return (from_layout, to_layout) in self.fits

    def ms(self, channels: int, resolution: int, to_layout: str, from_layout: str | None = None) -> float:
        """Latency of changing a ``channels x resolution x resolution`` activation into ``to_layout``.

        ``from_layout`` defaults to :func:`default_source` (NCHW, or NHWC for a change into NCHW).
        """
        source = from_layout or default_source(to_layout)
        value = self.measured.get((channels, resolution, source, to_layout))
        if value is not None:
            return value
        fit = self.fits.get((source, to_layout))
        if fit is None:
            raise CodesignError(
                f"the profile has no timings of layout changes from {source} to {to_layout}; "
                "re-run `codesign profile` with that layout"
            )
        intercept, slope = fit
        return float(np.exp(intercept + slope * np.log(channels * resolution * resolution)))
