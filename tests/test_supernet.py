import numpy as np
import pytest
import torch

from codesign.space import Genome
from codesign.supernet import ElasticSupernet, StaticSubnet, reorganize_channels, resize_to
from codesign.testing import random_genomes, randomize_batchnorm


def _supernet(space, seed=0):
    torch.manual_seed(seed)
    net = ElasticSupernet(space)
    randomize_batchnorm(net, seed)
    return net.eval()


@pytest.mark.parametrize("space_name", ["fmnist_mbv3", "tiny"])
def test_slice_equals_extracted_static_module(space_name, request):
    space = request.getfixturevalue(f"{'default' if space_name == 'fmnist_mbv3' else 'tiny'}_space")
    net = _supernet(space)
    x = torch.randn(4, space.in_channels, 28, 28)
    for genome in random_genomes(space, 20, seed=1):
        net.set_active_subnet(genome)
        xi = resize_to(x, genome.resolution)
        with torch.no_grad():
            sliced = net(xi)
            static = net.get_active_subnet(preserve_weight=True).eval()(xi)
        scale = sliced.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(static, sliced, rtol=0, atol=1e-5 * max(1.0, scale))


def test_extracted_layers_are_physically_smaller(default_space):
    net = _supernet(default_space)
    genome = Genome.smallest(default_space)
    sub = net.extract(genome)
    assert all(not hasattr(m, "mask") for m in sub.modules())
    for block_cfg, block in zip(sub.config["blocks"], sub.blocks):
        assert block.expand[0].weight.shape == (block_cfg["mid_channels"], block_cfg["in_channels"], 1, 1)
        assert block.depthwise[0].weight.shape == (
            block_cfg["mid_channels"],
            1,
            genome.kernel_sizes[block_cfg["slot"]],
            genome.kernel_sizes[block_cfg["slot"]],
        )
        assert block.project[0].weight.shape == (block_cfg["out_channels"], block_cfg["mid_channels"], 1, 1)
    full = sum(p.numel() for p in net.extract(Genome.largest(default_space)).parameters())
    assert sum(p.numel() for p in sub.parameters()) < full / 5


def test_pruned_subnets_never_mismatch_channels(default_space):
    net = _supernet(default_space)
    for genome in random_genomes(default_space, 50, seed=2):
        cfg = net.subnet_config(genome)
        prev = cfg["stem"]["out_channels"]
        for b in cfg["blocks"]:
            assert b["in_channels"] == prev
            if b["residual"]:
                assert b["in_channels"] == b["out_channels"]
            prev = b["out_channels"]
        assert cfg["head"]["in_channels"] == prev


def test_build_from_config_round_trips(default_space):
    net = _supernet(default_space)
    clone = ElasticSupernet.build_from_config(net.config)
    assert clone.config == net.config
    assert clone.state_dict().keys() == net.state_dict().keys()
    genome = Genome.random(default_space, np.random.default_rng(0))
    sub = net.extract(genome)
    rebuilt = StaticSubnet.build_from_config(sub.config)
    assert rebuilt.config == sub.config
    rebuilt.load_state_dict(sub.state_dict())
    x = torch.randn(2, 1, genome.resolution, genome.resolution)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), sub.eval()(x))


def test_reorganize_keeps_the_function_and_orders_by_importance(default_space):
    from codesign.kernels import group_l1_importance

    net = _supernet(default_space, seed=3)
    with torch.no_grad():  # non-trivial residual branches
        for block in net.blocks:
            block.project_bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 1, 28, 28)
    net.set_active_subnet(Genome.largest(default_space))
    with torch.no_grad():
        before = net(x)
    applied = reorganize_channels(net)
    assert any(order != sorted(order) for order in applied.values())
    with torch.no_grad():
        after = net(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    block = net.blocks[0]
    rows = [
        block.expand_conv.weight.detach().reshape(block.expand_conv.weight.shape[0], -1).numpy(),
        block.depthwise_conv.weight.detach().reshape(block.depthwise_conv.weight.shape[0], -1).numpy(),
        block.project_conv.weight.detach().transpose(0, 1).reshape(block.project_conv.weight.shape[1], -1).numpy(),
    ]
    scores = group_l1_importance(rows)
    assert np.all(np.diff(scores) <= 1e-6), "leading channels must be the most important"


def test_bn_recalibration_changes_statistics_only(default_space):
    from codesign.evaluation import recalibrate_bn

    net = _supernet(default_space)
    sub = net.extract(Genome.smallest(default_space))
    weights = {k: v.clone() for k, v in sub.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = torch.randn(64, 1, 20, 20) * 2 + 1
    recalibrate_bn(sub, images, batch_size=16, num_batches=4)
    bn = sub.stem[1]
    with torch.no_grad():
        pre = sub.stem[0](images)
    torch.testing.assert_close(bn.running_mean, pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    for k, v in weights.items():
        torch.testing.assert_close(sub.state_dict()[k], v)
    assert not sub.training and bn.momentum == 0.1
