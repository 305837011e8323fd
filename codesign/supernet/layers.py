"""Elastic (weight-sharing) layers: each holds the largest weights and slices what a subnet uses.

Slicing always keeps the *leading* channels. The supernet physically reorders channels by
importance (:mod:`codesign.supernet.importance`) so that the leading channels are the most
important ones; slicing and extraction therefore agree by construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_activation(name: str) -> nn.Module:
    """The activation module for a space's activation name."""
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "hswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}")


def center_crop_kernel(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The centred ``kernel_size`` x ``kernel_size`` window of a larger square kernel."""
    full = weight.shape[-1]
    start = (full - kernel_size) // 2
    return weight[..., start : start + kernel_size, start : start + kernel_size]


class ElasticConv2d(nn.Module):
    """A dense (groups=1) convolution without bias whose input and output widths shrink."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        """The weight slice of a subnet with the given widths."""
        return self.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        """Convolve ``x`` (its width picks the input slice) into ``out_channels`` channels."""
        w = self.active_weight(x.shape[1], out_channels)
        return F.conv2d(x, w, None, self.stride, self.kernel_size // 2)


class ElasticDepthwiseConv2d(nn.Module):
    """A depthwise convolution with elastic width and elastic (centre-cropped) kernel size."""

    def __init__(self, max_channels: int, max_kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.max_kernel_size, self.stride = max_kernel_size, stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, max_kernel_size, max_kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, channels: int, kernel_size: int) -> torch.Tensor:
        """The weight of a subnet: leading channels, centred kernel window."""
        return center_crop_kernel(self.weight[:channels], kernel_size)

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        """Depthwise-convolve ``x`` with the centred ``kernel_size`` window."""
        c = x.shape[1]
        return F.conv2d(x, self.active_weight(c, kernel_size), None, self.stride, kernel_size // 2, 1, c)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose statistics and affine parameters are sliced to the input's width.

    Sliced running statistics are views, so training updates the shared buffers in place.
    ``momentum=None`` gives a cumulative average (used by BN recalibration).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - documented on the class
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            # track_running_stats=True registers num_batches_tracked (and the running statistics)
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        running_mean: torch.Tensor | None = None
        running_var: torch.Tensor | None = None
        if not self.training or self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None, "BN without running statistics"
            running_mean, running_var = self.running_mean[:c], self.running_var[:c]
        return F.batch_norm(
            x,
            running_mean,
            running_var,
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            factor,
            self.eps,
        )
