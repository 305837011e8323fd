"""Regularized (aging) evolution, batched: tournament parents, mutation and crossover, oldest die first."""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from codesign.search.pareto import rank_and_crowding
from codesign.search.problem import Scores, SearchProblem
from codesign.search.strategies.base import Population, SearchStrategy, constrained_fitness
from codesign.search.strategies.registry import register_strategy

Selection = Literal["pareto", "spread-budgets", "budget"]
SELECTIONS: tuple[str, ...] = get_args(Selection)


@register_strategy
class AgingEvolution(SearchStrategy):
    """Real et al.'s regularized evolution with ``offspring`` children per generation.

    Parents are winners of tournaments among ``tournament_size`` sampled members. What wins
    depends on ``selection``:

    - ``"pareto"`` (the default): the lowest non-dominated front of the population on (accuracy,
      latency) with Deb's constraint domination (within budget beats over it), ties broken by
      NSGA-II's crowding distance. The population keeps the whole front, which is what the
      search returns; aging still removes every member after ``population_size / offspring``
      generations, so no old front member survives by rank alone.
    - ``"spread-budgets"``: the best accuracy under the tournament's own latency budget, drawn
      uniformly between the fastest population member and the real budget; candidates over the
      real budget never win against ones under it.
    - ``"budget"``: the best accuracy under the real budget (Real et al.'s single objective),
      the smallest violation when no entrant is within it.

    A child is a mutated parent, or with ``crossover_probability`` a mutated uniform crossover of
    two parents. Mutation re-draws each gene with ``mutation_probability`` and always at least one:
    the default 0.025, about one gene in the 43 architecture genes of ``fmnist_mbv3``, searches
    the neighbourhood of the front's members instead of jumping away from them (compared with
    0.1 in ``tools/bench_search.py``). Children join the population and the same number of
    oldest members leave it.
    """

    name = "evolution"

    def __init__(
        self,
        *,
        population_size: int = 100,
        mutation_probability: float = 0.025,
        tournament_size: int = 10,
        offspring: int | None = None,
        crossover_probability: float = 0.3,
        selection: Selection = "pareto",
        start_from_corners: bool = True,
    ) -> None:
        super().__init__(
            population_size=population_size,
            mutation_probability=mutation_probability,
            start_from_corners=start_from_corners,
        )
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        self.selection = selection
        self.tournament_size = min(tournament_size, population_size)
        self.offspring = offspring or max(1, population_size // 2)
        self.crossover_probability = crossover_probability

    @staticmethod
    def _pareto_positions(scores: Scores) -> np.ndarray:
        """Each member's place in Pareto order: lower rank first, then larger crowding (boundary points first)."""
        ranks, crowding = rank_and_crowding(scores.accuracy, scores.latency_ms, scores.violation)
        order = np.lexsort((-crowding, ranks))
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        return position

    def _parents(
        self,
        scores: Scores,
        budget_ms: float,
        rng: np.random.Generator,
        n: int,
        positions: np.ndarray | None = None,
    ) -> np.ndarray:
        """``n`` tournament winners; ``positions`` (from :meth:`_pareto_positions`) saves ranking twice per step."""
        entrants = rng.integers(0, len(scores.accuracy), size=(n, self.tournament_size))
        if self.selection == "pareto":
            if positions is None:
                positions = self._pareto_positions(scores)
            return entrants[np.arange(n), np.argmin(positions[entrants], axis=1)]
        fitness = constrained_fitness(scores)[entrants]
        if self.selection == "spread-budgets":
            latency = scores.latency_ms[entrants]
            finite = scores.latency_ms[np.isfinite(scores.latency_ms)]
            low = min(float(finite.min()), budget_ms) if finite.size else budget_ms
            tournament_budget = rng.uniform(low, budget_ms, size=(n, 1))
            # over its own budget an entrant ranks below every entrant within it, by how far over it is
            over = latency > tournament_budget
            fitness = np.where(over & (fitness >= 0), -1.0 + 1e-3 * (tournament_budget / latency), fitness)
        return entrants[np.arange(n), np.argmax(fitness, axis=1)]

    def step(self, problem: SearchProblem, population: Population, rng: np.random.Generator) -> Population:
        """``offspring`` children replace the oldest members."""
        n = self.offspring
        budget = problem.budget.latency_ms
        positions = self._pareto_positions(population.scores) if self.selection == "pareto" else None
        first = population.vectors[self._parents(population.scores, budget, rng, n, positions)]
        second = population.vectors[self._parents(population.scores, budget, rng, n, positions)]
        children = self.children(problem, first, second, rng, self.crossover_probability)
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
            "selection": self.selection,
        }
