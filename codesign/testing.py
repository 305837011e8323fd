"""Helpers for tests of codesign and of code built on it (shipped so that downstream tests can use them)."""

from __future__ import annotations

import numpy as np
import torch

from codesign.space import Genome, SearchSpace


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and statistics, so equality checks mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def random_genomes(space: SearchSpace, count: int, seed: int = 0) -> list[Genome]:
    """The largest and smallest genomes followed by ``count`` seeded random ones."""
    rng = np.random.default_rng(seed)
    return [Genome.largest(space), Genome.smallest(space)] + [Genome.random(space, rng) for _ in range(count)]
