"""Strategies by short name: ``@register_strategy`` on the class, :func:`create_strategy` to build one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from codesign.errors import CodesignError

if TYPE_CHECKING:
    from codesign.search.strategies.base import SearchStrategy

_S = TypeVar("_S", bound="SearchStrategy")

_STRATEGIES: dict[str, type[SearchStrategy]] = {}


def register_strategy(cls: type[_S]) -> type[_S]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    _STRATEGIES[cls.name] = cls
    return cls


def available_strategies() -> list[str]:
    """Registered strategy names."""
    _load_builtin()
    return sorted(_STRATEGIES)


def create_strategy(name_or_instance: Any, **options: Any) -> Any:
    """A strategy instance from its short name (``random``, ``evolution``, ``nsga2``) or pass an instance through."""
    from codesign.search.strategies.base import SearchStrategy

    if isinstance(name_or_instance, SearchStrategy):
        return name_or_instance
    _load_builtin()
    try:
        cls = _STRATEGIES[str(name_or_instance)]
    except KeyError:
        raise CodesignError(
            f"unknown search strategy {name_or_instance!r}; choose one of {', '.join(sorted(_STRATEGIES))}"
        ) from None
    return cls(**options)


def _load_builtin() -> None:
    from codesign.search.strategies import evolution, nsga2, random_search  # noqa: F401
