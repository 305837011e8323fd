"""The fused layer workloads a subnet compiles to: what latency tables are keyed by.

TVM fuses each convolution with its folded BatchNorm, its activation and (for the projection of
a residual block) the residual add into one kernel; a subnet is a sequence of such kernels plus
the pooling + classifier tail. A :class:`Workload` describes one kernel by everything that changes
its compiled code and run time, so equal workloads share one measurement across all subnets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from codesign.space import Genome, SearchSpace

WorkloadKind = Literal["conv", "depthwise", "pool_fc"]


@dataclass(frozen=True, order=True)
class Workload:
    """One fused kernel: ``kind`` conv (dense, groups=1), depthwise, or pool_fc (global pool + linear)."""

    kind: WorkloadKind
    in_channels: int
    out_channels: int
    resolution: int
    kernel_size: int
    stride: int
    activation: str
    residual: bool = False

    @property
    def out_resolution(self) -> int:
        """Spatial size of the output."""
        return 1 if self.kind == "pool_fc" else (self.resolution + self.stride - 1) // self.stride

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one image (the FLOPs-proportional baseline uses 2x this)."""
        out_px = self.out_resolution**2
        if self.kind == "conv":
            return self.in_channels * self.out_channels * self.kernel_size**2 * out_px
        if self.kind == "depthwise":
            return self.out_channels * self.kernel_size**2 * out_px
        return self.in_channels * self.resolution**2 + self.in_channels * self.out_channels

    def key(self) -> str:
        """A stable, readable identifier, e.g. ``conv_i24_o144_r7_k1_s1_relu``."""
        tail = "_res" if self.residual else ""
        return (
            f"{self.kind}_i{self.in_channels}_o{self.out_channels}_r{self.resolution}_k{self.kernel_size}"
            f"_s{self.stride}_{self.activation}{tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def kernel_activations(w: Workload) -> int:
    """Input + output elements of one kernel (a residual projection also reads the block input)."""
    elems = w.in_channels * w.resolution**2 + w.out_channels * w.out_resolution**2
    if w.residual:
        elems += w.out_channels * w.out_resolution**2
    return elems


def kernel_family(workload: Workload) -> str:
    """Workloads of one family lower to the same fused operators, so schedules replay across them."""
    return f"{workload.kind}/{workload.activation}/{'residual' if workload.residual else 'plain'}"


def subnet_workloads(space: SearchSpace, genome: Genome) -> list[Workload]:
    """The kernels of ``genome``'s subnet, in execution order."""
    g = genome.validate(space)
    res = g.resolution
    stem = space.stem
    layers = [
        Workload("conv", space.in_channels, stem.out_channels, res, stem.kernel_size, stem.stride, stem.activation)
    ]
    res = layers[-1].out_resolution
    in_ch = stem.out_channels
    for slot in g.active_slots(space):
        si, bi = space.block_slots()[slot]
        stage = space.stages[si]
        mid, out = g.mid_channels(space, slot), g.stage_width(space, si)
        stride = stage.stride if bi == 0 else 1
        k = g.kernel_sizes[slot]
        layers.append(Workload("conv", in_ch, mid, res, 1, 1, stage.activation))
        layers.append(Workload("depthwise", mid, mid, res, k, stride, stage.activation))
        res = layers[-1].out_resolution
        layers.append(Workload("conv", mid, out, res, 1, 1, "none", residual=bi > 0))
        in_ch = out
    layers.append(Workload("conv", in_ch, space.head.out_channels, res, 1, 1, space.head.activation))
    layers.append(Workload("pool_fc", space.head.out_channels, space.num_classes, res, 1, 1, "none"))
    return layers


def enumerate_workloads(space: SearchSpace) -> list[Workload]:
    """Every distinct kernel any subnet of ``space`` can contain (sorted)."""
    found: set[Workload] = set()
    divisor_widths = {
        si: sorted({space.kept_channels(s.out_channels, p) for p in s.width_prune_ratios})
        for si, s in enumerate(space.stages)
    }
    for res0 in space.resolutions:
        stem = space.stem
        first = Workload(
            "conv", space.in_channels, stem.out_channels, res0, stem.kernel_size, stem.stride, stem.activation
        )
        found.add(first)
        res = first.out_resolution
        in_widths = [stem.out_channels]
        for si, stage in enumerate(space.stages):
            out_res = (res + stage.stride - 1) // stage.stride
            for bi in range(stage.max_depth):
                full_in = space.block_full_input_channels(si, bi)
                mids = sorted(
                    {space.kept_channels(full_in * e, p) for e in stage.expand_ratios for p in stage.block_prune_ratios}
                )
                stride = stage.stride if bi == 0 else 1
                block_res = res if bi == 0 else out_res
                ins = in_widths if bi == 0 else divisor_widths[si]
                for out in divisor_widths[si]:
                    for cin in ins if bi == 0 else [out]:
                        for mid in mids:
                            found.add(Workload("conv", cin, mid, block_res, 1, 1, stage.activation))
                            for k in stage.kernel_sizes:
                                found.add(Workload("depthwise", mid, mid, block_res, k, stride, stage.activation))
                            found.add(Workload("conv", mid, out, out_res, 1, 1, "none", residual=bi > 0))
            res = out_res
            in_widths = divisor_widths[si]
        for cin in in_widths:
            found.add(Workload("conv", cin, space.head.out_channels, res, 1, 1, space.head.activation))
        found.add(Workload("pool_fc", space.head.out_channels, space.num_classes, res, 1, 1, "none"))
    return sorted(found)


def subnet_macs(space: SearchSpace, genome: Genome) -> int:
    """Multiply-accumulates of one image through ``genome``'s subnet (the FLOPs baseline's measure)."""
    return sum(w.macs for w in subnet_workloads(space, genome))
