"""Gemm and MatMul against a constant weight: output features are sources, the contraction
axis is a sink (the weight's rows are sliced with the units that feed them). Activation ×
activation products have no rule yet here and freeze what they touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ir import attr
from ..slots import Span
from .common import span_on
from .registry import rule

if TYPE_CHECKING:
    from ..analysis import Ctx


@rule("Gemm")
def gemm(ctx: Ctx) -> None:
    b = ctx.const(1)
    if b is None or b.ndim != 2:
        ctx.freeze_inputs("Gemm weight is not a constant matrix")
        return
    trans_a, trans_b = int(attr(ctx.node, "transA", 0)), int(attr(ctx.node, "transB", 0))
    k_axis, m_axis = (0, 1) if trans_a else (1, 0)
    bk, bn = (1, 0) if trans_b else (0, 1)
    out = []
    for s in ctx.spans(0):
        if s.axes == (k_axis,):
            ctx.member(1, Span((bk,), s.ids), "sink")
        elif s.axes == (m_axis,):
            out.append(Span((0,), s.ids))
        else:
            ctx.freeze(s.ids, "units on both Gemm axes")
    units = ctx.fresh(b.shape[bn])
    ctx.member(1, Span((bn,), units), "source")
    if ctx.input(2) and not _bias_member(ctx, 2, units):
        ctx.freeze(units, "Gemm bias is not a constant")
    ctx.set_out(0, [*out, Span((1,), units)])


@rule("MatMul")
def matmul(ctx: Ctx) -> None:
    b = ctx.const(1)
    rank = ctx.rank(0)
    if b is None or b.ndim != 2 or rank is None or rank < 2:
        ctx.freeze_inputs("MatMul is not activation × constant matrix")
        return
    out = []
    contraction = span_on(ctx.spans(0), rank - 1)
    for s in ctx.spans(0):
        if s is contraction and s.axes == (rank - 1,):
            ctx.member(1, Span((0,), s.ids), "sink")
        elif rank - 1 in s.axes:
            ctx.freeze(s.ids, "contraction axis labelled together with another axis")
        else:
            out.append(s)
    units = ctx.fresh(b.shape[1])
    ctx.member(1, Span((1,), units), "source")
    ctx.set_out(0, [*out, Span((rank - 1,), units)])


def _bias_member(ctx: Ctx, i: int, units) -> bool:
    shape = ctx.shape(i)
    if shape is None:
        return False
    if shape[-1] == 1:
        return True
    if ctx.const(i) is None:
        return False
    ctx.member(i, Span((len(shape) - 1,), units), "param")
    return True
