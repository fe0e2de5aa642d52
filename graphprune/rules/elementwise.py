"""Position-wise ops: unary activations pass units through; n-ary ops with broadcasting unify
their inputs' units position by position (a residual Add couples both branches), and
full-size constants along a slotted axis become members (sliced with the units).
"""

from __future__ import annotations

import operator

import numpy as np

from .. import shapeval
from ..ir import fold_identity
from ..ops import rule
from ..shapeval import arithmetic
from ..slots import Span
from .common import broadcast_member, freeze_where, pass_through
from .context import Ctx

UNARY = (
    "Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu",
    "Gelu", "Softplus", "Softsign", "Erf", "Sqrt", "Exp", "Log", "Abs", "Mish",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Atan", "Asin", "Acos",
    "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "ThresholdedRelu", "Shrink", "Not", "IsNaN",
    "IsInf", "CastLike", "Swish",
)
"""Position-wise ops of one input that know nothing more (Neg, Identity, Cast: below)."""
BINARY = (
    "Pow", "Mean", "Sum", "PRelu", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
    "Or", "Xor", "BitShift",
)
"""Broadcasting ops that know nothing more (the arithmetic of shapes: below)."""


def binary(*op_types: str, **traits):
    """Register an op of the broadcasting family: it reads units on every input."""
    return rule(*op_types, multi_input=True, **traits)


@rule("Identity", tiled=True, shape_eval=shapeval.identity, fold=fold_identity)
@rule("Cast", tiled=True, shape_eval=shapeval.cast)
@rule("Neg", shape_eval=shapeval.negate)
@rule(*UNARY)
def unary(ctx: Ctx) -> None:
    """Identity/Cast/activations: same shape, position by position (CastLike's 2nd input is a
    dtype donor only). Channel sizes read through Shape (marks) pass too."""
    pass_through(ctx)
    ctx.set_marks(0, ctx.marks(0) or [])


@rule("Dropout", tiled=True)
def dropout(ctx: Ctx) -> None:
    """Inference Dropout is identity; its optional mask output has the same layout."""
    pass_through(ctx, (0, 1))


@rule("Trilu", since=14)
def trilu(ctx: Ctx) -> None:
    """Keeps a triangle of the last two axes: whether a position is zeroed depends on its row
    and column index, so units stay whole along those axes (there alone: frozen)."""
    rank = ctx.rank(0)
    if rank is None or rank < 2:
        ctx.freeze_inputs("input rank unknown")
        return
    ctx.set_out(0, freeze_where(ctx, ctx.spans(0), {rank - 2, rank - 1}, "triangle of a unit axis"))


@binary("Add", tiled=True, shape_eval=arithmetic(operator.add))
@binary("Sub", tiled=True, shape_eval=arithmetic(operator.sub))
@binary("Mul", tiled=True, shape_eval=arithmetic(operator.mul))
@binary("Div", tiled=True, shape_eval=arithmetic(shapeval.trunc_div))
@binary("Where", tiled=True, shape_eval=shapeval.where)
@binary("Max", shape_eval=arithmetic(max))
@binary("Min", shape_eval=arithmetic(min))
@binary("Mod", shape_eval=shapeval.mod)
@binary("Equal", shape_eval=shapeval.equal)
@binary("Clip", settings=(1, 2))
@binary(*BINARY)
def broadcast_elementwise(ctx: Ctx) -> None:
    if any(ctx.marks(i) for i in range(ctx.n_inputs())):
        _propagate_marks(ctx)
    out_shape = ctx.out_shape(0)
    if out_shape is None:
        ctx.freeze_inputs("output shape unknown")
        return
    rank = len(out_shape)
    inputs = [i for i in range(ctx.n_inputs()) if ctx.input(i)]
    layouts: dict[tuple[int, ...], list[Span]] = {}
    for i in inputs:
        in_rank = ctx.rank(i)
        if in_rank is None:
            ctx.freeze_inputs("input shape unknown")
            return
        for s in ctx.spans(i):
            aligned = s.shifted(rank - in_rank)
            if any(out_shape[a] != n for a, n in zip(aligned.axes, s.ids.shape, strict=True)
                   if a not in aligned.tiled):
                ctx.freeze(s.ids, "unit axis broadcast to a larger size")
                continue
            layouts.setdefault(aligned.axes, []).append(aligned)
    if _overlapping(layouts):
        for spans in layouts.values():
            ctx.freeze_spans(spans, "inputs label overlapping axes differently")
        return
    out = []
    for axes, spans in layouts.items():
        if any(t.tiled != spans[0].tiled or t.ids.shape != spans[0].ids.shape for t in spans):
            ctx.freeze_spans(spans, "inputs repeat units along a dynamic axis differently")
            continue
        for other in spans[1:]:
            ctx.unify(spans[0].ids, other.ids)
        span = spans[0]
        for i in inputs:
            if not any(set(s.shifted(rank - ctx.rank(i)).axes) == set(axes) for s in ctx.spans(i)):
                broadcast_member(ctx, i, span, rank)
        out.append(span)
    ctx.set_out(0, out)


def _overlapping(layouts: dict[tuple[int, ...], list[Span]]) -> bool:
    keys = list(layouts)
    return any(set(a) & set(b) for n, a in enumerate(keys) for b in keys[n + 1:])


def _propagate_marks(ctx: Ctx) -> None:
    """Shape arithmetic (`C // 2`): each output entry depends on what its inputs' entries do."""
    shape = ctx.out_shape(0)
    n = 1 if shape == [] else (shape[0] if shape and len(shape) == 1 else None)
    if not isinstance(n, int):  # not shape arithmetic: the size is used as a value
        ctx.freeze_marks("channel count read as a value")
        return
    marks: list[np.ndarray | None] = []
    for k in range(n):
        parts = []
        for i in range(ctx.n_inputs()):
            m = ctx.marks(i)
            if m:
                entry = m[k] if len(m) > 1 else m[0]
                if entry is not None:
                    parts.append(entry)
        marks.append(np.concatenate(parts) if parts else None)
    ctx.set_marks(0, marks)
