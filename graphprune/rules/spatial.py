"""Pooling, reductions, Resize and Pad: they work along some axes and leave others alone.

Units on untouched axes pass; units on a pooled/padded/resized axis are frozen; a reduction
over a unit axis follows `reduce_over` (frozen if it mixes units, collapsed if it does not).
"""

from __future__ import annotations

import numpy as np

from ..edits import EntryCount
from ..ir import attr
from ..ops import rule
from .common import axes_arg, drop_axes, freeze_where, norm_axis, reduce_over
from .context import Ctx

REDUCE = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)
MIXING = "reduction over a unit axis"
STATISTICS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceL1"})
"""Reductions that are statistics of their axis (inexact, not wrong, when units go)."""


@rule("MaxPool", "AveragePool", "LpPool", "MaxRoiPool")
def pool(ctx: Ctx) -> None:
    rank = ctx.rank(0) or 0
    if ctx.used(1):
        ctx.freeze_inputs("MaxPool indices encode channel positions")
        return
    ctx.set_out(0, freeze_where(ctx, ctx.spans(0), set(range(2, rank)), "pooled axis"))


@rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def global_pool(ctx: Ctx) -> None:
    rank = ctx.rank(0) or 0
    ctx.set_out(0, reduce_over(ctx, ctx.spans(0), set(range(2, rank)), True, MIXING))


@rule(*REDUCE)
def reduce(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    axes = axes_arg(ctx)
    if axes is None and ctx.input(1):
        ctx.freeze_inputs("reduction axes are not constant")
        return
    if not axes:
        if int(attr(ctx.node, "noop_with_empty_axes", 0)):
            ctx.set_out(0, ctx.spans(0))
            return
        axes = list(range(rank))
    keep = bool(attr(ctx.node, "keepdims", 1))
    red = {norm_axis(a, rank) for a in axes}
    statistic = ctx.node.op_type in STATISTICS
    ctx.set_out(0, reduce_over(ctx, ctx.spans(0), red, keep, MIXING, statistic))


@rule("CumSum", since=11)
def cumsum(ctx: Ctx) -> None:
    """Running sums along one axis mix its positions (removing one changes every later sum):
    units stay whole along that axis (there alone: frozen) and pass on the others."""
    rank, axis = ctx.rank(0), ctx.known(1)
    if rank is None or not axis or axis[0] is None:
        ctx.freeze_inputs("cumsum axis unknown")
        return
    summed = {norm_axis(axis[0], rank)}
    ctx.set_out(0, freeze_where(ctx, ctx.spans(0), summed, "running sum over a unit axis"))


@rule("ArgMax", "ArgMin")
def arg_reduce(ctx: Ctx) -> None:
    rank = ctx.rank(0) or 0
    axis = norm_axis(int(attr(ctx.node, "axis", 0)), rank)
    spans = freeze_where(ctx, ctx.spans(0), {axis}, "index over a unit axis")
    keep = bool(attr(ctx.node, "keepdims", 1))
    ctx.set_out(0, spans if keep else [drop_axes(s, {axis}) for s in spans])


@rule("Resize", since=11, settings=(1, 2))
def resize(ctx: Ctx) -> None:
    """Units may sit on axes the resize leaves alone (scale 1); a `sizes` constant is fixed."""
    spans = ctx.spans(0)
    if not spans:
        return
    shape = ctx.shape(0)
    scales = ctx.const(2) if ctx.input(2) else None
    sizes_name = ctx.input(3)
    axes = attr(ctx.node, "axes")
    rank = len(shape) if shape else 0
    axes = [norm_axis(a, rank) for a in axes] if axes is not None else list(range(rank))
    slotted = {a for s in spans for a in s.axes}
    if sizes_name:
        sizes = ctx.const(3)
        marks = ctx.marks(3)
        ok = True
        for a in slotted:
            if a not in axes:
                continue
            k = axes.index(a)
            if sizes is not None:
                ok &= int(sizes[k]) == shape[a]
            else:
                ok &= bool(marks) and marks[k] is not None
        if not ok:
            ctx.freeze_spans(spans, "resize sizes cannot be rewritten")
            return
        if sizes is not None:
            for s in spans:
                for a in s.axes:
                    if a in axes:
                        ctx.edit(EntryCount(ctx.index, 3, axes.index(a), s, a))
    elif scales is not None and scales.size:
        bad = {a for a in slotted if a in axes and float(scales[axes.index(a)]) != 1.0}
        spans = freeze_where(ctx, spans, bad, "resized unit axis")
    elif ctx.input(2):
        ctx.freeze_spans(spans, "resize scales are not constant")
        return
    ctx.set_out(0, spans)


@rule("Pad", since=11, settings=(2,))
def pad(ctx: Ctx) -> None:
    spans = ctx.spans(0)
    if not spans:
        return
    rank = ctx.rank(0) or 0
    pads = ctx.known(1)
    axes = axes_arg(ctx, 3) if ctx.input(3) else list(range(rank))
    if pads is None or axes is None:
        ctx.freeze_spans(spans, "pad amounts are not known")
        return
    pads = np.array([p if p is not None else 1 for p in pads]).reshape(2, -1)
    padded = {norm_axis(a, rank) for k, a in enumerate(axes) if pads[:, k].any()}
    ctx.set_out(0, freeze_where(ctx, spans, padded, "padded unit axis"))


@rule("DepthToSpace")
def depth_to_space(ctx: Ctx) -> None:
    """Each output channel gathers blocksize² input channels: they form one unit."""
    b = int(attr(ctx.node, "blocksize"))
    crd = attr(ctx.node, "mode", b"DCR") in (b"CRD", "CRD")
    out = []
    for s in ctx.spans(0):
        if s.axes != (1,):
            ctx.freeze(s.ids, "depth-to-space of a non-channel unit axis")
            continue
        ids = s.ids.reshape(-1, b * b) if crd else s.ids.reshape(b * b, -1).T
        for row in ids:
            ctx.uf.unify_all(row)
        out.append(type(s)((1,), ids[:, 0].copy()))
    ctx.set_out(0, out)


@rule("SpaceToDepth")
def space_to_depth(ctx: Ctx) -> None:
    """Output channel (k, c) for block offset k carries input channel c's unit."""
    b = int(attr(ctx.node, "blocksize"))
    out = []
    for s in ctx.spans(0):
        if s.axes != (1,):
            ctx.freeze(s.ids, "space-to-depth of a non-channel unit axis")
            continue
        out.append(type(s)((1,), np.tile(s.ids, b * b)))
    ctx.set_out(0, out)
