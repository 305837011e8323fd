"""Thin wrapper over the C++ extension ``codesign._kernels`` with a numpy reference fallback.

``codesign._kernels`` is compiled by ``pip install .`` from ``cpp_kernels/``. When it is missing
(an editable checkout that was never built) the numpy reference runs instead; both must agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:
    from codesign import _kernels as _ext  # type: ignore[attr-defined]  # compiled extension, no stub
except ImportError:  # pragma: no cover - exercised only on an unbuilt checkout
    _ext = None


def have_cpp_kernels() -> bool:
    """Whether the compiled C++ kernels are importable."""
    return _ext is not None


def group_l1_importance_reference(tensors: Sequence[np.ndarray]) -> np.ndarray:
    """numpy reference of :func:`group_l1_importance`."""
    total = None
    for t in tensors:
        a = np.asarray(t, dtype=np.float64)
        norms = np.abs(a.reshape(a.shape[0], -1)).sum(axis=1)
        mean = norms.mean()
        scaled = norms / mean if mean > 0 else np.zeros_like(norms)
        if total is not None and scaled.shape != total.shape:
            raise ValueError("all tensors of a dependency group must have the same channel count")
        total = scaled if total is None else total + scaled
    if total is None:
        raise ValueError("group_l1_importance needs at least one tensor")
    return total.astype(np.float32)


def group_l1_importance(tensors: Sequence[np.ndarray], *, num_threads: int = 1, use_cpp: bool = True) -> np.ndarray:
    """Importance of each channel of a dependency group.

    Each tensor's first axis is the group's channel axis. The score of a channel is the sum over
    tensors of its L1 norm divided by that tensor's mean channel L1 norm.
    """
    if use_cpp and _ext is not None:
        return _ext.group_l1_importance([np.ascontiguousarray(t, dtype=np.float32) for t in tensors], num_threads)
    return group_l1_importance_reference(tensors)


def rank_channels(scores: np.ndarray, *, use_cpp: bool = True) -> np.ndarray:
    """Channel indices by descending score; ties keep the lower index first."""
    if use_cpp and _ext is not None:
        return _ext.rank_channels(np.ascontiguousarray(scores, dtype=np.float32))
    return np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable").astype(np.int64)
