"""The weight-sharing elastic supernet with a once-for-all style API."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codesign.space import Genome, SearchSpace
from codesign.supernet.layers import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    make_activation,
)
from codesign.supernet.static import InvertedResidual, StaticSubnet


class ElasticBlock(nn.Module):
    """An inverted-residual block holding the largest weights of its slot."""

    def __init__(
        self, max_in: int, max_mid: int, max_out: int, max_kernel: int, stride: int, activation: str, residual: bool
    ) -> None:
        super().__init__()
        self.stride, self.residual, self.activation_name = stride, residual, activation
        self.expand_conv = ElasticConv2d(max_in, max_mid, 1)
        self.expand_bn = ElasticBatchNorm2d(max_mid)
        self.depthwise_conv = ElasticDepthwiseConv2d(max_mid, max_kernel, stride)
        self.depthwise_bn = ElasticBatchNorm2d(max_mid)
        self.project_conv = ElasticConv2d(max_mid, max_out, 1)
        self.project_bn = ElasticBatchNorm2d(max_out)
        nn.init.zeros_(self.project_bn.weight) if residual else None
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor, mid: int, out: int, kernel_size: int) -> torch.Tensor:
        """Apply the block with the given expanded width, output width and kernel size."""
        y = self.act(self.expand_bn(self.expand_conv(x, mid)))
        y = self.act(self.depthwise_bn(self.depthwise_conv(y, kernel_size)))
        y = self.project_bn(self.project_conv(y, out))
        return x + y if self.residual else y


class ElasticSupernet(nn.Module):
    """All subnets of a :class:`SearchSpace`, sharing weights.

    ``set_active_subnet(genome)`` picks the subnet that ``forward`` runs;
    ``get_active_subnet()`` extracts it as a :class:`StaticSubnet` with physically smaller layers.
    Inputs to ``forward`` must already be at the active resolution (see :func:`resize_to`).
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        stem = space.stem
        self.stem_conv = ElasticConv2d(space.in_channels, stem.out_channels, stem.kernel_size, stem.stride)
        self.stem_bn = ElasticBatchNorm2d(stem.out_channels)
        self.stem_act = make_activation(stem.activation)
        blocks = []
        for si, bi in space.block_slots():
            stage = space.stages[si]
            blocks.append(
                ElasticBlock(
                    max_in=space.block_full_input_channels(si, bi),
                    max_mid=space.max_mid_channels(si, bi),
                    max_out=stage.out_channels,
                    max_kernel=max(stage.kernel_sizes),
                    stride=stage.stride if bi == 0 else 1,
                    activation=stage.activation,
                    residual=bi > 0,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        last = space.stages[-1].out_channels
        self.head_conv = ElasticConv2d(last, space.head.out_channels, 1)
        self.head_bn = ElasticBatchNorm2d(space.head.out_channels)
        self.head_act = make_activation(space.head.activation)
        self.dropout = nn.Dropout(space.head.dropout)
        self.classifier = nn.Linear(space.head.out_channels, space.num_classes)
        self.active_genome = Genome.largest(space)

    # ------------------------------------------------------------------ OFA-style API
    @property
    def config(self) -> dict[str, Any]:
        """The space description this supernet was built from (JSON-ready)."""
        return self.space.to_dict()

    @classmethod
    def build_from_config(cls, config: dict[str, Any]) -> ElasticSupernet:
        """A new supernet for the space described by ``config`` (as returned by :attr:`config`)."""
        return cls(SearchSpace.from_dict(config))

    def block(self, slot: int) -> ElasticBlock:
        """The elastic block of block slot ``slot``."""
        return cast(ElasticBlock, self.blocks[slot])

    def set_active_subnet(self, genome: Genome) -> None:
        """Make ``forward`` run ``genome``'s subnet; raises :class:`GenomeError` if it does not fit."""
        self.active_genome = genome.validate(self.space)

    def sample_active_subnet(self, rng: np.random.Generator | None = None) -> Genome:
        """Activate and return a uniformly random subnet."""
        genome = Genome.random(self.space, rng if rng is not None else np.random.default_rng())
        self.set_active_subnet(genome)
        return genome

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the active subnet for images already at its resolution."""
        g, space = self.active_genome, self.space
        x = self.stem_act(self.stem_bn(self.stem_conv(x, space.stem.out_channels)))
        for slot in g.active_slots(space):
            si, _ = space.block_slots()[slot]
            x = self.block(slot)(x, g.mid_channels(space, slot), g.stage_width(space, si), g.kernel_sizes[slot])
        x = self.head_act(self.head_bn(self.head_conv(x, space.head.out_channels)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(self.dropout(x))

    def subnet_config(self, genome: Genome | None = None) -> dict[str, Any]:
        """The :class:`StaticSubnet` structure of ``genome`` (default: the active one)."""
        g = (genome or self.active_genome).validate(self.space)
        space = self.space
        blocks = []
        in_ch = space.stem.out_channels
        for slot in g.active_slots(space):
            si, bi = space.block_slots()[slot]
            stage = space.stages[si]
            out_ch = g.stage_width(space, si)
            blocks.append(
                {
                    "slot": slot,
                    "in_channels": in_ch,
                    "mid_channels": g.mid_channels(space, slot),
                    "out_channels": out_ch,
                    "kernel_size": g.kernel_sizes[slot],
                    "stride": stage.stride if bi == 0 else 1,
                    "activation": stage.activation,
                    "residual": bi > 0,
                }
            )
            in_ch = out_ch
        return {
            "space": space.name,
            "genome": g.to_dict(),
            "resolution": g.resolution,
            "in_channels": space.in_channels,
            "num_classes": space.num_classes,
            "stem": {
                "out_channels": space.stem.out_channels,
                "kernel_size": space.stem.kernel_size,
                "stride": space.stem.stride,
                "activation": space.stem.activation,
            },
            "blocks": blocks,
            "head": {
                "in_channels": in_ch,
                "out_channels": space.head.out_channels,
                "activation": space.head.activation,
                "dropout": space.head.dropout,
            },
        }

    def get_active_subnet(self, preserve_weight: bool = True) -> StaticSubnet:
        """Extract the active subnet as a static module (weights and BN statistics copied if asked)."""
        cfg = self.subnet_config()
        subnet = StaticSubnet(cfg)
        if not preserve_weight:
            return subnet
        with torch.no_grad():
            _copy_conv_bn(
                subnet.stem,
                self.stem_conv.active_weight(self.space.in_channels, self.space.stem.out_channels),
                self.stem_bn,
            )
            for block_cfg, block in zip(cfg["blocks"], subnet.blocks):
                assert isinstance(block, InvertedResidual)  # StaticSubnet.blocks holds only InvertedResidual
                elastic = self.block(block_cfg["slot"])
                cin, mid, cout = block_cfg["in_channels"], block_cfg["mid_channels"], block_cfg["out_channels"]
                _copy_conv_bn(block.expand, elastic.expand_conv.active_weight(cin, mid), elastic.expand_bn)
                _copy_conv_bn(
                    block.depthwise,
                    elastic.depthwise_conv.active_weight(mid, block_cfg["kernel_size"]),
                    elastic.depthwise_bn,
                )
                _copy_conv_bn(block.project, elastic.project_conv.active_weight(mid, cout), elastic.project_bn)
            head = cfg["head"]
            _copy_conv_bn(
                subnet.head, self.head_conv.active_weight(head["in_channels"], head["out_channels"]), self.head_bn
            )
            subnet.classifier.weight.copy_(self.classifier.weight)
            subnet.classifier.bias.copy_(self.classifier.bias)
        subnet.train(self.training)
        return subnet

    def extract(self, genome: Genome, preserve_weight: bool = True) -> StaticSubnet:
        """Shorthand for ``set_active_subnet(genome)`` then ``get_active_subnet(...)``."""
        self.set_active_subnet(genome)
        return self.get_active_subnet(preserve_weight=preserve_weight)


def _copy_conv_bn(target: nn.Module, weight: torch.Tensor, bn: ElasticBatchNorm2d) -> None:
    conv = cast(nn.Conv2d, cast(nn.Sequential, target)[0])
    tbn = cast(nn.BatchNorm2d, cast(nn.Sequential, target)[1])
    c = weight.shape[0]
    conv.weight.copy_(weight)
    for name in ("weight", "bias", "running_mean", "running_var"):
        cast(torch.Tensor, getattr(tbn, name)).copy_(cast(torch.Tensor, getattr(bn, name))[:c])
    tbn.eps = bn.eps


def resize_to(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinearly resize a batch of images to ``resolution`` (no-op when already that size)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
