"""Regularized (aging) evolution, batched: tournament parents, mutation and crossover, oldest die first."""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.search.problem import Scores, SearchProblem
from codesign.search.strategies.base import Population, SearchStrategy, constrained_fitness
from codesign.search.strategies.registry import register_strategy


@register_strategy
class AgingEvolution(SearchStrategy):
    """Real et al.'s regularized evolution with ``offspring`` children per generation.

    Parents are tournament winners (``tournament_size`` sampled members, best constrained fitness:
    accuracy when within budget, the smallest budget violation otherwise). A child is a mutated
    parent, or with ``crossover_probability`` a mutated uniform crossover of two parents. Children
    join the population and the same number of oldest members leave it.
    """

    name = "evolution"

    def __init__(
        self,
        *,
        population_size: int = 100,
        mutation_probability: float = 0.1,
        tournament_size: int = 10,
        offspring: int | None = None,
        crossover_probability: float = 0.3,
    ) -> None:
        super().__init__(population_size=population_size, mutation_probability=mutation_probability)
        self.tournament_size = min(tournament_size, population_size)
        self.offspring = offspring or max(1, population_size // 2)
        self.crossover_probability = crossover_probability

    def _parents(self, fitness: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        entrants = rng.integers(0, len(fitness), size=(n, self.tournament_size))
        return entrants[np.arange(n), np.argmax(fitness[entrants], axis=1)]

    def step(self, problem: SearchProblem, population: Population, rng: np.random.Generator) -> Population:
        """``offspring`` children replace the oldest members."""
        fitness = constrained_fitness(population.scores)
        n = self.offspring
        first = population.vectors[self._parents(fitness, rng, n)]
        second = population.vectors[self._parents(fitness, rng, n)]
        crossed = problem.encoding.crossover(first, second, rng)
        use_cross = rng.random(n) < self.crossover_probability
        children = problem.encoding.mutate(np.where(use_cross[:, None], crossed, first), rng, self.mutation_probability)
        scores = problem.score(children)
        keep = len(population.vectors) + n - self.population_size
        vectors = np.concatenate([population.vectors, children])[keep:]
        merged = Scores.concatenate([population.scores, scores])
        return Population(vectors, merged.take(np.arange(keep, keep + len(vectors))))

    def settings(self) -> dict[str, Any]:
        """Knobs including tournament size, offspring and crossover probability."""
        return {
            **super().settings(),
            "tournament_size": self.tournament_size,
            "offspring": self.offspring,
            "crossover_probability": self.crossover_probability,
        }
