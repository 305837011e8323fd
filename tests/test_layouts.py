"""Per-kernel data layouts: compiled for real on this CPU, checked against the all-NCHW model."""

import numpy as np
import pytest

from codesign.compiler.layouts import apply_layouts, conv_calls, fits_layout, layout_transforms
from codesign.compiler.tvm_compile import subnet_relax_module
from codesign.latency.workloads import subnet_workloads
from codesign.profile.tvm_backend import host_llvm_target, workload_tasks
from codesign.space import Genome


@pytest.fixture(scope="module")
def small_subnet(default_space):
    genome = Genome.smallest(default_space)
    return default_space, genome, subnet_relax_module(default_space, genome)


def _run(mod, x):
    import tvm
    from tvm import relax

    executable = tvm.compile(mod, target=tvm.target.Target(host_llvm_target(1)))
    return relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _packed(w, *, block=4):
    """NCHW{block}c where ``w``'s channels allow it, else NCHW."""
    return f"NCHW{block}c" if fits_layout(f"NCHW{block}c", w.in_channels, w.out_channels) else "NCHW"


def _layouts(space, genome, nhwc_kinds):
    """The subnet's convolutions and their layouts: NHWC for ``nhwc_kinds`` (``"random"``: a seeded coin
    each; ``"packed"``: NCHW4c wherever the channels allow; ``"packed, residual NCHW"``: NCHW4c where the
    channels allow except residual projections (a packed skip added to an NCHW convolution); ``"all"``:
    a seeded draw of all four)."""
    convs = [w for w in subnet_workloads(space, genome) if w.kind != "pool_fc"]
    if nhwc_kinds == "random":
        coins = np.random.default_rng(5).random(len(convs))
        return convs, ["NHWC" if coin < 0.5 else "NCHW" for coin in coins]
    if nhwc_kinds == "packed":
        return convs, [_packed(w) for w in convs]
    if nhwc_kinds == "packed, residual NCHW":
        return convs, ["NCHW" if w.residual else _packed(w) for w in convs]
    if nhwc_kinds == "all":
        draws = np.random.default_rng(7).integers(0, 3, len(convs))
        return convs, [("NCHW", "NHWC", _packed(w))[d] for w, d in zip(convs, draws, strict=True)]
    return convs, ["NHWC" if w.kind in nhwc_kinds else "NCHW" for w in convs]


def test_layouts_change_speed_not_values_and_transpose_only_where_they_change(small_subnet):
    from tvm import relax

    space, genome, raw = small_subnet
    x = np.random.default_rng(0).standard_normal((1, space.in_channels, genome.resolution, genome.resolution))
    x = x.astype("float32")
    reference = _run(raw, x)
    assert apply_layouts(raw, ["NCHW"] * len(conv_calls(raw))) is raw
    assert layout_transforms(relax.transform.FoldConstant()(raw)) == 0  # the classifier's transpose is folded
    convs, everything = _layouts(space, genome, {"conv", "depthwise"})
    all_nhwc = apply_layouts(raw, everything)
    assert layout_transforms(all_nhwc) == 2  # the image into the stem, the pooled vector (1x1) back
    _, depthwise_only = _layouts(space, genome, {"depthwise"})
    mixed = apply_layouts(raw, depthwise_only)
    assert layout_transforms(mixed) == 2 * depthwise_only.count("NHWC")  # into and out of each
    _, packed = _layouts(space, genome, "packed")
    assert {"NCHW4c", "NCHW"} <= set(packed)
    all_packed = apply_layouts(raw, packed)
    _, residual_nchw = _layouts(space, genome, "packed, residual NCHW")
    packed_skips = apply_layouts(raw, residual_nchw)
    _, four = _layouts(space, genome, "all")
    assert len(set(four)) >= 3
    with pytest.raises(ValueError, match="not NHWC with packed ones"):
        apply_layouts(raw, four)
    for mod in (all_nhwc, mixed, all_packed, packed_skips):
        np.testing.assert_allclose(_run(mod, x), reference, rtol=1e-5, atol=1e-5)


def test_packed_layouts_match_onnxruntime_on_real_weights(default_space, tmp_path):
    """Random-weight subnets barely depend on their input; the shipped supernet's weights do."""
    import onnx
    import onnxruntime as ort
    import torch
    from tvm.relax.frontend.onnx import from_onnx

    from codesign.supernet.weights import load_supernet

    genome = Genome.smallest(default_space)
    module = load_supernet().supernet.extract(genome).eval()
    path = tmp_path / "s.onnx"
    shape = (1, 1, genome.resolution, genome.resolution)
    inputs = [np.random.default_rng(seed).standard_normal(shape).astype("float32") for seed in (3, 4)]
    torch.onnx.export(module, (torch.from_numpy(inputs[0]),), str(path), opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wants = [session.run(None, {session.get_inputs()[0].name: x})[0] for x in inputs]
    assert np.abs(wants[0] - wants[1]).max() > 0.1  # the logits follow the input
    raw = from_onnx(onnx.load(str(path)), keep_params_in_input=False)
    _, packed = _layouts(default_space, genome, "packed")
    compiled = apply_layouts(raw, packed)
    for x, want in zip(inputs, wants, strict=True):
        np.testing.assert_allclose(_run(compiled, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "nhwc_kinds", [{"conv", "depthwise"}, {"depthwise"}, "random", "packed", "packed, residual NCHW"]
)
def test_every_kernel_of_a_mixed_network_is_the_profiled_kernel_of_its_layout(small_subnet, nhwc_kinds):
    """What makes tuning records of one-layer kernels apply to whole networks in any layout mix:
    each profiled kernel is a kernel of the network, and each convolution kernel of the network is
    a profiled one (a residual add split from its convolution would leave a kernel without a schedule)."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    space, genome, raw = small_subnet
    target = host_llvm_target(1)
    convs, layouts = _layouts(space, genome, nhwc_kinds)
    whole = ms.relax_integration.extract_tasks(
        relax.get_pipeline("zero")(apply_layouts(raw, layouts)), tvm.target.Target(target)
    )
    database, profiled = ms.database.MemoryDatabase(), ms.database.MemoryDatabase()
    for task in whole:
        database.commit_workload(task.dispatched[0])
    for workload, layout in zip(convs, layouts, strict=True):
        (kernel,) = workload_tasks(workload, target, layout=layout)
        profiled.commit_workload(kernel.mod)
        assert database.has_workload(kernel.mod), f"{workload.key()} in {layout} compiles differently in the network"
    for task in whole:
        if "conv2d" in task.task_name:
            assert profiled.has_workload(task.dispatched[0]), f"{task.task_name} is no profiled kernel ({layouts})"


def test_bad_layouts_are_clear_errors(small_subnet):
    _, _, raw = small_subnet
    count = len(conv_calls(raw))
    with pytest.raises(ValueError, match=f"1 layouts given for {count} convolutions"):
        apply_layouts(raw, ["NHWC"])
    with pytest.raises(ValueError, match="unknown layout 'NCHW16'"):
        apply_layouts(raw, ["NCHW16"] * count)
    with pytest.raises(ValueError, match=r"convolution 0 \(1 -> 16 channels\) cannot run NCHW8c"):
        apply_layouts(raw, ["NCHW8c"] * count)
    with pytest.raises(ValueError, match="one packed block size per network"):
        apply_layouts(raw, ["NCHW", "NCHW8c", "NCHW4c"] + ["NCHW"] * (count - 3))


def test_the_latency_model_counts_the_transposes_the_compiled_graph_has(tiny_space):
    """Random subnets with random layout genes (NCHW mixed with NHWC or with NCHW8c): the model's
    layout changes are the graph's, and values stay."""
    from codesign.compiler.layouts import fits_layout
    from codesign.compiler.tvm_compile import compiled_choices
    from codesign.latency.model import LatencyModel
    from codesign.testing import synthetic_profile

    profile = synthetic_profile(tiny_space, layouts=True, packed=True)
    model = LatencyModel.from_profile(profile)
    families = profile.tuning_records["families"]
    rng = np.random.default_rng(3)
    for i in range(6):
        genome = Genome.random(tiny_space, rng)
        vector = model.vectors([genome])
        ids = model.positions.workload_ids(vector)[0]
        other = ("NHWC", "NCHW8c")[i % 2]
        for p, position in enumerate(model.positions.positions):
            w = model.positions.workloads[ids[p]]
            options = families.get(position.family, [{}])
            valid = [
                c
                for c, option in enumerate(options)
                if option.get("layout", "NCHW") in ("NCHW", other)
                and fits_layout(option.get("layout", "NCHW"), w.in_channels, w.out_channels)
            ]
            vector[0, model.arch_length + p] = valid[int(rng.integers(len(valid)))]
        genome = Genome.from_vector(tiny_space, vector[0])
        choices = compiled_choices(tiny_space, genome, families)
        assert set(choices.layouts) == {"NCHW", other}, choices.layouts  # random genes make a mix all but surely
        raw = subnet_relax_module(tiny_space, genome)
        converted = apply_layouts(raw, choices.layouts)
        assert np.isfinite(model.predict(vector)[0])
        assert layout_transforms(converted) == model.terms(vector)[2][0], choices.layouts
        if i < 2:
            x = np.random.default_rng(0).standard_normal(
                (1, tiny_space.in_channels, genome.resolution, genome.resolution)
            )
            x = x.astype("float32")
            np.testing.assert_allclose(_run(converted, x), _run(raw, x), rtol=1e-5, atol=1e-5)
