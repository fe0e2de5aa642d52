"""Helpers shared by the rule families: axis arithmetic, pass-through, reductions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..ir import attr
from ..slots import Span

if TYPE_CHECKING:
    from ..analysis import Ctx


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


def freeze_where(ctx: Ctx, spans: list[Span], axes: set[int], why: str) -> list[Span]:
    """Freeze spans touching `axes`; return the others unchanged."""
    keep = []
    for s in spans:
        if set(s.axes) & axes:
            ctx.freeze(s.ids, why)
        else:
            keep.append(s)
    return keep


def reduce_over(ctx: Ctx, spans: list[Span], axes: set[int], keepdims: bool, why: str) -> list[Span]:
    """Spans after reducing `axes`.

    A span lying wholly on reduced axes mixes its units: frozen. A span that also covers kept
    axes is collapsed along the reduced ones (each reduced row becomes part of one unit), which
    keeps the reduction exact: this is how [heads, dim] becomes head units.
    """
    out = []
    for s in spans:
        red = [k for k, a in enumerate(s.axes) if a in axes]
        if not red:
            out.append(s)
            continue
        kept = [k for k in range(len(s.axes)) if k not in red]
        if not kept:
            ctx.freeze(s.ids, why)
            continue
        moved = np.transpose(s.ids, kept + red)
        rows = moved.reshape(int(np.prod(moved.shape[: len(kept)])), -1)
        for row in rows:
            ctx.uf.unify_all(row)
        index = tuple(slice(None) if k in kept else 0 for k in range(len(s.axes)))
        out.append(Span(tuple(s.axes[k] for k in kept), s.ids[index]))
    if keepdims:
        return out
    return [drop_axes(s, axes) for s in out]


def drop_axes(span: Span, removed: set[int]) -> Span:
    """Renumber a span's axes after `removed` axes (none of its own) disappear."""
    return Span(tuple(a - sum(r < a for r in removed) for a in span.axes), span.ids)


def broadcast_member(ctx: Ctx, i: int, span: Span, out_rank: int) -> bool:
    """Make constant input `i` a member along `span` if it is full-size there.

    Returns False when the input is a non-constant tensor with real extent on the span's axes
    (its positions cannot be removed by us), True when it is a member or broadcasts.
    """
    shape = ctx.shape(i)
    if shape is None:
        return False
    offset = out_rank - len(shape)
    dims = [shape[a - offset] if a - offset >= 0 else 1 for a in span.axes]
    if all(d == 1 for d in dims):
        return True
    if ctx.const(i) is None:
        return False
    if any(d != n for d, n in zip(dims, span.ids.shape, strict=True)):
        return False  # partly broadcast along a multi-axis span: not a plain slice
    ctx.member(i, Span(tuple(a - offset for a in span.axes), span.ids), "param")
    return True

