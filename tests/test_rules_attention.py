"""Attention rules: activation MatMuls (Q·Kᵀ, attention·V) and the fused ONNX Attention op.

Heads must come out as units (a head's Q, K, V rows and its output-projection columns go
together), grouped-query attention must tie each KV head to its query heads, and the
numbers after a rewrite must equal the masked original.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Builder, analyze, assert_exact, node

HIDDEN, HEAD_DIM, SEQ = 32, 8, 5


def _proj(b: Builder, x: str, n: int, name: str) -> str:
    return b.op("MatMul", [x, b.weight([HIDDEN, n], fan_in=HIDDEN, name=f"{name}_W")], name=name)


def _heads(b: Builder, t: str, n_heads: int) -> str:
    """[B, S, H*D] → [B, H, S, D]."""
    r = b.op("Reshape", [t, b.ints([0, 0, n_heads, HEAD_DIM])])
    return b.op("Transpose", [r], perm=[0, 2, 1, 3])


def _repeat_kv(b: Builder, t: str, n_kv: int, rep: int) -> str:
    """HF's repeat_kv: [B, Hkv, S, D] → [B, Hkv*rep, S, D] through Unsqueeze/Expand/Reshape."""
    u = b.op("Unsqueeze", [t, b.ints([2])])
    e = b.op("Expand", [u, b.ints([2, n_kv, rep, SEQ, HEAD_DIM])])
    return b.op("Reshape", [e, b.ints([2, n_kv * rep, SEQ, HEAD_DIM])])


def _rotate_half(b: Builder, t: str) -> str:
    """RoPE's rotate_half: cat(-x2, x1) over halves of the head dim, then x*cos + rot*sin."""
    half = HEAD_DIM // 2
    x1 = b.op("Slice", [t, b.ints([0]), b.ints([half]), b.ints([3])])
    x2 = b.op("Slice", [t, b.ints([half]), b.ints([HEAD_DIM]), b.ints([3])])
    rot = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
    cos = b.uniform([SEQ, HEAD_DIM], -1, 1)
    sin = b.uniform([SEQ, HEAD_DIM], -1, 1)
    return b.op("Add", [b.op("Mul", [t, cos]), b.op("Mul", [rot, sin])])


def attention_model(n_heads: int = 4, n_kv: int = 4, rope: bool = False,
                    causal_mask: bool = True):
    b = Builder(opset=17)
    x = b.input("X", [2, SEQ, HIDDEN])
    q = _heads(b, _proj(b, x, n_heads * HEAD_DIM, "q_proj"), n_heads)
    k = _heads(b, _proj(b, x, n_kv * HEAD_DIM, "k_proj"), n_kv)
    v = _heads(b, _proj(b, x, n_kv * HEAD_DIM, "v_proj"), n_kv)
    if rope:
        q, k = _rotate_half(b, q), _rotate_half(b, k)
    if n_kv != n_heads:
        k, v = _repeat_kv(b, k, n_kv, n_heads // n_kv), _repeat_kv(b, v, n_kv, n_heads // n_kv)
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(np.float32(HEAD_DIM ** -0.5))])
    if causal_mask:
        mask = np.triu(np.full((SEQ, SEQ), -1e4, np.float32), 1)
        scores = b.op("Add", [scores, b.const(mask)])
    attn = b.op("Softmax", [scores], axis=-1)
    y = b.op("Transpose", [b.op("MatMul", [attn, v])], perm=[0, 2, 1, 3])
    y = b.op("Reshape", [y, b.ints([0, 0, n_heads * HEAD_DIM])])
    out = b.op("MatMul", [y, b.weight([n_heads * HEAD_DIM, HIDDEN], name="o_proj_W")],
               name="o_proj")
    return b.build(out)


@pytest.mark.parametrize("rope", [False, True])
def test_heads_are_units(rope):
    model = attention_model(rope=rope)
    groups = [g for g in analyze(model).groups if g.kind == "heads"]
    assert len(groups) == 1 and len(groups[0].units) == 4 and len(groups[0].prunable) == 4
    pruned, report = assert_exact(model, ratio=0.5)
    w = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert w["q_proj_W"] == [HIDDEN, 2 * HEAD_DIM] and w["o_proj_W"] == [2 * HEAD_DIM, HIDDEN]


@pytest.mark.parametrize("rope", [False, True])
def test_gqa_removes_kv_groups(rope):
    """4 query heads over 2 KV heads: units are the 2 KV groups, each with 2 query heads."""
    model = attention_model(n_heads=4, n_kv=2, rope=rope)
    groups = [g for g in analyze(model).groups if g.kind == "heads"]
    assert len(groups) == 1 and len(groups[0].units) == 2
    pruned, _ = assert_exact(model, ratio=0.5)
    w = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert w["q_proj_W"][1] == 2 * HEAD_DIM and w["k_proj_W"][1] == HEAD_DIM


def test_contraction_between_activations_without_heads_freezes():
    """x·xᵀ over the feature axis mixes every feature: nothing there may be cut."""
    b = Builder(opset=17)
    x = b.input("X", [2, SEQ, HIDDEN])
    h = _proj(b, x, 16, "proj")
    gram = b.op("MatMul", [h, b.op("Transpose", [h], perm=[0, 2, 1])])
    model = b.build(b.op("MatMul", [gram, b.weight([SEQ, 3])]))
    group = next(g for g in analyze(model).groups if g.name == "proj")
    assert not group.prunable
    assert "contraction" in " ".join(r for rs in group.frozen.values() for r in rs)


def fused_attention(four_d: bool, n_heads: int = 4, n_kv: int = 2):
    b = Builder(opset=23)
    x = b.input("X", [2, SEQ, HIDDEN])
    q = _proj(b, x, n_heads * HEAD_DIM, "q_proj")
    k = _proj(b, x, n_kv * HEAD_DIM, "k_proj")
    v = _proj(b, x, n_kv * HEAD_DIM, "v_proj")
    if four_d:
        q, k, v = _heads(b, q, n_heads), _heads(b, k, n_kv), _heads(b, v, n_kv)
        y = b.op("Attention", [q, k, v], name="attn", is_causal=1)
        y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]),
                             b.ints([0, 0, n_heads * HEAD_DIM])])
    else:
        y = b.op("Attention", [q, k, v], name="attn", is_causal=1, q_num_heads=n_heads,
                 kv_num_heads=n_kv)
    out = b.op("MatMul", [y, b.weight([n_heads * HEAD_DIM, HIDDEN], name="o_proj_W")],
               name="o_proj")
    return b.build(out)


@pytest.mark.parametrize("four_d", [True, False])
def test_fused_attention_op(four_d):
    model = fused_attention(four_d)
    groups = [g for g in analyze(model).groups if g.kind == "heads"]
    assert len(groups) == 1 and len(groups[0].units) == 2
    pruned, _ = assert_exact(model, ratio=0.5)
    attn = node(pruned, "attn")
    if not four_d:
        heads = {a.name: a.i for a in attn.attribute}
        assert heads["q_num_heads"] == 2 and heads["kv_num_heads"] == 1
