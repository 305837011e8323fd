"""The latency model: a profile's measured (and predicted) kernel tables, summed and calibrated per subnet.

``LatencyModel.from_profile(path)`` reads a hardware profile. A subnet's latency is

    layer_scale * sum(kernel latency under its schedule) + per_kernel_ms * kernels + constant_ms

where kernel latencies come from the profile's measurements (median), or, for kernel/schedule
pairs the budget did not measure, from the profile's fitted kernel predictor; and the three
calibration terms were fitted on whole subnets compiled and measured by the profiler (what the
per-layer sum misses: VM dispatch per kernel, graph-level overhead, cache effects).

Genes interact as the compiled model does: a kernel that is structurally equal to an earlier one
in the same subnet is compiled once, with the earlier one's schedule; a schedule that failed to
build for a kernel makes any subnet choosing it infinitely slow (never feasible); a pruning ratio
changes the kernel's shape and so its measured latency under each schedule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.latency.positions import PositionTable
from codesign.latency.workloads import Workload, kernel_family
from codesign.space import Genome, SearchSpace

MEASURED, PREDICTED, FAILED, UNVERIFIED = 1, 2, 3, 4


@dataclass(frozen=True)
class Calibration:
    """Whole-model correction of the per-kernel sum (fitted on compiled, measured subnets)."""

    layer_scale: float = 1.0
    per_kernel_ms: float = 0.0
    constant_ms: float = 0.0

    def apply(self, layer_sum_ms: np.ndarray, kernels: np.ndarray) -> np.ndarray:
        """Calibrated latency from per-kernel sums and kernel counts."""
        return self.layer_scale * layer_sum_ms + self.per_kernel_ms * kernels + self.constant_ms

    @classmethod
    def fit(cls, layer_sum_ms: np.ndarray, kernels: np.ndarray, measured_ms: np.ndarray) -> Calibration:
        """Least squares in relative error with non-negative terms (the best of every sign-feasible subset)."""
        s = np.asarray(layer_sum_ms, dtype=np.float64)
        k = np.asarray(kernels, dtype=np.float64)
        m = np.asarray(measured_ms, dtype=np.float64)
        if len(m) == 0:
            return cls()
        columns = [s, k, np.ones_like(s)]
        best, best_err = cls(), np.inf
        for subset in itertools.chain.from_iterable(itertools.combinations(range(3), r) for r in (1, 2, 3)):
            a = np.stack([columns[j] / m for j in subset], axis=1)
            coef, *_ = np.linalg.lstsq(a, np.ones_like(m), rcond=None)
            if np.any(coef < 0):
                continue
            err = float(np.sum((a @ coef - 1.0) ** 2))
            if err < best_err:
                full = [0.0, 0.0, 0.0]
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


def _median(result: dict[str, Any]) -> float | None:
    timing = result.get("timing")
    if result.get("status") != "ok" or not timing:
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
        self.arch_length = table.arch_length

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(
        cls,
        profile: Any,
        *,
        target: dict[str, Any] | None = None,
        allow_mismatch: bool = False,
    ) -> LatencyModel:
        """The model of a profile (a path or a loaded :class:`HardwareProfile`)."""
        from codesign.profile.profile_file import HardwareProfile, load_profile

        if not isinstance(profile, HardwareProfile):
            profile = load_profile(Path(profile), target=target, allow_mismatch=allow_mismatch).profile
        space = SearchSpace.from_dict(profile.space)
        families = dict(profile.tuning_records.get("families", {}))
        table, sources = kernel_table_from_profile(profile)
        fitted = profile.predictor or {}
        calibration = Calibration(**fitted.get("calibration", {}).get("terms", {}))
        return cls(space, families, table, sources, calibration, name=profile.device.name)

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
        v = np.asarray(vectors, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] < self.arch_length:
            raise CodesignError(f"genome vectors must be (N, >= {self.arch_length}), got {v.shape}")
        ids = self.positions.workload_ids_by_position(v)
        active = np.ascontiguousarray(self.positions.active(v).T)
        genes = np.zeros_like(ids)
        given = min(v.shape[1] - self.arch_length, self.num_positions)
        if given:
            genes[:given] = v[:, self.arch_length : self.arch_length + given].T
        genes = self.positions.effective_schedules_by_position(ids, active, genes)
        valid = (genes >= 0) & (genes < self.candidate_counts[:, None])
        latency = self.table[ids, np.clip(genes, 0, self.table.shape[1] - 1)]
        latency = np.where(valid & active, latency, np.where(active, np.inf, 0.0))
        return latency, active, ids

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated latency (ms) of each genome vector: the search's fast path."""
        latency, active, _ = self.layer_latencies_by_position(vectors)
        return self.calibration.apply(latency.sum(axis=0), active.sum(axis=0))

    def predict(self, genomes: Sequence[Genome] | np.ndarray) -> np.ndarray:
        """Calibrated latency (ms) of each genome (or of each row of a vector array)."""
        if isinstance(genomes, np.ndarray):
            return self.predict_vectors(genomes)
        return self.predict_vectors(self.vectors(list(genomes)))

    def layer_sum(self, genomes: Sequence[Genome]) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated per-kernel sums and kernel counts (what calibration is fitted on)."""
        latency, active = self.layer_latencies(self.vectors(list(genomes)))
        return latency.sum(axis=1), active.sum(axis=1)

    def fastest_schedule_genes(self, vectors: np.ndarray) -> np.ndarray:
        """``(N, positions)`` schedule genes putting every kernel of each vector at its fastest candidate.

        Predicted latency is a non-negatively weighted sum over kernels, so for given architecture and
        pruning genes these genes are the exact optimum of the schedule genes.
        """
        ids = self.positions.workload_ids_by_position(np.asarray(vectors, dtype=np.int64))
        genes = np.empty_like(ids)
        for count in np.unique(self.candidate_counts):
            best = np.argmin(self.table[:, :count], axis=1)
            rows = self.candidate_counts == count
            genes[rows] = best[ids[rows]]
        return np.ascontiguousarray(genes.T)

    def fastest_schedules(self, genome: Genome) -> Genome:
        """``genome`` with every kernel's schedule set to its fastest candidate in the profile."""
        genes = self.fastest_schedule_genes(self.vectors([genome]))[0]
        return Genome(**{**_fields(genome), "schedules": tuple(int(g) for g in genes)})

    def explain(self, genome: Genome) -> dict[str, Any]:
        """Per-kernel contributions to ``genome``'s predicted latency, plus the calibration terms."""
        v = self.vectors([genome])
        ids = self.positions.workload_ids(v)[0]
        active = self.positions.active(v)
        genes = np.zeros((1, self.num_positions), dtype=np.int64)
        genes[0, : v.shape[1] - self.arch_length] = v[0, self.arch_length :]
        effective = self.positions.effective_schedules(ids[None, :], active, genes)[0]
        latency, _ = self.layer_latencies(v)
        names = {0: "default", MEASURED: "measured", PREDICTED: "predicted", FAILED: "failed", UNVERIFIED: "unverified"}
        layers = []
        for p, position in enumerate(self.positions.positions):
            if not active[0, p]:
                continue
            shared = None
            if effective[p] != genes[0, p] or any(
                active[0, q] and ids[q] == ids[p] for q in self.positions.may_share[p]
            ):
                first = next((q for q in self.positions.may_share[p] if active[0, q] and ids[q] == ids[p]), None)
                shared = self.positions.positions[first].name if first is not None else None
            c = int(effective[p])
            options = self.families.get(position.family, [])
            layers.append(
                LayerContribution(
                    position=position.name,
                    workload=self.positions.workloads[ids[p]].key(),
                    schedule=c,
                    schedule_source=str(options[c]["source"]) if c < len(options) else "invalid",
                    latency_ms=float(latency[0, p]),
                    source=names.get(int(self.sources[ids[p], min(c, self.sources.shape[1] - 1)]), "?"),
                    shares_schedule_with=shared,
                    default_ms=float(self.table[ids[p], 0]),
                )
            )
        layer_sum = float(latency.sum())
        kernels = int(active.sum())
        return {
            "layers": [asdict(layer) for layer in layers],
            "layer_sum_ms": layer_sum,
            "kernels": kernels,
            "calibration": asdict(self.calibration),
            "predicted_ms": float(self.calibration.apply(np.asarray(layer_sum), np.asarray(kernels))),
        }


def _fields(genome: Genome) -> dict[str, Any]:
    return {
        "resolution": genome.resolution,
        "depths": genome.depths,
        "kernel_sizes": genome.kernel_sizes,
        "expand_ratios": genome.expand_ratios,
        "block_prune": genome.block_prune,
        "width_prune": genome.width_prune,
    }


def kernel_table_from_profile(profile: Any) -> tuple[dict[str, list[float | None]], dict[str, list[int]]]:
    """Per kernel key, latency (ms) per schedule candidate and where each value came from.

    Measured medians win; the profile's filled predictions cover what was not measured. A tuned
    schedule of a kernel the profiler never visited is UNVERIFIED (it may not replay on that
    shape), so it is never offered; the default lowering always compiles.
    """
    families = dict(profile.tuning_records.get("families", {}))
    fitted = profile.predictor or {}
    filled: dict[str, list[float]] = dict(fitted.get("filled", {}))
    table: dict[str, list[float | None]] = {}
    sources: dict[str, list[int]] = {}
    for key, filled_row in filled.items():
        table[key] = [float(x) for x in filled_row]
        sources[key] = [PREDICTED] + [UNVERIFIED] * (len(filled_row) - 1)
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
            else:  # "unmeasured": seen to replay, not timed; the filled prediction stands
                src[c] = PREDICTED
        table[record["key"]] = row
        sources[record["key"]] = src
    return table, sources
