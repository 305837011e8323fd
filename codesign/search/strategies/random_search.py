"""Random search: every generation is a fresh uniform sample (the baseline every strategy must beat)."""

from __future__ import annotations

import numpy as np

from codesign.search.problem import SearchProblem
from codesign.search.strategies.base import Population, SearchStrategy
from codesign.search.strategies.registry import register_strategy


@register_strategy
class RandomSearch(SearchStrategy):
    """Uniform sampling of the joint space; the runner's archive keeps the best seen."""

    name = "random"

    def step(self, problem: SearchProblem, population: Population, rng: np.random.Generator) -> Population:
        """A new uniform sample of ``population_size`` candidates."""
        return self.uniform(problem, rng)
