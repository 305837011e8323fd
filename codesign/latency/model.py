"""The latency model: a profile's measured (and predicted) kernel tables, summed and calibrated per subnet.

``LatencyModel.from_profile(path)`` reads a hardware profile. A subnet's latency is

    layer_scale * (sum(kernel latency under its schedule) + sum(transpose latency))
        + per_kernel_ms * (kernels + transposes) + per_transpose_ms * transposes
        + per_million_activations_ms * activations / 1e6 + constant_ms

where kernel latencies come from the profile's measurements (median), or, for kernel/schedule
pairs the budget did not measure, from the profile's fitted kernel predictor; and the three
calibration terms were fitted on whole subnets compiled and measured by the profiler (what the
per-layer sum misses: VM dispatch per kernel, graph-level overhead, cache effects). ``activations``
counts the elements every kernel of the subnet reads and writes: a kernel timed alone finds its
input in cache, one in a network reads what the previous kernel wrote, possibly on another core.

Genes interact as the compiled model does: a kernel that is structurally equal to an earlier one
in the same subnet is compiled once, with the earlier one's schedule; a schedule that failed to
build for a kernel makes any subnet choosing it infinitely slow (never feasible); a pruning ratio
changes the kernel's shape and so its measured latency under each schedule. A schedule candidate
also fixes its kernel's data layout (NCHW, or NHWC where the profile tuned it): wherever
neighbouring kernels differ in layout, the compiled model transposes the activation between them,
and the model adds that transpose's measured latency (see :func:`LatencyModel.transposes_by_position`
for exactly where the compiled graph puts them).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from codesign.compiler.layouts import fits_layout
from codesign.errors import CodesignError
from codesign.latency.positions import PositionTable, candidate_layouts
from codesign.latency.transposes import LAYOUT_NAMES, TransposeCosts, change_fits
from codesign.latency.workloads import Workload, kernel_activations, kernel_family
from codesign.space import Genome, SearchSpace

MEASURED, PREDICTED, FAILED, UNVERIFIED = 1, 2, 3, 4


@dataclass(frozen=True)
class Calibration:
    """Whole-model correction of the per-kernel sum (fitted on compiled, measured subnets).

    ``per_transpose_ms`` is what a transpose costs inside a network beyond its time measured alone;
    ``per_million_activations_ms`` what a million activation elements read and written by the
    network's kernels cost beyond their kernels' times measured alone (profiles fitted before it
    existed have 0).
    """

    layer_scale: float = 1.0
    per_kernel_ms: float = 0.0
    constant_ms: float = 0.0
    per_transpose_ms: float = 0.0
    per_million_activations_ms: float = 0.0

    def apply(
        self,
        layer_sum_ms: np.ndarray,
        kernels: np.ndarray,
        transposes: np.ndarray | float = 0.0,
        activations: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Calibrated latency from per-kernel sums, kernel counts (transposes included), transpose counts and
        activation elements."""
        return (
            self.layer_scale * layer_sum_ms
            + self.per_kernel_ms * kernels
            + self.per_transpose_ms * np.asarray(transposes)
            + self.per_million_activations_ms * np.asarray(activations) / 1e6
            + self.constant_ms
        )

    def scaled(self, factor: float) -> Calibration:
        """Every term multiplied by ``factor`` (a device running ``factor`` times its profile's time)."""
        return Calibration(**{name: value * factor for name, value in asdict(self).items()})

    @classmethod
    def fit(
        cls,
        layer_sum_ms: np.ndarray,
        kernels: np.ndarray,
        measured_ms: np.ndarray,
        transposes: np.ndarray | None = None,
        activations: np.ndarray | None = None,
    ) -> Calibration:
        """Least squares in relative error with non-negative terms (the best of every sign-feasible subset).

        The transpose term is fitted only when some of the models have transposes, the activation
        term only when ``activations`` are given.
        """
        s = np.asarray(layer_sum_ms, dtype=np.float64)
        k = np.asarray(kernels, dtype=np.float64)
        m = np.asarray(measured_ms, dtype=np.float64)
        t = np.zeros_like(s) if transposes is None else np.asarray(transposes, dtype=np.float64)
        a = np.zeros_like(s) if activations is None else np.asarray(activations, dtype=np.float64) / 1e6
        if len(m) == 0:
            return cls()
        columns = [s, k, np.ones_like(s), t, a]
        usable = [0, 1, 2] + ([3] if np.any(t > 0) else []) + ([4] if np.any(a > 0) else [])
        best, best_err = cls(), np.inf
        for subset in itertools.chain.from_iterable(
            itertools.combinations(usable, r) for r in range(1, len(usable) + 1)
        ):
            x = np.stack([columns[j] / m for j in subset], axis=1)
            coef, *_ = np.linalg.lstsq(x, np.ones_like(m), rcond=None)
            if np.any(coef < 0):
                continue
            err = float(np.sum((x @ coef - 1.0) ** 2))
            if err < best_err:
                full = [0.0, 0.0, 0.0, 0.0, 0.0]
                for j, c in zip(subset, coef, strict=True):
                    full[j] = float(c)
                best, best_err = cls(*full), err
        return best


@dataclass(frozen=True)
class LayerContribution:
    """One kernel's share of a subnet's predicted latency (see :meth:`LatencyModel.explain`)."""

    position: str
    workload: str
    schedule: int
    schedule_source: str
    latency_ms: float
    source: str
    shares_schedule_with: str | None
    default_ms: float  # the same kernel under TVM's default lowering: what its schedule buys
    layout: str = "NCHW"


NOISY_SPREAD = 0.25
"""A kernel timing whose repeats spread more than this (standard deviation over median) was disturbed while timed
(seen in a shipped profile: a 3 us kernel recorded at 4 ms, deviation 2 ms over 5 repeats, which timed again ran
2.9 us): the profiler times it once more, and a recorded timing still that spread is not trusted."""


def timing_disturbed(timing: dict[str, Any]) -> bool:
    """Whether a recorded kernel timing's repeats spread beyond :data:`NOISY_SPREAD` of their median."""
    return float(timing.get("std_ms", 0.0)) > NOISY_SPREAD * float(timing["median_ms"])


def _median(result: dict[str, Any]) -> float | None:
    """A result's median, or None when it failed, was not timed, or was disturbed (:func:`timing_disturbed`)."""
    timing = result.get("timing")
    if result.get("status") != "ok" or not timing or timing_disturbed(timing):
        return None
    return float(timing["median_ms"])


class LatencyModel:
    """Predicts compiled subnet latency from a hardware profile (see the module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        families: dict[str, list[dict[str, Any]]],
        kernel_table: dict[str, list[float | None]],
        kernel_sources: dict[str, list[int]],
        calibration: Calibration,
        *,
        name: str = "",
        transposes: TransposeCosts | None = None,
        untimed_margin: float = 0.0,
    ) -> None:
        self.space = space
        self.name = name
        self.families = families
        self.calibration = calibration
        self.positions = PositionTable(space)
        table = self.positions
        self.candidate_counts = np.asarray(
            [max(1, len(families.get(p.family, [None]))) for p in table.positions], dtype=np.int64
        )
        width = int(self.candidate_counts.max())
        self.activation_elements = np.asarray([kernel_activations(w) for w in table.workloads], dtype=np.float64)
        self.table = np.full((len(table.workloads), width), np.inf)
        self.sources = np.zeros((len(table.workloads), width), dtype=np.int8)
        missing = []
        for i, w in enumerate(table.workloads):
            row = kernel_table.get(w.key())
            if row is None:
                missing.append(w.key())
                continue
            for c, value in enumerate(row[:width]):
                source = kernel_sources.get(w.key(), [MEASURED] * len(row))[c]
                self.sources[i, c] = source
                if value is not None and source not in (FAILED, UNVERIFIED):
                    self.table[i, c] = float(value)
        if missing:
            raise CodesignError(
                f"the profile has no latency for {len(missing)} kernels of space {space.name!r} "
                f"(e.g. {missing[0]}); re-run `codesign profile` for this space"
            )
        self.default_lowered = np.zeros_like(self.table, dtype=bool)
        for i, w in enumerate(table.workloads):
            options = families.get(kernel_family(w), [])
            self.default_lowered[i] = [
                (options[c].get("source") == "default") if c < len(options) else c == 0 for c in range(width)
            ]
        # What schedule choices rest on: the profile's speed (see at_speed), and an untimed pair's latency
        # raised by the kernel predictor's typical error. The fastest of many predictions is the one most
        # likely under-predicted: a packed 1x1 candidate predicted at 4.3 us (measured neighbours 4.4-4.5 us)
        # ran 34x that (tools/time_kernel.py), and the search took it for every subnet with that kernel.
        self.untimed_margin = float(untimed_margin)
        self.choice_table = (
            np.where(self.sources == PREDICTED, self.table * (1.0 + self.untimed_margin), self.table)
            if self.untimed_margin
            else self.table
        )
        self.arch_length = table.arch_length
        self.layout_of = candidate_layouts(table, families)
        if self.layout_of.shape[1] < width:
            self.layout_of = np.pad(self.layout_of, ((0, 0), (0, width - self.layout_of.shape[1])))
        self.has_layouts = bool(self.layout_of.any())
        self.transposes = transposes
        self._program_cache: dict[
            tuple[int, ...], tuple[Calibration, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
        ] = {}
        if self.has_layouts:
            self._prepare_layouts(transposes)

    def _prepare_layouts(self, transposes: TransposeCosts | None) -> None:
        """Per workload: the cost of each layout change of its input and output, best kernel per layout.

        A packed candidate of a kernel whose channels do not divide into blocks cannot compile: it
        is marked failed (infinite latency), as is any layout change the profile did not time.
        """
        if not transposes:
            raise CodesignError(
                "the profile offers NHWC or packed schedules but holds no timings of layout changes; "
                "re-run `codesign profile`"
            )
        table = self.positions
        count, names = len(table.workloads), len(LAYOUT_NAMES)
        # layouts of each workload's candidates (the family is a property of the workload)
        by_workload = np.zeros((count, self.table.shape[1]), dtype=np.int64)
        first_position: dict[int, int] = {}
        for p in range(table.num_positions):
            for wid in set(table.lookup[p].tolist()):
                first_position.setdefault(wid, p)
        for wid, p in first_position.items():
            by_workload[wid] = self.layout_of[p]
        for i, w in enumerate(table.workloads):
            for lay, name in enumerate(LAYOUT_NAMES):
                if not fits_layout(name, w.in_channels, w.out_channels) and w.kind != "pool_fc":
                    misfit = by_workload[i] == lay
                    self.table[i, misfit] = np.inf
                    self.choice_table[i, misfit] = np.inf
                    self.sources[i, misfit] = FAILED
        present = sorted({int(x) for x in np.unique(self.layout_of)} - {0})
        self.layout_sets: list[tuple[int, ...]] = [(0, lay) for lay in present]
        # [workload, from, to]: changing the kernel's input (out: its output's shape, a residual
        # skip) between two layouts; inf where the profile has no such change or channels misfit
        self.transpose_in = np.full((count, names, names), np.inf)
        self.transpose_out = np.full((count, names, names), np.inf)
        changes = [(0, lay) for lay in present] + [(lay, 0) for lay in present]
        for i, w in enumerate(table.workloads):
            self.transpose_in[i, range(names), range(names)] = 0.0
            self.transpose_out[i, range(names), range(names)] = 0.0
            for a, b in changes:
                src, dst = LAYOUT_NAMES[a], LAYOUT_NAMES[b]
                if not transposes.has(src, dst):
                    continue
                if w.kind == "pool_fc":  # a head's pooled vector, back to NCHW for the classifier
                    if change_fits(w.in_channels, src, dst):
                        self.transpose_in[i, a, b] = transposes.ms(w.in_channels, 1, dst, src)
                    continue
                if change_fits(w.in_channels, src, dst):
                    self.transpose_in[i, a, b] = transposes.ms(w.in_channels, w.resolution, dst, src)
                if change_fits(w.out_channels, src, dst):
                    self.transpose_out[i, a, b] = transposes.ms(w.out_channels, w.out_resolution, dst, src)
        self.choice_transpose_in, self.choice_transpose_out = self.transpose_in, self.transpose_out
        self.residual = np.asarray([w.residual for w in table.workloads], dtype=bool)
        self.best_ms = np.full((count, len(LAYOUT_NAMES)), np.inf)
        self.best_gene = np.zeros((count, len(LAYOUT_NAMES)), dtype=np.int64)
        for lay in range(len(LAYOUT_NAMES)):
            masked = np.where(by_workload == lay, self.choice_table, np.inf)
            self.best_gene[:, lay] = np.argmin(masked, axis=1)
            self.best_ms[:, lay] = masked[np.arange(count), self.best_gene[:, lay]]
        self.roles = [p.name.rsplit(".", 1)[-1] for p in table.positions]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(
        cls,
        profile: Any,
        *,
        target: dict[str, Any] | None = None,
        allow_mismatch: bool = False,
        layouts: Sequence[str] | None = None,
    ) -> LatencyModel:
        """The model of a profile (a path or a loaded :class:`HardwareProfile`).

        ``layouts`` (e.g. ``("NCHW", "NHWC")``) offers only the schedule candidates of those layouts:
        for a runtime that should not use the others, or to measure what a layout buys.
        """
        from codesign.profile.profile_file import HardwareProfile, load_profile

        if not isinstance(profile, HardwareProfile):
            profile = load_profile(Path(profile), target=target, allow_mismatch=allow_mismatch).profile
        space = SearchSpace.from_dict(profile.space)
        families = dict(profile.tuning_records.get("families", {}))
        table, sources = kernel_table_from_profile(profile)
        if layouts is not None:
            for name in layouts:
                if name not in LAYOUT_NAMES:
                    raise CodesignError(f"unknown data layout {name!r}; use one of {', '.join(LAYOUT_NAMES)}")
            if "NCHW" not in layouts:
                raise CodesignError("the layouts offered must include NCHW (every kernel's default lowering)")
            for key, row in sources.items():
                for c, option in enumerate(families.get(_family_of_key(key), [])[: len(row)]):
                    if str(option.get("layout", "NCHW")) not in layouts:
                        row[c] = FAILED
        fitted = profile.predictor or {}
        calibration = Calibration(**fitted.get("calibration", {}).get("terms", {}))
        transposes = TransposeCosts.from_records(profile.transposes)
        return cls(
            space,
            families,
            table,
            sources,
            calibration,
            name=profile.device.name,
            transposes=transposes,
            untimed_margin=untimed_margin_of(profile),
        )

    def at_speed(self, factor: float, *, single_thread_factor: float | None = None) -> LatencyModel:
        """This model at the device's speed now, relative to its profile (from
        :func:`codesign.profile.speed_probe.probe_device_speed`); its choices do not change.

        Every prediction is multiplied by ``factor``, except that kernels at TVM's default lowering
        (layout changes included), which run on one thread, are multiplied by ``single_thread_factor``
        where given: on a shared machine one thread and all of them do not drift alike (measured on
        the CI machine class: whole subnets 1.29x their profile's time while default-lowered kernels
        alone ran 0.98x theirs).
        """
        for value in (factor, single_thread_factor if single_thread_factor is not None else factor):
            if not (np.isfinite(value) and value > 0):
                raise CodesignError(f"a speed factor must be a positive number, not {value}")
        scaled = copy.copy(self)
        scaled.calibration = self.calibration.scaled(factor)
        scaled._program_cache = {}
        if single_thread_factor is not None and single_thread_factor != factor:
            relative = single_thread_factor / factor
            scaled.table = np.where(self.default_lowered, self.table * relative, self.table)
            if self.has_layouts:
                scaled.transpose_in = self.transpose_in * relative
                scaled.transpose_out = self.transpose_out * relative
        return scaled

    # ------------------------------------------------------------------ encodings
    @property
    def num_positions(self) -> int:
        """Schedule genes in a full genome vector (one per kernel position)."""
        return self.positions.num_positions

    def vectors(self, genomes: Sequence[Genome]) -> np.ndarray:
        """``(N, arch + positions)`` integer vectors of ``genomes`` (missing schedule genes are 0: TVM default)."""
        out = np.zeros((len(genomes), self.arch_length + self.num_positions), dtype=np.int64)
        for i, g in enumerate(genomes):
            v = g.to_vector(self.space)
            n = min(len(v), out.shape[1])
            out[i, :n] = v[:n]
        return out

    # ------------------------------------------------------------------ prediction
    def layer_latencies(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per position latency (0 where inactive) and the active mask, both ``(N, positions)``."""
        latency, active, _ = self.layer_latencies_and_ids(vectors)
        return latency, active

    def layer_latencies_and_ids(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`layer_latencies` plus the workload ids (for cost lookups), all ``(N, positions)``."""
        latency, active, ids = self.layer_latencies_by_position(vectors)
        return latency.T, active.T, ids.T

    def layer_latencies_by_position(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latency, active mask and workload ids laid out ``(positions, N)`` (the fast layout)."""
        latency, active, ids, _ = self._by_position(vectors)
        return latency, active, ids

    def _by_position(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`layer_latencies_by_position` plus the effective schedule genes, all ``(positions, N)``."""
        v = np.asarray(vectors, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] < self.arch_length:
            raise CodesignError(f"genome vectors must be (N, >= {self.arch_length}), got {v.shape}")
        ids = self.positions.workload_ids_by_position(v)
        active = np.ascontiguousarray(self.positions.active(v).T)
        genes = np.zeros_like(ids)
        given = min(v.shape[1] - self.arch_length, self.num_positions)
        if given:
            genes[:given] = v[:, self.arch_length : self.arch_length + given].T
        layout_of = self.layout_of if self.has_layouts else None
        genes = self.positions.effective_schedules_by_position(ids, active, genes, layout_of)
        valid = (genes >= 0) & (genes < self.candidate_counts[:, None])
        latency = self.table[ids, np.clip(genes, 0, self.table.shape[1] - 1)]
        latency = np.where(valid & active, latency, np.where(active, np.inf, 0.0))
        return latency, active, ids, genes

    def layouts_by_position(self, genes: np.ndarray) -> np.ndarray:
        """``(positions, N)`` layout ids (indices into ``LAYOUT_NAMES``) the schedule genes choose."""
        chosen = np.clip(genes, 0, self.layout_of.shape[1] - 1)
        return np.take_along_axis(self.layout_of, chosen, axis=1)

    def transposes_by_position(
        self, ids: np.ndarray, active: np.ndarray, layouts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Layout changes the compiled subnets contain: their summed latency (ms) and count, each ``(N,)``.

        As :func:`codesign.compiler.layouts.apply_layouts` builds the graph (a test compares the
        counts on random subnets): a change wherever a convolution's input arrives in another
        layout (the image arrives NCHW), one of the block input wherever a residual projection's
        layout differs from it, and one of the pooled vector after a head not in NCHW. A subnet
        mixing NHWC with a packed layout does not compile: its latency is infinite.
        """
        n = ids.shape[1]
        total = np.zeros(n)
        count = np.zeros(n, dtype=np.int64)
        current = np.zeros(n, dtype=np.int64)
        block_input = current
        used = np.zeros((len(LAYOUT_NAMES), n), dtype=bool)
        for p, role in enumerate(self.roles):
            on = active[p]
            if role == "pool_fc":
                needed = on & (current != 0)
                total += np.where(needed, self.transpose_in[ids[p], current, 0], 0.0)
                count += needed
                continue
            lay = layouts[p]
            used[lay, np.arange(n)] |= on
            if role == "expand":
                block_input = current
            needed = on & (lay != current)
            total += np.where(needed, self.transpose_in[ids[p], current, lay], 0.0)
            count += needed
            if role == "project":
                skip = on & self.residual[ids[p]] & (block_input != lay)
                total += np.where(skip, self.transpose_out[ids[p], block_input, lay], 0.0)
                count += skip
            current = np.where(on, lay, current)
        if len(LAYOUT_NAMES) > 2:
            total = np.where(used[1] & used[2:].any(axis=0), np.inf, total)
        return total, count

    def terms(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Uncalibrated latency sum (kernels and transposes), kernel count (transposes included), transposes and
        activation elements the kernels read and write, each ``(N,)``: what :class:`Calibration` applies to."""
        return self._terms(*self._by_position(vectors))

    def predict_by_position(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated latency ``(N,)`` with the active mask and workload ids ``(positions, N)`` (for cost lookups)."""
        latency, active, ids, genes = self._by_position(vectors)
        terms = self._terms(latency, active, ids, genes, activations=self._calibration_uses_activations)
        return self.calibration.apply(*terms), active, ids

    @property
    def _calibration_uses_activations(self) -> bool:
        return self.calibration.per_million_activations_ms != 0.0

    def _terms(
        self, latency: np.ndarray, active: np.ndarray, ids: np.ndarray, genes: np.ndarray, *, activations: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four calibration terms; ``activations=False`` leaves the activation sum at zero (for a calibration
        without that term, where summing it is wasted work on the search's hot path)."""
        layer_sum = latency.sum(axis=0)
        kernels = active.sum(axis=0)
        activation_sum = (
            np.where(active, self.activation_elements[ids], 0.0).sum(axis=0)
            if activations
            else np.zeros_like(layer_sum)
        )
        if not self.has_layouts:
            return layer_sum, kernels, np.zeros_like(kernels), activation_sum
        transpose_ms, transposes = self.transposes_by_position(ids, active, self.layouts_by_position(genes))
        return layer_sum + transpose_ms, kernels + transposes, transposes, activation_sum

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated latency (ms) of each genome vector: the search's fast path."""
        terms = self._terms(*self._by_position(vectors), activations=self._calibration_uses_activations)
        return self.calibration.apply(*terms)

    def predict(self, genomes: Sequence[Genome] | np.ndarray) -> np.ndarray:
        """Calibrated latency (ms) of each genome (or of each row of a vector array)."""
        if isinstance(genomes, np.ndarray):
            return self.predict_vectors(genomes)
        return self.predict_vectors(self.vectors(list(genomes)))

    def layer_sum(self, genomes: Sequence[Genome]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Uncalibrated sums, kernel counts, transpose counts and activation elements (what calibration is fitted
        on)."""
        return self.terms(self.vectors(list(genomes)))

    def predicted_choices(self, genomes: Sequence[Genome]) -> dict[str, tuple[Workload, set[int]]]:
        """Per kernel key, the schedule candidates ``genomes`` use at a predicted (not measured) latency."""
        _, active, ids, genes = self._by_position(self.vectors(list(genomes)))
        chosen: dict[str, tuple[Workload, set[int]]] = {}
        for p, n in zip(*np.nonzero(active), strict=True):
            wid, c = int(ids[p, n]), int(genes[p, n])
            if self.sources[wid, c] == PREDICTED:
                w = self.positions.workloads[wid]
                chosen.setdefault(w.key(), (w, set()))[1].add(c)
        return chosen

    def random_schedules(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """``genome`` with every schedule gene drawn at random among the candidates its kernel can use.

        A candidate is usable where the profile saw it compile on that kernel (a finite table entry);
        with several layouts the genes stay within NCHW and one other layout drawn first (a network
        never mixes NHWC with packed kernels). What a search exploring schedule genes meets.
        """
        sets = self.layout_sets if self.has_layouts else []
        allowed = list(sets[int(rng.integers(len(sets)))]) if len(sets) > 1 else None
        ids = self.positions.workload_ids(self.vectors([genome]))[0]
        genes = []
        for p, n_candidates in enumerate(self.candidate_counts):
            usable = np.isfinite(self.table[ids[p], :n_candidates])
            if allowed is not None:
                usable &= np.isin(self.layout_of[p, :n_candidates], allowed)
            valid = np.flatnonzero(usable)
            genes.append(int(valid[rng.integers(len(valid))]) if len(valid) else 0)
        return replace(genome, schedules=tuple(genes))

    def fastest_schedule_genes(self, vectors: np.ndarray) -> np.ndarray:
        """``(N, positions)`` schedule genes minimizing each vector's predicted latency.

        For given architecture and pruning genes the predicted latency is a non-negatively weighted
        sum over kernels and layout changes. With one layout every kernel takes its fastest
        candidate; with several, a dynamic program over the blocks (state: the layout of the block's
        output) picks the layouts, and each kernel the fastest candidate of its layout. A network
        mixes NCHW with one other layout, so the program runs once per such pair and each vector
        takes the cheaper outcome. All exact, on the choice table: a pair the profile never timed
        counts :attr:`untimed_margin` slower than its prediction (see :func:`untimed_margin_of`).
        """
        ids = self.positions.workload_ids_by_position(np.asarray(vectors, dtype=np.int64))
        if self.has_layouts:
            active = np.ascontiguousarray(self.positions.active(np.asarray(vectors, dtype=np.int64)).T)
            best_genes, best_cost = self._layout_program(ids, active, self.layout_sets[0])
            for layouts in self.layout_sets[1:]:
                genes, cost = self._layout_program(ids, active, layouts)
                better = cost < best_cost
                best_genes = np.where(better[None, :], genes, best_genes)
                best_cost = np.minimum(cost, best_cost)
            return np.ascontiguousarray(best_genes.T)
        genes = np.empty_like(ids)
        for count in np.unique(self.candidate_counts):
            best = np.argmin(self.choice_table[:, :count], axis=1)
            rows = self.candidate_counts == count
            genes[rows] = best[ids[rows]]
        return np.ascontiguousarray(genes.T)

    def _program_tables(self, layouts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per workload, in calibrated ms over ``layouts``: the fastest kernel in each layout ``(W, L)``, a change
        into a kernel ``(W, from, to)`` (0 where none is needed), of a residual skip ``(W, from, to)`` (0 on the
        diagonal) and of the pooled vector back to NCHW ``(W, L)``. Cached per calibration (``at_speed`` copies)."""
        cached = self._program_cache.get(layouts)
        if cached is not None and cached[0] is self.calibration:
            return cached[1]
        c = self.calibration

        def scaled(ms: np.ndarray) -> np.ndarray:
            """``layer_scale * ms``, inf (never nan) where ``ms`` is inf: no such kernel or change."""
            return np.where(np.isfinite(ms), c.layer_scale * np.where(np.isfinite(ms), ms, 0.0), np.inf)

        def change(ms: np.ndarray) -> np.ndarray:
            return scaled(ms) + c.per_kernel_ms + c.per_transpose_ms

        chosen = np.asarray(layouts)
        same = np.eye(len(layouts), dtype=bool)[None, :, :]
        change_in = np.where(same, 0.0, change(self.choice_transpose_in[:, chosen][:, :, chosen]))
        change_out = np.where(same, 0.0, change(self.choice_transpose_out[:, chosen][:, :, chosen]))
        to_nchw = np.where(chosen[None, :] == 0, 0.0, change(self.choice_transpose_in[:, chosen, 0]))
        tables = (scaled(self.best_ms[:, chosen]), change_in, change_out, to_nchw)
        self._program_cache[layouts] = (self.calibration, tables)
        return tables

    def _layout_program(
        self, ids: np.ndarray, active: np.ndarray, layouts: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The dynamic program of :meth:`fastest_schedule_genes` over ``layouts`` (ids, NCHW first).

        Per block the state is (layout of the block input, layout of the last kernel): the input's
        layout decides whether the residual skip needs a change. Costs are in calibrated ms.
        Returns ``(positions, N)`` genes and each vector's cost (kernels and layout changes).
        """
        n = ids.shape[1]
        rows = np.arange(n)
        count = len(layouts)
        states = range(count)
        every = np.arange(count)[:, None]
        kernel_ms, change_in, change_out, to_nchw = self._program_tables(layouts)

        def enter(p: int, before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Cost and argmin over the previous state of running position ``p`` in each layout."""
            # (layout of p, previous layout, N)
            options = before[None, :, :] + change_in[ids[p]].transpose(2, 1, 0)
            came = np.argmin(options, axis=1)
            return options[every, came, rows[None, :]] + kernel_ms[ids[p]].T, came

        chosen = np.zeros((len(self.roles), n), dtype=np.int64)
        image = np.full((count, n), np.inf)
        image[0] = 0.0  # the image arrives NCHW
        cost, _ = enter(0, image)
        blocks: list[tuple[int, np.ndarray, list[np.ndarray], np.ndarray]] = []
        p = 1
        while self.roles[p] == "expand":
            on = active[p]
            # per block input layout a: the chain expand -> depthwise -> project
            track: list[np.ndarray] = []
            ends = np.empty((count, count, n))  # (input layout, project layout)
            for a in states:
                start = np.full((count, n), np.inf)
                start[a] = cost[a]
                after, came_e = enter(p, start)
                after, came_d = enter(p + 1, after)
                after, came_j = enter(p + 2, after)
                skip = np.where(self.residual[ids[p + 2]][None, :], change_out[ids[p + 2], a, :].T, 0.0)
                ends[a] = after + skip
                track.append(np.stack([came_d, came_j]))
            came_input = np.argmin(ends, axis=0)  # (project layout, N)
            new_cost = ends[came_input, every, rows[None, :]]
            cost = np.where(on[None, :], new_cost, cost)
            blocks.append((p, on, track, came_input))
            p += 3
        head, pool = p, p + 1
        head_cost, head_came = enter(head, cost)
        final = head_cost + to_nchw[ids[pool]].T
        state = np.argmin(final, axis=0)
        total = final[state, rows]
        chosen[head] = state
        state = head_came[state, rows]
        for first, on, track, came_input in reversed(blocks):
            project = state
            a = came_input[project, rows]
            came_d = np.stack([t[0] for t in track])  # (input layout, depthwise layout, N): expand layout
            came_j = np.stack([t[1] for t in track])  # (input layout, project layout, N): depthwise layout
            depthwise = came_j[a, project, rows]
            expand = came_d[a, depthwise, rows]
            for q, lay in ((first, expand), (first + 1, depthwise), (first + 2, project)):
                chosen[q] = np.where(on, lay, 0)
            state = np.where(on, a, state)
        chosen[0] = state
        genes = self.best_gene[ids, np.asarray(layouts)[chosen]]
        return np.where(active, genes, 0), total

    def fastest_schedules(self, genome: Genome) -> Genome:
        """``genome`` with every kernel's schedule set to its fastest candidate in the profile."""
        genes = self.fastest_schedule_genes(self.vectors([genome]))[0]
        return Genome(**{**_fields(genome), "schedules": tuple(int(g) for g in genes)})

    def explain(self, genome: Genome) -> dict[str, Any]:
        """Per-kernel contributions to ``genome``'s predicted latency, its transposes and the calibration terms."""
        v = self.vectors([genome])
        latency_p, active_p, ids_p, effective_p = self._by_position(v)
        latency, active, ids, effective = latency_p[:, 0], active_p[:, 0], ids_p[:, 0], effective_p[:, 0]
        layouts = self.layouts_by_position(effective_p)[:, 0]
        names = {0: "default", MEASURED: "measured", PREDICTED: "predicted", FAILED: "failed", UNVERIFIED: "unverified"}
        layers = []
        for p, position in enumerate(self.positions.positions):
            if not active[p]:
                continue
            same = [
                q for q in self.positions.may_share[p] if active[q] and ids[q] == ids[p] and layouts[q] == layouts[p]
            ]
            shared = self.positions.positions[same[0]].name if same else None
            c = int(effective[p])
            options = self.families.get(position.family, [])
            layers.append(
                LayerContribution(
                    position=position.name,
                    workload=self.positions.workloads[ids[p]].key(),
                    schedule=c,
                    schedule_source=str(options[c]["source"])
                    if c < len(options)
                    else ("default" if c == 0 else "invalid"),
                    latency_ms=float(latency[p]),
                    source=names.get(int(self.sources[ids[p], min(c, self.sources.shape[1] - 1)]), "?"),
                    shares_schedule_with=shared,
                    default_ms=float(self.table[ids[p], 0]),
                    layout=LAYOUT_NAMES[int(layouts[p])],
                )
            )
        layer_sum, kernels, transposes, activations = (float(x[0]) for x in self.terms(v))
        return {
            "layers": [asdict(layer) for layer in layers],
            "layer_sum_ms": layer_sum,
            "kernels": int(kernels),
            "transposes": int(transposes),
            "transpose_ms": layer_sum - float(latency.sum()),
            "activations": int(activations),
            "calibration": asdict(self.calibration),
            "predicted_ms": float(
                self.calibration.apply(np.asarray(layer_sum), np.asarray(kernels), transposes, activations)
            ),
        }


def untimed_margin_of(profile: Any) -> float:
    """How much slower than predicted an untimed kernel/schedule pair is taken to be when choosing schedules: the
    profile's kernel predictor's cross-validated RMSPE (0 without one). A pair the profile only predicted then wins
    a kernel only where it is predicted faster than the timed ones by more than the predictor's typical error."""
    validation = (profile.predictor or {}).get("kernel_validation", {}).get("all", {})
    rmspe = validation.get("rmspe")
    return float(rmspe) if isinstance(rmspe, (int, float)) and np.isfinite(rmspe) and rmspe > 0 else 0.0


def _fields(genome: Genome) -> dict[str, Any]:
    return {
        "resolution": genome.resolution,
        "depths": genome.depths,
        "kernel_sizes": genome.kernel_sizes,
        "expand_ratios": genome.expand_ratios,
        "block_prune": genome.block_prune,
        "width_prune": genome.width_prune,
    }


_KEY = re.compile(r"^(?P<kind>.+?)_i\d+_o\d+_r\d+_k\d+_s\d+_(?P<activation>.+?)(?P<residual>_res)?$")


def _family_of_key(key: str) -> str:
    """The kernel family of a workload key (see :meth:`Workload.key`), without the workload."""
    match = _KEY.match(key)
    if match is None:
        return ""
    residual = "residual" if match["residual"] else "plain"
    return f"{match['kind']}/{match['activation']}/{residual}"


def kernel_table_from_profile(profile: Any) -> tuple[dict[str, list[float | None]], dict[str, list[int]]]:
    """Per kernel key, latency (ms) per schedule candidate and where each value came from.

    Measured medians win, except timings disturbed while timed (:func:`timing_disturbed`); the profile's filled
    predictions cover those and what was not measured. A tuned
    schedule of a kernel the profiler never visited is UNVERIFIED (it may not replay on that
    shape), so it is never offered; a default lowering (in any layout) always compiles.
    """
    families = dict(profile.tuning_records.get("families", {}))
    fitted = profile.predictor or {}
    filled: dict[str, list[float]] = dict(fitted.get("filled", {}))
    table: dict[str, list[float | None]] = {}
    sources: dict[str, list[int]] = {}
    for key, filled_row in filled.items():
        table[key] = [float(x) for x in filled_row]
        options = families.get(_family_of_key(key), [])
        # a default lowering (of any layout) always compiles; a tuned trace may not replay on this shape
        sources[key] = [
            PREDICTED if c == 0 or (c < len(options) and options[c].get("trace") is None) else UNVERIFIED
            for c in range(len(filled_row))
        ]

    def options_of(family: str, candidate: int) -> dict[str, Any]:
        options = families.get(family, [])
        return options[candidate] if candidate < len(options) else {}

    for record in profile.measurements:
        workload = Workload.from_dict(record["workload"])
        count = max(1, len(families.get(kernel_family(workload), [None])))
        padding: list[float | None] = [None] * count
        row = (table.get(record["key"], padding) + padding)[:count]
        src = (sources.get(record["key"], [0] * count) + [0] * count)[:count]
        for result in record["results"]:
            c = int(result["candidate"])
            if c >= count:
                continue
            median = _median(result)
            if median is not None:
                row[c], src[c] = median, MEASURED
            elif result.get("status") == "failed":
                src[c] = FAILED
            elif result.get("status") == "ok":  # timed but disturbed: an earlier steady timing, else the prediction
                src[c] = MEASURED if src[c] == MEASURED else PREDICTED
            elif (option := options_of(record["family"], c)).get("layout", "NCHW") == "NHWC" and option.get("trace"):
                # an NHWC trace seen to replay but never built here: such replays have sent LLVM into
                # code generation that never ended, so only NHWC traces built and timed are offered
                # (packed replays have not: 0 build timeouts in the first NCHW8c profile, 2026-12-05)
                src[c] = UNVERIFIED
            else:  # "unmeasured": seen to replay, not timed; the filled prediction stands
                src[c] = PREDICTED
        table[record["key"]] = row
        sources[record["key"]] = src
    return table, sources
