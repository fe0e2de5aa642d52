"""Rules for ops that work along spatial axes: pooling, reductions, Resize and Pad. Units on
axes they leave alone pass; a reduction over the channel axis freezes."""

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
)

POOLS = [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("MaxPool-pads", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool-pads", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                          "count_include_pad": 1}),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
    ("GlobalLpPool", {"p": 3}),
]


@pytest.mark.parametrize(("name", "attrs"), POOLS, ids=[p[0] for p in POOLS])
def test_pool_passes_channels(name, attrs):
    op = name.split("-")[0]
    model = conv_chain(lambda b, x: (b.op(op, [x], **attrs), 8))
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    assert_frozen(group_named(res, "B"), "graph output")
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape == (4, 4, 1, 1)


def test_maxpool_indices_output_freezes():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    y, idx = b.op("MaxPool", [a], n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    b.conv(y, 8, 4, k=1, name="B")
    b.op("Cast", [idx], name="I", to=1)
    model = b.build(["B_out", "I_out"])
    res = analyze(model)
    assert_frozen(group_named(res, "A"), "indices")
    assert_exact(model)


def _reduce(b: Builder, op: str, x: str, axes: list[int], keepdims: int) -> str:
    """Reduce with the signature of the builder's opset (axes input for ReduceSum from 13,
    for the other reductions from 18)."""
    as_input = b.opset >= 18 or (op == "ReduceSum" and b.opset >= 13)
    if as_input:
        return b.op(op, [x, b.ints(axes)], name="RED", keepdims=keepdims)
    return b.op(op, [x], name="RED", axes=axes, keepdims=keepdims)


REDUCE_OPS = ["ReduceMean", "ReduceMax", "ReduceSum"]


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_spatial_keepdims(op, opset):
    model = conv_chain(lambda b, x: (_reduce(b, op, x, [2, 3], 1), 8), opset=opset)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A", 1).shape[0] == 4


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_spatial_no_keepdims_to_gemm(op, opset):
    b = Builder(opset)
    a = b.conv(b.input(), 3, 8, name="A")
    r = _reduce(b, op, a, [-2, -1], 0)
    b.gemm(r, 8, 5, name="FC")
    model = b.build("FC_out")
    res = analyze(model)
    assert group_sizes(res) == [(5, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "FC", 1).shape == (5, 4)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_over_channels_freezes(op, opset, keepdims):
    """A reduction over channels mixes the units: none may go."""
    b = Builder(opset)
    a = b.conv(b.input(), 3, 8, name="A")
    r = _reduce(b, op, a, [1], keepdims)
    if not keepdims:
        r = b.op("Unsqueeze", [r], axes=[1]) if opset < 13 else b.op("Unsqueeze",
                                                                       [r, b.ints([1])])
    b.conv(r, 1, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 0)]
    assert_frozen(group_named(res, "A"), "reduction")
    _, report = assert_exact(model)
    assert report.params_after == report.params_before


@pytest.mark.parametrize("opset", [11, 18])
def test_reduce_all_axes_freezes(opset):
    b = Builder(opset)
    a = b.conv(b.input(), 3, 8, name="A")
    r = b.op("ReduceMean", [a], name="RED", keepdims=1)
    b.op("Mul", [b.conv(b.input("X2"), 3, 4, name="B"), r], name="Y")
    model = b.build("Y_out")
    assert_frozen(group_named(analyze(model), "A"), "reduction")
    assert_exact(model)


# -- Resize ------------------------------------------------------------------------------------
def _resize(b: Builder, x: str, scales=None, sizes=None, axes=None) -> str:
    """Resize in the signature of the builder's opset: roi and scales were required at 11."""
    extra = {"axes": axes} if axes is not None else {}
    empty = b.const(np.zeros(0, np.float32))
    roi = empty if b.opset < 13 else ""
    if sizes is not None:
        ins = [x, roi, empty if b.opset < 13 else "", b.ints(sizes)]
    else:
        ins = [x, roi, b.const(np.asarray(scales, np.float32))]
    return b.op("Resize", ins, name="RS", mode="nearest", **extra)


RESIZES = [
    # (opset, kind, values, axes)
    (11, "scales", [1, 1, 2, 2], None),
    (13, "scales", [1, 1, 2, 2], None),
    (18, "scales", [1, 1, 2, 2], None),
    (18, "scales", [2, 2], [2, 3]),
    (11, "sizes", [2, 8, 12, 14], None),
    (13, "sizes", [2, 8, 12, 14], None),
    (18, "sizes", [2, 8, 12, 14], None),
    (18, "sizes", [12, 14], [2, 3]),
    (18, "sizes", [8, 12, 14], [1, 2, 3]),
    (18, "sizes", [8, 12, 14], [-3, -2, -1]),
]


@pytest.mark.parametrize(("opset", "kind", "values", "axes"), RESIZES)
def test_resize_channels_pass(opset, kind, values, axes):
    """Upsampling over space; a `sizes` entry for the channel axis is rewritten."""
    arg = {kind: values, "axes": axes}
    model = conv_chain(lambda b, x: (_resize(b, x, **arg), 8), opset=opset)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    if kind == "sizes":
        assert const_input(pruned, "RS", 3).tolist() == [4 if v == 8 else v for v in values]
    else:
        assert const_input(pruned, "RS", 2).tolist() == values
    assert attr(pruned, "RS", "axes") == axes


def test_resize_scaling_channels_freezes():
    model = conv_chain(lambda b, x: (_resize(b, x, scales=[1, 2, 1, 1]), 16))
    assert_frozen(group_named(analyze(model), "A"), "resized unit axis")
    assert_exact(model)


# -- CumSum --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("axis", "exclusive", "reverse"), [(2, 0, 0), (-1, 1, 0), (3, 0, 1)])
def test_cumsum_over_space_passes_channels(axis, exclusive, reverse):
    model = conv_chain(lambda b, x: (b.op("CumSum", [x, b.ints(axis)], name="CS",
                                          exclusive=exclusive, reverse=reverse), 8))
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape[1] == 4


def test_cumsum_over_channels_freezes():
    model = conv_chain(lambda b, x: (b.op("CumSum", [x, b.ints(1)]), 8))
    assert_frozen(group_named(analyze(model), "A"), "running sum over a unit axis")
    assert_exact(model)


# -- Pad -----------------------------------------------------------------------------------------
def _pad(b: Builder, x: str, pads: list[int], axes: list[int] | None = None,
         mode: str = "constant") -> str:
    ins = [x, b.ints(pads)]
    if mode == "constant":
        ins.append(b.const(np.float32(0.25)))
    if axes is not None:
        ins += [""] * (3 - len(ins)) + [b.ints(axes)]
    return b.op("Pad", ins, name="PAD", mode=mode)


PADS = [
    (11, [0, 0, 1, 2, 0, 0, 1, 0], None, "constant"),
    (13, [0, 0, 1, 1, 0, 0, 1, 1], None, "reflect"),
    (17, [0, 0, 2, 1, 0, 0, 0, 1], None, "edge"),
    (18, [1, 2, 1, 0], [2, 3], "constant"),
    (18, [1, 1, 1, 1], [-2, -1], "reflect"),
]


@pytest.mark.parametrize(("opset", "pads", "axes", "mode"), PADS)
def test_pad_spatial(opset, pads, axes, mode):
    model = conv_chain(lambda b, x: (_pad(b, x, pads, axes, mode), 8), opset=opset)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "PAD", 1).tolist() == pads


def test_pad_channels_freezes():
    model = conv_chain(lambda b, x: (_pad(b, x, [0, 1, 0, 0, 0, 1, 0, 0]), 10))
    assert_frozen(group_named(analyze(model), "A"), "padded unit axis")
    assert_exact(model)
