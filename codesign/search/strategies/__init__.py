"""Search strategies: one file per strategy, a shared base class, a registry by short name."""

from codesign.search.strategies.base import Population, SearchStrategy, constrained_fitness
from codesign.search.strategies.registry import available_strategies, create_strategy, register_strategy

__all__ = [
    "Population",
    "SearchStrategy",
    "available_strategies",
    "constrained_fitness",
    "create_strategy",
    "register_strategy",
]
