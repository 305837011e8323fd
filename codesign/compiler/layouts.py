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

TVM 0.27 facts (read from its source and tried on small graphs, 2026-11-28):
``layout_cb`` is called for every layout-aware call and must return ``{}`` for anything but a
convolution; returning ``{}`` for a convolution makes it inherit its input's layout, so NCHW is
asked for explicitly. Packed layouts (``NCHW8c``) pass ``ConvertLayout`` but ``LegalizeOps``
leaves such convolutions unlowered and compilation then fails; ``topi.nn.conv2d_NCHWc`` covers
dense convolutions only (no depthwise), so NCHWc needs a legalization of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

Layout = Literal["NCHW", "NHWC"]
LAYOUTS: tuple[Layout, ...] = ("NCHW", "NHWC")
KERNEL_LAYOUTS: dict[str, str] = {"NCHW": "OIHW", "NHWC": "OHWI"}


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


def _conv_of_each_clip(mod: Any) -> list[int]:
    """For every ``R.clip`` of ``mod["main"]`` in program order, the convolution it follows (-1: none).

    A clip follows the convolution reached by walking back through the first argument of each call.
    """
    import tvm

    relax = _relax()
    bound: dict[Any, Any] = {}
    convs: list[Any] = []
    clips: list[Any] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            if expr.op.name == "relax.nn.conv2d":
                convs.append(expr)
            elif expr.op.name == "relax.clip":
                clips.append(expr)

    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            bound[binding.var] = binding.value
    relax.analysis.post_order_visit(mod["main"], visit)
    out = []
    for clip in clips:
        expr = clip.args[0]
        while isinstance(expr, relax.Var) and expr in bound:
            expr = bound[expr]
            if isinstance(expr, relax.Call) and any(expr.same_as(c) for c in convs):
                break
            expr = expr.args[0] if isinstance(expr, relax.Call) and expr.args else None
        out.append(next((i for i, c in enumerate(convs) if expr is not None and expr.same_as(c)), -1))
    return out


def clip_to_min_max(mod: Any, convolutions: Sequence[int] | None = None) -> Any:
    """``mod`` with ``R.clip(x, lo, hi)`` as ``minimum(maximum(x, lo), hi)`` (same values, layout-aware).

    ``convolutions``: rewrite only the clips that follow these convolutions (indices into
    :func:`conv_calls`); the others keep the fused kernel the NCHW profile measured.
    """
    import tvm
    from tvm.relax.expr_functor import PyExprMutator, mutator

    relax = _relax()
    follows = _conv_of_each_clip(mod)
    rewrite = [convolutions is None or f in set(convolutions) for f in follows]

    @mutator
    class _ClipToMinMax(PyExprMutator):  # type: ignore[misc]
        seen = 0

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.clip":
                index, self.seen = self.seen, self.seen + 1
                if rewrite[index]:
                    x, lo, hi = call.args
                    dtype = x.ty.dtype
                    low = relax.const(float(lo.value), dtype)
                    high = relax.const(float(hi.value), dtype)
                    return relax.op.minimum(relax.op.maximum(x, low), high)
            return call

    rewriter = _ClipToMinMax(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
    if rewriter.seen != len(rewrite):
        raise AssertionError(f"visited {rewriter.seen} clips, found {len(rewrite)} before")
    return rewriter.builder_.finalize()


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


def apply_layouts(mod: Any, layouts: Sequence[str]) -> Any:
    """``mod`` with its i-th convolution in ``layouts[i]`` (``NCHW`` or ``NHWC``); constants folded.

    ``layouts`` has one entry per convolution of :func:`conv_calls`. All-NCHW returns ``mod``
    unchanged, so an NCHW-only genome compiles exactly as before; NCHW kernels of a mixed module
    compile to the same fused kernels as in an all-NCHW one (their tuning records still apply).
    """
    relax = _relax()
    calls = conv_calls(mod)
    if len(layouts) != len(calls):
        raise ValueError(f"{len(layouts)} layouts given for {len(calls)} convolutions")
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"unknown layout {unknown[0]!r}; use one of {', '.join(LAYOUTS)}")
    if all(layout == "NCHW" for layout in layouts):
        return mod
    mod = clip_to_min_max(mod, [i for i, layout in enumerate(layouts) if layout != "NCHW"])
    chosen = list(zip(conv_calls(mod), layouts, strict=True))  # the rewrite made new call objects

    def desired(call: Any) -> dict[str, list[str]]:
        if call.op.name != "relax.nn.conv2d":
            return {}  # element-wise ops follow their input (naming them here aborts the pass)
        for candidate, layout in chosen:
            if call.same_as(candidate):
                return {"relax.nn.conv2d": [layout, KERNEL_LAYOUTS[layout]]}
        raise ValueError("ConvertLayout visited a convolution that conv_calls did not find")

    converted = relax.transform.ConvertLayout({}, desired)(mod)
    return simplify_transposes(relax.transform.FoldConstant()(converted))


def layout_transforms(mod: Any) -> int:
    """Transpose calls left in ``mod["main"]`` (each one a kernel at run time)."""
    import tvm

    relax = _relax()
    count = 0

    def visit(expr: Any) -> None:
        nonlocal count
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.permute_dims":
            count += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return count
