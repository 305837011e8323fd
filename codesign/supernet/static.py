"""Static subnets: plain torch modules whose pruned layers are physically smaller (no masks).

A :class:`StaticSubnet` is what :meth:`ElasticSupernet.get_active_subnet` returns and what export
compiles. Its structure is fully described by :attr:`StaticSubnet.config` (JSON-ready), and
:meth:`StaticSubnet.build_from_config` rebuilds the same structure from that config alone.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from codesign.supernet.layers import make_activation


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional activation: the fused kernel TVM builds."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int, activation: str | None
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(make_activation(activation))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise kxk -> 1x1 project (+ residual when shapes allow)."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        activation: str,
        residual: bool,
    ) -> None:
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual block needs stride 1 and equal input/output widths")
        self.residual = residual
        self.expand = ConvBNAct(in_channels, mid_channels, 1, 1, 1, activation)
        self.depthwise = ConvBNAct(mid_channels, mid_channels, kernel_size, stride, mid_channels, activation)
        self.project = ConvBNAct(mid_channels, out_channels, 1, 1, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class StaticSubnet(nn.Module):
    """A standalone subnet. Input: ``(N, in_channels, resolution, resolution)`` normalised images."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self._config = copy.deepcopy(config)
        stem = config["stem"]
        self.stem = ConvBNAct(
            config["in_channels"], stem["out_channels"], stem["kernel_size"], stem["stride"], 1, stem["activation"]
        )
        self.blocks = nn.ModuleList(
            InvertedResidual(
                b["in_channels"],
                b["mid_channels"],
                b["out_channels"],
                b["kernel_size"],
                b["stride"],
                b["activation"],
                b["residual"],
            )
            for b in config["blocks"]
        )
        head = config["head"]
        self.head = ConvBNAct(head["in_channels"], head["out_channels"], 1, 1, 1, head["activation"])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(head["dropout"])
        self.classifier = nn.Linear(head["out_channels"], config["num_classes"])

    @property
    def config(self) -> dict[str, Any]:
        """The JSON-ready structure description."""
        return copy.deepcopy(self._config)

    @property
    def resolution(self) -> int:
        """Input resolution this subnet was chosen for."""
        return int(self._config["resolution"])

    @classmethod
    def build_from_config(cls, config: dict[str, Any]) -> StaticSubnet:
        """A new (randomly initialised) subnet with the structure ``config`` describes."""
        return cls(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.pool(self.head(x)).flatten(1)
        return self.classifier(self.dropout(x))
