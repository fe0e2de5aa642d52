"""Rules for Gemm and MatMul against constant weights: output features are sources, the
contraction axis is a sink; activation × activation products freeze (no rule yet)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    Builder,
    analyze,
    assert_exact,
    assert_frozen,
    const_input,
    group_named,
    group_sizes,
    members,
)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", ["none", "vector", "row", "scalar"])
def test_gemm_mlp(trans_b, bias):
    b = Builder()
    x = b.input("X", [4, 10])
    w = b.weight([16, 10] if trans_b else [10, 16], fan_in=10, name="A_W")
    ins = [x, w]
    if bias != "none":
        shape = {"vector": [16], "row": [1, 16], "scalar": [1]}[bias]
        ins.append(b.weight(shape, scale=0.1, name="A_B"))
    h = b.op("Gemm", ins, name="A", transB=trans_b, alpha=0.7, beta=1.3)
    b.gemm(b.op("Relu", [h]), 16, 5, trans_b=trans_b, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(5, 0), (16, 16)]
    assert_frozen(group_named(res, "B"), "graph output")
    expected = {"A[1]", "B[1]"} | ({"A[2]"} if bias in ("vector", "row") else set())
    assert members(res, group_named(res, "A")) == expected

    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A", 1).shape == ((8, 10) if trans_b else (10, 8))
    assert const_input(pruned, "B", 1).shape == ((5, 8) if trans_b else (8, 5))
    if bias != "none":
        assert const_input(pruned, "A", 2).shape == {"vector": (8,), "row": (1, 8),
                                                     "scalar": (1,)}[bias]


def test_gemm_trans_a_input_from_graph():
    """transA on a graph input: the first layer's features are still its own units."""
    b = Builder()
    x = b.input("X", [10, 4])
    w = b.weight([10, 16], fan_in=10, name="A_W")
    h = b.op("Gemm", [x, w, b.weight([16], scale=0.1)], name="A", transA=1)
    b.gemm(b.op("Tanh", [h]), 16, 5, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(5, 0), (16, 16)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A", 1).shape == (10, 8)


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_matmul_constant_weight(rank):
    """[.., 10] @ W[10, 16] + b → relu → @ W2[16, 6]: batch axes are left alone."""
    b = Builder()
    x = b.input("X", [2, 3, 5, 10][4 - rank:])
    h = b.op("MatMul", [x, b.weight([10, 16], fan_in=10)], name="A")
    h = b.op("Add", [h, b.weight([16], scale=0.1)], name="BIAS")
    b.op("MatMul", [b.op("Relu", [h]), b.weight([16, 6], fan_in=16)], name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(6, 0), (16, 16)]
    assert members(res, group_named(res, "A")) == {"A[1]", "BIAS[1]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A", 1).shape == (10, 8)
    assert const_input(pruned, "BIAS", 1).shape == (8,)
    assert const_input(pruned, "B", 1).shape == (8, 6)


def test_matmul_residual_mlp_block():
    """x + W2·relu(W1·x): the residual couples W2's outputs with the trunk's features."""
    b = Builder()
    x = b.input("X", [2, 5, 10])
    t = b.op("MatMul", [x, b.weight([10, 12], fan_in=10)], name="A")
    h = b.op("Relu", [b.op("MatMul", [t, b.weight([12, 16], fan_in=12)], name="UP")])
    d = b.op("MatMul", [h, b.weight([16, 12], fan_in=16)], name="DOWN")
    s = b.op("Add", [t, d])
    b.op("MatMul", [s, b.weight([12, 3], fan_in=12)], name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(3, 0), (12, 12), (16, 16)]
    assert members(res, group_named(res, "A")) == {"A[1]", "UP[1]", "DOWN[1]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "UP", 1).shape == (6, 8)
    assert const_input(pruned, "DOWN", 1).shape == (8, 6)


def test_matmul_with_activation_operand_freezes():
    """Activation × activation products have no rule: what they touch stays."""
    b = Builder()
    x = b.input("X", [2, 5, 10])
    q = b.op("MatMul", [x, b.weight([10, 8], fan_in=10)], name="Q")
    k = b.op("MatMul", [x, b.weight([10, 8], fan_in=10)], name="K")
    att = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])], name="QK")
    b.op("MatMul", [att, b.weight([5, 4], fan_in=5)], name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert_frozen(group_named(res, "Q"), "matmul")
    assert_frozen(group_named(res, "K"), "matmul")
    assert_exact(model)


def test_gemm_weight_from_graph_input_freezes():
    b = Builder()
    h = b.gemm(b.input("X", [4, 10]), 10, 8, name="A")
    b.op("Gemm", [h, b.input("W", [8, 3])], name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert_frozen(group_named(res, "A"), "not a constant")
    assert_exact(model)


def test_gemm_feeding_conv_via_reshape():
    """Gemm features reshaped to channels [N, 8, 1, 1] and consumed by a 1x1 conv."""
    b = Builder()
    h = b.gemm(b.input("X", [2, 10]), 10, 8, name="A")
    r = b.op("Reshape", [b.op("Relu", [h]), b.ints([2, 8, 1, 1])], name="RS")
    b.conv(r, 8, 4, k=1, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "RS", 1).tolist() == [2, 4, 1, 1]
    assert np.prod(const_input(pruned, "B", 1).shape) == 16
