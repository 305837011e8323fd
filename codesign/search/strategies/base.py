"""The interface every search strategy implements, and the population state it evolves.

A strategy is a pure function of (problem, state, random generator): ``initialize`` makes the first
population, ``step`` makes the next generation. The runner owns the random generator, the archive
of the best candidates and the checkpoints, so every strategy gets resumption and determinism for
free, and the contract tests in ``tests/test_search_strategies.py`` hold for all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from codesign.search.problem import Scores, SearchProblem


@dataclass
class Population:
    """Genome vectors of the current population with their scores (oldest first)."""

    vectors: np.ndarray
    scores: Scores

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; scores are stored exactly (re-scoring in other batch sizes may round differently)."""
        return {"vectors": self.vectors.tolist(), "scores": self.scores.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], problem: SearchProblem) -> Population:
        """Rebuild a saved population."""
        vectors = np.asarray(data["vectors"], dtype=np.int64).reshape(-1, problem.encoding.length)
        return cls(vectors, Scores.from_dict(data["scores"]))


def constrained_fitness(scores: Scores) -> np.ndarray:
    """Single-objective fitness: accuracy when feasible, below every feasible one by the violation otherwise."""
    return np.where(scores.feasible, scores.accuracy, -1.0 - scores.violation)


class SearchStrategy(ABC):
    """Base class of search strategies (see the module docstring)."""

    name: ClassVar[str]

    def __init__(
        self, *, population_size: int = 100, mutation_probability: float = 0.1, start_from_corners: bool = True
    ) -> None:
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        if not 0.0 < mutation_probability <= 1.0:
            raise ValueError(f"mutation_probability must be in (0, 1], got {mutation_probability}")
        self.population_size = population_size
        self.mutation_probability = mutation_probability
        self.start_from_corners = start_from_corners

    def initialize(self, problem: SearchProblem, rng: np.random.Generator) -> Population:
        """The first population: the space's two corners (largest and smallest subnet), then uniform samples.

        The corners anchor both ends of the front (see ``SearchEncoding.corners``); every strategy,
        random search included, starts from them unless ``start_from_corners`` is off.
        """
        if not self.start_from_corners:
            return self.uniform(problem, rng)
        corners = problem.encoding.corners()[: self.population_size]
        vectors = np.concatenate([corners, problem.encoding.sample(rng, self.population_size - len(corners))])
        return Population(vectors, problem.score(vectors))

    def uniform(self, problem: SearchProblem, rng: np.random.Generator) -> Population:
        """``population_size`` uniform samples, scored."""
        vectors = problem.encoding.sample(rng, self.population_size)
        return Population(vectors, problem.score(vectors))

    def children(
        self,
        problem: SearchProblem,
        first: np.ndarray,
        second: np.ndarray,
        rng: np.random.Generator,
        crossover_probability: float,
    ) -> np.ndarray:
        """Children of parent rows at this strategy's mutation probability (see ``SearchEncoding.offspring``)."""
        return problem.encoding.offspring(
            first,
            second,
            rng,
            crossover_probability=crossover_probability,
            mutation_probability=self.mutation_probability,
        )

    @abstractmethod
    def step(self, problem: SearchProblem, population: Population, rng: np.random.Generator) -> Population:
        """The next generation (scores every new candidate through ``problem``)."""

    def settings(self) -> dict[str, Any]:
        """The strategy's knobs, recorded in checkpoints and results."""
        return {
            "strategy": self.name,
            "population_size": self.population_size,
            "mutation_probability": self.mutation_probability,
            "start_from_corners": self.start_from_corners,
        }
