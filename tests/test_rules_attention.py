"""Attention rules: activation MatMuls (Q·Kᵀ, attention·V) and the fused ONNX Attention op.

Heads must come out as units (a head's Q, K, V rows and its output-projection columns go
together), grouped-query attention must tie each KV head to its query heads, and the
numbers after a rewrite must equal the masked original.
"""

from __future__ import annotations

import numpy as np
import pytest
from graphprune.passes import rewrite
from helpers import Builder, analyze, assert_exact, node, removed_units, run

import graphprune

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
    group = next(g for g in analyze(model).groups if g.node == "proj")
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


# -- heads folded into a dynamic batch axis (torch nn.MultiheadAttention) ----------------------
def _fold_heads(b: Builder, t: str, n_heads: int) -> str:
    """[B, S, H·D] → [S, B, H·D] → [S, B·H, D] (B·H computed from Shape) → [B·H, S, D]."""
    t = b.op("Transpose", [t], perm=[1, 0, 2])
    shape = b.op("Shape", [t])
    s_len = b.op("Unsqueeze", [b.op("Gather", [shape, b.ints(0)], axis=0), b.ints([0])])
    bh = b.op("Mul", [b.op("Gather", [shape, b.ints(1)], axis=0), b.ints(n_heads)])
    target = b.op("Concat", [s_len, b.op("Unsqueeze", [bh, b.ints([0])]), b.ints([HEAD_DIM])],
                  axis=0)
    return b.op("Transpose", [b.op("Reshape", [t, target])], perm=[1, 0, 2])


def _fold_heads_4d(b: Builder, t: str, n_heads: int) -> str:
    """[B, S, H·D] → [B, H, S, D] → [B·H, -1, D] (BLOOM: B·H computed, the sequence inferred)."""
    t = b.op("Transpose", [b.op("Reshape", [t, b.ints([0, 0, n_heads, HEAD_DIM])])],
             perm=[0, 2, 1, 3])
    bh = b.op("Mul", [b.op("Gather", [b.op("Shape", [t]), b.ints(0)], axis=0), b.ints(n_heads)])
    target = b.op("Concat", [b.op("Unsqueeze", [bh, b.ints([0])]), b.ints([-1, HEAD_DIM])],
                  axis=0)
    return b.op("Reshape", [t, target])


def batch_folded_attention(n_heads: int = 4, split_back: bool = False, four_d: bool = False):
    """Heads live in a `[B·H, S, D]` batch axis whose size is only known at run time. Either
    the scores are computed there (bmm, softmax, scaling: torch's need_weights path), or the
    axis is split back to `[B, H, S, D]` first (its SDPA path)."""
    b = Builder(opset=17)
    x = b.input("X", ["batch", SEQ, HIDDEN])
    fold = _fold_heads_4d if four_d else _fold_heads
    q, k, v = (fold(b, _proj(b, x, n_heads * HEAD_DIM, f"{n}_proj"), n_heads) for n in "qkv")
    if split_back:
        dims = b.op("Concat", [b.op("Slice", [b.op("Shape", [x]), b.ints([0]), b.ints([1])]),
                               b.ints([n_heads, SEQ, HEAD_DIM])], axis=0)
        q, k, v = (b.op("Reshape", [t, dims]) for t in (q, k, v))
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2] if split_back else [0, 2, 1])
    q = b.op("Mul", [q, b.const(np.float32(HEAD_DIM ** -0.5))])
    attn = b.op("Softmax", [b.op("MatMul", [q, kt])], axis=-1)
    y = b.op("MatMul", [attn, v])
    if split_back:  # [B, H, S, D] → [B, S, H·D]
        y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]),
                             b.ints([0, 0, n_heads * HEAD_DIM])])
    else:  # [B·H, S, D] → [S, B·H, D] → [S, B, H·D] → [B, S, H·D]
        t = b.op("Transpose", [y], perm=[1, 0, 2])
        dims = b.op("Concat", [b.op("Slice", [b.op("Shape", [t]), b.ints([0]), b.ints([1])]),
                               b.op("Slice", [b.op("Shape", [x]), b.ints([0]), b.ints([1])]),
                               b.ints([n_heads * HEAD_DIM])], axis=0)
        y = b.op("Transpose", [b.op("Reshape", [t, dims])], perm=[1, 0, 2])
    out = b.op("MatMul", [y, b.weight([n_heads * HEAD_DIM, HIDDEN], name="o_proj_W")],
               name="o_proj")
    return b.build(out)


@pytest.mark.parametrize("split_back, four_d", [(False, False), (True, False), (False, True)])
def test_heads_folded_into_dynamic_batch(split_back, four_d):
    model = batch_folded_attention(split_back=split_back, four_d=four_d)
    heads = [g for g in analyze(model).groups if g.kind == "heads"]
    assert len(heads) == 1 and len(heads[0].units) == 4 and len(heads[0].prunable) == 4
    pruned, report = graphprune.compress(model, ratio=0.5)
    assert report.exact_check["passed"]
    w = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert w["q_proj_W"] == [HIDDEN, 2 * HEAD_DIM] and w["o_proj_W"] == [2 * HEAD_DIM, HIDDEN]
    an, removed = removed_units(model, 0.5)
    masked = rewrite.masked_model(model, an, removed)
    rng = np.random.default_rng(5)
    for batch in (1, 3):  # the B·H size is inferred at run time from the pruned width
        feeds = {"X": rng.standard_normal((batch, SEQ, HIDDEN)).astype(np.float32)}
        want, got = run(masked, feeds)[0], run(pruned, feeds)[0]
        assert got.shape == want.shape == (batch, SEQ, HIDDEN)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_folded_head_size_read_back_from_the_tensor():
    """`y.view(y.size(0), S, D)` on `[B·H, S, D]`: the B·H entry is read from the pruned tensor
    itself, so it shrinks by itself and must not be scaled again."""
    b = Builder(opset=17)
    x = b.input("X", ["batch", SEQ, HIDDEN])
    q, k, v = (_fold_heads(b, _proj(b, x, 4 * HEAD_DIM, f"{n}_proj"), 4) for n in "qkv")
    attn = b.op("Softmax", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])])],
                axis=-1)
    y = b.op("MatMul", [attn, v])
    bh = b.op("Slice", [b.op("Shape", [y]), b.ints([0]), b.ints([1])])
    y = b.op("Reshape", [y, b.op("Concat", [bh, b.ints([SEQ, HEAD_DIM])], axis=0)])
    t = b.op("Transpose", [y], perm=[1, 0, 2])
    dims = b.op("Concat", [b.ints([SEQ]), b.op("Slice", [b.op("Shape", [x]), b.ints([0]),
                                                          b.ints([1])]), b.ints([32])], axis=0)
    y = b.op("Transpose", [b.op("Reshape", [t, dims])], perm=[1, 0, 2])
    model = b.build(b.op("MatMul", [y, b.weight([32, HIDDEN], name="o_proj_W")],
                         name="o_proj"))
    heads = [g for g in analyze(model).groups if g.kind == "heads"]
    assert len(heads) == 1 and len(heads[0].prunable) == 4
    pruned, report = graphprune.compress(model, ratio=0.5)
    assert report.exact_check["passed"]
    feeds = {"X": np.random.default_rng(2).standard_normal((3, SEQ, HIDDEN)).astype(np.float32)}
    an, removed = removed_units(model, 0.5)
    np.testing.assert_allclose(run(pruned, feeds)[0],
                               run(rewrite.masked_model(model, an, removed), feeds)[0],
                               rtol=1e-4, atol=1e-5)


def test_folded_heads_with_a_batch_mask_freeze():
    """A mask over the whole `[B·H, S, S]` score tensor (a per-sample, per-head input) has no
    head layout we could slice: the heads stay, with that reason."""
    b = Builder(opset=17)
    x = b.input("X", ["batch", SEQ, HIDDEN])
    mask = b.input("M", ["batch_heads", SEQ, SEQ])
    q, k, v = (_fold_heads(b, _proj(b, x, 4 * HEAD_DIM, f"{n}_proj"), 4) for n in "qkv")
    scores = b.op("Add", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])]), mask])
    y = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[1, 0, 2]), b.ints([SEQ, -1, 32])])
    model = b.build(b.op("MatMul", [y, b.weight([32, HIDDEN])], name="o_proj"))
    group = next(g for g in analyze(model).groups if g.kind == "heads")
    assert not group.prunable
    assert "combined with graph input 'M', which carries no units" in " ".join(
        r for rs in group.frozen.values() for r in rs)


def test_a_rewrite_that_cannot_run_is_a_failed_check():
    """A pruned model onnxruntime refuses to run fails validation with one line (nothing is
    written), not with onnxruntime's exception."""
    from graphprune.passes import validation

    from graphprune.errors import ValidationError

    class Broken:
        def run(self, *_a):
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Reshape\nsecond line")

    class Fine:
        def run(self, *_a):
            return [np.zeros(2, np.float32)]

    with pytest.raises(ValidationError, match="pruned model fails in onnxruntime"):
        validation.run_pair(Fine(), Broken(), {})
    with pytest.raises(ValidationError, match="masked original fails"):
        validation.run_pair(Broken(), Fine(), {})
