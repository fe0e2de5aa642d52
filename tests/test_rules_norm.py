"""Rules for normalisations and softmax: per-channel parameters are sliced with the units;
statistics over a unit axis (LayerNorm over channels, softmax over channels) freeze."""

from __future__ import annotations

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
)


def _bn(b: Builder, x: str, c: int = 8) -> str:
    ins = [x, b.uniform([c], 0.5, 1.5), b.weight([c], scale=0.1), b.weight([c], scale=0.1),
           b.uniform([c], 0.5, 1.5)]
    return b.op("BatchNormalization", ins, name="BN", epsilon=1e-3)


@pytest.mark.parametrize("opset", [11, 15, 17])
def test_batch_norm_params_sliced(opset):
    model = conv_chain(lambda b, x: (b.op("Relu", [_bn(b, x)]), 8), opset=opset)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    assert {"BN[1]", "BN[2]", "BN[3]", "BN[4]"} <= members(res, group_named(res, "A"))
    pruned, _ = assert_exact(model)
    for i in range(1, 5):
        assert const_input(pruned, "BN", i).shape == (4,)


def test_batch_norm_1d_after_gemm():
    b = Builder()
    h = b.gemm(b.input("X", [4, 10]), 10, 8, name="A")
    n = _bn(b, h)
    b.gemm(b.op("Relu", [n]), 8, 3, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(3, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "BN", 4).shape == (4,)


def test_instance_norm_params_sliced():
    def middle(b, x):
        ins = [x, b.uniform([8], 0.5, 1.5), b.weight([8], scale=0.1)]
        return b.op("InstanceNormalization", ins, name="IN", epsilon=1e-3), 8

    model = conv_chain(middle)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "IN", 1).shape == (4,)
    assert const_input(pruned, "IN", 2).shape == (4,)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("num_groups", [2, 4, 8])
def test_group_norm_whole_groups(opset, num_groups):
    """GroupNormalization statistics are per group: a group of channels is one unit.
    Opset 18 has per-group scale/bias, opset 21 per-channel ones."""
    def middle(b, x):
        n = 8 if opset >= 21 else num_groups
        ins = [x, b.uniform([n], 0.5, 1.5), b.weight([n], scale=0.1)]
        return b.op("GroupNormalization", ins, name="GN", num_groups=num_groups,
                    epsilon=1e-3), 8

    model = conv_chain(middle, opset=opset)
    res = analyze(model)
    assert group_sizes(res) == sorted([(num_groups, num_groups), (4, 0)])
    pruned, _ = assert_exact(model)
    kept = num_groups - num_groups // 2
    assert attr(pruned, "GN", "num_groups") == kept
    n = 8 // num_groups * kept if opset >= 21 else kept
    assert const_input(pruned, "GN", 1).shape == (n,)
    assert const_input(pruned, "GN", 2).shape == (n,)
    assert const_input(pruned, "A", 1).shape[0] == 8 // num_groups * kept


@pytest.mark.parametrize("axis", [-1, 3])
def test_layer_norm_over_channels_freezes(axis):
    """LayerNorm over the channel axis (NHWC) mixes the units."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    t = b.op("Transpose", [a], perm=[0, 2, 3, 1])
    n = b.op("LayerNormalization", [t, b.uniform([8], 0.5, 1.5), b.weight([8], scale=0.1)],
             name="LN", axis=axis)
    b.conv(b.op("Transpose", [n], perm=[0, 3, 1, 2]), 8, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 0)]
    assert_frozen(group_named(res, "A"), "normalisation")
    _, report = assert_exact(model)
    assert report.params_after == report.params_before


def test_layer_norm_over_features_after_gemm_freezes():
    b = Builder()
    h = b.gemm(b.input("X", [4, 10]), 10, 8, name="A")
    n = b.op("LayerNormalization", [h, b.uniform([8], 0.5, 1.5)], name="LN")
    b.gemm(n, 8, 3, name="B")
    model = b.build("B_out")
    assert_frozen(group_named(analyze(model), "A"), "normalisation")
    assert_exact(model)


def test_layer_norm_over_spatial_axes_passes_channels():
    """LayerNorm over [H, W] of NCHW leaves the channel units alone."""
    def middle(b, x):
        n = b.op("LayerNormalization", [x, b.uniform([6, 7], 0.5, 1.5)], name="LN", axis=2)
        return n, 8

    model = conv_chain(middle)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "LN", 1).shape == (6, 7)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("opset", "axis"), [(11, 3), (11, -1), (13, 3), (13, 2), (17, -1)])
def test_softmax_spatial_axis_passes(op, opset, axis):
    model = conv_chain(lambda b, x: (b.op(op, [x], axis=axis), 8), opset=opset)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    assert_exact(model)


@pytest.mark.parametrize(("opset", "axis"), [(11, None), (11, 1), (11, 2), (13, 1), (17, -3)])
def test_softmax_over_channels_freezes(opset, axis):
    """Over channels (or, before opset 13, over a flattened range that covers them)."""
    extra = {} if axis is None else {"axis": axis}
    model = conv_chain(lambda b, x: (b.op("Softmax", [x], **extra), 8), opset=opset)
    res = analyze(model)
    if opset < 13 and axis == 2:
        # coerced to 2-D from axis 2 on: reduces H and W only
        assert group_sizes(res) == [(4, 0), (8, 8)]
    else:
        assert group_sizes(res) == [(4, 0), (8, 0)]
        assert_frozen(group_named(res, "A"), "softmax")
    assert_exact(model)
