"""The joint genome as the search sees it: one integer vector of architecture, pruning and schedule genes.

Columns, in order: resolution, per-stage depth, per-slot kernel size, expand ratio and block
pruning ratio, per-stage width pruning ratio (the space's genome vector), then one schedule gene per
kernel position (an index into that position's kernel-family candidates in the hardware profile).
Every column has a fixed number of choices, so sampling, mutation and crossover are array
operations over whole populations.

How schedule genes are chosen (``schedules``):

- ``"fastest"`` (default): every candidate's kernels get their fastest profiled schedule for the
  shapes its architecture and pruning genes give them. The latency model is a non-negatively
  weighted sum over kernels, so this is the exact optimum of the schedule genes for every
  candidate, and the search spends its evaluations on architecture and pruning only, each judged
  at its best compiled latency (the coupling of tiling and channel counts included).
- ``"evolve"``: schedule genes are drawn, mutated and crossed over like every other gene.
- ``"default"``: every kernel keeps TVM's default lowering (candidate 0).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

import numpy as np

from codesign.latency.model import LatencyModel
from codesign.latency.positions import choice_counts
from codesign.space import Genome, SearchSpace

ScheduleMode = Literal["fastest", "evolve", "default"]
SCHEDULE_MODES: tuple[str, ...] = get_args(ScheduleMode)


class SearchEncoding:
    """Integer-vector encoding of joint genomes for ``space`` with ``latency_model``'s schedule candidates."""

    def __init__(
        self,
        space: SearchSpace,
        latency_model: LatencyModel,
        *,
        schedules: ScheduleMode = "fastest",
        search_pruning: bool = True,
    ) -> None:
        if schedules not in SCHEDULE_MODES:
            raise ValueError(f"schedules must be one of {', '.join(SCHEDULE_MODES)}; got {schedules!r}")
        self.space = space
        self.latency_model = latency_model
        self.positions = latency_model.positions
        self.arch_length = self.positions.arch_length
        schedule_counts = (
            np.ones_like(latency_model.candidate_counts) if schedules == "default" else latency_model.candidate_counts
        )
        arch_counts = np.asarray(self.positions.counts, np.int64)
        if not search_pruning:  # pruning genes pinned to each knob's first choice
            n_s, n_b = space.num_stages, space.max_blocks
            arch_counts[1 + n_s + 2 * n_b : 1 + n_s + 3 * n_b] = 1
            arch_counts[1 + n_s + 3 * n_b :] = 1
        self.counts = np.concatenate([arch_counts, schedule_counts]).astype(np.int64)
        self.schedules: ScheduleMode = schedules
        self.search_pruning = search_pruning
        # the columns a search draws: with "fastest" the schedule genes follow from the others
        drawn = self.counts > 1
        if schedules == "fastest":
            drawn[self.arch_length :] = False
        self._drawn = np.flatnonzero(drawn) if drawn.any() else np.arange(self.length)

    @property
    def length(self) -> int:
        """Columns of a vector."""
        return int(self.counts.size)

    def complete(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` with their schedule genes set as the mode says (in place for "fastest"; returned)."""
        if self.schedules == "fastest" and len(vectors):
            vectors[:, self.arch_length :] = self.latency_model.fastest_schedule_genes(vectors)
        return vectors

    def corners(self) -> np.ndarray:
        """The space's largest and smallest subnets as vectors (pinned genes at their one choice), each
        kernel at its fastest schedule unless this encoding keeps TVM's default ones.

        The largest subnet is the supernet's most accurate and the smallest its fastest: the two ends
        of the accuracy-latency front. Assembling the largest from uniform samples takes every
        architecture gene at its maximum at once, which evolution rarely does.
        """
        vectors = self.from_genomes([Genome.largest(self.space), Genome.smallest(self.space)])
        vectors = np.where(self.counts[None, :] == 1, 0, vectors)
        if self.schedules != "default":
            vectors[:, self.arch_length :] = self.latency_model.fastest_schedule_genes(vectors)
        return vectors

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` vectors drawn uniformly, every column independently (then :meth:`complete`)."""
        return self.complete((rng.random((n, self.length)) * self.counts[None, :]).astype(np.int64))

    def mutate(self, vectors: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
        """Each gene re-drawn uniformly with ``probability``; at least one drawn (searched) gene per row changes."""
        return self.complete(self._mutated(vectors, rng, probability))

    def crossover(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover of two parent arrays (row ``i`` of each), then :meth:`complete`."""
        return self.complete(self._crossed(first, second, rng))

    def offspring(
        self,
        first: np.ndarray,
        second: np.ndarray,
        rng: np.random.Generator,
        *,
        crossover_probability: float,
        mutation_probability: float,
    ) -> np.ndarray:
        """Children of parent rows: with ``crossover_probability`` a crossover of both, else ``first``; mutated.

        The same as :meth:`crossover`, choosing rows, then :meth:`mutate`, with :meth:`complete` done once.
        """
        crossed = self._crossed(first, second, rng)
        use_cross = rng.random(len(first)) < crossover_probability
        parents = np.where(use_cross[:, None], crossed, first)
        return self.complete(self._mutated(parents, rng, mutation_probability))

    def _crossed(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        take = rng.random(first.shape) < 0.5
        return np.where(take, first, second)

    def _mutated(self, vectors: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
        v = vectors.copy()
        mask = rng.random(v.shape) < probability
        forced = self._drawn[rng.integers(0, len(self._drawn), size=len(v))]
        mask[np.arange(len(v)), forced] = True
        fresh = (rng.random(v.shape) * self.counts[None, :]).astype(np.int64)
        v[mask] = fresh[mask]
        return v

    def phenotype(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors that are equal exactly when the compiled networks are: genes of inactive blocks reset
        to their first choice, schedule genes replaced by the schedules TVM compiles (a kernel equal to an
        earlier one takes its schedule) and zeroed at inactive positions."""
        v = np.array(vectors, dtype=np.int64, copy=True)
        if not len(v):
            return v
        n_s, n_b = self.space.num_stages, self.space.max_blocks
        depth_index = v[:, 1 : 1 + n_s]
        depths = np.stack(
            [np.asarray(stage.depths, np.int64)[depth_index[:, si]] for si, stage in enumerate(self.space.stages)],
            axis=1,
        )
        slots = self.space.block_slots()
        slot_stage = np.asarray([si for si, _ in slots], np.int64)
        slot_block = np.asarray([bi for _, bi in slots], np.int64)
        inactive = slot_block[None, :] >= depths[:, slot_stage]
        for first in (1 + n_s, 1 + n_s + n_b, 1 + n_s + 2 * n_b):  # kernel, expand and pruning genes of slots
            block = v[:, first : first + n_b]
            block[inactive] = 0
        if self.schedules != "evolve":  # schedule genes follow from the architecture genes
            v[:, self.arch_length :] = 0
            return v
        ids = self.positions.workload_ids_by_position(v)
        active = np.ascontiguousarray(self.positions.active(v).T)
        genes = np.ascontiguousarray(v[:, self.arch_length :].T)
        effective = self.positions.effective_schedules_by_position(ids, active, genes)
        effective[~active] = 0
        v[:, self.arch_length :] = effective.T
        return v

    def to_genome(self, vector: np.ndarray) -> Genome:
        """The canonical :class:`Genome` of one vector (schedule genes kept)."""
        v = np.asarray(vector, dtype=np.int64)
        arch = Genome.from_vector(self.space, v[: self.arch_length]).canonical(self.space)
        return replace(arch, schedules=tuple(int(x) for x in v[self.arch_length :]))

    def from_genomes(self, genomes: list[Genome]) -> np.ndarray:
        """Vectors of ``genomes`` (missing schedule genes are 0)."""
        return self.latency_model.vectors(genomes)

    def arch_features(self, vectors: np.ndarray) -> np.ndarray:
        """One-hot architecture features (inactive blocks all-zero), the accuracy predictor's input."""
        return arch_one_hot(self.space, np.asarray(vectors)[:, : self.arch_length])


def arch_one_hot(space: SearchSpace, arch: np.ndarray) -> np.ndarray:
    """One-hot encoding of architecture vectors; genes of blocks beyond their stage's depth are zeroed."""
    arch = np.asarray(arch, dtype=np.int64)
    counts = np.asarray(choice_counts(space), dtype=np.int64)
    n, n_stages, n_slots = len(arch), space.num_stages, space.max_blocks
    keep = np.ones(arch.shape, dtype=bool)
    depth_index = arch[:, 1 : 1 + n_stages]
    for slot, (si, bi) in enumerate(space.block_slots()):
        depth = np.asarray(space.stages[si].depths, dtype=np.int64)[depth_index[:, si]]
        active = bi < depth
        for gene in range(3):  # kernel size, expand ratio, block pruning of this slot
            keep[:, 1 + n_stages + gene * n_slots + slot] = active
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    hot = offsets[None, :] + np.minimum(arch, counts[None, :] - 1)
    out = np.zeros((n, int(counts.sum())), dtype=np.float32)
    out[np.arange(n)[:, None], hot] = keep
    return out
