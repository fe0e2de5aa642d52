"""Rules for Conv and ConvTranspose: sources, sinks, grouped and depthwise coupling."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    Builder,
    analyze,
    assert_exact,
    assert_frozen,
    attr,
    const_input,
    conv_chain,
    group_named,
    group_sizes,
    members,
    node,
)
from onnx import numpy_helper


def _relu(b: Builder, x: str) -> tuple[str, int]:
    return b.op("Relu", [x]), 8


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_source_and_sink(dims, bias):
    b = Builder()
    x = b.input("X", [2, 3, *[5, 6, 7][3 - dims:]])
    a = b.conv(x, 3, 8, dims=dims, bias=bias, name="A")
    b.conv(b.op("Relu", [a]), 8, 4, dims=dims, bias=bias, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    assert_frozen(group_named(res, "B"), "graph output")
    assert group_named(res, "A").prunable == group_named(res, "A").units

    pruned, report = assert_exact(model)
    k = [3] * dims
    assert list(const_input(pruned, "A", 1).shape) == [4, 3, *k]
    assert list(const_input(pruned, "B", 1).shape) == [4, 4, *k]
    if bias:
        assert const_input(pruned, "A", 2).shape == (4,)
        assert const_input(pruned, "B", 2).shape == (4,)
    assert report.params_after < report.params_before


@pytest.mark.parametrize("dilation", [2, 3])
def test_conv_dilation(dilation):
    b = Builder()
    a = b.conv(b.input(), 3, 8, dilation=dilation, name="A")
    b.conv(b.op("Relu", [a]), 8, 4, dilation=dilation, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert attr(pruned, "B", "dilations") == [dilation, dilation]
    assert const_input(pruned, "B", 1).shape == (4, 4, 3, 3)


@pytest.mark.parametrize(("groups", "cout"), [(4, 8), (4, 16), (2, 8), (2, 4)])
def test_grouped_conv_prunes_positions_within_groups(groups, cout):
    """A grouped conv with room in its groups: input position j of every group is one unit
    (with the producer's channels g·a + j), output position j another; both weight axes
    shrink and `group` stays."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    g = b.conv(a, 8, cout, group=groups, name="G")
    b.conv(b.op("Relu", [g]), cout, 4, k=1, name="B")
    model = b.build("B_out")
    per_in, per_out = 8 // groups, cout // groups

    res = analyze(model)
    assert group_sizes(res) == sorted([(per_in, per_in), (per_out, per_out), (4, 0)])
    assert members(res, group_named(res, "A")) == {"A[1]", "A[2]", "G[1]"}

    pruned, _ = assert_exact(model)
    keep_in, keep_out = per_in - per_in // 2, per_out - per_out // 2
    assert attr(pruned, "G", "group") == groups
    assert const_input(pruned, "A", 1).shape[0] == groups * keep_in
    assert const_input(pruned, "G", 1).shape == (groups * keep_out, keep_in, 3, 3)
    assert const_input(pruned, "B", 1).shape[1] == groups * keep_out


def test_grouped_conv_with_one_output_per_group_prunes_whole_groups():
    """One output channel per group leaves no room inside the groups: each group is a unit
    (its input and output channels together) and `group` shrinks with the groups kept."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    g = b.conv(a, 8, 4, group=4, name="G")
    b.conv(b.op("Relu", [g]), 4, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (4, 4)]
    assert members(res, group_named(res, "A")) == {"A[1]", "A[2]", "G[1]", "G[2]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert attr(pruned, "G", "group") == 2
    assert const_input(pruned, "G", 1).shape == (2, 2, 3, 3)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv(multiplier):
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    d = b.conv(b.op("Relu", [a]), 8, 8 * multiplier, group=8, name="D")
    b.conv(d, 8 * multiplier, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert attr(pruned, "D", "group") == 4
    assert const_input(pruned, "D", 1).shape == (4 * multiplier, 1, 3, 3)
    assert const_input(pruned, "D", 2).shape == (4 * multiplier,)
    assert const_input(pruned, "B", 1).shape == (4, 4 * multiplier, 1, 1)


def test_depthwise_separable_1d():
    b = Builder()
    x = b.input("X", [2, 3, 9])
    a = b.conv(x, 3, 6, dims=1, name="A")
    d = b.conv(a, 6, 6, group=6, dims=1, name="D")
    b.conv(d, 6, 4, k=1, dims=1, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(4, 0), (6, 6)]
    pruned, _ = assert_exact(model)
    assert attr(pruned, "D", "group") == 3


def test_grouped_conv_on_graph_input_keeps_its_inputs():
    """Input channels of a grouped conv fed by the graph input cannot go; its output
    positions within the groups still can."""
    b = Builder()
    x = b.input("X", [2, 4, 6, 7])
    g = b.conv(x, 4, 8, group=2, name="G")
    b.conv(g, 8, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(2, 0), (4, 0), (4, 4)]
    assert "grouped conv input" in " ".join(r for gr in res.groups for rs in gr.frozen.values()
                                            for r in rs)
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "G", 1).shape == (4, 2, 3, 3)


def test_conv_transpose():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    t = b.conv_transpose(b.op("Relu", [a]), 8, 6, name="T")
    b.conv(b.op("Relu", [t]), 6, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (6, 6), (8, 8)]
    assert_frozen(group_named(res, "B"), "graph output")
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "T", 1).shape == (4, 3, 3, 3)
    assert const_input(pruned, "T", 2).shape == (3,)
    assert const_input(pruned, "B", 1).shape == (4, 3, 1, 1)


@pytest.mark.parametrize(("groups", "cout"), [(2, 6), (4, 12), (8, 8)])
def test_grouped_conv_transpose(groups, cout):
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    t = b.conv_transpose(a, 8, cout, group=groups, name="T")
    b.conv(t, cout, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == sorted([(groups, groups), (4, 0)])
    pruned, _ = assert_exact(model)
    kept = groups - groups // 2
    assert attr(pruned, "T", "group") == kept
    assert const_input(pruned, "T", 1).shape == (8 // groups * kept, cout // groups, 3, 3)
    assert const_input(pruned, "T", 2).shape == (cout // groups * kept,)
    assert const_input(pruned, "B", 1).shape == (4, cout // groups * kept, 1, 1)


def test_conv_weight_from_graph_input_freezes():
    """A conv whose weight is not a constant cannot have its input channels sliced."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    w = b.input("W", [4, 8, 1, 1])
    b.op("Conv", [a, w], name="B", kernel_shape=[1, 1])
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(8, 0)]
    assert_frozen(group_named(res, "A"), "not a constant")
    assert_exact(model)


def test_conv_stack_three_layers():
    """Each hidden layer's channels form their own group; only the last is frozen."""
    b = Builder()
    h = b.conv(b.input(), 3, 8, name="A")
    h = b.conv(b.op("Relu", [h]), 8, 6, name="M")
    b.conv(b.op("Relu", [h]), 6, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (6, 6), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "M", 1).shape == (3, 4, 3, 3)


def test_conv_chain_helper_relu():
    model = conv_chain(_relu)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    assert_exact(model)


def test_tied_weight_prunes_alike_and_stays_shared():
    """One initializer used by two convs: both uses must drop the same input channels, so the
    two producers are coupled and the pruned weight is still one tensor."""
    b = Builder()
    x = b.input()
    a1, a2 = b.conv(x, 3, 8, name="A1"), b.conv(x, 3, 8, name="A2")
    w = b.weight([4, 8, 1, 1], name="TIED")
    y1 = b.op("Conv", [b.op("Relu", [a1]), w], name="B", kernel_shape=[1, 1])
    y2 = b.op("Conv", [b.op("Relu", [a2]), w], name="C", kernel_shape=[1, 1])
    b.op("Add", [y1, y2], name="Y")
    model = b.build("Y_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert node(pruned, "B").input[1] == node(pruned, "C").input[1]
    assert const_input(pruned, "B", 1).shape == (4, 4, 1, 1)


@pytest.mark.parametrize("via", ["Constant", "Identity"])
def test_conv_weight_from_constant_node(via):
    """Weights held in a Constant node (or read through Identity) are sliced like
    initializers."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    w = b.rng.standard_normal([4, 8, 3, 3]).astype(np.float32) / 8
    if via == "Constant":
        wn = b.op("Constant", [], name="W_CONST", value=numpy_helper.from_array(w, "w"))
    else:
        wn = b.op("Identity", [b.const(w, "B_W")], name="W_ID")
    b.op("Conv", [b.op("Relu", [a]), wn], name="B", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape == (4, 4, 3, 3)
