"""Gemm and MatMul against a constant weight: output features are sources, the contraction
axis is a sink (the weight's rows are sliced with the units that feed them). Activation ×
activation products have no rule yet here and freeze what they touch.
"""

from __future__ import annotations

import math

from ..ir import attr
from ..ops import rule
from ..slots import Span
from .common import keep_whole, quantized, span_on, weight_problem
from .context import Ctx


def _matmul_macs(node, shapes: dict[str, list[int]]) -> int:
    """Output elements × contraction length."""
    out, a = shapes.get(node.output[0]), shapes.get(node.input[0])
    return math.prod(out) * a[-1] if out and a else 0


def _gemm_macs(node, shapes: dict[str, list[int]]) -> int:
    out, a = shapes.get(node.output[0]), shapes.get(node.input[0])
    return math.prod(out) * (a[0] if attr(node, "transA", 0) else a[-1]) if out and a else 0


@rule("Gemm", kind="ffn", macs=_gemm_macs)
def gemm(ctx: Ctx) -> None:
    b = ctx.const(1)
    if b is None or b.ndim != 2:
        ctx.freeze_inputs("Gemm weight is not a constant matrix" if b is not None
                          else weight_problem(ctx, 1, "Gemm weight"))
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


@rule("MatMul", multi_input=True, tiled=True, kind="ffn", macs=_matmul_macs)
def matmul(ctx: Ctx) -> None:
    b = ctx.const(1)
    rank = ctx.rank(0)
    if quantized(ctx, 1):
        ctx.freeze_inputs(weight_problem(ctx, 1, "MatMul weight"))
        return
    if b is None and not ctx.is_const(0):
        _matmul_activations(ctx)
        return
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
    if not ctx.is_const(i):
        return False
    ctx.member(i, Span((len(shape) - 1,), units), "param")
    return True


def _matmul_activations(ctx: Ctx) -> None:
    """Activation × activation (Q·Kᵀ, attention·V).

    In output coordinates plus a virtual contraction axis K: spans touching a batch axis are
    collapsed along their other axes (this turns [heads, dim] into head units, and makes GQA's
    repeated KV heads one unit with their query heads); spans living only on K would mix
    units through the contraction and are kept whole (frozen when single-axis); spans from
    both operands that share axes are unified. Units on batch, M and N axes reach the output.
    """
    sa, sb, so = ctx.shape(0), ctx.shape(1), ctx.out_shape(0)
    if sa is None or sb is None or so is None or min(len(sa), len(sb)) < 2:
        ctx.freeze_inputs("activation MatMul with unknown or vector shapes")
        return
    ro = len(so)
    k_axis, batch = ro, set(range(ro - 2))
    operands = [(_to_out(s, len(sa), ro, False), 0) for s in ctx.spans(0)]
    operands += [(_to_out(s, len(sb), ro, True), 1) for s in ctx.spans(1)]
    live = []
    for span, side in operands:
        if set(span.axes) & batch:
            ok = keep_whole(ctx, span, set(span.axes) - batch, "attention unit spans")
            ctx.tag(span.ids, "heads")
        else:
            ok = keep_whole(ctx, span, {k_axis}, "contraction of units between activations")
        if ok:
            live.append((span, side))
    for n, (s, _) in enumerate(live):
        for t, _ in live[n + 1:]:
            common = sorted(set(s.axes) & set(t.axes))
            if not common:
                continue
            ps, pt = _project(s, common), _project(t, common)
            if ps.shape != pt.shape or s.tiled & set(common) != t.tiled & set(common):
                ctx.freeze(s.ids, "operands repeat units along a dynamic axis differently")
                ctx.freeze(t.ids, "operands repeat units along a dynamic axis differently")
                continue
            ctx.unify(ps, pt)
    dims = [_out_dims(sa, ro, False), _out_dims(sb, ro, True)]
    out: dict[tuple[int, ...], Span] = {}
    for span, side in live:
        covered = {a for t, other in live if other != side for a in t.axes}
        need = {a for a in span.axes if a in batch | {k_axis}
                and dims[1 - side].get(a, 1) != 1 and a not in covered}
        if need and not keep_whole(ctx, span, need, "paired with an operand without units"):
            continue
        kept = [a for a in span.axes if a != k_axis]
        if kept:
            proj = _project(span, kept)
            out.setdefault(tuple(kept), Span(tuple(kept), proj, span.tiled & frozenset(kept)))
    ctx.set_out(0, _disjoint(ctx, list(out.values())))


def _disjoint(ctx: Ctx, spans: list[Span]) -> list[Span]:
    """One span per axis: a span inside a larger one was unified with it already."""
    spans = sorted(spans, key=lambda s: -len(s.axes))
    out: list[Span] = []
    for s in spans:
        if any(set(s.axes) <= set(t.axes) for t in out):
            continue
        if any(set(s.axes) & set(t.axes) for t in out):
            ctx.freeze(s.ids, "attention output labelled inconsistently")
            continue
        out.append(s)
    return out


def _to_out(span: Span, rank: int, ro: int, is_b: bool) -> Span:
    """Map an operand's axes to output axes; the contraction axis becomes axis `ro`."""
    mapping = {}
    for a in span.axes:
        if (not is_b and a == rank - 1) or (is_b and a == rank - 2):
            mapping[a] = ro
        elif is_b and a == rank - 1:
            mapping[a] = ro - 1
        else:
            mapping[a] = a + ro - rank
    return span.moved(mapping)


def _out_dims(shape: list, ro: int, is_b: bool) -> dict[int, object]:
    rank = len(shape)
    dims = {}
    for a, d in enumerate(shape):
        if (not is_b and a == rank - 1) or (is_b and a == rank - 2):
            dims[ro] = d
        elif is_b and a == rank - 1:
            dims[ro - 1] = d
        else:
            dims[a + ro - rank] = d
    return dims


def _project(span: Span, axes: list[int]):
    """The span's ids on `axes` (index 0 along its other axes, which are collapsed)."""
    index = tuple(slice(None) if a in axes else 0 for a in span.axes)
    return span.ids[index]
