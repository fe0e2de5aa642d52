"""Rules for layout ops: Concat, Split, Slice, Gather, Transpose, Reshape, Flatten,
Squeeze/Unsqueeze and Expand, with the constants that encode unit-axis sizes rewritten."""

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
)

INT64_MAX = np.iinfo(np.int64).max


# -- Concat ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, -3])
def test_concat_channels_two_producers(axis):
    """Two producers concatenated on channels: two groups sharing the consumer's weight."""
    b = Builder()
    x = b.input()
    a1, a2 = b.conv(x, 3, 8, name="A1"), b.conv(x, 3, 6, name="A2")
    c = b.op("Concat", [a1, a2], axis=axis)
    b.conv(c, 14, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (6, 6), (8, 8)]
    assert members(res, group_named(res, "A1")) == {"A1[1]", "A1[2]", "B[1]"}
    assert members(res, group_named(res, "A2")) == {"A2[1]", "A2[2]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape == (4, 7, 1, 1)


def test_concat_channels_with_graph_input_freezes_that_part():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    c = b.op("Concat", [a, b.input("S", [2, 5, 6, 7])], axis=1)
    b.conv(c, 13, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (5, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape == (4, 9, 1, 1)


@pytest.mark.parametrize("axis", [2, 3, -1])
def test_concat_spatial_axis_unifies(axis):
    b = Builder()
    x = b.input()
    a1, a2 = b.conv(x, 3, 8, name="A1"), b.conv(x, 3, 8, name="A2")
    c = b.op("Concat", [a1, a2], axis=axis)
    b.conv(c, 8, 4, k=1, name="B")
    model = b.build("B_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    assert {"A1[1]", "A2[1]", "B[1]"} <= members(res, res.groups[0])
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "A2", 1).shape[0] == 4


# -- Split -----------------------------------------------------------------------------------------
SPLITS = [
    # (opset, form, sizes)
    (11, "attr", [3, 5]),
    (11, "equal", [4, 4]),
    (13, "input", [3, 5]),
    (13, "equal", [4, 4]),
    (18, "input", [3, 5]),
    (18, "num_outputs", [4, 4]),
]


@pytest.mark.parametrize(("opset", "form", "sizes"), SPLITS)
def test_split_channels_per_piece_convs(opset, form, sizes):
    b = Builder(opset)
    a = b.conv(b.input(), 3, 8, name="A")
    extra: dict = {}
    ins = [b.op("Relu", [a])]
    if form == "attr":
        extra["split"] = sizes
    elif form == "input":
        ins.append(b.ints(sizes))
    elif form == "num_outputs":
        extra["num_outputs"] = 2
    p1, p2 = b.op("Split", ins, n_out=2, name="S", axis=1, **extra)
    y1, y2 = b.conv(p1, sizes[0], 4, name="P1"), b.conv(p2, sizes[1], 4, name="P2")
    b.op("Add", [y1, y2], name="Y")
    model = b.build("Y_out")

    res = analyze(model)
    assert group_sizes(res) == sorted([(sizes[0], sizes[0]), (sizes[1], sizes[1]), (4, 0)])
    assert_frozen(group_named(res, "P1"), "graph output")
    pruned, _ = assert_exact(model)
    kept = [n - n // 2 for n in sizes]
    split = attr(pruned, "S", "split") if opset < 13 else const_input(pruned, "S", 1).tolist()
    assert split == kept
    assert const_input(pruned, "P1", 1).shape[1] == kept[0]
    assert const_input(pruned, "P2", 1).shape[1] == kept[1]


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_spatial_axis_passes_units(opset):
    b = Builder(opset)
    a = b.conv(b.input(), 3, 8, name="A")
    extra = {"num_outputs": 2} if opset >= 18 else {}
    p1, p2 = b.op("Split", [a], n_out=2, axis=2, **extra)
    b.op("Concat", [b.conv(p2, 8, 4, k=1, name="B2"), b.conv(p1, 8, 4, k=1, name="B1")],
         axis=2, name="Y")
    model = b.build("Y_out")
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B1", 1).shape == (4, 4, 1, 1)


# -- Slice / Gather --------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize(("start", "end"), [(2, 7), (-6, INT64_MAX), (0, -3)])
def test_slice_channels_rewrites_bounds(opset, start, end):
    """Channels outside the slice feed nothing and form their own group."""
    n = len(range(8)[start:end])

    def middle(b, x):
        return b.op("Slice", [x, b.ints([start]), b.ints([end]), b.ints([1])], name="SL"), n

    model = conv_chain(middle, opset=opset)
    res = analyze(model)
    assert group_sizes(res) == sorted([(n, n), (8 - n, 8 - n), (4, 0)])
    pruned, _ = assert_exact(model)
    kept = n - n // 2
    assert const_input(pruned, "B", 1).shape[1] == kept
    s, e = const_input(pruned, "SL", 1)[0], const_input(pruned, "SL", 2)[0]
    assert len(range(const_input(pruned, "A", 1).shape[0])[s:e]) == kept


def test_slice_channels_with_step_freezes():
    def middle(b, x):
        ins = [x, b.ints([0]), b.ints([8]), b.ints([1]), b.ints([2])]
        return b.op("Slice", ins), 4

    model = conv_chain(middle)
    res = analyze(model)
    assert_frozen(group_named(res, "A"), "strided")
    assert_exact(model)


@pytest.mark.parametrize("axis", [2, 3])
def test_slice_spatial_axis_passes_units(axis):
    def middle(b, x):
        return b.op("Slice", [x, b.ints([1]), b.ints([-1]), b.ints([axis])]), 8

    model = conv_chain(middle)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    assert_exact(model)


@pytest.mark.parametrize("indices", [[0, 2, 5, 7, 3], [6, -1, 1], [1, 1, 4]])
def test_gather_channels_rewrites_indices(indices):
    used = len({i % 8 for i in indices})

    def middle(b, x):
        return b.op("Gather", [x, b.ints(indices)], name="GA", axis=1), len(indices)

    model = conv_chain(middle)
    res = analyze(model)
    assert group_sizes(res) == sorted([(used, used), (8 - used, 8 - used), (4, 0)])
    pruned, _ = assert_exact(model)
    idx = const_input(pruned, "GA", 1)
    assert idx.shape[0] == const_input(pruned, "B", 1).shape[1] < len(indices)
    assert idx.min() >= 0 and idx.max() < const_input(pruned, "A", 1).shape[0]


def test_gather_scalar_index_on_channels_freezes():
    def middle(b, x):
        g = b.op("Gather", [x, b.ints(2)], axis=1)
        return b.op("Unsqueeze", [g, b.ints([1])]), 1

    model = conv_chain(middle)
    assert_frozen(group_named(analyze(model), "A"), "gather")
    assert_exact(model)


# -- Transpose / Reshape / Flatten ---------------------------------------------------------------
def test_transpose_nhwc_matmul_back():
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    t = b.op("Transpose", [a], perm=[0, 2, 3, 1])
    m = b.op("MatMul", [t, b.weight([8, 6], fan_in=8, name="MM_W")], name="MM")
    t2 = b.op("Transpose", [m], perm=[0, 3, 1, 2])
    b.conv(t2, 6, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (6, 6), (8, 8)]
    assert members(res, group_named(res, "A")) == {"A[1]", "A[2]", "MM[1]"}
    assert members(res, group_named(res, "MM")) == {"MM[1]", "B[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "MM", 1).shape == (4, 3)


@pytest.mark.parametrize("shape", [[2, -1], [-1, 336], [2, 336], [0, -1], [0, 336]])
def test_reshape_flatten_to_gemm(shape):
    """[N,8,6,7] → [N,336]: each channel repeats 42 times along the flattened axis."""
    def middle(b, x):
        return b.op("Reshape", [x, b.ints(shape)], name="RS"), None

    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    r, _ = middle(b, b.op("Relu", [a]))
    b.gemm(r, 336, 5, name="FC")
    model = b.build("FC_out")

    res = analyze(model)
    assert group_sizes(res) == [(5, 0), (8, 8)]
    assert members(res, group_named(res, "A")) == {"A[1]", "A[2]", "FC[1]"}
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "FC", 1).shape == (5, 168)
    new_shape = const_input(pruned, "RS", 1).tolist()
    assert new_shape == [s if s != 336 else 168 for s in shape]


@pytest.mark.parametrize("shape", [[2, 8, 42], [0, 0, 42], [0, 8, -1], [-1, 8, 42]])
def test_reshape_merging_spatial_axes(shape):
    """[N,8,6,7] → [N,8,42] → back: a literal 8 shrinks; 0 (copy) and -1 (infer) stay."""
    def middle(b, x):
        r = b.op("Reshape", [x, b.ints(shape)], name="RS")
        return b.op("Reshape", [r, b.ints([2, 8, 6, 7])], name="RS2"), 8

    model = conv_chain(middle)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "RS", 1).tolist() == [4 if v == 8 else v for v in shape]
    assert const_input(pruned, "RS2", 1).tolist() == [2, 4, 6, 7]


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle(groups):
    """[N,C,H,W] → [N,g,C/g,H,W] → transpose(1,2) → [N,C,H,W]: the same index inside every
    shuffle group is one unit."""
    per = 8 // groups

    def middle(b, x):
        r = b.op("Reshape", [x, b.ints([2, groups, per, 6, 7])], name="RS1")
        t = b.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
        return b.op("Reshape", [t, b.ints([2, 8, 6, 7])], name="RS2"), 8

    model = conv_chain(middle)
    res = analyze(model)
    units = max(groups, per)
    assert group_sizes(res) == sorted([(units, units), (4, 0)])
    pruned, _ = assert_exact(model)
    kept = (units - units // 2) * 8 // units
    assert const_input(pruned, "A", 1).shape[0] == kept
    assert const_input(pruned, "RS2", 1).tolist() == [2, kept, 6, 7]
    assert int(np.prod(const_input(pruned, "RS1", 1)[1:3])) == kept


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_flatten_to_gemm(pool, trans_b):
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    h = b.op("GlobalAveragePool", [a]) if pool else b.op("Relu", [a])
    f = b.op("Flatten", [h], axis=1)
    k = 8 if pool else 336
    b.gemm(f, k, 5, trans_b=trans_b, name="FC")
    model = b.build("FC_out")

    res = analyze(model)
    assert group_sizes(res) == [(5, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    w = const_input(pruned, "FC", 1)
    assert w.shape == ((5, k // 2) if trans_b else (k // 2, 5))


# -- Squeeze / Unsqueeze / Expand ---------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("explicit_axes", [True, False])
def test_squeeze_unsqueeze_around_pooled(opset, explicit_axes):
    """GAP [N,8,1,1] → Squeeze → Gemm → Unsqueeze → 1x1 Conv, as in squeeze-excitation."""
    b = Builder(opset)
    a = b.conv(b.input(), 3, 8, name="A")
    p = b.op("GlobalAveragePool", [a])

    def axes_op(op, x, axes):
        if op == "Squeeze" and not explicit_axes:
            return b.op(op, [x])
        if opset < 13:
            return b.op(op, [x], axes=axes)
        return b.op(op, [x, b.ints(axes)])

    s = axes_op("Squeeze", p, [2, 3])
    g = b.gemm(s, 8, 6, name="FC")
    u = axes_op("Unsqueeze", b.op("Relu", [g]), [2, 3] if explicit_axes else [-2, -1])
    b.conv(u, 6, 4, k=1, name="B")
    model = b.build("B_out")

    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (6, 6), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "FC", 1).shape == (3, 4)
    assert const_input(pruned, "B", 1).shape == (4, 3, 1, 1)


def test_squeeze_of_a_unit_axis_freezes():
    """Squeezing the channel axis when it has size 1 (a 1-channel producer)."""
    b = Builder()
    a = b.conv(b.input(), 3, 1, name="A")
    s = b.op("Squeeze", [a, b.ints([1])])
    b.op("Add", [s, s], name="Y")
    model = b.build("Y_out")
    res = analyze(model)
    assert group_sizes(res) == [(1, 0)]
    assert "squeezed" in " ".join(r for g in res.groups for rs in g.frozen.values() for r in rs)


EXPAND_SHAPES = [[2, 8, 6, 7], [1, 1, 6, 7], [1, 8, 1, 7], [8, 6, 7], [6, 7]]


@pytest.mark.parametrize("shape", EXPAND_SHAPES, ids=["x".join(map(str, s)) for s in EXPAND_SHAPES])
def test_expand_pooled(shape):
    """GAP [N,8,1,1] expanded back over space; a channel entry of 8 in the shape is rewritten,
    wherever the shape's entries align (a shorter shape aligns to the right)."""
    def middle(b, x):
        p = b.op("GlobalAveragePool", [x])
        return b.op("Expand", [p, b.ints(shape)], name="EXP"), 8

    model = conv_chain(middle)
    res = analyze(model)
    assert group_sizes(res) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    new = const_input(pruned, "EXP", 1).tolist()
    assert new == [4 if s == 8 else s for s in shape]


def test_slice_channels_and_space_together():
    """One Slice cutting channels and a spatial axis: the channel bounds sit at position 1."""
    def middle(b, x):
        ins = [x, b.ints([1, 1]), b.ints([-1, 7]), b.ints([2, 1])]
        return b.op("Slice", ins, name="SL"), 6

    model = conv_chain(middle)
    assert group_sizes(analyze(model)) == [(2, 2), (4, 0), (6, 6)]
    pruned, _ = assert_exact(model)
    s, e = const_input(pruned, "SL", 1), const_input(pruned, "SL", 2)
    assert s[0] == 1 and e[0] == -1
    assert len(range(const_input(pruned, "A", 1).shape[0])[s[1]:e[1]]) == 3


def test_split_three_uneven_num_outputs():
    """num_outputs=3 over 8 channels gives [3, 3, 2]; the rewrite spells the sizes out."""
    b = Builder(18)
    a = b.conv(b.input(), 3, 8, name="A")
    p = b.op("Split", [a], n_out=3, name="S", axis=1, num_outputs=3)
    ys = [b.conv(x, n, 4, k=1, name=f"P{k}")
          for k, (x, n) in enumerate(zip(p, [3, 3, 2], strict=True))]
    b.op("Sum", ys, name="Y")
    model = b.build("Y_out")
    assert group_sizes(analyze(model)) == [(2, 2), (3, 3), (3, 3), (4, 0)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "S", 1).tolist() == [2, 2, 1]
    assert attr(pruned, "S", "num_outputs") is None


@pytest.mark.parametrize("keep", [1, 2])
def test_reshape_with_shape_read_from_tensor(keep):
    """torch-style flatten: Reshape(x, Concat(Shape(x)[:keep], [-1])). With keep=2 the channel
    count travels through Shape to the very axis that carries the units, so it shrinks by
    itself; with keep=1 only the batch size is read."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    r = b.op("Relu", [a])
    head = b.op("Slice", [b.op("Shape", [r]), b.ints([0]), b.ints([keep])])
    shape = b.op("Concat", [head, b.ints([-1])], axis=0)
    f = b.op("Reshape", [r, shape], name="RS")
    if keep == 2:
        f = b.op("ReduceMean", [f], axes=[2], keepdims=0)
    b.gemm(f, 336 if keep == 1 else 8, 5, name="FC")
    model = b.build("FC_out")
    res = analyze(model)
    assert group_sizes(res) == [(5, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "FC", 1).shape == (5, 168 if keep == 1 else 4)


def test_channel_count_used_as_a_value_freezes():
    """Shape(x)[1] used in arithmetic: the channel count is a value we cannot follow."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    c = b.op("Gather", [b.op("Shape", [a]), b.ints(1)], axis=0)
    scale = b.op("Cast", [b.op("Mul", [c, b.ints(2)])], to=1)
    b.op("Mul", [b.conv(a, 8, 4, k=1, name="B"), scale], name="Y")
    model = b.build("Y_out")
    assert_frozen(group_named(analyze(model), "A"), "value")
    assert_exact(model)


def test_concat_same_tensor_twice():
    """Concat(a, a) on channels: each unit sits at two positions of the consumer's weight."""
    def middle(b, x):
        return b.op("Concat", [x, x], axis=1), 16

    model = conv_chain(middle)
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "B", 1).shape == (4, 8, 1, 1)


def test_channels_last_flatten_to_gemm():
    """NHWC flatten: channel ids tile (not repeat) along the flattened axis."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    t = b.op("Transpose", [b.op("Relu", [a])], perm=[0, 2, 3, 1])
    f = b.op("Reshape", [t, b.ints([2, -1])], name="RS")
    b.gemm(f, 336, 5, name="FC")
    model = b.build("FC_out")
    assert group_sizes(analyze(model)) == [(5, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "FC", 1).shape == (5, 168)


def test_transpose_without_perm_reverses():
    """Transpose with no perm reverses the axes: channels land on axis 2 of [W,H,C,N]."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    t = b.op("Transpose", [b.op("Transpose", [a])], perm=[3, 2, 0, 1])
    b.conv(t, 8, 4, k=1, name="B")
    model = b.build("B_out")
    assert group_sizes(analyze(model)) == [(4, 0), (8, 8)]
    assert_exact(model)


def test_channel_count_through_mod_is_followed():
    """Shape arithmetic through Mod (C % 1000 = C): the Reshape entry it feeds is rewritten."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    r = b.op("Relu", [a])
    s = b.op("Shape", [r])
    c = b.op("Mod", [b.op("Gather", [s, b.ints([1])], axis=0), b.ints([1000])])
    shape = b.op("Concat", [b.op("Gather", [s, b.ints([0])], axis=0), c, b.ints([-1])], axis=0)
    f = b.op("ReduceMean", [b.op("Reshape", [r, shape], name="RS")], axes=[2], keepdims=0)
    b.gemm(f, 8, 5, name="FC")
    model = b.build("FC_out")
    assert group_sizes(analyze(model)) == [(5, 0), (8, 8)]
    pruned, _ = assert_exact(model)
    assert const_input(pruned, "FC", 1).shape == (5, 4)


@pytest.mark.parametrize("op", ["Split", "Expand"])
def test_channel_count_in_a_split_or_expanded_shape_freezes(op):
    """A piece of Shape(a) (Split) or a broadcast of it (Expand) sizes another tensor: the
    count is a value nothing follows there, so a's units stay."""
    b = Builder()
    a = b.conv(b.input(), 3, 8, name="A")
    s = b.op("Shape", [a])
    if op == "Split":
        count = b.op("Split", [s, b.ints([1, 1, 2])], n_out=3)[1]
    else:
        count = b.op("Expand", [b.op("Slice", [s, b.ints([1]), b.ints([2])]), b.ints([1])])
    y = b.op("Reshape", [b.input("V", [8, 6]), b.op("Concat", [count, b.ints([-1])], axis=0)],
             name="Y")
    b.conv(a, 8, 4, k=1, name="B")
    model = b.build(["B_out", y])
    assert_frozen(group_named(analyze(model), "A"), "value")
    assert_exact(model)
