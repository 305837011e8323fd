"""Parameter count and peak inference memory of subnets, vectorized over populations.

Parameters are counted after BatchNorm folding (what the exported model stores): weights plus one
bias per output channel. Peak memory is float32 weights plus the largest set of activations alive
at once during a batch-1 inference: a kernel's input and output, plus the block input a residual
block keeps for its final add.
"""

from __future__ import annotations

import numpy as np

from codesign.latency.positions import PositionTable
from codesign.latency.workloads import Workload, kernel_activations

BYTES_PER_FLOAT = 4


def kernel_parameters(w: Workload) -> int:
    """Weights + folded biases of one kernel."""
    if w.kind == "conv":
        return w.in_channels * w.out_channels * w.kernel_size**2 + w.out_channels
    if w.kind == "depthwise":
        return w.out_channels * w.kernel_size**2 + w.out_channels
    return w.in_channels * w.out_channels + w.out_channels


class SubnetCosts:
    """Parameters and peak memory for genome vectors, by table lookup over kernel positions."""

    def __init__(self, positions: PositionTable) -> None:
        self.positions = positions
        self.params = np.asarray([kernel_parameters(w) for w in positions.workloads], dtype=np.int64)
        self.activations = np.asarray([kernel_activations(w) for w in positions.workloads], dtype=np.int64)
        self.block_input = np.asarray([w.in_channels * w.resolution**2 for w in positions.workloads], np.int64)
        names = [p.name for p in positions.positions]
        # depthwise kernels of residual blocks also keep the block input (the expand kernel's input) alive
        self.residual_pairs = []
        for p, position in enumerate(positions.positions):
            if position.name.endswith(".depthwise") and positions.position_block[p] > 0:
                self.residual_pairs.append((p, names.index(position.name.replace(".depthwise", ".expand"))))

    def parameter_counts(self, workload_ids: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Parameters of each subnet; arrays laid out ``(positions, N)``."""
        return np.where(active, self.params[workload_ids], 0).sum(axis=0)

    def peak_memory_bytes(self, workload_ids: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Weights + peak live activations of each subnet, in bytes (batch 1, float32); ``(positions, N)``."""
        live = self.activations[workload_ids]
        for dw, expand in self.residual_pairs:
            live[dw] += self.block_input[workload_ids[expand]]
        live = np.where(active, live, 0)
        return (self.parameter_counts(workload_ids, active) + live.max(axis=0)) * BYTES_PER_FLOAT
