import numpy as np
import pytest
import torch

from codesign.latency import enumerate_workloads, subnet_macs, subnet_workloads
from codesign.space import Genome, get_space
from codesign.supernet import ElasticSupernet
from codesign.testing import random_genomes


@pytest.mark.parametrize("space_name", ["fmnist_mbv3", "tiny"])
def test_every_subnet_workload_is_enumerated(space_name):
    space = get_space(space_name)
    catalogue = set(enumerate_workloads(space))
    for genome in random_genomes(space, 300, seed=5):
        missing = [w.key() for w in subnet_workloads(space, genome) if w not in catalogue]
        assert not missing


def test_workloads_match_the_static_module(default_space):
    net = ElasticSupernet(default_space).eval()
    for genome in random_genomes(default_space, 10, seed=6):
        sub = net.extract(genome)
        convs = [m for m in sub.modules() if isinstance(m, torch.nn.Conv2d)]
        layers = [w for w in subnet_workloads(default_space, genome) if w.kind != "pool_fc"]
        assert len(convs) == len(layers)
        for conv, w in zip(convs, layers):
            assert conv.in_channels == w.in_channels and conv.out_channels == w.out_channels
            assert conv.kernel_size == (w.kernel_size, w.kernel_size) and conv.stride == (w.stride, w.stride)
            assert (conv.groups > 1 and conv.groups == conv.in_channels) == (w.kind == "depthwise")


def test_macs_match_a_direct_count(default_space):
    net = ElasticSupernet(default_space).eval()
    genome = Genome.random(default_space, np.random.default_rng(2))
    sub = net.extract(genome)
    macs = 0
    hooks = []

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            macs += output.numel() * module.in_channels // module.groups * module.kernel_size[0] ** 2
        elif isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features

    for m in sub.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(count))
    with torch.no_grad():
        sub(torch.zeros(1, 1, genome.resolution, genome.resolution))
    pool = default_space.head.out_channels * subnet_workloads(default_space, genome)[-1].resolution ** 2
    assert subnet_macs(default_space, genome) == macs + pool
    assert subnet_macs(default_space, Genome.smallest(default_space)) < subnet_macs(
        default_space, Genome.largest(default_space)
    )
