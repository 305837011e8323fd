"""Per-kernel data layouts: which convolutions of a Relax module run NHWC, the others NCHW.

Measured on a 2-core EPYC with equal MetaSchedule effort (``tools/bench_layouts.py``), neither
layout wins everywhere: a tuned depthwise kernel runs faster in NHWC, a tuned pointwise one in
NCHW. A layout is therefore a per-kernel choice, and a change of layout between neighbouring
kernels costs a transpose kernel of the activation between them.

:func:`apply_layouts` sets the layout of every ``relax.nn.conv2d`` call (in program order) through
``relax.transform.ConvertLayout``: the bias adds, activations and residual adds after a
convolution follow its layout, and a transpose is inserted exactly where the layouts of producer
and consumer differ (and at the graph's input and output). ``R.clip`` has no layout rule in
TVM 0.27, so ONNX HardSwish would be wrapped in a transpose pair: :func:`clip_to_min_max` rewrites
it first into ``minimum(maximum(x, lo), hi)``, which follows its input's layout.

Packed layouts (``NCHW8c``, ``NCHW4c``: channels in blocks of 8 or 4, innermost, as onnxruntime's
MLAS kernels run them) are a third choice: with equal MetaSchedule effort the blocked kernel of
the recommended subnet's slowest 7x7 depthwise ran 8.7 us against 14.7 us NCHW, its slowest 1x1
convolution 14.2 against 20.4 us (a one-off probe on the 2-core znver3 VM, 2026-12-04, one thread,
64 trials each; ``tools/bench_layouts.py`` compares the three layouts per kernel family). A packed
convolution needs its channel counts divisible by the block; a change between NCHW and a packed
layout costs a ``layout_transform`` kernel, isolated like the transposes.

TVM 0.27 facts (read from its source and tried on small graphs, 2026-11-28):
``layout_cb`` is called for every layout-aware call and must return ``{}`` for anything but a
convolution; returning ``{}`` for a convolution makes it inherit its input's layout, so NCHW is
asked for explicitly. Packed layouts pass ``ConvertLayout`` (kernel layouts ``OIHW8i8o``, and
``OIHW8o`` for depthwise) but ``LegalizeOps`` leaves such convolutions unlowered and
``topi.nn.conv2d_NCHWc`` covers dense convolutions only, so :func:`legalize_packed_convolutions`
lowers them itself (2026-12-04: outputs equal to onnxruntime's within 1e-6 on a whole subnet).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

Layout = Literal["NCHW", "NHWC", "NCHW8c", "NCHW4c"]
LAYOUTS: tuple[Layout, ...] = ("NCHW", "NHWC", "NCHW8c", "NCHW4c")
KERNEL_LAYOUTS: dict[str, str] = {"NCHW": "OIHW", "NHWC": "OHWI"}


def packed_block(layout: str) -> int | None:
    """The channel block of a packed layout (``NCHW8c`` -> 8), None for NCHW and NHWC."""
    if layout.startswith("NCHW") and layout.endswith("c") and layout[4:-1].isdigit():
        return int(layout[4:-1])
    return None


def kernel_layout(layout: str, *, depthwise: bool) -> str:
    """The weight layout a convolution in ``layout`` takes (``OIHW8i8o``; ``OIHW8o`` when depthwise)."""
    block = packed_block(layout)
    if block is None:
        return KERNEL_LAYOUTS[layout]
    return f"OIHW{block}o" if depthwise else f"OIHW{block}i{block}o"


def fits_layout(layout: str, in_channels: int, out_channels: int) -> bool:
    """Whether a convolution with these channel counts can run in ``layout`` (packed: both divisible)."""
    block = packed_block(layout)
    return block is None or (in_channels % block == 0 and out_channels % block == 0)


def _relax() -> Any:
    from codesign.profile.tvm_backend import require_tvm

    require_tvm()
    from tvm import relax

    return relax


def conv_calls(mod: Any) -> list[Any]:
    """The ``relax.nn.conv2d`` calls of ``mod["main"]``, in program order."""
    import tvm

    relax = _relax()
    calls: list[Any] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.nn.conv2d":
            calls.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def _is_op(expr: Any, name: str) -> bool:
    import tvm

    relax = _relax()
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def _clip_bound(call: Any) -> tuple[str, Any] | None:
    """``("maximum" | "minimum", x)`` for a ``call_tir`` of ONNX Clip's TE max/min with a scalar bound, else None."""
    import tvm

    relax = _relax()
    if not _is_op(call, "relax.call_tir"):
        return None
    name = call.args[0].name_hint
    kind = next((k for k in ("maximum", "minimum") if name.startswith(k)), None)
    arguments = call.args[1]
    if kind is None or not isinstance(arguments, relax.Tuple) or len(arguments.fields) != 2:
        return None
    bound = arguments.fields[1]
    if not isinstance(bound, tvm.ir.expr.Constant) or bound.value.numpy().size != 1:
        return None
    return kind, arguments.fields[0]


def _activations(mod: Any) -> list[tuple[Any, Any]]:
    """Every layout-blind activation step of ``mod["main"]`` and the convolution it follows (None: none).

    The steps are ``R.clip`` (ONNX HardSwish) and the ``call_tir`` TE ``maximum``/``minimum`` that
    ONNX Clip (ReLU6) imports to. A step follows the convolution reached by walking back through
    the first tensor argument of each call.
    """
    relax = _relax()
    bound: dict[Any, Any] = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            bound[binding.var] = binding.value
    steps: list[Any] = []

    def visit(expr: Any) -> None:
        if _is_op(expr, "relax.clip") or _clip_bound(expr) is not None:
            steps.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    out = []
    for step in steps:
        expr = step
        while True:
            found = _clip_bound(expr)
            if found is not None:
                expr = found[1]
            elif isinstance(expr, relax.Call) and expr.args:
                expr = expr.args[0]
            else:
                expr = None
                break
            if isinstance(expr, relax.Var) and expr in bound:
                expr = bound[expr]
            if _is_op(expr, "relax.nn.conv2d") or not isinstance(expr, relax.Call):
                break
        out.append((step, expr if _is_op(expr, "relax.nn.conv2d") else None))
    return out


def clip_to_min_max(mod: Any, convolutions: Sequence[int] | None = None) -> Any:
    """``mod`` with its clips as ``minimum(maximum(x, lo), hi)`` Relax ops (same values, layout-aware).

    Both ``R.clip`` (ONNX HardSwish) and ONNX Clip's ``call_tir`` TE functions (ReLU6) have no
    layout rule in TVM 0.27, so ``ConvertLayout`` would wrap them in a transpose pair.
    ``convolutions``: rewrite only the clips that follow these convolutions (indices into
    :func:`conv_calls`); the others keep the fused kernel the NCHW profile measured.
    """
    from tvm.relax.expr_functor import PyExprMutator, mutator

    relax = _relax()
    convs = conv_calls(mod)
    chosen = [convs[i] for i in (range(len(convs)) if convolutions is None else convolutions)]
    rewrite = [conv is not None and any(conv.same_as(c) for c in chosen) for _step, conv in _activations(mod)]

    @mutator
    class _ClipToMinMax(PyExprMutator):  # type: ignore[misc]
        seen = 0

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            te_bound = _clip_bound(call)
            if not (_is_op(call, "relax.clip") or te_bound is not None):
                return call
            index, self.seen = self.seen, self.seen + 1
            if not rewrite[index]:
                return call
            if te_bound is not None:
                kind, x = te_bound
                value = float(call.args[1].fields[1].value.numpy())
                op = relax.op.maximum if kind == "maximum" else relax.op.minimum
                return op(x, relax.const(value, x.ty.dtype))
            x, lo, hi = call.args
            dtype = x.ty.dtype
            low = relax.const(float(lo.value), dtype)
            high = relax.const(float(hi.value), dtype)
            return relax.op.minimum(relax.op.maximum(x, low), high)

    rewriter = _ClipToMinMax(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    if rewriter.seen != len(rewrite):
        raise AssertionError(f"visited {rewriter.seen} clips, found {len(rewrite)} before")
    return relax.transform.DeadCodeElimination()(rewriter.builder_.finalize())


def simplify_transposes(mod: Any) -> Any:
    """``mod`` without back-to-back transposes that undo each other, and with an add of two equally
    transposed tensors done before the transpose (where a one-layer module's NHWC input meets the
    kernel's output, so that its kernel is the one a whole NHWC network contains)."""
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    relax = _relax()
    source = wildcard()
    inner = is_op("relax.permute_dims")(source)
    outer = is_op("relax.permute_dims")(inner)
    left_in, right_in = wildcard(), wildcard()
    left, right = is_op("relax.permute_dims")(left_in), is_op("relax.permute_dims")(right_in)
    added = is_op("relax.add")(left, right)

    def axes(call: Any) -> list[int]:
        return [int(a) for a in call.attrs.axes]

    def cancel(expr: Any, matched: Any) -> Any:
        first, second = axes(matched[inner]), axes(matched[outer])
        return matched[source] if [first[i] for i in second] == list(range(len(first))) else expr

    def add_first(expr: Any, matched: Any) -> Any:
        if axes(matched[left]) != axes(matched[right]):
            return expr
        return relax.op.permute_dims(relax.op.add(matched[left_in], matched[right_in]), axes(matched[left]))

    @relax.transform.function_pass(opt_level=0)
    class _SimplifyTransposes:
        def transform_function(self, func: Any, _mod: Any, _ctx: Any) -> Any:
            return rewrite_call(added, add_first, rewrite_call(outer, cancel, func))

    simplify: Any = _SimplifyTransposes()  # a relax pass (the decorator makes the class one)
    return relax.transform.DeadCodeElimination()(simplify(mod))


def swap_residual_adds(mod: Any) -> Any:
    """``mod`` with the operands of every add of two activations (a residual add) swapped.

    ``ConvertLayout`` runs an add in the layout of its first operand. The exported graph adds
    ``skip + conv(y)``, so the add would follow the skip and leave the projection's kernel without
    its residual; swapped, the add follows the convolution and the skip is transposed instead.
    Swapping again after the conversion restores the operand order the profiled kernels have.
    """
    from tvm.relax.expr_functor import PyExprMutator, mutator

    relax = _relax()

    def activation(expr: Any) -> bool:
        return isinstance(expr, relax.Var) and len(getattr(expr.ty, "shape", None) or ()) == 4

    @mutator
    class _Swap(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if _is_op(call, "relax.add") and activation(call.args[0]) and activation(call.args[1]):
                return relax.op.add(call.args[1], call.args[0])
            return call

    rewriter = _Swap(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    return rewriter.builder_.finalize()


def residual_adds_follow_convolutions(mod: Any) -> Any:
    """``mod`` with every residual add of an NCHW convolution and a packed skip run in NCHW.

    ``ConvertLayout`` runs an add whose operands differ in layout in the packed one, whichever
    operand comes first: the projection convolution's output would be converted to the packed
    layout and added in a kernel of its own, leaving the projection without its residual, a kernel
    no profiled schedule was tuned for (TVM's default lowering then runs it, several times slower).
    Here the skip is converted to NCHW instead and added in the convolution's layout, so the
    projection compiles to the profiled residual kernel; its output is converted back to the packed
    layout for its consumers. This is the arrangement the latency model prices: a residual kernel
    runs in its own layout, the skip changed to it. ``ConvertLayout`` keeps the operands in the order
    :func:`swap_residual_adds` gave them: the convolution's side first, the skip second.
    """
    from tvm.relax.expr_functor import PyExprMutator, mutator

    relax = _relax()

    def rank(expr: Any) -> int:
        return len(getattr(expr.ty, "shape", None) or ())

    @mutator
    class _Rehome(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not _is_op(call, "relax.add") or rank(call) != 5:
                return call
            converted, skip = call.args  # the convolution's side first (see swap_residual_adds)
            bound = self.lookup_binding(converted) if isinstance(converted, relax.Var) else None
            if bound is None or not _is_op(bound, "relax.layout_transform") or not isinstance(skip, relax.Var):
                return call
            source = bound.args[0]
            if not (isinstance(source, relax.Var) and rank(source) == 4):
                return call  # a bias (constant) converted for a packed convolution's own add
            to_packed = bound.attrs.index_map
            back = to_packed.inverse([int(d) for d in source.ty.shape])
            skip_nchw = self.builder_.emit(relax.op.layout_transform(skip, index_map=back))
            summed = self.builder_.emit(relax.op.add(source, skip_nchw))
            return relax.op.layout_transform(summed, index_map=to_packed)

    rewriter = _Rehome(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    return relax.transform.DeadCodeElimination(["main"])(rewriter.builder_.finalize())


OPAQUE_PATTERN = 8  # TVM's kOpaque: FuseOps fuses nothing into or out of such a kernel


def emit_isolated_transpose(builder: Any, x: Any, axes: Sequence[int]) -> Any:
    """A transpose of ``x`` as its own kernel: a ``call_tir`` that FuseOps never fuses with a neighbour.

    Left to itself, FuseOps folds a transpose feeding a residual add into the convolution kernel,
    which then differs from every profiled kernel; as an opaque kernel it is the one
    :func:`codesign.profile.tvm_backend.transpose_task` times.
    """
    from tvm import topi

    return builder.call_te(
        topi.transpose,
        x,
        [int(a) for a in axes],
        primfunc_name_hint="layout_transpose",
        primfunc_attrs={"op_pattern": OPAQUE_PATTERN},
    )


def isolate_transposes(mod: Any) -> Any:
    """``mod`` with every ``permute_dims`` of ``main`` as an isolated transpose kernel (see above)."""
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Isolate(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if _is_op(call, "relax.permute_dims"):
                return emit_isolated_transpose(self.builder_, call.args[0], call.attrs.axes)
            return call

    rewriter = _Isolate(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    return rewriter.builder_.finalize()


def _packed_conv_te(data: Any, weight: Any, strides: list[int], padding: list[int], groups: int) -> Any:
    """TE of a convolution in a packed layout: ``data`` NCHW{b}c, ``weight`` OIHW{b}i{b}o (OIHW{b}o if depthwise)."""
    from tvm import te, topi

    _, _, height, width, block = (int(d) for d in data.shape)
    top, left, bottom, right = padding
    padded = topi.nn.pad(data, (0, 0, top, left, 0), (0, 0, bottom, right, 0)) if any(padding) else data
    out_blocks, kh_size, kw_size = int(weight.shape[0]), int(weight.shape[2]), int(weight.shape[3])
    out_h = (height + top + bottom - kh_size) // strides[0] + 1
    out_w = (width + left + right - kw_size) // strides[1] + 1
    kh, kw = te.reduce_axis((0, kh_size), "kh"), te.reduce_axis((0, kw_size), "kw")
    shape = (1, out_blocks, out_h, out_w, block)
    if groups > 1:  # depthwise: one input channel per output channel
        return te.compute(
            shape,
            lambda n, c, y, x, i: te.sum(
                padded[n, c, y * strides[0] + kh, x * strides[1] + kw, i] * weight[c, 0, kh, kw, i], axis=[kh, kw]
            ),
            name="conv2d_packed",
        )
    ic, ii = te.reduce_axis((0, int(weight.shape[1])), "ic"), te.reduce_axis((0, block), "ii")
    return te.compute(
        shape,
        lambda n, c, y, x, i: te.sum(
            padded[n, ic, y * strides[0] + kh, x * strides[1] + kw, ii] * weight[c, ic, kh, kw, ii, i],
            axis=[ic, ii, kh, kw],
        ),
        name="conv2d_packed",
    )


def legalize_packed_convolutions(mod: Any) -> Any:
    """``mod`` with every convolution in a packed layout lowered to its own TE kernel (others untouched)."""
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Legalize(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            block = packed_block(str(call.attrs.data_layout)) if _is_op(call, "relax.nn.conv2d") else None
            if block is None:
                return call
            if int(call.attrs.groups) not in (1, int(call.ty.shape[1]) * block):
                raise ValueError(f"grouped convolutions (groups={int(call.attrs.groups)}) have no packed kernel")
            return self.builder_.call_te(
                _packed_conv_te,
                call.args[0],
                call.args[1],
                [int(v) for v in call.attrs.strides],
                [int(v) for v in call.attrs.padding],
                int(call.attrs.groups),
                primfunc_name_hint="conv2d_packed",
            )

    rewriter = _Legalize(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    return rewriter.builder_.finalize()


def _index_map_transform(x: Any, index_map: Any, out_shape: list[int]) -> Any:
    """TE of ``relax.layout_transform``: each output element read through the inverse of ``index_map``."""
    from tvm import te

    inverse = index_map.inverse([int(d) for d in x.shape])
    return te.compute(out_shape, lambda *index: x(*inverse.map_indices(list(index))), name="T_layout_trans")


def isolate_layout_transforms(mod: Any) -> Any:
    """``mod`` with every activation ``layout_transform`` (to or from a packed layout) as an isolated kernel,
    so that FuseOps never folds one into a neighbouring convolution (see :func:`emit_isolated_transpose`)."""
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Isolate(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not _is_op(call, "relax.layout_transform"):
                return call
            transform = functools.partial(
                _index_map_transform, index_map=call.attrs.index_map, out_shape=[int(d) for d in call.ty.shape]
            )
            return self.builder_.call_te(
                transform,
                call.args[0],
                primfunc_name_hint="layout_transform",
                primfunc_attrs={"op_pattern": OPAQUE_PATTERN},
            )

    rewriter = _Isolate(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    return rewriter.builder_.finalize()


def apply_layouts(mod: Any, layouts: Sequence[str]) -> Any:
    """``mod`` with its i-th convolution in ``layouts[i]`` (see :data:`LAYOUTS`); constants folded.

    ``layouts`` has one entry per convolution of :func:`conv_calls`. All-NCHW returns ``mod``
    unchanged, so an NCHW-only genome compiles exactly as before; NCHW kernels of a mixed module
    compile to the same fused kernels as in an all-NCHW one (their tuning records still apply).
    A packed layout needs the convolution's channel counts divisible by its block.
    """
    relax = _relax()
    calls = conv_calls(mod)
    if len(layouts) != len(calls):
        raise ValueError(f"{len(layouts)} layouts given for {len(calls)} convolutions")
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"unknown layout {unknown[0]!r}; use one of {', '.join(LAYOUTS)}")
    for i, (call, layout) in enumerate(zip(calls, layouts, strict=True)):
        channels_in, channels_out = int(call.args[0].ty.shape[1]), int(call.ty.shape[1])
        if not fits_layout(layout, channels_in, channels_out):
            raise ValueError(
                f"convolution {i} ({channels_in} -> {channels_out} channels) cannot run {layout}: "
                f"its channel counts are not multiples of {packed_block(layout)}"
            )
    blocks = sorted({b for b in map(packed_block, layouts) if b is not None})
    if len(blocks) > 1:  # ConvertLayout cannot change one block size into another (TVM 0.27)
        raise ValueError(f"one packed block size per network, got NCHW{blocks[0]}c and NCHW{blocks[1]}c")
    if blocks and "NHWC" in layouts:  # residual kernels between NHWC and packed neighbours fuse differently
        raise ValueError("a network mixes NCHW with NHWC or with one packed layout, not NHWC with packed ones")
    if all(layout == "NCHW" for layout in layouts):
        return mod
    # constants first: bias terms must not look like activations to swap, clip bounds must be constants
    mod = clip_to_min_max(relax.transform.FoldConstant()(mod), [i for i, lay in enumerate(layouts) if lay != "NCHW"])
    chosen = list(zip(conv_calls(mod), layouts, strict=True))  # the rewrite made new call objects

    def desired(call: Any) -> dict[str, list[str]]:
        if call.op.name != "relax.nn.conv2d":
            return {}  # element-wise ops follow their input (naming them here aborts the pass)
        for candidate, layout in chosen:
            if call.same_as(candidate):
                return {"relax.nn.conv2d": [layout, kernel_layout(layout, depthwise=int(call.attrs.groups) > 1)]}
        raise ValueError("ConvertLayout visited a convolution that conv_calls did not find")

    converted = relax.transform.ConvertLayout({}, desired)(swap_residual_adds(mod))
    if blocks:
        converted = residual_adds_follow_convolutions(converted)
    converted = swap_residual_adds(converted)
    converted = relax.transform.FoldConstant()(converted)
    if any(packed_block(layout) for layout in layouts):
        converted = isolate_layout_transforms(legalize_packed_convolutions(converted))
    return isolate_transposes(simplify_transposes(converted))


def layout_transforms(mod: Any) -> int:
    """Transposes left in ``mod["main"]``, as ops or as isolated kernels (each one a kernel at run time)."""
    relax = _relax()
    count = 0

    def visit(expr: Any) -> None:
        nonlocal count
        isolated = _is_op(expr, "relax.call_tir") and expr.args[0].name_hint.startswith("layout_")
        if _is_op(expr, "relax.permute_dims") or _is_op(expr, "relax.layout_transform") or isolated:
            count += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return count
