"""NSGA-II (Deb et al. 2002) with constraint domination, on (accuracy up, latency down)."""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.search.pareto import rank_and_crowding
from codesign.search.problem import Scores, SearchProblem
from codesign.search.strategies.base import Population, SearchStrategy
from codesign.search.strategies.registry import register_strategy


@register_strategy
class NSGA2(SearchStrategy):
    """Binary tournaments on (front rank, crowding), uniform crossover + mutation, elitist survival."""

    name = "nsga2"

    def __init__(
        self,
        *,
        population_size: int = 100,
        mutation_probability: float = 0.1,
        crossover_probability: float = 0.9,
        start_from_corners: bool = True,
    ) -> None:
        super().__init__(
            population_size=population_size,
            mutation_probability=mutation_probability,
            start_from_corners=start_from_corners,
        )
        self.crossover_probability = crossover_probability

    def _tournament(self, ranks: np.ndarray, crowding: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        a, b = rng.integers(0, len(ranks), size=(2, n))
        a_wins = (ranks[a] < ranks[b]) | ((ranks[a] == ranks[b]) & (crowding[a] >= crowding[b]))
        return np.where(a_wins, a, b)

    def step(self, problem: SearchProblem, population: Population, rng: np.random.Generator) -> Population:
        """Offspring of the same size, then the best half of parents + offspring survives."""
        n = self.population_size
        ranks, crowding = rank_and_crowding(
            population.scores.accuracy, population.scores.latency_ms, population.scores.violation
        )
        first = population.vectors[self._tournament(ranks, crowding, rng, n)]
        second = population.vectors[self._tournament(ranks, crowding, rng, n)]
        children = self.children(problem, first, second, rng, self.crossover_probability)
        merged_vectors = np.concatenate([population.vectors, children])
        merged = Scores.concatenate([population.scores, problem.score(children)])
        ranks, crowding = rank_and_crowding(merged.accuracy, merged.latency_ms, merged.violation)
        order = np.lexsort((-crowding, ranks))[:n]
        order.sort()
        return Population(merged_vectors[order], merged.take(order))

    def settings(self) -> dict[str, Any]:
        """Knobs including the crossover probability."""
        return {**super().settings(), "crossover_probability": self.crossover_probability}
