"""Genomes: one point of a search space (architecture + pruning ratios + schedule choices).

A genome is plain, hashable data. Per block slot it holds a kernel size, an expand ratio and a
pruning ratio for the block's expanded channels; per stage a depth and a pruning ratio for the
stage's output width; and an input resolution. Slots beyond a stage's depth are inactive; they
keep valid values (so vectors have a fixed length) and :meth:`Genome.canonical` resets them.
``schedules`` holds per-layer schedule-candidate indices for the profiling and search stages;
it is empty when no schedule has been chosen (the target's default schedule is meant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from codesign.errors import GenomeError
from codesign.space.space import SearchSpace

GENOME_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Genome:
    """A point in a :class:`SearchSpace`; validate it with :meth:`validate`."""

    resolution: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    block_prune: tuple[float, ...]
    width_prune: tuple[float, ...]
    schedules: tuple[int, ...] = ()

    # ------------------------------------------------------------------ construction
    @classmethod
    def largest(cls, space: SearchSpace) -> Genome:
        """The biggest subnet: max resolution, depth, kernel, expand ratio; nothing pruned."""
        return cls(
            resolution=max(space.resolutions),
            depths=tuple(max(s.depths) for s in space.stages),
            kernel_sizes=tuple(max(space.stages[si].kernel_sizes) for si, _ in space.block_slots()),
            expand_ratios=tuple(max(space.stages[si].expand_ratios) for si, _ in space.block_slots()),
            block_prune=tuple(min(space.stages[si].block_prune_ratios) for si, _ in space.block_slots()),
            width_prune=tuple(min(s.width_prune_ratios) for s in space.stages),
        )

    @classmethod
    def smallest(cls, space: SearchSpace) -> Genome:
        """The smallest subnet: min resolution, depth, kernel, expand ratio; most pruned."""
        return cls(
            resolution=min(space.resolutions),
            depths=tuple(min(s.depths) for s in space.stages),
            kernel_sizes=tuple(min(space.stages[si].kernel_sizes) for si, _ in space.block_slots()),
            expand_ratios=tuple(min(space.stages[si].expand_ratios) for si, _ in space.block_slots()),
            block_prune=tuple(max(space.stages[si].block_prune_ratios) for si, _ in space.block_slots()),
            width_prune=tuple(max(s.width_prune_ratios) for s in space.stages),
        ).canonical(space)

    @classmethod
    def random(cls, space: SearchSpace, rng: np.random.Generator) -> Genome:
        """A genome drawn uniformly, each choice independently, from ``rng``."""

        def pick(options: tuple[Any, ...]) -> Any:
            return options[int(rng.integers(len(options)))]

        slots = space.block_slots()
        return cls(
            resolution=int(pick(space.resolutions)),
            depths=tuple(int(pick(s.depths)) for s in space.stages),
            kernel_sizes=tuple(int(pick(space.stages[si].kernel_sizes)) for si, _ in slots),
            expand_ratios=tuple(int(pick(space.stages[si].expand_ratios)) for si, _ in slots),
            block_prune=tuple(float(pick(space.stages[si].block_prune_ratios)) for si, _ in slots),
            width_prune=tuple(float(pick(s.width_prune_ratios)) for s in space.stages),
        )

    @classmethod
    def sized(cls, space: SearchSpace, level: float, rng: np.random.Generator, *, noise: float = 0.7) -> Genome:
        """A random genome of about ``level`` (0: the smallest, 1: the largest) in every choice.

        Each choice takes the option at ``level`` of its range from small to large (fewer blocks, lower
        resolution, smaller kernels and expand ratios, more pruning first), moved by Gaussian noise of
        ``noise`` options.
        """

        def pick(options: tuple[Any, ...], *, larger_is_smaller: bool = False) -> Any:
            ordered = sorted(options, reverse=larger_is_smaller)
            index = int(np.clip(np.rint(level * (len(ordered) - 1) + rng.normal(0.0, noise)), 0, len(ordered) - 1))
            return ordered[index]

        slots = space.block_slots()
        return cls(
            resolution=int(pick(space.resolutions)),
            depths=tuple(int(pick(s.depths)) for s in space.stages),
            kernel_sizes=tuple(int(pick(space.stages[si].kernel_sizes)) for si, _ in slots),
            expand_ratios=tuple(int(pick(space.stages[si].expand_ratios)) for si, _ in slots),
            block_prune=tuple(
                float(pick(space.stages[si].block_prune_ratios, larger_is_smaller=True)) for si, _ in slots
            ),
            width_prune=tuple(float(pick(s.width_prune_ratios, larger_is_smaller=True)) for s in space.stages),
        )

    # ------------------------------------------------------------------ queries
    def is_active(self, space: SearchSpace, slot: int) -> bool:
        """Whether block slot ``slot`` is part of the network (its index is below its stage's depth)."""
        stage_index, block_index = space.block_slots()[slot]
        return block_index < self.depths[stage_index]

    def active_slots(self, space: SearchSpace) -> list[int]:
        """Indices of the active block slots, in network order."""
        return [i for i in range(space.max_blocks) if self.is_active(space, i)]

    def stage_width(self, space: SearchSpace, stage_index: int) -> int:
        """Output channels of a stage after width pruning."""
        return space.kept_channels(space.stages[stage_index].out_channels, self.width_prune[stage_index])

    def mid_channels(self, space: SearchSpace, slot: int) -> int:
        """Expanded channels of a block slot after pruning."""
        si, bi = space.block_slots()[slot]
        full = space.block_full_input_channels(si, bi) * self.expand_ratios[slot]
        return space.kept_channels(full, self.block_prune[slot])

    def canonical(self, space: SearchSpace) -> Genome:
        """The same network with inactive slots reset to their first choice (equal nets, equal genomes)."""
        ks, es, ps = list(self.kernel_sizes), list(self.expand_ratios), list(self.block_prune)
        for slot, (si, bi) in enumerate(space.block_slots()):
            if bi >= self.depths[si]:
                stage = space.stages[si]
                ks[slot], es[slot], ps[slot] = (
                    stage.kernel_sizes[0],
                    stage.expand_ratios[0],
                    stage.block_prune_ratios[0],
                )
        return replace(self, kernel_sizes=tuple(ks), expand_ratios=tuple(es), block_prune=tuple(ps))

    def architecture(self, space: SearchSpace) -> Genome:
        """The canonical network without schedule genes: equal for every scheduling of the same subnet."""
        return replace(self, schedules=()).canonical(space)

    def validate(self, space: SearchSpace) -> Genome:
        """Raise :class:`GenomeError` naming the first gene that does not fit ``space``; return self."""
        n_stages, n_slots = space.num_stages, space.max_blocks
        for name, values, expected in (
            ("depths", self.depths, n_stages),
            ("width_prune", self.width_prune, n_stages),
            ("kernel_sizes", self.kernel_sizes, n_slots),
            ("expand_ratios", self.expand_ratios, n_slots),
            ("block_prune", self.block_prune, n_slots),
        ):
            if len(values) != expected:
                raise GenomeError(f"genome has {len(values)} {name} genes, space {space.name!r} needs {expected}")
        if self.resolution not in space.resolutions:
            raise GenomeError(
                f"resolution {self.resolution} is not in space {space.name!r} choices {list(space.resolutions)}"
            )
        for si, stage in enumerate(space.stages):
            if self.depths[si] not in stage.depths:
                raise GenomeError(f"stage {si} depth {self.depths[si]} is not one of {list(stage.depths)}")
            if self.width_prune[si] not in stage.width_prune_ratios:
                raise GenomeError(
                    f"stage {si} width pruning {self.width_prune[si]} is not one of {list(stage.width_prune_ratios)}"
                )
        for slot, (si, bi) in enumerate(space.block_slots()):
            stage = space.stages[si]
            where = f"block slot {slot} (stage {si}, block {bi})"
            if self.kernel_sizes[slot] not in stage.kernel_sizes:
                raise GenomeError(
                    f"{where} kernel size {self.kernel_sizes[slot]} is not one of {list(stage.kernel_sizes)}"
                )
            if self.expand_ratios[slot] not in stage.expand_ratios:
                raise GenomeError(
                    f"{where} expand ratio {self.expand_ratios[slot]} is not one of {list(stage.expand_ratios)}"
                )
            if self.block_prune[slot] not in stage.block_prune_ratios:
                raise GenomeError(
                    f"{where} pruning {self.block_prune[slot]} is not one of {list(stage.block_prune_ratios)}"
                )
        if any((not isinstance(s, int)) or s < 0 for s in self.schedules):
            raise GenomeError("schedule genes must be non-negative integers")
        return self

    # ------------------------------------------------------------------ encodings
    def to_vector(self, space: SearchSpace) -> np.ndarray:
        """Compact integer encoding: the index of every choice, then the schedule genes."""
        self.validate(space)
        slots = space.block_slots()
        parts = [space.resolutions.index(self.resolution)]
        parts += [s.depths.index(d) for s, d in zip(space.stages, self.depths)]
        parts += [space.stages[si].kernel_sizes.index(k) for (si, _), k in zip(slots, self.kernel_sizes)]
        parts += [space.stages[si].expand_ratios.index(e) for (si, _), e in zip(slots, self.expand_ratios)]
        parts += [space.stages[si].block_prune_ratios.index(p) for (si, _), p in zip(slots, self.block_prune)]
        parts += [s.width_prune_ratios.index(p) for s, p in zip(space.stages, self.width_prune)]
        parts += list(self.schedules)
        return np.asarray(parts, dtype=np.int64)

    @classmethod
    def from_vector(cls, space: SearchSpace, vector: Any) -> Genome:
        """Inverse of :meth:`to_vector`; raises :class:`GenomeError` on a bad vector."""
        v = [int(x) for x in np.asarray(vector).reshape(-1)]
        n_s, n_b = space.num_stages, space.max_blocks
        arch_len = 1 + 2 * n_s + 3 * n_b
        if len(v) < arch_len:
            raise GenomeError(f"genome vector has {len(v)} entries, space {space.name!r} needs at least {arch_len}")
        slots = space.block_slots()
        cursor = iter(v)

        def take(options: tuple[Any, ...]) -> Any:
            index = next(cursor)
            if not 0 <= index < len(options):
                raise GenomeError(f"genome vector index {index} is out of range for choices {list(options)}")
            return options[index]

        resolution = take(space.resolutions)
        depths = tuple(take(s.depths) for s in space.stages)
        kernels = tuple(take(space.stages[si].kernel_sizes) for si, _ in slots)
        expands = tuple(take(space.stages[si].expand_ratios) for si, _ in slots)
        bprune = tuple(take(space.stages[si].block_prune_ratios) for si, _ in slots)
        wprune = tuple(take(s.width_prune_ratios) for s in space.stages)
        return cls(resolution, depths, kernels, expands, bprune, wprune, tuple(cursor))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the schema version."""
        return {
            "schema_version": GENOME_SCHEMA_VERSION,
            "resolution": self.resolution,
            "depths": list(self.depths),
            "kernel_sizes": list(self.kernel_sizes),
            "expand_ratios": list(self.expand_ratios),
            "block_prune": list(self.block_prune),
            "width_prune": list(self.width_prune),
            "schedules": list(self.schedules),
        }

    def to_json(self) -> str:
        """One-line JSON."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Genome:
        """Parse the form written by :meth:`to_dict`; raises :class:`GenomeError` on malformed input."""
        if not isinstance(data, dict):
            raise GenomeError("a genome must be a JSON object")
        version = data.get("schema_version", GENOME_SCHEMA_VERSION)
        if not isinstance(version, int) or version > GENOME_SCHEMA_VERSION:
            raise GenomeError(f"genome schema_version {version!r} is not supported (max {GENOME_SCHEMA_VERSION})")
        try:
            return cls(
                resolution=int(data["resolution"]),
                depths=tuple(int(x) for x in data["depths"]),
                kernel_sizes=tuple(int(x) for x in data["kernel_sizes"]),
                expand_ratios=tuple(int(x) for x in data["expand_ratios"]),
                block_prune=tuple(float(x) for x in data["block_prune"]),
                width_prune=tuple(float(x) for x in data["width_prune"]),
                schedules=tuple(int(x) for x in data.get("schedules", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GenomeError(f"genome is missing or has a bad field: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> Genome:
        """Parse one JSON genome."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise GenomeError(f"genome is not valid JSON: {exc}") from None

    @classmethod
    def from_short(cls, space: SearchSpace, text: str) -> Genome:
        """Inverse of :meth:`short` (schedule genes are not part of the short form: none chosen)."""
        import re

        def fail(why: str) -> GenomeError:
            return GenomeError(f"short genome {text!r}: {why}")

        parts = [p.strip() for p in text.strip().split("|")]
        if len(parts) != space.num_stages + 1 or not re.fullmatch(r"r\d+", parts[0]):
            raise fail(f"expected 'r<resolution> | ' then {space.num_stages} stages like 'w25 k3e4p0 k5e6p25'")
        depths, widths, ks, es, ps = [], [], [], [], []
        for si, (stage, part) in enumerate(zip(space.stages, parts[1:], strict=True)):
            tokens = part.split()
            if not tokens or not re.fullmatch(r"w\d+", tokens[0]):
                raise fail(f"stage {si} must start with w<width pruning percent>")
            blocks = tokens[1:]
            if len(blocks) > stage.max_depth:
                raise fail(f"stage {si} has {len(blocks)} blocks, at most {stage.max_depth} fit")
            depths.append(len(blocks))
            widths.append(int(tokens[0][1:]) / 100)
            for bi in range(stage.max_depth):
                if bi < len(blocks):
                    m = re.fullmatch(r"k(\d+)e(\d+)p(\d+)", blocks[bi])
                    if not m:
                        raise fail(f"block {blocks[bi]!r} is not k<kernel>e<expand>p<pruning percent>")
                    ks.append(int(m[1]))
                    es.append(int(m[2]))
                    ps.append(int(m[3]) / 100)
                else:
                    ks.append(stage.kernel_sizes[0])
                    es.append(stage.expand_ratios[0])
                    ps.append(stage.block_prune_ratios[0])

        def snap(value: float, options: tuple[float, ...]) -> float:
            # percentages are rounded in the short form: map back to the space's exact ratio
            return next((o for o in options if round(o * 100) == round(value * 100)), value)

        slots = space.block_slots()
        genome = cls(
            resolution=int(parts[0][1:]),
            depths=tuple(depths),
            kernel_sizes=tuple(ks),
            expand_ratios=tuple(es),
            block_prune=tuple(snap(p, space.stages[si].block_prune_ratios) for p, (si, _) in zip(ps, slots)),
            width_prune=tuple(snap(w, s.width_prune_ratios) for w, s in zip(widths, space.stages)),
        )
        return genome.validate(space)

    def short(self, space: SearchSpace) -> str:
        """Human-readable one-liner: ``r28 | w0 k3e4p0 k5e6p25 | w25 ...`` (prune ratios in percent)."""
        parts = [f"r{self.resolution}"]
        slot = 0
        for si, stage in enumerate(space.stages):
            blocks = []
            for bi in range(stage.max_depth):
                if bi < self.depths[si]:
                    blocks.append(
                        f"k{self.kernel_sizes[slot]}e{self.expand_ratios[slot]}p{round(self.block_prune[slot] * 100)}"
                    )
                slot += 1
            parts.append(f"w{round(self.width_prune[si] * 100)} " + " ".join(blocks))
        return " | ".join(parts)
