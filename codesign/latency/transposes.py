"""What a change of data layout costs on a device: measured transpose kernels, and a fit for the rest.

Where neighbouring kernels of a subnet run in different layouts (NCHW, NHWC), the compiled model
transposes the activation between them in a kernel of its own
(:func:`codesign.compiler.layouts.emit_isolated_transpose`). The profiler times that kernel for
the activation shapes of its space, in both directions; :class:`TransposeCosts` answers for any
shape: the measured median where there is one, else a power law in the element count fitted on
the measurements of that direction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.latency.workloads import Workload

LAYOUT_NAMES: tuple[str, ...] = ("NCHW", "NHWC")  # layout ids: the index in this tuple


def layout_id(name: str) -> int:
    """The integer id of a layout name (0 NCHW, 1 NHWC); unknown names are a clear error."""
    try:
        return LAYOUT_NAMES.index(name)
    except ValueError:
        raise CodesignError(f"unknown data layout {name!r}; use one of {', '.join(LAYOUT_NAMES)}") from None


def transpose_key(channels: int, resolution: int, to_layout: str) -> str:
    """The journal and profile key of one transpose measurement, e.g. ``transpose_c24_r14_to_NHWC``."""
    return f"transpose_c{channels}_r{resolution}_to_{to_layout}"


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
    """Median transpose latency (ms) per ``(channels, resolution, to_layout)``, with a fitted fallback."""

    measured: dict[tuple[int, int, str], float]
    fits: dict[str, tuple[float, float]]  # to_layout -> (log-ms intercept, slope in log elements)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> TransposeCosts:
        """From profile ``transposes`` records (those with status ``ok``)."""
        measured: dict[tuple[int, int, str], float] = {}
        for r in records:
            if r.get("status") == "ok" and r.get("timing"):
                measured[(int(r["channels"]), int(r["resolution"]), str(r["to_layout"]))] = float(
                    r["timing"]["median_ms"]
                )
        fits: dict[str, tuple[float, float]] = {}
        for to_layout in LAYOUT_NAMES:
            points = [(c * h * h, ms) for (c, h, t), ms in measured.items() if t == to_layout and ms > 0]
            if len(points) >= 2:
                x = np.log([p[0] for p in points])
                y = np.log([p[1] for p in points])
                slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))
                fits[to_layout] = (float(intercept), float(slope))
            elif points:
                fits[to_layout] = (float(np.log(points[0][1])), 0.0)
        return cls(measured, fits)

    def __bool__(self) -> bool:
        return bool(self.measured)

    def ms(self, channels: int, resolution: int, to_layout: str) -> float:
        """Latency of transposing a ``channels x resolution x resolution`` activation into ``to_layout``."""
        value = self.measured.get((channels, resolution, to_layout))
        if value is not None:
            return value
        fit = self.fits.get(to_layout)
        if fit is None:
            raise CodesignError(
                f"the profile has no transpose timings into {to_layout}; re-run `codesign profile` with that layout"
            )
        intercept, slope = fit
        return float(np.exp(intercept + slope * np.log(channels * resolution * resolution)))
