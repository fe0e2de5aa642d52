"""The ONNX `Attention` op (opset 23): the fused form of Q·Kᵀ → softmax → ·V.

Units are heads, the same units the unfused MatMul rule finds: each head's units are kept
whole along the head dim and the sequence, query head h is tied to its key/value head
h // (q_heads / kv_heads) (grouped-query attention removes a KV head with all of its query
heads), and `q_num_heads`/`kv_num_heads` shrink with the heads kept (3-D inputs).
A KV cache (past_key/past_value inputs) or a used present/qk output freezes the heads.
"""

from __future__ import annotations

import numpy as np

from ..edits import AttrCount
from ..ir import attr
from ..ops import rule
from ..slots import Span
from .common import broadcast_member, keep_whole, span_on
from .context import Ctx


@rule("Attention", since=23, multi_input=True)
def attention(ctx: Ctx) -> None:
    ranks = [ctx.rank(i) for i in range(3)]
    if None in ranks or len(set(ranks)) != 1 or ranks[0] not in (3, 4):
        ctx.freeze_inputs("Attention with unknown or mixed input ranks")
        return
    cached = any(ctx.input(i) for i in (4, 5)) or any(ctx.used(o) for o in (1, 2, 3))
    if cached:
        ctx.freeze_inputs("Attention with a KV cache or extra outputs")
        return
    four_d = ranks[0] == 4
    heads = [_head_units(ctx, i, four_d) for i in range(3)]
    if any(h is None for h in heads):
        for h in heads:
            if h is not None:
                ctx.freeze(h, "Attention operand without units")
        ctx.freeze_inputs("Attention operand without units")
        return
    q, k, v = heads
    if len(k) != len(v) or len(q) % len(k):
        ctx.freeze_inputs("Attention head counts do not divide")
        return
    group = len(q) // len(k)
    ctx.unify(k, v)
    ctx.unify(q, np.repeat(k, group))
    ctx.tag(q, "heads")
    if ctx.input(3) and four_d:
        broadcast_member(ctx, 3, Span((1,), q), 4)
    out_shape = ctx.out_shape(0)
    if four_d:
        ctx.set_out(0, [Span((1,), q)])
    else:
        dv = _per_head(ctx, 2, len(k))
        if dv is None or out_shape is None:
            ctx.freeze(q, "Attention output size unknown")
            return
        ctx.set_out(0, [Span((2,), np.repeat(q, dv))])
        ctx.edit(AttrCount(ctx.index, "q_num_heads", q))
        ctx.edit(AttrCount(ctx.index, "kv_num_heads", k))


def _head_units(ctx: Ctx, i: int, four_d: bool) -> np.ndarray | None:
    """One slot per head of operand `i`, its other positions collapsed into it."""
    axis = 1 if four_d else 2
    span = span_on(ctx.spans(i), axis)
    if span is None:
        return None
    rank = ctx.rank(i)
    if four_d:
        others = set(range(rank)) - {1}
        if not keep_whole(ctx, span, others, "attention head spans"):
            return None
        index = tuple(slice(None) if a == 1 else 0 for a in span.axes)
        return span.ids[index]
    n_heads = attr(ctx.node, "q_num_heads" if i == 0 else "kv_num_heads")
    if n_heads is None or span.axes != (2,) or len(span.ids) % int(n_heads):
        ctx.freeze(span.ids, "Attention head layout unknown")
        return None
    per_head = span.ids.reshape(int(n_heads), -1)
    for row in per_head:
        ctx.uf.unify_all(row)
    return per_head[:, 0].copy()


def _per_head(ctx: Ctx, i: int, n_heads: int) -> int | None:
    shape = ctx.shape(i)
    if not shape or not isinstance(shape[-1], int) or shape[-1] % n_heads:
        return None
    return shape[-1] // n_heads
