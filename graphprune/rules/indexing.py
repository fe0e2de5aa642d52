"""Indexing along an axis: Concat, Split, Slice and Gather.

On a single-axis unit span these take sub-arrays (or concatenate them) and record edits for
the sizes they encode (Split sizes, Slice bounds, Gather indices). On a span that also covers
other axes ([heads, dim], fused [3, heads, dim]) the span is kept whole along the indexed axis
instead, so the constants stay valid as they are (RoPE's rotate_half, unbinding fused QKV).
"""

from __future__ import annotations

import numpy as np

from .. import shapeval
from ..edits import GatherIndices, SliceBounds, SplitSizes
from ..ir import attr, fold_gather, fold_slice, fold_split
from ..ops import rule
from ..slots import Span, simplify
from .common import broadcast_member, keep_whole, no_units_reason, norm_axis, span_on
from .context import Ctx


# -- Concat / Split / Slice / Gather ---------------------------------------------------------------
@rule("Concat", multi_input=True, shape_eval=shapeval.concat)
def concat(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    axis = norm_axis(int(attr(ctx.node, "axis")), rank)
    names = [i for i in range(ctx.n_inputs()) if ctx.input(i)]
    _concat_marks(ctx, names)
    along = [span_on(ctx.spans(i), axis) for i in names]
    out: list[Span] = []
    if any(s is not None and len(s.axes) > 1 for s in along):
        out.append(_concat_whole(ctx, along, axis))
        ctx.set_out(0, [s for s in out if s is not None])
        return
    if any(s is not None for s in along):
        pieces = []
        for i, s in zip(names, along, strict=True):
            n = (ctx.shape(i) or [None] * rank)[axis]
            if s is not None and s.axes == (axis,):
                pieces.append(s.ids)
            elif isinstance(n, int):
                ids = ctx.fresh(n)
                ctx.freeze(ids, no_units_reason(ctx, i, "concatenated with"))
                if s is not None:
                    ctx.freeze(s.ids, "unit span crosses the concat axis")
                pieces.append(ids)
            else:
                ctx.freeze_inputs("concat of an unknown size")
                return
        out.append(Span((axis,), np.concatenate(pieces)))
    out.extend(_unify_across(ctx, names, axis, rank))
    ctx.set_out(0, out)


def _concat_whole(ctx: Ctx, along: list[Span | None], axis: int) -> Span | None:
    """Pieces whose units span more axes (rotate_half's halves of [heads, dim]): kept whole
    along the concat axis, their ids are concatenated and the axis is never cut."""
    axes = along[0].axes if along[0] is not None else None
    if axes is None or any(s is None or s.axes != axes for s in along):
        for s in along:
            if s is not None:
                ctx.freeze(s.ids, "concat of differently labelled pieces")
        return None
    if not all(keep_whole(ctx, s, {axis}, "concat axis") for s in along):
        return None
    return Span(axes, np.concatenate([s.ids for s in along], axis=axes.index(axis)))


def _unify_across(ctx: Ctx, names: list[int], axis: int, rank: int) -> list[Span]:
    """Spans on the other axes: every input shares the output positions there."""
    layouts: dict[tuple[int, ...], list[Span]] = {}
    for i in names:
        for s in ctx.spans(i):
            if axis not in s.axes:
                layouts.setdefault(s.axes, []).append(s)
    out = []
    for axes, spans in layouts.items():
        for other in spans[1:]:
            ctx.unify(spans[0].ids, other.ids)
        for i in names:
            if not any(s.axes == axes for s in ctx.spans(i)):
                broadcast_member(ctx, i, spans[0], rank)
        out.append(spans[0])
    return out


def _concat_marks(ctx: Ctx, names: list[int]) -> None:
    if not any(ctx.marks(i) for i in names):
        return
    marks: list = []
    for i in names:
        shape = ctx.shape(i)
        n = shape[0] if shape else 1
        marks.extend(ctx.marks(i) or [None] * (n if isinstance(n, int) else 1))
    ctx.set_marks(0, marks)


@rule("Split", sizes=True, fold=fold_split)
def split(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    for m in ctx.marks(0) or []:  # pieces of a shape are not followed
        if m is not None:
            ctx.freeze(m, "channel count read as a value")
    axis = norm_axis(int(attr(ctx.node, "axis", 0)), rank)
    n_out = len(ctx.node.output)
    chan = span_on(ctx.spans(0), axis)
    others = [s for s in ctx.spans(0) if s is not chan]
    ctx.consume_marks(1, set(range(n_out)) if chan is not None else set())
    if chan is None:
        for o in range(n_out):
            ctx.set_out(o, others)
        return
    sizes = _split_sizes(ctx, axis, n_out)
    if sizes is None:
        ctx.freeze(chan.ids, "split sizes unknown")
        for o in range(n_out):
            ctx.set_out(o, others)
        return
    bounds = np.cumsum([0, *sizes])
    if chan.axes != (axis,):  # kept whole along the split axis: sizes never change
        if not keep_whole(ctx, chan, {axis}, "split of a multi-axis unit span"):
            for o in range(n_out):
                ctx.set_out(o, others)
            return
        k = chan.axes.index(axis)
        for o in range(n_out):
            piece = np.take(chan.ids, np.arange(bounds[o], bounds[o + 1]), axis=k)
            ctx.set_out(o, [*others, Span(chan.axes, piece)])
        return
    pieces = [chan.ids[bounds[k]:bounds[k + 1]] for k in range(n_out)]
    for o, ids in enumerate(pieces):
        ctx.set_out(o, [*others, Span((axis,), ids)])
    ctx.edit(SplitSizes(ctx.index, tuple(pieces)))


def _split_sizes(ctx: Ctx, axis: int, n_out: int) -> list[int] | None:
    if ctx.input(1):
        known = ctx.known(1)
        return None if known is None or None in known else known
    if attr(ctx.node, "split") is not None:
        return list(attr(ctx.node, "split"))
    dim = (ctx.shape(0) or [None] * (axis + 1))[axis]
    if not isinstance(dim, int):
        return None
    n = int(attr(ctx.node, "num_outputs", n_out))
    step = -(-dim // n)
    return [min(step, dim - k * step) for k in range(n)]


@rule("Slice", since=10, sizes=True, shape_eval=shapeval.slice_values,
      dims=shapeval.slice_dims, fold=fold_slice)
def slice_(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    starts, ends = ctx.known(1), ctx.known(2)
    axes = ctx.known(3) if ctx.input(3) else (list(range(len(starts))) if starts else None)
    steps = ctx.known(4) if ctx.input(4) else [1] * len(starts or [])
    if ctx.marks(0):
        _slice_marks(ctx, starts, ends, steps)
    cut_pos: set[int] = set()
    out = []
    for s in ctx.spans(0):
        if rank is None or None in (starts, ends, axes, steps) or None in axes:
            ctx.freeze(s.ids, "slice axes are not known")
            continue
        cut = [k for k, a in enumerate(axes) if norm_axis(a, rank) in s.axes]
        if not cut:
            out.append(s)
            continue
        k = cut[0]
        if None in (starts[k], ends[k], steps[k]) or len(cut) > 1:
            ctx.freeze(s.ids, "dynamic slice of a unit axis")
            continue
        if len(s.axes) > 1 or steps[k] != 1:
            whole = _slice_whole(ctx, s, norm_axis(axes[k], rank), starts[k], ends[k], steps[k])
            if whole is not None:
                out.append(whole)
                cut_pos.add(k)  # kept whole: the bounds' values never change
            continue
        r = range(len(s.ids))[slice(starts[k], ends[k], 1)]
        ids = s.ids[r.start:r.stop]
        out.append(Span(s.axes, ids))
        cut_pos.add(k)
        ctx.edit(SliceBounds(ctx.index, k, s.ids, r.start, ids))
    for i in (1, 2):
        ctx.consume_marks(i, cut_pos)
    for i in (3, 4):
        ctx.consume_marks(i, set())
    ctx.set_out(0, out)


def _slice_whole(ctx: Ctx, s: Span, axis: int, start: int, end: int, step: int) -> Span | None:
    """Slicing [heads, dim] along dim (RoPE's rotate_half): the span is kept whole along the
    sliced axis, so the bounds stay valid as they are."""
    if not keep_whole(ctx, s, {axis}, "strided slice of a unit axis"):
        return None
    k = s.axes.index(axis)
    picked = np.arange(s.ids.shape[k])[slice(start, end, step)]
    return Span(s.axes, np.take(s.ids, picked, axis=k))


def _slice_marks(ctx: Ctx, starts, ends, steps) -> None:
    marks = ctx.marks(0)
    if not starts or not ends or None in (starts[0], ends[0], steps[0]):
        ctx.consume_marks(0, set())
        return
    ctx.set_marks(0, marks[slice(starts[0], ends[0], steps[0])])


@rule("Gather", kind="ffn", shape_eval=shapeval.gather, fold=fold_gather)
def gather(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    idx = ctx.const(1)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    axis = norm_axis(int(attr(ctx.node, "axis", 0)), rank)
    if ctx.marks(0) and idx is not None and axis == 0:
        marks = ctx.marks(0)
        ctx.set_marks(0, [marks[int(v)] for v in np.ravel(idx)])
    idx_rank = idx.ndim if idx is not None else ctx.rank(1)
    if idx is None and not ctx.spans(0) and axis == 0 and _embedding(ctx, idx_rank):
        return
    out = []
    for s in ctx.spans(0):
        if axis not in s.axes:
            out.append(Span(tuple(a + (idx_rank - 1 if a > axis else 0) for a in s.axes), s.ids)
                       if idx_rank is not None else None)
            if idx_rank is None:
                out.pop()
                ctx.freeze(s.ids, "gather indices of unknown rank")
            continue
        if idx is not None and len(s.axes) > 1:
            whole = _gather_whole(ctx, s, axis, idx)
            if whole is not None:
                out.append(whole)
            continue
        if idx is None or idx.ndim != 1 or s.axes != (axis,):
            ctx.freeze(s.ids, "gather on a unit axis with non-constant or scalar indices")
            continue
        pos = np.where(idx < 0, idx + len(s.ids), idx)
        out.append(Span((axis,), s.ids[pos]))
        ctx.edit(GatherIndices(ctx.index, s.ids, pos))
    ctx.set_out(0, out)


def _embedding(ctx: Ctx, idx_rank: int | None) -> bool:
    """A constant table looked up by token ids: its columns are source units (hidden size)."""
    table = ctx.const(0)
    if table is None or table.ndim != 2 or idx_rank is None:
        return False
    units = ctx.fresh(table.shape[1])
    ctx.member(0, Span((1,), units), "source")
    ctx.set_out(0, [Span((idx_rank,), units)])
    return True


def _gather_whole(ctx: Ctx, s: Span, axis: int, idx: np.ndarray) -> Span | None:
    """Picking q/k/v out of a fused [3, heads, dim] span: kept whole along the gathered axis,
    so the indices stay valid; the picked rows keep their units."""
    if not keep_whole(ctx, s, {axis}, "gather on a unit axis"):
        return None
    k = s.axes.index(axis)
    n = s.ids.shape[k]
    picked = np.take(s.ids, np.where(idx < 0, idx + n, idx), axis=k)
    new_axes = [a if a < axis else a + idx.ndim - 1 for a in s.axes if a != axis]
    new_axes[k:k] = [axis + j for j in range(idx.ndim)]
    return simplify(Span(tuple(new_axes), picked)) if new_axes else None

