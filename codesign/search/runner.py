"""Running a strategy: generations, the archive of the best candidates, checkpoints and resumption.

The archive is the set of feasible candidates no other scored feasible candidate dominates (the
Pareto front of predicted accuracy vs predicted latency under the budget), updated every
generation. After every generation the runner writes a checkpoint (atomically, JSON: population,
archive, the random generator's exact state); ``resume=True`` continues from it and reaches the
same result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.fileio import write_json_atomic
from codesign.search.pareto import pareto_mask
from codesign.search.problem import Scores, SearchProblem
from codesign.search.strategies.base import Population, SearchStrategy

CHECKPOINT_FORMAT = "codesign-search-checkpoint"


@dataclass
class Archive:
    """Feasible non-dominated candidates seen so far."""

    vectors: np.ndarray
    scores: Scores

    @classmethod
    def empty(cls, length: int) -> Archive:
        """An archive with nothing in it."""
        z = np.zeros(0)
        return cls(np.zeros((0, length), dtype=np.int64), Scores(z, z, z.astype(np.int64), z.astype(np.int64), z))

    def update(
        self, vectors: np.ndarray, scores: Scores, *, phenotype: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> Archive:
        """The archive after considering ``vectors``: duplicates of members are dropped, judged by
        ``phenotype(vectors)`` when given (genes that do not change the compiled network ignored)."""
        feasible = np.flatnonzero(scores.feasible)
        if feasible.size == 0:
            return self
        all_vectors = np.concatenate([self.vectors, vectors[feasible]])
        all_scores = Scores.concatenate([self.scores, scores.take(feasible)])
        keys = phenotype(all_vectors) if phenotype is not None else all_vectors
        # of equal networks keep the best scored (scores of one network can differ in the last bits
        # between batches), earliest first among equals
        best_first = np.lexsort((all_scores.latency_ms, -all_scores.accuracy))
        _, picked = np.unique(keys[best_first], axis=0, return_index=True)
        first = np.sort(best_first[picked])
        all_vectors, all_scores = all_vectors[first], all_scores.take(first)
        keep = np.flatnonzero(pareto_mask(all_scores.accuracy, all_scores.latency_ms))
        order = keep[np.argsort(all_scores.latency_ms[keep], kind="stable")]
        return Archive(all_vectors[order], all_scores.take(order))


@dataclass
class SearchOutcome:
    """The archive (the predicted front) and how the search got there."""

    archive: Archive
    generations: int
    scored: int
    seconds: float
    history: list[dict[str, Any]]


def run_search(
    problem: SearchProblem,
    strategy: SearchStrategy,
    *,
    generations: int,
    seed: int,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[int, Archive], None] | None = None,
) -> SearchOutcome:
    """Run ``generations`` generations of ``strategy`` on ``problem`` (see the module docstring)."""
    settings = {
        **strategy.settings(),
        "seed": seed,
        "budget": {
            "latency_ms": problem.budget.latency_ms,
            "max_params": problem.budget.max_params,
            "max_memory_bytes": problem.budget.max_memory_bytes,
        },
        "columns": problem.encoding.counts.tolist(),
        "schedules": problem.encoding.schedules,
    }
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    path = Path(checkpoint) if checkpoint else None
    generation = 0
    history: list[dict[str, Any]] = []
    if resume and path is not None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CodesignError(f"{path}: corrupt search checkpoint ({exc}); delete it to start over") from None
        if data.get("format") != CHECKPOINT_FORMAT or data.get("settings") != json.loads(json.dumps(settings)):
            raise CodesignError(
                f"{path} was written by a search with other settings; use another output directory or drop --resume"
            )
        rng.bit_generator.state = data["rng"]
        population = Population.from_dict(data["population"], problem)
        archive = Archive(
            np.asarray(data["archive"]["vectors"], dtype=np.int64).reshape(-1, problem.encoding.length),
            Scores.from_dict(data["archive"]["scores"]),
        )
        problem.scored = int(data["scored"])
        generation = int(data["generation"])
        history = list(data.get("history", []))
    else:
        population = strategy.initialize(problem, rng)
        archive = Archive.empty(problem.encoding.length).update(
            population.vectors, population.scores, phenotype=problem.encoding.phenotype
        )
    while generation < generations:
        if generation > 0:
            population = strategy.step(problem, population, rng)
            archive = archive.update(population.vectors, population.scores, phenotype=problem.encoding.phenotype)
        generation += 1
        history.append(
            {
                "generation": generation,
                "scored": problem.scored,
                "front_size": len(archive.vectors),
                "best_accuracy": float(archive.scores.accuracy.max()) if len(archive.vectors) else None,
            }
        )
        if path is not None:
            write_json_atomic(
                path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "settings": settings,
                    "generation": generation,
                    "scored": problem.scored,
                    "rng": rng.bit_generator.state,
                    "population": population.to_dict(),
                    "archive": {"vectors": archive.vectors.tolist(), "scores": archive.scores.to_dict()},
                    "history": history,
                },
            )
        if progress is not None:
            progress(generation, archive)
    return SearchOutcome(archive, generation, problem.scored, time.perf_counter() - started, history)
