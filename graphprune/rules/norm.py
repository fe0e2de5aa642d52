"""Normalisations and softmax.

Per-channel affine ops (BatchNormalization, InstanceNormalization's scale) slice their
parameters with the units. Statistics computed *over* a unit axis (LayerNorm over channels,
softmax over channels) mix units: removing one changes the others, so such units are frozen
here (an inexact mode belongs to the transformer work).
"""

from __future__ import annotations

from ..edits import AttrCount
from ..ir import attr
from ..ops import rule
from ..slots import Span
from .common import broadcast_member, norm_axis, reduce_over, span_on
from .context import Ctx

MIXING = "normalisation or softmax over a unit axis"


@rule("BatchNormalization")
def batch_norm(ctx: Ctx) -> None:
    if ctx.used(1) or ctx.used(2):
        ctx.freeze_inputs("training-mode BatchNormalization outputs")
        return
    chan = span_on(ctx.spans(0), 1)
    if chan is not None and chan.axes == (1,):
        for i in range(1, 5):
            ctx.member(i, Span((0,), chan.ids), "param")
    elif chan is not None:
        ctx.freeze(chan.ids, "multi-axis units through BatchNormalization")
    ctx.set_out(0, ctx.spans(0))


@rule("InstanceNormalization")
def instance_norm(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    spans = reduce_over(ctx, ctx.spans(0), set(range(2, rank)), True, MIXING)
    chan = span_on(spans, 1)
    if chan is not None and chan.axes == (1,):
        ctx.member(1, Span((0,), chan.ids), "param")
        ctx.member(2, Span((0,), chan.ids), "param")
    ctx.set_out(0, spans)


@rule("GroupNormalization", since=18)
def group_norm(ctx: Ctx) -> None:
    """Statistics are per group of channels: a whole group is one unit."""
    rank, shape = ctx.rank(0), ctx.shape(0)
    groups = int(attr(ctx.node, "num_groups"))
    spans = reduce_over(ctx, ctx.spans(0), set(range(2, rank or 0)), True, MIXING)
    chan = span_on(spans, 1)
    if chan is None or chan.axes != (1,) or not isinstance(shape[1], int):
        ctx.set_out(0, spans)
        return
    per = shape[1] // groups
    for k in range(groups):
        ctx.uf.unify_all(chan.ids[k * per:(k + 1) * per])
    units = chan.ids[::per]
    for i in (1, 2):
        p = ctx.const(i)
        ids = chan.ids if p is not None and p.shape[0] == shape[1] else units
        ctx.member(i, Span((0,), ids), "param")
    ctx.edit(AttrCount(ctx.index, "num_groups", units))
    ctx.set_out(0, spans)


@rule("LayerNormalization", "RMSNormalization")
def layer_norm(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    axis = norm_axis(int(attr(ctx.node, "axis", -1)), rank)
    spans = []
    for s in ctx.spans(0):
        if all(a < axis for a in s.axes):
            spans.append(s)
            continue
        ctx.tag(s.ids, "hidden")
        if ctx.inexact_mode and all(a >= axis for a in s.axes):
            ctx.tag(s.ids, "inexact")  # hidden-size pruning: the statistics change
            for i in (1, 2):
                if ctx.input(i) and not broadcast_member(ctx, i, s, rank):
                    break
            else:
                spans.append(s)
        else:
            ctx.freeze(s.ids, MIXING)
    for o in range(len(ctx.node.output)):
        ctx.set_out(o, spans if o == 0 else [])
    if ctx.used(1) or ctx.used(2):
        ctx.freeze_spans(spans, "LayerNormalization statistics outputs used")


@rule("Softmax", tiled=True)
@rule("LogSoftmax", tiled=True)
@rule("Hardmax")
def softmax(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    legacy = ctx.opset < 13
    axis = norm_axis(int(attr(ctx.node, "axis", 1 if legacy else -1)), rank)
    axes = set(range(axis, rank)) if legacy else {axis}
    ctx.set_out(0, reduce_over(ctx, ctx.spans(0), axes, True, MIXING))


@rule("LRN")
def lrn(ctx: Ctx) -> None:
    ctx.set_out(0, reduce_over(ctx, ctx.spans(0), {1}, True, MIXING))


@rule("LpNormalization")
def lp_norm(ctx: Ctx) -> None:
    rank = ctx.rank(0) or 0
    axis = norm_axis(int(attr(ctx.node, "axis", -1)), rank)
    ctx.set_out(0, reduce_over(ctx, ctx.spans(0), {axis}, True, MIXING))


@rule("MeanVarianceNormalization")
def mvn(ctx: Ctx) -> None:
    axes = {norm_axis(a, ctx.rank(0) or 4) for a in attr(ctx.node, "axes", [0, 2, 3])}
    ctx.set_out(0, reduce_over(ctx, ctx.spans(0), axes, True, MIXING))
