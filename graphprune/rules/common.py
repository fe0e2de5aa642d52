"""Helpers shared by the rule families: axis arithmetic, pass-through, reductions."""

from __future__ import annotations

import numpy as np

from ..edits import EntryCount
from ..ir import attr
from ..shapeval import known_value
from ..slots import Span
from .context import Ctx


def quantized(ctx: Ctx, i: int) -> bool:
    """Input `i` is a QDQ weight: DequantizeLinear of a constant (int8 data is not pruned)."""
    p = ctx.graph.producer.get(ctx.input(i))
    node = ctx.graph.nodes[p] if p is not None else None
    return (node is not None and node.op_type == "DequantizeLinear"
            and ctx.graph.is_const(node.input[0]))


def weight_problem(ctx: Ctx, i: int, what: str) -> str:
    """Why input `i` is no weight we can slice: a freeze reason naming a QDQ producer."""
    if quantized(ctx, i):
        return f"{what} is quantized (comes from DequantizeLinear)"
    return f"{what} is not a constant"


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def axes_arg(ctx: Ctx, input_index: int = 1, name: str = "axes") -> list[int] | None:
    """`axes` from the attribute (older opsets) or the constant input (newer ones)."""
    value = attr(ctx.node, name)
    if value is not None:
        return list(value)
    if ctx.input(input_index):
        c = ctx.const(input_index)
        return None if c is None else [int(v) for v in np.ravel(c)]
    return None


def pass_through(ctx: Ctx, outputs: tuple[int, ...] = (0,)) -> None:
    """Shape-preserving, position-wise op: every output carries the input's units."""
    for o in outputs:
        ctx.set_out(o, ctx.spans(0))


def span_on(spans: list[Span], axis: int) -> Span | None:
    return next((s for s in spans if axis in s.axes), None)


def keep_whole(ctx: Ctx, span: Span, axes: set[int], why: str) -> bool:
    """Make sure no unit is ever cut along `axes` of `span`.

    A span that also covers other axes is collapsed along `axes` (each row along them becomes
    part of one unit, so removal only ever takes whole rows: exact). A span lying wholly on
    `axes` cannot be kept whole that way and is frozen. This one mechanism turns [heads, dim]
    into head units, keeps RoPE's rotate_half and a slice of a fused QKV exact, and freezes a
    softmax over channels. Returns False when the span was frozen.
    """
    hit = [k for k, a in enumerate(span.axes) if a in axes]
    if not hit:
        return True
    rest = [k for k in range(len(span.axes)) if k not in hit]
    if not rest:
        ctx.freeze(span.ids, why)
        return False
    moved = np.transpose(span.ids, rest + hit)
    for row in moved.reshape(int(np.prod(moved.shape[: len(rest)])), -1):
        ctx.uf.unify_all(row)
    return True


def freeze_where(ctx: Ctx, spans: list[Span], axes: set[int], why: str) -> list[Span]:
    """Spans kept whole along `axes` (collapsed, or frozen and dropped)."""
    return [s for s in spans if keep_whole(ctx, s, axes, why)]


def reduce_over(ctx: Ctx, spans: list[Span], axes: set[int], keepdims: bool, why: str,
                statistic: bool = False) -> list[Span]:
    """Spans after reducing `axes`: kept whole along them (see keep_whole), then without them.

    `statistic`: the reduction is a mean/sum-like statistic; in inexact mode a span lying
    wholly on the reduced axes is tagged inexact (pruning it changes the statistic) instead of
    frozen."""
    out = []
    for s in spans:
        if statistic and set(s.axes) <= axes:
            ctx.tag(s.ids, "hidden")  # a residual stream normalised over its width
            if ctx.inexact_mode:
                ctx.tag(s.ids, "inexact")
                continue
        if not keep_whole(ctx, s, axes, why):
            continue
        kept = [k for k, a in enumerate(s.axes) if a not in axes]
        if len(kept) == len(s.axes):
            out.append(s)
            continue
        index = tuple(slice(None) if k in kept else 0 for k in range(len(s.axes)))
        axes_kept = tuple(s.axes[k] for k in kept)
        out.append(Span(axes_kept, s.ids[index], s.tiled & frozenset(axes_kept)))
    if keepdims:
        return out
    return [drop_axes(s, axes) for s in out]


def drop_axes(span: Span, removed: set[int]) -> Span:
    """Renumber a span's axes after `removed` axes (none of its own) disappear."""
    def renumber(a: int) -> int:
        return a - sum(r < a for r in removed)

    return Span(tuple(renumber(a) for a in span.axes), span.ids,
                frozenset(renumber(a) for a in span.tiled))


def broadcast_member(ctx: Ctx, i: int, span: Span, out_rank: int) -> bool:
    """Reconcile input `i`, which carries no units on `span`'s axes, with `span`.

    Broadcast (size 1) there: nothing to do. A constant of full size on every span axis: a
    member, sliced with the units. Otherwise its positions along the axes where it has real
    extent can never be removed, so the span is kept whole along them (collapsed or frozen).
    Returns False when the span was frozen.
    """
    shape = ctx.shape(i)
    if shape is None:
        ctx.freeze(span.ids, "input shape unknown")
        return False
    offset = out_rank - len(shape)
    dims = [shape[a - offset] if a - offset >= 0 else 1 for a in span.axes]
    full = {a for a, d in zip(span.axes, dims, strict=True) if d != 1}
    if not full:
        return True
    if not full & span.tiled and all(d == n for d, n in zip(dims, span.ids.shape, strict=True)):
        if ctx.is_const(i):
            ctx.member(i, Span(tuple(a - offset for a in span.axes), span.ids), "param")
            return True
        if _expanded_constant(ctx, i, Span(tuple(a - offset for a in span.axes), span.ids)):
            return True
    return keep_whole(ctx, span, full, no_units_reason(ctx, i, "combined with"))


def no_units_reason(ctx: Ctx, i: int, how: str) -> str:
    """Why a unit span cannot pass a tensor without units; a graph input is named (with
    allow_io_change, one that carries state such as a KV cache gets units)."""
    name = ctx.input(i)
    if name in ctx.graph.inputs:
        return f"{how} graph input '{name}', which carries no units"
    return f"{how} a tensor that carries no units"


def _expanded_constant(ctx: Ctx, i: int, span: Span) -> bool:
    """A learned token broadcast to the batch (ViT's cls token: Expand(param, [B, 1, D])):
    slice the parameter itself, and the Expand's size for those axes."""
    graph = ctx.graph
    name = ctx.input(i)
    p = graph.producer.get(name)
    if p is None or graph.nodes[p].op_type != "Expand" or len(graph.uses(name)) != 1:
        return False
    node = graph.nodes[p]
    param, shape = graph.const(node.input[0]), ctx.graph.shape(name)
    target = known_value(graph, node.input[1])
    if param is None or shape is None or target is None:
        return False
    target = list(np.ravel(target))
    lead = len(shape) - param.ndim
    if any(a - lead < 0 or param.shape[a - lead] != n
           for a, n in zip(span.axes, span.ids.shape, strict=True)):
        return False
    skip = len(shape) - len(target)
    entries = [(a - skip, a) for a in span.axes if a - skip >= 0 and target[a - skip] != 1]
    if any(not isinstance(target[pos], int) for pos, _ in entries):
        return False
    ctx.member(0, Span(tuple(a - lead for a in span.axes), span.ids), "param", node=p)
    for pos, a in entries:
        ctx.edit(EntryCount(p, 1, pos, span, a))
    return True
