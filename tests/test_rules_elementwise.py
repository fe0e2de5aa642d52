"""Rules for position-wise ops: activations pass units through, n-ary ops couple their inputs
and slice full-size broadcast constants; unknown ops and graph outputs freeze."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    Builder,
    analyze,
    assert_exact,
    assert_frozen,
    const_input,
    conv_chain,
    feeds_for,
    group_named,
    group_sizes,
    members,
    run,
)

import graphprune

UNARY = [
    # (name, opset, builder of the op between A and B)
    ("Relu", 17, lambda b, x: b.op("Relu", [x])),
    ("Clip", 17, lambda b, x: b.op("Clip", [x, b.const(np.float32(-0.5)),
                                            b.const(np.float32(0.7))])),
    ("Clip-min-only", 13, lambda b, x: b.op("Clip", [x, b.const(np.float32(0.1))])),
    ("Sigmoid", 17, lambda b, x: b.op("Sigmoid", [x])),
    ("HardSigmoid", 17, lambda b, x: b.op("HardSigmoid", [x], alpha=0.3, beta=0.4)),
    ("HardSwish", 17, lambda b, x: b.op("HardSwish", [x])),
    ("Tanh", 17, lambda b, x: b.op("Tanh", [x])),
    ("LeakyRelu", 17, lambda b, x: b.op("LeakyRelu", [x], alpha=0.1)),
    ("Elu", 17, lambda b, x: b.op("Elu", [x], alpha=0.9)),
    ("Selu", 17, lambda b, x: b.op("Selu", [x])),
    ("Gelu", 20, lambda b, x: b.op("Gelu", [x])),
    ("Gelu-tanh", 20, lambda b, x: b.op("Gelu", [x], approximate="tanh")),
    ("Softplus", 17, lambda b, x: b.op("Softplus", [x])),
    ("Erf", 17, lambda b, x: b.op("Erf", [x])),
    ("Sqrt-of-Abs", 17, lambda b, x: b.op("Sqrt", [b.op("Abs", [x])])),
    ("Exp", 17, lambda b, x: b.op("Exp", [x])),
    ("Neg", 17, lambda b, x: b.op("Neg", [x])),
    ("Abs", 17, lambda b, x: b.op("Abs", [x])),
    ("Mish", 18, lambda b, x: b.op("Mish", [x])),
    ("Identity", 17, lambda b, x: b.op("Identity", [x])),
    ("Dropout-11", 11, lambda b, x: b.op("Dropout", [x], ratio=0.3)),
    ("Dropout", 17, lambda b, x: b.op("Dropout", [x, b.const(np.float32(0.3))])),
    ("Cast-double", 17, lambda b, x: b.op("Cast", [b.op("Cast", [x], to=11)], to=1)),
]


@pytest.mark.parametrize(("name", "opset", "make"), UNARY, ids=[u[0] for u in UNARY])
def test_unary_passes_units(name, opset, make):
    model = conv_chain(lambda b, x: (make(b, x), 8), opset=opset)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    assert_frozen(group_named(res, "B"), "graph output")
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A", 1).shape[0] == 4
    assert const_input(pruned, "B", 1).shape[1] == 4


@pytest.mark.parametrize("slope_shape", [[8, 1, 1], [1], [1, 1, 1]])
def test_prelu_slope(slope_shape):
    model = conv_chain(lambda b, x: (b.op("PRelu", [x, b.uniform(slope_shape, 0.05, 0.5)],
                                          name="P"), 8))
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    expected = [4, 1, 1] if slope_shape[0] == 8 else slope_shape
    assert list(const_input(pruned, "P", 1).shape) == expected


# -- binary ops: residual (two slotted inputs) and broadcast constants ----------------------------
def _binary(b: Builder, op: str, x: str, y: str) -> str:
    """`op` applied so the values stay tame: Div divides by exp(y), Pow raises sigmoid(x)."""
    if op == "Div":
        return b.op("Div", [x, b.op("Exp", [y])], name="OP")
    if op == "Pow":
        return b.op("Pow", [b.op("Sigmoid", [x]), y], name="OP")
    if op == "Where":
        return b.op("Where", [b.op("Greater", [x, y]), x, y], name="OP")
    return b.op(op, [x, y], name="OP")


BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Where"]


@pytest.mark.parametrize("op", BINARY)
def test_binary_residual_couples_branches(op):
    """x + f(x): the branch's output channels are the trunk's; one group of 8 units."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    r = b.conv(b.op("Relu", [a]), 8, 8, name="R")
    s = _binary(b, op, a, r)
    b.conv(s, 8, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    assert members(res, group_named(res, "A")) == {"A[1]", "A[2]", "R[1]", "R[2]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A", 1).shape[0] == 4
    assert const_input(pruned, "R", 1).shape == (4, 4, 3, 3)
    assert const_input(pruned, "B", 1).shape == (4, 4, 1, 1)


def _broadcast_const(b: Builder, op: str, x: str, shape: list[int]) -> str:
    c = b.uniform(shape, 0.5, 1.5, name="K")
    if op == "Pow":
        return b.op("Pow", [b.op("Sigmoid", [x]), c], name="OP")
    if op == "Where":
        cond = b.const(np.random.default_rng(3).random(shape) < 0.5, name="COND")
        return b.op("Where", [cond, x, c], name="OP")
    return b.op(op, [x, c], name="OP")


@pytest.mark.parametrize("shape", [[8, 1, 1], [1, 8, 1, 1], [8, 6, 7]])
@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcast_constant_is_sliced(op, shape):
    model = conv_chain(lambda b, x: (_broadcast_const(b, op, x, shape), 8))
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    sliced = {"OP[0]", "OP[2]"} if op == "Where" else {"OP[1]"}
    assert sliced <= members(res, group_named(res, "A"))

    pruned, _ = assert_exact(model)
    k = const_input(pruned, "OP", 1 if op != "Where" else 2)
    axis = len(shape) - 3
    assert k.shape[axis] == 4 and k.ndim == len(shape)
    if op == "Where":
        assert const_input(pruned, "OP", 0).shape[axis] == 4


@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_binary_constant_first(op):
    """The constant may be the first operand."""
    def middle(b, x):
        c = b.uniform([1, 8, 1, 1], 0.5, 1.5)
        y = b.op("Sigmoid", [x]) if op == "Div" else x
        return b.op(op, [c, y], name="OP"), 8

    model = conv_chain(middle)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "OP", 0).shape == (1, 4, 1, 1)


def test_scalar_constant_needs_no_slice():
    model = conv_chain(lambda b, x: (b.op("Mul", [x, b.const(np.float32(0.5))], name="OP"), 8))
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "OP", 1).shape == ()


def test_binary_with_unlabelled_tensor_freezes():
    """Multiplying by a graph input of full channel size: its channels cannot be removed."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    m = b.op("Mul", [a, b.input("S", [2, 8, 6, 7])])
    b.conv(m, 8, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 0)]
    assert_frozen(group_named(res, "A"), "carries no units")
    assert_exact(model)


def test_squeeze_excitation_couples_gate_with_trunk():
    """x * sigmoid(Conv(relu(Conv(GAP(x))))): the expand conv's channels are the trunk's."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    p = b.op("GlobalAveragePool", [a])
    s = b.conv(p, 8, 2, k=1, name="SQ")
    e = b.conv(b.op("Relu", [s]), 2, 8, k=1, name="EX")
    m = b.op("Mul", [a, b.op("Sigmoid", [e])])
    b.conv(m, 8, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(2, 2), (4, 0), (8, 8)]
    assert members(res, group_named(res, "A")) == {
        "A[1]", "A[2]", "SQ[1]", "EX[1]", "EX[2]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "EX", 1).shape == (4, 1, 1, 1)
    assert const_input(pruned, "SQ", 1).shape == (1, 4, 1, 1)


def test_variadic_sum_three_branches():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    r1 = b.conv(a, 8, 8, name="R1")
    r2 = b.conv(a, 8, 8, name="R2")
    s = b.op("Sum", [a, r1, r2])
    b.conv(s, 8, 4, k=1, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "R2", 1).shape == (4, 4, 3, 3)


# -- Trilu -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("upper", "k"), [(1, None), (0, 1), (1, -2)])
def test_trilu_passes_units_off_its_axes(upper, k):
    """A triangle over the spatial axes: channels pass."""
    def middle(b, x):
        ins = [x] if k is None else [x, b.ints(k)]
        return b.op("Trilu", ins, name="T", upper=upper), 8

    model = conv_chain(middle, opset=14)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape[1] == 4


def test_trilu_over_channels_freezes():
    """Channels last, a triangle over (W, C): removing a channel would move the diagonal."""
    def middle(b, x):
        t = b.op("Trilu", [b.op("Transpose", [x], perm=[0, 2, 3, 1])], upper=1)
        return b.op("Transpose", [t], perm=[0, 3, 1, 2]), 8

    model = conv_chain(middle, opset=14)
    assert_frozen(group_named(analyze(model), "A"), "triangle of a unit axis")
    assert_exact(model)


# -- barriers --------------------------------------------------------------------------------------
def test_unknown_op_freezes_and_is_a_blocker():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    f = b.op("Foo", [a], name="FOO", domain="com.example")
    b.conv(f, 8, 4, k=1, name="B")
    b.conv(b.op("Relu", [a]), 8, 5, k=1, name="C")
    model = b.build(["B_out", "C_out"])

    res = analyze(model)
    assert res.blockers == {"Foo": 1}
    assert_frozen(group_named(res, "A"), "no rule for op com.example::Foo")
    assert group_sizes(res) == [(4, 0), (5, 0), (8, 0)]


def test_unknown_op_only_freezes_what_it_touches():
    """A branch that never meets the unknown op stays prunable."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    h = b.conv(b.op("Relu", [a]), 8, 6, name="H")
    b.op("Foo", [h], name="FOO", domain="com.example")
    b.conv(b.op("Relu", [a]), 8, 5, k=1, name="C")
    model = b.build(["FOO_out", "C_out"])
    res = analyze(model)
    assert res.blockers == {"Foo": 1}
    assert group_named(res, "A").prunable == group_named(res, "A").units
    assert_frozen(group_named(res, "H"), "no rule for op com.example::Foo")


def test_channels_reaching_graph_output_are_frozen():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    r = b.op("Relu", [a])
    b.conv(r, 8, 4, k=1, name="B")
    model = b.build([r, "B_out"])
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 0)]
    assert_frozen(group_named(res, "A"), "graph output")
    pruned, report = assert_exact(model)
    assert report.params_after == report.params_before


def test_ratio_zero_is_bit_identical():
    """ratio 0 removes nothing: the pruned model computes exactly what the original does."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    n = b.op("BatchNormalization", [a, b.uniform([8], 0.5, 1.5), b.weight([8], scale=0.1),
                                    b.weight([8], scale=0.1), b.uniform([8], 0.5, 1.5)])
    r = b.conv(b.op("Relu", [n]), 8, 8, name="R")
    s = b.op("Add", [n, r])
    p1, p2 = b.op("Split", [s, b.ints([3, 5])], n_out=2, axis=1)
    c = b.op("Concat", [b.conv(p1, 3, 4, name="P1"), p2], axis=1)
    g = b.op("Flatten", [b.op("GlobalAveragePool", [c])])
    b.gemm(g, 9, 5, name="FC")
    model = b.build("FC_out")

    assert any(g.prunable for g in analyze(model).groups)
    pruned, report = graphprune.compress(model, ratio=0.0)
    assert report.params_after == report.params_before
    feeds = feeds_for(model)
    for got, ref in zip(run(pruned, feeds), run(model, feeds), strict=True):
        assert np.array_equal(got, ref)
