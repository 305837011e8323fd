"""What a search optimizes: predicted accuracy up, predicted compiled latency down, under budgets.

:class:`SearchProblem` scores whole populations of joint genome vectors at once: the accuracy
predictor on the architecture genes, the hardware profile's latency model on architecture +
pruning + schedule genes, and parameter / peak-memory counts. A candidate is feasible when it
meets every budget; ``violation`` (0 when feasible) is the summed relative excess, which
constrained strategies minimize first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.latency.model import LatencyModel
from codesign.search.accuracy_predictor import AccuracyPredictor
from codesign.search.costs import SubnetCosts
from codesign.search.encoding import SearchEncoding


@dataclass(frozen=True)
class Budget:
    """Constraints of a search: latency (required), parameters and peak memory (optional)."""

    latency_ms: float
    max_params: int | None = None
    max_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.latency_ms > 0:
            raise CodesignError(f"the latency budget must be positive, got {self.latency_ms} ms")


@dataclass(frozen=True)
class Scores:
    """Per-candidate results of :meth:`SearchProblem.score` (arrays of equal length)."""

    accuracy: np.ndarray
    latency_ms: np.ndarray
    params: np.ndarray
    memory_bytes: np.ndarray
    violation: np.ndarray

    @property
    def feasible(self) -> np.ndarray:
        """Candidates within every budget."""
        return self.violation <= 0.0

    def take(self, index: np.ndarray) -> Scores:
        """The scores of a subset."""
        return Scores(
            self.accuracy[index],
            self.latency_ms[index],
            self.params[index],
            self.memory_bytes[index],
            self.violation[index],
        )

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON-ready form (floats round-trip exactly through JSON)."""
        return {f: getattr(self, f).tolist() for f in Scores.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, list[Any]]) -> Scores:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(data["accuracy"], dtype=np.float64),
            np.asarray(data["latency_ms"], dtype=np.float64),
            np.asarray(data["params"], dtype=np.int64),
            np.asarray(data["memory_bytes"], dtype=np.int64),
            np.asarray(data["violation"], dtype=np.float64),
        )

    @staticmethod
    def concatenate(parts: list[Scores]) -> Scores:
        """Scores of several populations, in order."""
        return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in Scores.__dataclass_fields__))


class SearchProblem:
    """Scores joint genome vectors (see the module docstring); counts how many it scored."""

    def __init__(
        self,
        encoding: SearchEncoding,
        latency_model: LatencyModel,
        accuracy_predictor: AccuracyPredictor,
        budget: Budget,
    ) -> None:
        if accuracy_predictor.space != encoding.space.name:
            raise CodesignError(
                f"the accuracy predictor is for space {accuracy_predictor.space!r}, "
                f"the supernet and profile are for {encoding.space.name!r}"
            )
        self.encoding = encoding
        self.latency_model = latency_model
        self.accuracy_predictor = accuracy_predictor
        self.budget = budget
        self.costs = SubnetCosts(latency_model.positions)
        self.scored = 0

    def score(self, vectors: np.ndarray) -> Scores:
        """Accuracy, latency, parameters, memory and constraint violation of each vector."""
        v = np.asarray(vectors, dtype=np.int64)
        self.scored += len(v)
        latency, active, ids = self.latency_model.predict_by_position(v)
        params = self.costs.parameter_counts(ids, active)
        memory = self.costs.peak_memory_bytes(ids, active)
        accuracy = self.accuracy_predictor.predict_features(self.encoding.arch_features(v))
        b = self.budget
        violation = np.maximum(latency / b.latency_ms - 1.0, 0.0)
        if b.max_params is not None:
            violation = violation + np.maximum(params / b.max_params - 1.0, 0.0)
        if b.max_memory_bytes is not None:
            violation = violation + np.maximum(memory / b.max_memory_bytes - 1.0, 0.0)
        violation = np.where(np.isfinite(violation), violation, 1e9)
        return Scores(accuracy, latency, params, memory, violation)

    def fastest_reachable(self, *, samples: int = 20000, seed: int = 0) -> tuple[float, np.ndarray]:
        """The lowest predicted latency found: the smallest and random subnets, at their fastest schedules (TVM's
        default ones when the encoding keeps those)."""
        from codesign.space import Genome

        model = self.latency_model
        space = self.encoding.space
        rng = np.random.default_rng(seed)
        vectors = np.concatenate(
            [self.encoding.from_genomes([Genome.smallest(space)]), self.encoding.sample(rng, samples)]
        )
        # every kernel at its fastest candidate, unless the search keeps TVM's default schedules
        default = self.encoding.schedules == "default"
        vectors[:, model.arch_length :] = 0 if default else model.fastest_schedule_genes(vectors)
        scores = self.score(vectors)
        ok = (scores.params <= (self.budget.max_params or np.inf)) & (
            scores.memory_bytes <= (self.budget.max_memory_bytes or np.inf)
        )
        latency = np.where(ok, scores.latency_ms, np.inf)
        i = int(np.argmin(latency))
        return float(latency[i]), vectors[i]
