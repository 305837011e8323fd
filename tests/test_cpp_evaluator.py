"""The C++ subnet evaluator against the torch reference (slicing, extraction, BN recalibration)."""

import numpy as np
import pytest
import torch

from codesign.evaluation import (
    CppSubnetEvaluator,
    TorchSubnetEvaluator,
    have_cpp_evaluator,
    predict_logits,
    recalibrate_bn,
)
from codesign.evaluation.cpp_evaluator import evaluator_isa, evaluator_isas, supernet_config
from codesign.space import Genome
from codesign.supernet import ElasticSupernet
from codesign.testing import random_genomes, randomize_batchnorm, run_cli

pytestmark = pytest.mark.skipif(not have_cpp_evaluator(), reason="codesign._kernels was built without the evaluator")

REL_TOL = 1e-4


def _supernet(space, seed=0):
    torch.manual_seed(seed)
    net = ElasticSupernet(space)
    randomize_batchnorm(net, seed)
    with torch.no_grad():  # non-trivial residual branches (project BN starts at zero)
        for block in net.blocks:
            block.project_bn.weight.uniform_(0.5, 1.5)
    return net.eval()


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.abs().max().item()
    assert scale > 0
    return (got - want).abs().max().item() / scale


@pytest.fixture(scope="module", params=["fmnist_mbv3", "tiny"])
def setup(request, fmnist_splits):
    from codesign.space import get_space

    space = get_space(request.param)
    net = _supernet(space)
    count = 30 if request.param == "fmnist_mbv3" else 20
    options = dict(calibration_images=96, calibration_batch_size=32, max_images=16)
    torch_eval = TorchSubnetEvaluator(net, fmnist_splits, **options)
    cpp_eval = CppSubnetEvaluator(net, fmnist_splits, **options)
    return space, net, random_genomes(space, count, seed=1), torch_eval, cpp_eval


def test_logits_match_sliced_supernet_without_recalibration(setup):
    space, net, genomes, torch_eval, cpp_eval = setup
    worst = 0.0
    for genome in genomes:
        images, _ = torch_eval._prepared("target", genome.resolution)
        net.set_active_subnet(genome)
        with torch.no_grad():
            want = net(images)
        worst = max(worst, _rel_err(cpp_eval.logits(genome, images, recalibrate=False), want))
    assert worst < REL_TOL


def test_logits_match_recalibrated_static_subnets(setup):
    space, net, genomes, torch_eval, cpp_eval = setup
    worst = 0.0
    for genome in genomes:
        images, _ = torch_eval._prepared("target", genome.resolution)
        want = predict_logits(torch_eval.subnet(genome), images)
        worst = max(worst, _rel_err(cpp_eval.logits(genome, images), want))
    assert worst < REL_TOL


@pytest.mark.parametrize("isa", evaluator_isas())
def test_every_instruction_set_this_cpu_runs_matches_torch(setup, isa):
    space, net, genomes, torch_eval, cpp_eval = setup
    worst = 0.0
    with evaluator_isa(isa):
        for genome in genomes[:8]:
            images, _ = torch_eval._prepared("target", genome.resolution)
            want = predict_logits(torch_eval.subnet(genome), images)
            worst = max(worst, _rel_err(cpp_eval.logits(genome, images), want))
    assert worst < REL_TOL


def test_instruction_set_is_restored_and_bad_names_refused():
    from codesign.evaluation.cpp_evaluator import active_evaluator_isa

    before = active_evaluator_isa()
    assert before in evaluator_isas() and evaluator_isas()[0] == "base"
    with evaluator_isa("base"):
        assert active_evaluator_isa() == "base"
    assert active_evaluator_isa() == before
    with pytest.raises(ValueError, match="not an instruction set this CPU runs"), evaluator_isa("sse9"):
        pass
    assert active_evaluator_isa() == before


def test_prepared_subnet_matches_per_call_logits(setup):
    space, net, genomes, torch_eval, cpp_eval = setup
    for genome in genomes[:4]:
        images, _ = torch_eval._prepared("target", genome.resolution)
        prepared = cpp_eval.prepare(genome)
        assert prepared.resolution == genome.resolution
        want = cpp_eval.logits(genome, images).numpy()
        for threads in (1, 2):
            np.testing.assert_array_equal(prepared.logits(images.numpy(), num_threads=threads), want)
        with pytest.raises(ValueError, match="shape"):
            prepared.logits(np.zeros((1, 1, genome.resolution + 1, genome.resolution), np.float32))


def test_partial_last_calibration_batch_and_team_threads(default_space):
    net = _supernet(default_space, seed=4)
    genome = Genome.random(default_space, np.random.default_rng(5))
    r = genome.resolution
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(40, 1, r, r, generator=g) * 1.5 + 0.3
    images = torch.randn(9, 1, r, r, generator=g)
    sub = net.extract(genome)
    recalibrate_bn(sub, calib, batch_size=16, num_batches=3)  # batches of 16, 16 and 8
    want = predict_logits(sub, images)
    weights = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    from codesign import _kernels

    ext = _kernels.SubnetEvaluator(supernet_config(net), weights)
    cfg = net.subnet_config(genome)
    plan = (r, [(b["slot"], b["mid_channels"], b["out_channels"], b["kernel_size"]) for b in cfg["blocks"]])
    for threads in (1, 2, 3):  # one request: the threads share each batch
        _, out = ext.run(
            [plan],
            {r: images.numpy()},
            calibration={r: calib.numpy()},
            calibration_batch_size=16,
            num_threads=threads,
            return_logits=True,
        )
        assert _rel_err(torch.from_numpy(out[0]), want) < REL_TOL


def _plan(net, genome):
    cfg = net.subnet_config(genome)
    return genome.resolution, [
        (b["slot"], b["mid_channels"], b["out_channels"], b["kernel_size"]) for b in cfg["blocks"]
    ]


def _variant(plan, from_block):
    """The same subnet with every block from `from_block` on given another kernel size."""
    resolution, blocks = plan
    changed = [
        (s, mid, out, 3 if k != 3 else 5) if i >= from_block else (s, mid, out, k)
        for i, (s, mid, out, k) in enumerate(blocks)
    ]
    return resolution, changed


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_shared_prefixes_give_the_same_results(default_space, threads):
    """Subnets with a common stem and leading blocks, computed once, score as if computed alone."""
    net = _supernet(default_space, seed=6)
    weights = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    from codesign import _kernels

    ext = _kernels.SubnetEvaluator(supernet_config(net), weights)
    bases = [_plan(net, g) for g in random_genomes(default_space, 3, seed=7)]
    plans = []
    for base in bases:
        depth = len(base[1])
        plans += [base, _variant(base, depth - 1), _variant(base, depth - 3), _variant(base, 0), base]
    g = torch.Generator().manual_seed(1)
    resolutions = sorted({p[0] for p in plans})
    images = {r: (torch.randn(20, 1, r, r, generator=g)).numpy() for r in resolutions}
    calib = {r: (torch.randn(40, 1, r, r, generator=g) * 1.5 + 0.3).numpy() for r in resolutions}
    labels = np.arange(20) % 10
    for calibration in (calib, None):
        results = {}
        for share in (False, True):
            results[share] = ext.run(
                plans,
                images,
                labels=labels,
                calibration=calibration,
                calibration_batch_size=16,  # batches of 16, 16 and 8
                num_threads=threads,
                return_logits=True,
                share_prefixes=share,
                return_sharing=True,
            )
        # per base: itself and its copy share everything, the variants their unchanged leading blocks
        want_depths = []
        for base in bases:
            depth = len(base[1])
            want_depths += [depth, depth - 1, depth - 3, 0, depth]
        np.testing.assert_array_equal(results[True][2], want_depths)
        np.testing.assert_array_equal(results[False][2], -1)
        np.testing.assert_array_equal(results[True][0], results[False][0])
        for got, want in zip(results[True][1], results[False][1]):
            assert _rel_err(torch.from_numpy(got), torch.from_numpy(want)) < 1e-5
    # fewer requests than threads: every thread works on each request and each shared prefix
    _, alone = ext.run([bases[0]], images, calibration=calib, calibration_batch_size=16, return_logits=True)
    _, pair = ext.run(
        [bases[0], bases[0]], images, calibration=calib, calibration_batch_size=16, num_threads=3, return_logits=True
    )
    for got in pair:
        assert _rel_err(torch.from_numpy(got), torch.from_numpy(alone[0])) < 1e-5


def test_accuracies_identical_on_real_data(default_space, fmnist_splits):
    net = _supernet(default_space, seed=2)
    options = dict(calibration_images=200, calibration_batch_size=100, max_images=300)
    genomes = random_genomes(default_space, 6, seed=3)
    want = TorchSubnetEvaluator(net, fmnist_splits, **options).evaluate_many(genomes)
    cpp = CppSubnetEvaluator(net, fmnist_splits, num_threads=2, **options)
    got = cpp.evaluate_many(genomes)
    np.testing.assert_array_equal(got, want)
    score = cpp.evaluate(genomes[3])
    assert score.accuracy == want[3] and score.images == 300 and score.split == "val"
    single = CppSubnetEvaluator(net, fmnist_splits, num_threads=1, **options)
    np.testing.assert_array_equal(single.correct_counts(genomes), cpp.correct_counts(genomes))


def test_bad_genomes_and_shapes_raise_value_error(tiny_space, fmnist_splits):
    from codesign import _kernels

    net = _supernet(tiny_space)
    cpp = CppSubnetEvaluator(net, fmnist_splits, calibration_images=32, calibration_batch_size=16, max_images=8)
    genome = Genome.largest(tiny_space)
    images = torch.zeros(2, 1, genome.resolution, genome.resolution)
    bad = [
        Genome(
            resolution=17,
            **{
                k: getattr(genome, k) for k in ("depths", "kernel_sizes", "expand_ratios", "block_prune", "width_prune")
            },
        ),
        Genome(
            genome.resolution, (2,), genome.kernel_sizes, genome.expand_ratios, genome.block_prune, genome.width_prune
        ),
        Genome(
            genome.resolution,
            genome.depths,
            (4,) * len(genome.kernel_sizes),
            genome.expand_ratios,
            genome.block_prune,
            genome.width_prune,
        ),
    ]
    for g in bad:
        with pytest.raises(ValueError):
            cpp.logits(g, images)
        with pytest.raises(ValueError):
            cpp.evaluate(g)
    for shape in [(2, 1, 16, 16), (2, 3, 20, 20), (20, 20), (2, 1, 20, 21)]:
        with pytest.raises(ValueError, match="shape"):
            cpp.logits(genome, torch.zeros(shape))

    weights = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ext = _kernels.SubnetEvaluator(supernet_config(net), weights)
    x = {20: np.zeros((2, 1, 20, 20), np.float32)}
    for plan, message in [
        ((20, [(9, 8, 8, 3)]), "out of range"),
        ((20, [(0, 999, 8, 3)]), "expanded width"),
        ((20, [(0, 8, 8, 4)]), "kernel size"),
        ((20, [(0, 8, 8, 3), (1, 8, 4, 3)]), "residual"),
        ((20, [(1, 8, 8, 3), (0, 8, 8, 3)]), "increasing"),
        ((24, [(0, 8, 8, 3)]), "no images at resolution"),
        ("nonsense", "must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            ext.run([plan], x)
    with pytest.raises(ValueError, match="calibration"):
        ext.run([(20, [(0, 8, 8, 3)])], x, calibration={20: np.zeros((3, 1, 16, 16), np.float32)})
    with pytest.raises(ValueError, match="labels"):
        ext.run([(20, [(0, 8, 8, 3)])], x, labels=np.zeros(3, np.int64))
    broken = dict(weights)
    broken["blocks.1.expand_conv.weight"] = np.zeros((3, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="blocks.1.expand_conv.weight"):
        _kernels.SubnetEvaluator(supernet_config(net), broken)
    del broken["head_bn.bias"]
    with pytest.raises(ValueError, match="missing"):
        _kernels.SubnetEvaluator(supernet_config(net), broken)


def test_shared_prefix_memory_cap_limits_what_is_kept(default_space):
    """share_memory_mb bounds the kept activations: shallowest prefixes first, results unchanged."""
    net = _supernet(default_space, seed=8)
    weights = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    from codesign import _kernels

    ext = _kernels.SubnetEvaluator(supernet_config(net), weights)
    base = _plan(net, random_genomes(default_space, 1, seed=9)[0])
    plans = [base, _variant(base, len(base[1]) - 1), base]
    r = base[0]
    g = torch.Generator().manual_seed(2)
    images = {r: torch.randn(12, 1, r, r, generator=g).numpy()}
    calib = {r: torch.randn(24, 1, r, r, generator=g).numpy()}
    stem = default_space.stem
    side = default_space.resolution_after(r, stem.stride)
    stem_mb = (12 + 24) * side * side * ((stem.out_channels + 7) // 8 * 8) * 4 / 2**20

    def run(**kwargs):
        return ext.run(
            plans,
            images,
            calibration=calib,
            calibration_batch_size=8,
            num_threads=2,
            return_logits=True,
            return_sharing=True,
            **kwargs,
        )

    unlimited, stem_only, nothing = run(), run(share_memory_mb=stem_mb), run(share_memory_mb=0.0)
    depth = len(base[1])
    np.testing.assert_array_equal(unlimited[2], [depth, depth - 1, depth])
    np.testing.assert_array_equal(stem_only[2], [0, 0, 0])  # the stem fits exactly, no block after it
    np.testing.assert_array_equal(nothing[2], [-1, -1, -1])
    for result in (stem_only, nothing):
        for got, want in zip(result[1], unlimited[1]):
            assert _rel_err(torch.from_numpy(got), torch.from_numpy(want)) < 1e-5
    with pytest.raises(ValueError, match="share_memory_mb"):
        run(share_memory_mb=-1.0)


def test_an_unknown_instruction_set_cap_is_a_one_line_error_before_any_work(tmp_path):
    # run_cli starts outside the source tree: a clone's tree has no compiled extension, so a child
    # started in it would score with torch and never read the cap
    run = run_cli(
        *("search", "--latency-ms", "0.35", "--allow-mismatch", "--generations", "1", "-o", str(tmp_path / "s")),
        env={"CODESIGN_EVAL_ISA": "neon"},
    )
    assert run.returncode != 0
    assert "CODESIGN_EVAL_ISA='neon' is not an instruction set this CPU runs" in run.stderr.strip().splitlines()[-1]
    assert "Traceback" not in run.stderr
    assert "evolution search" not in run.stderr, "the cap must be checked before the search runs"
    assert not (tmp_path / "s").exists()
