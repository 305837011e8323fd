"""Layer positions: the fixed kernel slots of a space's deepest network, looked up for whole populations.

Every subnet of a space is the deepest network with some blocks switched off, so its kernels sit
at fixed *positions*: the stem, then per block slot its expand, depthwise and project kernels, the
head and the pool + classifier tail. Schedule genes are indexed by position. For each position
this module finds which genes of the genome vector decide its workload (by varying each gene) and
tabulates the workload id for every combination of those genes, so the workloads of ``N`` genomes
are ``N`` integer lookups per position instead of ``N`` Python calls.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.latency.workloads import Workload, kernel_family, subnet_workloads
from codesign.space import Genome, SearchSpace


@dataclass(frozen=True)
class LayerPosition:
    """One kernel position: its name (``stem``, ``s3.expand``, ...), block slot (-1 outside blocks) and family."""

    name: str
    slot: int
    family: str


def choice_counts(space: SearchSpace) -> list[int]:
    """Number of choices of every column of ``space``'s genome vector (architecture part)."""
    slots = space.block_slots()
    counts = [len(space.resolutions)]
    counts += [len(s.depths) for s in space.stages]
    counts += [len(space.stages[si].kernel_sizes) for si, _ in slots]
    counts += [len(space.stages[si].expand_ratios) for si, _ in slots]
    counts += [len(space.stages[si].block_prune_ratios) for si, _ in slots]
    counts += [len(s.width_prune_ratios) for s in space.stages]
    return counts


class PositionTable:
    """Workload ids of every position for any genome vector of ``space`` (see the module docstring)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.counts = choice_counts(space)
        self.arch_length = len(self.counts)
        deepest = Genome.largest(space)
        base = deepest.to_vector(space)
        names = ["stem"]
        slots = [-1]
        for slot in range(space.max_blocks):
            for role in ("expand", "depthwise", "project"):
                names.append(f"b{slot}.{role}")
                slots.append(slot)
        names += ["head", "pool_fc"]
        slots += [-1, -1]
        reference = subnet_workloads(space, deepest)
        assert len(reference) == len(names), "workload order and positions disagree"
        self.positions = tuple(
            LayerPosition(n, s, kernel_family(w)) for n, s, w in zip(names, slots, reference, strict=True)
        )
        depth_columns = list(range(1, 1 + space.num_stages))
        # Which genes move each position's workload (depths only switch blocks on and off).
        dependencies: list[list[int]] = [[] for _ in names]
        for column, count in enumerate(self.counts):
            if column in depth_columns:
                continue
            for choice in range(count):
                if choice == base[column]:
                    continue
                varied = base.copy()
                varied[column] = choice
                layers = subnet_workloads(space, Genome.from_vector(space, varied))
                for p, (a, b) in enumerate(zip(reference, layers, strict=True)):
                    if a != b and column not in dependencies[p]:
                        dependencies[p].append(column)
        self.dependencies = [np.asarray(sorted(d), dtype=np.int64) for d in dependencies]
        workloads: dict[Workload, int] = {}
        self.lookup: list[np.ndarray] = []
        for p, deps in enumerate(self.dependencies):
            shape = [self.counts[c] for c in deps]
            table = np.empty(int(np.prod(shape)) if shape else 1, dtype=np.int64)
            for flat, combo in enumerate(itertools.product(*[range(n) for n in shape])):
                vector = base.copy()
                vector[deps] = combo
                w = subnet_workloads(space, Genome.from_vector(space, vector))[p]
                table[flat] = workloads.setdefault(w, len(workloads))
            self.lookup.append(table)
        self.strides = [
            np.asarray([int(np.prod([self.counts[c] for c in deps[i + 1 :]])) for i in range(len(deps))], np.int64)
            for deps in self.dependencies
        ]
        self.workloads = tuple(sorted(workloads, key=workloads.__getitem__))
        # Later positions that can compile to the same kernel as an earlier one share its schedule.
        possible = [set(t.tolist()) for t in self.lookup]
        self.may_share = [[q for q in range(p) if possible[q] & possible[p]] for p in range(len(names))]
        slot_stage = [si for si, _ in space.block_slots()]
        slot_block = [bi for _, bi in space.block_slots()]
        self.position_stage = np.asarray([slot_stage[s] if s >= 0 else -1 for s in slots], np.int64)
        self.position_block = np.asarray([slot_block[s] if s >= 0 else -1 for s in slots], np.int64)

    @property
    def num_positions(self) -> int:
        """Kernel positions of the deepest network (the length of a full schedule-gene vector)."""
        return len(self.positions)

    def workload_ids(self, vectors: np.ndarray) -> np.ndarray:
        """``(N, positions)`` workload ids (indices into :attr:`workloads`) of ``N`` genome vectors."""
        return self.workload_ids_by_position(vectors).T

    def workload_ids_by_position(self, vectors: np.ndarray) -> np.ndarray:
        """The same ids laid out ``(positions, N)`` (contiguous per position: the fast layout)."""
        columns = np.ascontiguousarray(np.asarray(vectors, dtype=np.int64)[:, : self.arch_length].T)
        out = np.empty((self.num_positions, columns.shape[1]), dtype=np.int64)
        for p, (deps, strides, table) in enumerate(zip(self.dependencies, self.strides, self.lookup, strict=True)):
            if not len(deps):
                out[p] = table[0]
                continue
            code = columns[deps[0]] * strides[0]
            for d, stride in zip(deps[1:], strides[1:], strict=True):
                code += columns[d] * stride
            out[p] = table[code]
        return out

    def active(self, vectors: np.ndarray) -> np.ndarray:
        """``(N, positions)`` booleans: which positions exist in each genome's subnet."""
        v = np.asarray(vectors, dtype=np.int64)
        depth_index = v[:, 1 : 1 + self.space.num_stages]
        depth_values = np.zeros_like(depth_index)
        for si, stage in enumerate(self.space.stages):
            depth_values[:, si] = np.asarray(stage.depths, dtype=np.int64)[depth_index[:, si]]
        out = np.ones((v.shape[0], self.num_positions), dtype=bool)
        blocks = self.position_stage >= 0
        out[:, blocks] = self.position_block[blocks][None, :] < depth_values[:, self.position_stage[blocks]]
        return out

    def effective_schedules(
        self,
        workload_ids: np.ndarray,
        active: np.ndarray,
        genes: np.ndarray,
        layout_of: np.ndarray | None = None,
    ) -> np.ndarray:
        """Schedule genes as compiled: a kernel equal to an earlier active one gets that one's schedule.

        TVM compiles structurally equal kernels once, with one schedule, so the first occurrence wins.
        A kernel in another data layout is another kernel: with ``layout_of`` (``(positions,
        candidates)`` layout ids, see :func:`candidate_layouts`) only equal workloads whose genes
        choose the same layout share. Arrays are ``(N, positions)``.
        """
        return self.effective_schedules_by_position(workload_ids.T, active.T, genes.T, layout_of).T

    def effective_schedules_by_position(
        self, ids: np.ndarray, active: np.ndarray, genes: np.ndarray, layout_of: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`effective_schedules` on ``(positions, N)`` arrays."""
        effective = np.array(genes, dtype=np.int64, order="C", copy=True)
        ids = np.ascontiguousarray(ids)
        if layout_of is not None and layout_of.any():
            chosen = np.clip(effective, 0, layout_of.shape[1] - 1)
            layouts = np.take_along_axis(layout_of, chosen, axis=1)
            ids = ids * (int(layout_of.max()) + 1) + layouts
        active = np.ascontiguousarray(active)
        for p, earlier in enumerate(self.may_share):
            for q in reversed(earlier):
                same = active[q] & (ids[q] == ids[p])
                np.copyto(effective[p], effective[q], where=same)
        return effective


def candidate_layouts(table: PositionTable, families: dict[str, list[dict[str, Any]]]) -> np.ndarray:
    """``(positions, max candidates)`` layout ids (see ``LAYOUT_NAMES``) of every position's schedule candidates.

    A candidate without a ``layout`` field (profiles made before layouts were candidates) is NCHW.
    """
    from codesign.latency.transposes import layout_id

    width = max([1, *(len(families.get(p.family, [])) for p in table.positions)])
    out = np.zeros((table.num_positions, width), dtype=np.int64)
    for p, position in enumerate(table.positions):
        for c, option in enumerate(families.get(position.family, [])):
            out[p, c] = layout_id(str(option.get("layout", "NCHW")))
    return out
