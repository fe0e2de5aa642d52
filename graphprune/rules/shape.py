"""Layout ops: they move, merge, split, slice and gather unit axes.

Transpose permutes spans; Reshape/Flatten regroup axes by equal products (a merge repeats
slot ids, a split gives a multi-axis span); Expand/Tile broadcast. Every constant that encodes
a size of a unit axis (Reshape/Expand shapes) gets an edit; a size that is computed in a way
we cannot follow freezes the units instead. Concat/Split/Slice/Gather live in indexing.py.

Shape ops give *marks*: entries of a shape tensor known to be the size of a unit axis. They
follow Gather/Slice/Concat/(Un)squeeze/Cast and may reach a Reshape whose output axis has the
very same units (the size then shrinks by itself); anywhere else they freeze the units.
"""

from __future__ import annotations

import math

import numpy as np

from .. import shapeval
from ..edits import EntryCount, EntryScale, line
from ..ir import Dim, attr, fold_reshape, fold_squeeze, fold_transpose, fold_unsqueeze
from ..ops import rule
from ..shapeval import reshape_dims
from ..slots import Span, simplify
from .common import axes_arg, drop_axes, norm_axis, span_on
from .context import Ctx


# -- Transpose / Squeeze / Unsqueeze ------------------------------------------------------------
@rule("Transpose", tiled=True, shape_eval=shapeval.transpose, fold=fold_transpose)
def transpose(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    perm = attr(ctx.node, "perm") or (list(range(rank))[::-1] if rank else None)
    if perm is None:
        ctx.freeze_inputs("input rank unknown")
        return
    if rank == 1:  # a shape: entries stay in place
        ctx.set_marks(0, ctx.marks(0) or [])
    mapping = {p: j for j, p in enumerate(perm)}
    ctx.set_out(0, [s.moved(mapping) for s in ctx.spans(0)])


@rule("Squeeze", shape_eval=shapeval.reshape_like, fold=fold_squeeze)
def squeeze(ctx: Ctx) -> None:
    shape = ctx.shape(0)
    if shape is None:
        ctx.freeze_inputs("input shape unknown")
        return
    axes = axes_arg(ctx)
    axes = {norm_axis(a, len(shape)) for a in axes} if axes else {
        a for a, d in enumerate(shape) if d == 1}
    out = []
    for s in ctx.spans(0):
        hit = [k for k, a in enumerate(s.axes) if a in axes]
        if hit and len(hit) == len(s.axes):
            ctx.freeze(s.ids, "squeezed unit axis")
            continue
        if hit:  # a size-1 axis of a larger span (one of q/k/v after unbind): drop it
            index = tuple(0 if k in hit else slice(None) for k in range(len(s.axes)))
            s = Span(tuple(a for k, a in enumerate(s.axes) if k not in hit), s.ids[index])
        out.append(drop_axes(s, axes))
    ctx.set_out(0, out)
    ctx.set_marks(0, ctx.marks(0) or [])


@rule("Unsqueeze", tiled=True, shape_eval=shapeval.reshape_like, fold=fold_unsqueeze)
def unsqueeze(ctx: Ctx) -> None:
    rank = ctx.rank(0)
    axes = axes_arg(ctx)
    if rank is None or axes is None:
        ctx.freeze_inputs("unsqueeze axes unknown")
        return
    out_rank = rank + len(axes)
    inserted = {norm_axis(a, out_rank) for a in axes}
    kept = [a for a in range(out_rank) if a not in inserted]
    ctx.set_out(0, [s.moved(dict(enumerate(kept))) for s in ctx.spans(0)])
    ctx.set_marks(0, ctx.marks(0) or [])


# -- Reshape / Flatten ---------------------------------------------------------------------------
def reshape_groups(ins: list[Dim], outs: list[Dim]) -> list[tuple[list[int], list[int]]] | None:
    """Pair input and output axes into runs of equal product; None where dims are unknown.

    Runs are paired from the left; where unknown dims block that (`[B, S, H] → [B·S, H]`),
    from both ends, the unknown middle becoming one run (equal element counts force equal
    products there)."""
    forward = _groups_forward(ins, outs)
    if forward is not None:
        return forward
    return _groups_both_ends(ins, outs)


def _groups_both_ends(ins: list[Dim], outs: list[Dim]):
    head: list = []
    i = j = 0
    while i < len(ins) and j < len(outs):
        run = _same_symbol(ins, outs, i, j) or _product_run(ins, outs, i, j)
        if run is None:
            break
        head.append(run)
        i, j = run[0][-1] + 1, run[1][-1] + 1
    tail: list = []
    ri, rj = ins[i:][::-1], outs[j:][::-1]
    a = b = 0
    while a < len(ri) and b < len(rj):
        run = _same_symbol(ri, rj, a, b) or _product_run(ri, rj, a, b)
        if run is None:
            break
        tail.append(([len(ins) - 1 - x for x in run[0]][::-1],
                     [len(outs) - 1 - x for x in run[1]][::-1]))
        a, b = run[0][-1] + 1, run[1][-1] + 1
    mid_i = list(range(i, len(ins) - a))
    mid_j = list(range(j, len(outs) - b))
    if not mid_i or not mid_j:
        return None
    return [*head, (mid_i, mid_j), *tail[::-1]]


def _same_symbol(ins, outs, i, j):
    """Equal named dims are equal sizes: a run boundary (products match on both sides)."""
    if isinstance(ins[i], str) and ins[i] == outs[j]:
        return [i], [j]
    return None


def _groups_forward(ins: list[Dim], outs: list[Dim]) -> list[tuple[list[int], list[int]]] | None:
    groups: list[tuple[list[int], list[int]]] = []
    def unmatched(xs, ys):
        return sum(not isinstance(d, int) and (d is None or d not in ys) for d in xs)

    # one unknown dim left on each side (same-named symbols aside): element count forces them equal
    dynamic_pair = unmatched(ins, outs) == 1 == unmatched(outs, ins)
    i = j = 0
    while i < len(ins) or j < len(outs):
        a = ins[i] if i < len(ins) else None
        b = outs[j] if j < len(outs) else None
        if a == 1 and b != 1:
            groups.append(([i], []))
            i += 1
        elif b == 1 and a != 1:
            groups.append(([], [j]))
            j += 1
        elif (a is not None and a == b) or (dynamic_pair and i < len(ins) and j < len(outs)
                                           and not isinstance(a, int) and not isinstance(b, int)):
            # one unknown dim on each side: the element count forces them equal
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
        else:
            run = _product_run(ins, outs, i, j)
            if run is None:
                return None
            groups.append(run)
            i, j = run[0][-1] + 1, run[1][-1] + 1
    return groups


def _product_run(ins, outs, i, j):
    gi, gj = [i], [j]
    if i >= len(ins) or j >= len(outs):
        return None
    pi, pj = ins[i], outs[j]
    while True:
        if not isinstance(pi, int) or not isinstance(pj, int):
            return None
        if pi == pj:
            return gi, gj
        if pi < pj:
            i += 1
            if i >= len(ins):
                return None
            gi.append(i)
            pi = pi * ins[i] if isinstance(ins[i], int) else None
        else:
            j += 1
            if j >= len(outs):
                return None
            gj.append(j)
            pj = pj * outs[j] if isinstance(outs[j], int) else None


def regroup(ctx: Ctx, ins: list[Dim] | None, outs: list[Dim] | None) -> list[Span] | None:
    """Map the input's spans through a reshape from `ins` to `outs` (None: frozen).

    A span may cover several runs of equal product (GQA's repeat_kv reshapes [Hkv, rep] and
    keeps [D]): each run is regrouped on its own; runs the span does not touch keep size 1, so
    unknown dims (batch, sequence) between them do no harm.
    """
    spans = ctx.spans(0)
    groups = reshape_groups(ins, outs) if ins is not None and outs is not None else None
    if groups is None:
        ctx.freeze_spans(spans, "reshape with unknown dimensions")
        return None
    out = []
    for s in spans:
        new = _regroup_span(s, groups, ins, outs)
        if new is None:
            ctx.freeze(s.ids, "reshape mixes a unit axis with an unknown one")
        else:
            out.append(new)
    return out


def _regroup_span(s: Span, groups, ins: list[Dim], outs: list[Dim]) -> Span | None:
    touched = [(gi, gj) for gi, gj in groups if set(gi) & set(s.axes)]
    if any(not gj for gi, gj in touched):
        return None
    if not set(s.axes) <= {a for gi, _ in touched for a in gi}:
        return None
    virt_in: dict[int, int] = {}
    virt_out: dict[int, int] = {}
    tiled: set[int] = set()
    for gi, gj in touched:
        if all(isinstance(ins[a], int) for a in gi) and not set(gi) & s.tiled:
            continue
        run = _tiled_run(s, gi, gj, ins, outs)
        if run is None:
            return None
        virt_in.update(run[0])
        virt_out.update(run[1])
        tiled.update(run[2])
    if any(not isinstance(outs[b], int) and b not in virt_out for _, gj in touched for b in gj):
        return None
    lo, hi = min(touched[0][0]), max(touched[-1][0])
    index = tuple(slice(None) if a in s.axes else np.newaxis for a in range(lo, hi + 1))
    arr = s.ids[index]
    for a, n in virt_in.items():  # a tiled axis read at a whole number of periods
        if a in s.tiled:
            arr = np.concatenate([arr] * (n // arr.shape[a - lo]), axis=a - lo)
    out_axes: list[int] = []
    out_dims: list[int] = []
    for gi, gj in groups:
        if not gi or gi[0] < lo or gi[-1] > hi:
            continue
        out_axes.extend(gj)
        if (gi, gj) in touched:
            out_dims.extend(virt_out.get(b, outs[b]) for b in gj)
        else:
            out_dims.extend(1 for _ in gj)
    in_dims = [virt_in.get(a, ins[a]) if any(a in gi for gi, _ in touched) else 1
               for a in range(lo, hi + 1)]
    full = np.broadcast_to(arr, in_dims).reshape(out_dims)
    keep = [k for k, b in enumerate(out_axes)
            if any(b in gj for gi, gj in touched)]
    full = full[tuple(slice(None) if k in keep else 0 for k in range(len(out_axes)))]
    axes = tuple(out_axes[k] for k in keep)
    return simplify(Span(axes, full, frozenset(tiled) & frozenset(axes)))


def _tiled_run(s: Span, gi: list[int], gj: list[int], ins: list[Dim], outs: list[Dim]):
    """A run with dynamic dims: `[…, X, k…] → […, Y, l…]`, X and Y its last dynamic dims.

    Units may sit only on the known tails k and, repeating with some period t (Span.tiled),
    on X; everything before X carries none. The ids are then a function of the flat index
    modulo P = t·Πk. With Q = Πl: if P divides Q, the output tail repeats them (`[S, B·H, D]
    → [S·B, H·D]`, `[B·H, S, D] → [B, H, S, D]`); if Q divides P and Y is the run's only
    output dim before l, Y repeats them with period P/Q (heads folded into the batch,
    `[S, B, H·D] → [S, B·H, D]`). Returns the virtual sizes standing in for the run's dims
    and the tiled output axes, or None when the run has another form."""
    xi = max(k for k, a in enumerate(gi) if not isinstance(ins[a], int) or a in s.tiled)
    yj = max((k for k, b in enumerate(gj) if not isinstance(outs[b], int)), default=None)
    x, head, tail = gi[xi], gi[:xi], gi[xi + 1:]
    if (yj is None or isinstance(ins[x], int) or any(a in s.axes for a in head)
            or any(not isinstance(ins[a], int) for a in tail)):
        return None
    if x in s.axes and x not in s.tiled:
        return None
    t_in = s.ids.shape[s.axes.index(x)] if x in s.axes else 1
    p = t_in * math.prod(ins[a] for a in tail)
    q = math.prod(outs[b] for b in gj[yj + 1:])
    virt_in = {a: 1 for a in head}
    virt_out = {b: 1 for b in gj[:yj]}
    y = gj[yj]
    if q % p == 0:
        virt_in[x] = t_in * (q // p)
        virt_out[y] = 1
        return virt_in, virt_out, set()
    if p % q == 0 and yj == 0:
        virt_in[x] = t_in
        virt_out[y] = p // q
        return virt_in, virt_out, ({y} if p // q > 1 else set())
    return None


@rule("Flatten")
def flatten(ctx: Ctx) -> None:
    ins = ctx.shape(0)
    if ins is None:
        ctx.freeze_inputs("input shape unknown")
        return
    axis = norm_axis(int(attr(ctx.node, "axis", 1)), len(ins))
    spans = ctx.spans(0)
    groups_ok = all(all(a < axis for a in s.axes) or all(a >= axis for a in s.axes) for s in spans)
    if not groups_ok:
        ctx.freeze_inputs("flatten splits a unit span")
        return
    out = []
    for s in spans:
        side = list(range(axis)) if s.axes[0] < axis else list(range(axis, len(ins)))
        if any(not isinstance(ins[a], int) for a in side):
            ctx.freeze(s.ids, "flatten over an unknown dimension")
            continue
        index = tuple(slice(None) if a in s.axes else np.newaxis for a in side)
        full = np.broadcast_to(s.ids[index], [ins[a] for a in side])
        out.append(Span((0 if side[0] == 0 else 1,), full.reshape(-1)))
    ctx.set_out(0, out)


@rule("Reshape", tiled=True, sizes=True, shape_eval=shapeval.reshape_like, dims=reshape_dims,
      fold=fold_reshape)
def reshape(ctx: Ctx) -> None:
    if ctx.marks(0):
        ctx.set_marks(0, ctx.marks(0))
    out = regroup(ctx, ctx.shape(0), _reshape_dims(ctx)) if ctx.spans(0) else []
    if out is None:
        ctx.consume_marks(1, set())
        return
    ok = [s for s in out if _sizes_fixable(ctx, s, 1, allow=(-1,))]
    ctx.consume_marks(1, {a for s in ok for a in s.axes})
    ctx.set_out(0, ok)


def _reshape_dims(ctx: Ctx) -> list[Dim] | None:
    """Output dims from shape inference, completed from the statically known shape input."""
    inferred = ctx.out_shape(0)
    known = reshape_dims(ctx.graph, ctx.node)
    if known is None or (inferred and len(inferred) != len(known)):
        return inferred
    if inferred is None:
        return known
    return [i if isinstance(i, int) else (k if k is not None else i)
            for i, k in zip(inferred, known, strict=True)]


def _sizes_fixable(ctx: Ctx, span: Span, index: int, allow: tuple[int, ...],
                   offset: int = 0) -> bool:
    """Record edits for the shape entries of `span`'s axes, or freeze it if one can't be fixed.

    An entry may be a literal or computed (Shape → Gather → Div → Concat …): its value must be
    known statically; the rewrite then overrides that entry with the new size.
    """
    values = ctx.known(index) or []
    for a in span.axes:
        pos = a - offset  # Expand aligns a shorter shape to the right
        if pos < 0:
            continue
        v = values[pos] if pos < len(values) else None
        if a in span.tiled:  # B·H → B·H′: the entry scales by the kept share of the period
            period = span.ids.shape[span.axes.index(a)]
            if v == -1:
                continue
            read = (ctx.marks(index) or [])[pos:pos + 1]
            if read and read[0] is not None:  # read from a tensor's B·H: shrinks by itself
                if len(read[0]) != period:
                    ctx.freeze(span.ids, "batch-folded size read from another layout")
                    return False
                ctx.unify(read[0], line(span, a))
                continue
            if v is not None and (v <= 0 or v % period):
                ctx.freeze(span.ids, "size of a batch-folded unit axis is not a multiple of it")
                return False
            ctx.edit(EntryScale(ctx.index, index, pos, span, a, period))
            continue
        if v is None:
            ctx.freeze(span.ids, "size of a unit axis is computed from a dynamic value")
            return False
        if v in allow or (v == 0 and ctx.node.op_type == "Reshape"
                          and not attr(ctx.node, "allowzero", 0) and _same_axis(ctx, span, a)):
            continue
        ctx.edit(EntryCount(ctx.index, index, pos, span, a))
    return True


def _same_axis(ctx: Ctx, span: Span, a: int) -> bool:
    """A 0 in a Reshape shape copies the input's dim: fine when that axis carries these units."""
    src = span_on(ctx.spans(0), a)
    return src is not None and src.axes == (a,) and np.array_equal(src.ids, span.ids)


# -- Expand / Tile -------------------------------------------------------------------------------
@rule("Expand", sizes=True, dims=shapeval.expand_dims)
def expand(ctx: Ctx) -> None:
    rank, out_shape = ctx.rank(0), ctx.out_shape(0)
    for m in ctx.marks(0) or []:  # a shape broadcast is not followed
        if m is not None:
            ctx.freeze(m, "channel count read as a value")
    if not ctx.spans(0):
        ctx.consume_marks(1, set())
        return
    if rank is None or out_shape is None:
        ctx.freeze_inputs("shapes unknown")
        return
    shift = len(out_shape) - rank
    offset = len(out_shape) - len(ctx.known(1) or out_shape)
    out = [m for m in (s.shifted(shift) for s in ctx.spans(0))
           if _sizes_fixable(ctx, m, 1, (1,), offset)]
    ctx.consume_marks(1, {a - offset for s in out for a in s.axes})
    ctx.set_out(0, out)


@rule("Tile")
def tile(ctx: Ctx) -> None:
    reps = ctx.const(1)
    out = []
    for s in ctx.spans(0):
        if reps is None or any(int(reps[a]) != 1 for a in s.axes):
            ctx.freeze(s.ids, "tiled unit axis")
        else:
            out.append(s)
    ctx.set_out(0, out)


# -- Shape ---------------------------------------------------------------------------------------
@rule("Shape", tiled=True, shape_eval=shapeval.shape_of)
def shape(ctx: Ctx) -> None:
    """Each entry read from a unit axis is marked with one line of slots along it: freezing
    them keeps that size (a head-dim size read from `[B, H, S, D]` pins one head, not all)."""
    rank = ctx.rank(0)
    if rank is None:
        ctx.freeze_inputs("input rank unknown")
        return
    start = norm_axis(int(attr(ctx.node, "start", 0)), rank)
    end = attr(ctx.node, "end")
    end = rank if end is None else min(norm_axis(int(end), rank), rank)
    marks: list = []
    for a in range(start, end):
        s = span_on(ctx.spans(0), a)
        marks.append(None if s is None else line(s, a))
    ctx.set_marks(0, marks)


@rule("Size")
def size(ctx: Ctx) -> None:
    ctx.freeze_inputs("element count read as a value")


@rule("ConstantOfShape", shape_eval=shapeval.constant_of_shape,
      dims=shapeval.constant_of_shape_dims)
def constant_of_shape(ctx: Ctx) -> None:
    """A new tensor of the shape given: it carries no units, so a unit axis's size that is
    one of its dims stays (the new tensor would not shrink with the units)."""
    ctx.consume_marks(0, set())


def _arange(graph, node, args) -> np.ndarray | None:
    """The entries of arange(start, limit, delta) over known ints (ONNX counts as Python's
    range does)."""
    bounds = [None if a is None else shapeval.to_ints(a)[0] for a in args[:3]]
    if None in bounds or bounds[2] == 0 or len(range(*bounds)) > shapeval.MAX_ELEMENTS:
        return None
    out = np.empty(len(range(*bounds)), dtype=object)
    out[:] = list(range(*bounds))
    return out


@rule("Range", shape_eval=_arange, dims=shapeval.range_dims, settings=(0, 1, 2))
def range_(ctx: Ctx) -> None:
    """arange(start, limit, delta): a new tensor without units. A unit count in its bounds
    would change its entries or their number: it stays."""
    ctx.freeze_marks("channel count read as a value")
