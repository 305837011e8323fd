"""Pareto utilities for (accuracy up, latency down): dominance ranks, crowding, fronts, hypervolume."""

from __future__ import annotations

import numpy as np


def dominates_matrix(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when candidate ``i`` dominates ``j`` (no worse in both, better in one)."""
    a, t = np.asarray(accuracy, np.float64), np.asarray(latency, np.float64)
    no_worse = (a[:, None] >= a[None, :]) & (t[:, None] <= t[None, :])
    better = (a[:, None] > a[None, :]) | (t[:, None] < t[None, :])
    return no_worse & better


def non_dominated_ranks(accuracy: np.ndarray, latency: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """Front index of every candidate (0 = non-dominated), with Deb's constraint domination.

    A feasible candidate dominates every infeasible one; of two infeasible ones the smaller
    violation dominates.
    """
    n = len(accuracy)
    d = dominates_matrix(accuracy, latency)
    if violation is not None:
        v = np.asarray(violation, np.float64)
        feasible = v <= 0
        d = np.where(feasible[:, None] & feasible[None, :], d, False)
        d |= feasible[:, None] & ~feasible[None, :]
        d |= (~feasible[:, None]) & (~feasible[None, :]) & (v[:, None] < v[None, :])
    dominated_by = d.sum(axis=0)
    ranks = np.full(n, -1, dtype=np.int64)
    current = np.flatnonzero(dominated_by == 0)
    rank = 0
    while current.size:
        ranks[current] = rank
        dominated_by = dominated_by - d[current].sum(axis=0)
        dominated_by[ranks >= 0] = -1
        current = np.flatnonzero(dominated_by == 0)
        rank += 1
    return ranks


def crowding_distance(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points get infinity)."""
    n = len(accuracy)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for values in (np.asarray(accuracy, np.float64), np.asarray(latency, np.float64)):
        finite = np.isfinite(values)
        if not finite.all():  # candidates whose schedules cannot compile: as far as possible, not NaN
            values = np.where(finite, values, (np.max(np.abs(values[finite])) * 10 + 1) if finite.any() else 1.0)
        order = np.argsort(values, kind="stable")
        span = values[order[-1]] - values[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[order[2:]] - values[order[:-2]]) / span
    return distance


def rank_and_crowding(
    accuracy: np.ndarray, latency: np.ndarray, violation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II's selection keys: the front index of every candidate and its crowding distance within that front."""
    ranks = non_dominated_ranks(accuracy, latency, violation)
    crowding = np.zeros(len(ranks))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        crowding[members] = crowding_distance(np.asarray(accuracy)[members], np.asarray(latency)[members])
    return ranks, crowding


def pareto_mask(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Candidates no other candidate dominates."""
    # numpy types ``any(axis=...)`` as scalar-or-array; with an axis on a 2-D matrix it is always an array
    return np.asarray(~dominates_matrix(accuracy, latency).any(axis=0))


def hypervolume(
    accuracy: np.ndarray, latency: np.ndarray, *, reference_latency: float, reference_accuracy: float = 0.0
) -> float:
    """Area dominated by the points and bounded by (reference_accuracy, reference_latency)."""
    a, t = np.asarray(accuracy, np.float64), np.asarray(latency, np.float64)
    keep = (a > reference_accuracy) & (t < reference_latency)
    a, t = a[keep], t[keep]
    if a.size == 0:
        return 0.0
    order = np.argsort(t, kind="stable")
    area, best = 0.0, reference_accuracy
    edges = np.append(t[order], reference_latency)
    for i, idx in enumerate(order):
        best = max(best, a[idx])
        area += (best - reference_accuracy) * (edges[i + 1] - edges[i])
    return float(area)
