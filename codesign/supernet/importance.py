"""Importance-ordered channels: rank each dependency group and physically reorder its weights.

Criterion: for every channel of a dependency group, the sum over the group's weight tensors of
that channel's L1 norm, each tensor normalised by its mean channel norm (computed by the C++
kernel :func:`codesign.kernels.group_l1_importance`). Channels are then permuted so that the most
important come first; since subnets keep the leading channels, slicing and extraction keep
exactly the top-k channels. The permutation is applied to every tensor of the group at once
(and to optimizer state), so the function computed by the supernet does not change.

Dependency groups:
* a block's expanded channels: expand conv outputs, its BN, the depthwise conv and its BN, and
  the project conv inputs;
* a stage's output width: every block's project conv outputs and BN (the residual chain), the
  expand conv inputs of the stage's later blocks, and the next stage's (or the head's) input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from codesign.kernels import group_l1_importance, rank_channels
from codesign.supernet.supernet import ElasticSupernet


@dataclass(frozen=True)
class _Member:
    tensor: torch.Tensor
    axis: int


def _bn_members(bn: nn.BatchNorm2d) -> list[_Member]:
    # the supernet's BNs track running statistics, so the buffers exist
    assert bn.running_mean is not None and bn.running_var is not None, "BN without running statistics"
    return [_Member(t, 0) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]


def _channel_rows(member: _Member) -> np.ndarray:
    t = member.tensor.detach()
    return t.transpose(0, member.axis).reshape(t.shape[member.axis], -1).cpu().numpy()


def _apply_permutation(members: list[_Member], order: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
    with torch.no_grad():
        for m in members:
            m.tensor.copy_(m.tensor.index_select(m.axis, order))
            if optimizer is not None and isinstance(m.tensor, nn.Parameter) and m.tensor in optimizer.state:
                for value in optimizer.state[m.tensor].values():
                    if isinstance(value, torch.Tensor) and value.shape == m.tensor.shape:
                        value.copy_(value.index_select(m.axis, order))


def _reorder_group(
    scored: list[_Member], members: list[_Member], optimizer: torch.optim.Optimizer | None
) -> np.ndarray:
    scores = group_l1_importance([_channel_rows(m) for m in scored])
    order = rank_channels(scores)
    _apply_permutation(members, torch.as_tensor(order, dtype=torch.long), optimizer)
    return order


def reorganize_channels(
    supernet: ElasticSupernet, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, list[int]]:
    """Reorder every dependency group by importance, in place; returns the permutation applied per group."""
    space = supernet.space
    applied: dict[str, list[int]] = {}
    for slot in range(len(supernet.blocks)):
        block = supernet.block(slot)
        scored = [
            _Member(block.expand_conv.weight, 0),
            _Member(block.depthwise_conv.weight, 0),
            _Member(block.project_conv.weight, 1),
        ]
        members = scored + _bn_members(block.expand_bn) + _bn_members(block.depthwise_bn)
        applied[f"block{slot}.mid"] = _reorder_group(scored, members, optimizer).tolist()
    slots = space.block_slots()
    for si in range(space.num_stages):
        in_stage = [slot for slot, (s, _) in enumerate(slots) if s == si]
        scored = [_Member(supernet.block(slot).project_conv.weight, 0) for slot in in_stage]
        consumers = [_Member(supernet.block(slot).expand_conv.weight, 1) for slot in in_stage[1:]]
        if si + 1 < space.num_stages:
            next_first = next(slot for slot, (s, b) in enumerate(slots) if s == si + 1 and b == 0)
            consumers.append(_Member(supernet.block(next_first).expand_conv.weight, 1))
        else:
            consumers.append(_Member(supernet.head_conv.weight, 1))
        members = scored + consumers
        for slot in in_stage:
            members += _bn_members(supernet.block(slot).project_bn)
        applied[f"stage{si}.width"] = _reorder_group(scored + consumers, members, optimizer).tolist()
    return applied
