"""BN recalibration: recompute BatchNorm running statistics of one subnet on a few training batches.

Weight sharing leaves each subnet with BN statistics that belong to no subnet in particular, so
every subnet is recalibrated before it is evaluated (as in once-for-all).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(module: nn.Module, images: torch.Tensor, *, batch_size: int = 256, num_batches: int = 8) -> int:
    """Reset and re-estimate every BatchNorm's running mean/variance as an exact average over batches.

    ``images`` must already be normalised and at the module's resolution. Returns the number of
    images used. The module's train/eval mode and BN momenta are restored afterwards.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(bn, bn.momentum) for bn in bns]
    was_training = module.training
    used = min(len(images), batch_size * num_batches)
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        module.train()
        for start in range(0, used, batch_size):
            module(images[start : min(used, start + batch_size)])
    finally:
        for bn, momentum in saved:
            bn.momentum = momentum
        module.train(was_training)
    return used
