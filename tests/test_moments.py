"""Input moments (passes/moments.py): conv unfolding against an explicit im2col, the weight's
row layout against onnxruntime's own Conv/Gemm/MatMul, and streamed moments against numpy."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from graphprune.passes import moments
from helpers import Builder, run
from onnx import TensorProto, helper, numpy_helper

from graphprune.ir import Graph


def im2col(x: np.ndarray, kernel, strides, dilations, pads) -> np.ndarray:
    """Patches by explicit loops: [N·∏out, C·∏kernel], channel-major then taps; pads as
    (begin, end) per spatial axis, out-of-range reads are zeros."""
    n, c, *spatial = x.shape
    r = len(spatial)
    out = [(spatial[a] + pads[a][0] + pads[a][1] - (kernel[a] - 1) * dilations[a] - 1)
           // strides[a] + 1 for a in range(r)]
    rows = []
    for b in range(n):
        for o in itertools.product(*(range(m) for m in out)):
            row = []
            for ch in range(c):
                for t in itertools.product(*(range(k) for k in kernel)):
                    pos = [o[a] * strides[a] + t[a] * dilations[a] - pads[a][0]
                           for a in range(r)]
                    inside = all(0 <= p < s for p, s in zip(pos, spatial, strict=True))
                    row.append(x[(b, ch, *pos)] if inside else 0.0)
            rows.append(row)
    return np.array(rows)


CASES = [  # spatial, kernel, strides, dilations, pads (begin..., end...)
    ((7,), (3,), (1,), (1,), (1, 1)),
    ((9,), (2,), (2,), (3,), (0, 2)),
    ((6, 7), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((6, 7), (3, 2), (2, 1), (1, 2), (0, 1, 2, 0)),
    ((8, 9), (5, 3), (3, 2), (2, 1), (2, 1, 1, 0)),
    ((4, 5, 6), (2, 3, 2), (1, 2, 1), (2, 1, 1), (1, 0, 1, 0, 1, 1)),
]


@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", CASES)
def test_unfold_matches_explicit_im2col(spatial, kernel, strides, dilations, pads) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, *spatial))
    geo = moments.Conv(kernel, strides, dilations, pads)
    u = moments.unfold(x, geo)
    r = len(kernel)
    want = im2col(x, kernel, strides, dilations, list(zip(pads[:r], pads[r:], strict=True)))
    got = u.reshape(-1, 3 * int(np.prod(kernel)))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_matches_onnxruntime(auto_pad: str) -> None:
    """auto_pad's padding, checked through the conv itself: weight rows · rows = Conv."""
    b = Builder(seed=1)
    x = b.input("X", [2, 4, 7, 8])
    w = b.weight([6, 4, 3, 2], name="W")
    b.op("Conv", [x, w], name="C", kernel_shape=[3, 2], strides=[2, 3], auto_pad=auto_pad)
    _conv_equals_rows(b.build("C_out"))


@pytest.mark.parametrize("group,cin,cout", [(1, 4, 6), (2, 4, 6), (4, 8, 4), (6, 6, 12),
                                            (6, 6, 6)])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_rows_times_weight_rows_is_the_conv(group: int, cin: int, cout: int,
                                                 dims: int) -> None:
    """Grouped and depthwise, padded, strided, dilated: Σ_d weight_rows[g, o, d] ·
    rows[g, n, d] equals onnxruntime's Conv output (bias left out)."""
    b = Builder(seed=group + dims)
    spatial = [9, 8, 7][:dims]
    x = b.input("X", [2, cin, *spatial])
    w = b.weight([cout, cin // group, *[3] * dims], name="W")
    b.op("Conv", [x, w], name="C", kernel_shape=[3] * dims, group=group,
         strides=[2, 1, 1][:dims], dilations=[1, 2, 1][:dims],
         pads=[1, 2, 0][:dims] + [1, 0, 1][:dims])
    _conv_equals_rows(b.build("C_out"))


def _conv_equals_rows(model: onnx.ModelProto) -> None:
    g = Graph(model)
    s = moments.site(g, 0)
    x = np.random.default_rng(3).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    (y,) = run(model, {"X": x})
    r = moments.rows(s, x)  # [G, n, d]
    wr = moments.weight_rows(s, g.const(model.graph.node[0].input[1]))  # [G, o, d]
    got = np.einsum("gnd,god->ngo", r.astype(np.float64), wr).reshape(r.shape[1], -1)
    want = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    back = moments.weight_from_rows(s, wr, g.const(model.graph.node[0].input[1]))
    np.testing.assert_array_equal(back, g.const(model.graph.node[0].input[1]))


@pytest.mark.parametrize("trans_a,trans_b,alpha", [(0, 0, 1.0), (0, 1, 0.5), (1, 1, 2.0),
                                                   (1, 0, 1.0)])
def test_gemm_rows(trans_a: int, trans_b: int, alpha: float) -> None:
    b = Builder(seed=2)
    x = b.input("X", [5, 3] if trans_a else [3, 5])
    w = b.weight([4, 5] if trans_b else [5, 4], name="W")
    b.op("Gemm", [x, w], name="G", transA=trans_a, transB=trans_b, alpha=alpha)
    model = b.build("G_out")
    g = Graph(model)
    s = moments.site(g, 0)
    xv = np.random.default_rng(0).standard_normal([5, 3] if trans_a else [3, 5]).astype(
        np.float32)
    (y,) = run(model, {"X": xv})
    wr = moments.weight_rows(s, g.const("W"))
    np.testing.assert_allclose(moments.rows(s, xv)[0] @ wr[0].T, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moments.weight_from_rows(s, wr, g.const("W")), g.const("W"),
                               rtol=1e-6)


def _matmul_model() -> onnx.ModelProto:
    """X[B, S, 6] → MatMul W1 [6, 5] → Relu → MatMul W2 [5, 3]."""
    b = Builder(seed=5)
    x = b.input("X", ["B", 4, 6])
    h = b.op("MatMul", [x, b.weight([6, 5], name="W1")], name="M1")
    h = b.op("Relu", [h], name="R")
    b.op("MatMul", [h, b.weight([5, 3], name="W2")], name="M2")
    return b.build("M2_out")


def _activations(model: onnx.ModelProto, feeds: dict, name: str) -> np.ndarray:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return run(out, feeds)[-1]


def test_collect_matches_numpy() -> None:
    """Means, second moments (plain and augmented) of M2's input, streamed over batches."""
    model = _matmul_model()
    g = Graph(model)
    s = moments.site(g, 2)
    assert (s.op, s.x, s.width) == ("MatMul", "R_out", 5)
    rng = np.random.default_rng(0)
    batches = [{"X": rng.standard_normal((n, 4, 6)).astype(np.float32)} for n in (2, 3, 1)]
    got = moments.collect(model, [s], batches).moments[2]
    x = np.concatenate([_activations(model, f, "R_out").reshape(-1, 5) for f in batches])
    x = x.astype(np.float64)
    assert got.n == len(x) == 24
    np.testing.assert_allclose(got.mean()[0], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(got.second()[0], x.T @ x / len(x), rtol=1e-6, atol=1e-9)
    xt = np.hstack([x, np.ones((len(x), 1))])
    np.testing.assert_allclose(got.augmented()[0], xt.T @ xt / len(x), rtol=1e-6, atol=1e-9)


def test_paired_cross_moments_and_overrides() -> None:
    """A paired model (the same graph with W1 replaced, by override) on the same samples:
    E[x' xᵀ] pairs its input with the model's; overrides change what is measured."""
    model = _matmul_model()
    g = Graph(model)
    s = moments.site(g, 2)
    w1 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W1"))
    new_w1 = (w1 * 0.5 + 0.1).astype(np.float32)
    rng = np.random.default_rng(1)
    batches = [{"X": rng.standard_normal((2, 4, 6)).astype(np.float32)} for _ in range(3)]
    got = moments.collect(model, [s], batches, overrides={"W1": new_w1},
                          paired=model).moments[2]
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for t in changed.graph.initializer:
        if t.name == "W1":
            t.CopyFrom(numpy_helper.from_array(new_w1, "W1"))
    x = np.concatenate([_activations(changed, f, "R_out").reshape(-1, 5) for f in batches])
    xp = np.concatenate([_activations(model, f, "R_out").reshape(-1, 5) for f in batches])
    x, xp = x.astype(np.float64), xp.astype(np.float64)
    np.testing.assert_allclose(got.second()[0], x.T @ x / len(x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.cross_moment()[0], xp.T @ x / len(x), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(got.paired_mean()[0], xp.mean(0), rtol=1e-6)
    assert not np.allclose(x, xp)


def test_conv_moments_count_padding_as_zeros() -> None:
    """A padded conv's input moments are those of the explicit im2col rows (zeros where the
    kernel reads padding), per group."""
    b = Builder(seed=3)
    x = b.input("X", [2, 4, 5, 6])
    w = b.weight([4, 2, 3, 3], name="W")
    b.op("Conv", [x, w], name="C", kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1])
    model = b.build("C_out")
    s = moments.site(Graph(model), 0)
    xv = np.random.default_rng(2).standard_normal((2, 4, 5, 6)).astype(np.float32) + 1.0
    got = moments.collect(model, [s], [{"X": xv}]).moments[0]
    for grp in range(2):
        rows = im2col(xv[:, 2 * grp:2 * grp + 2].astype(np.float64), (3, 3), (1, 1), (1, 1),
                      [(1, 1), (1, 1)])
        np.testing.assert_allclose(got.mean()[grp], rows.mean(0), rtol=1e-6)
        np.testing.assert_allclose(got.second()[grp], rows.T @ rows / len(rows), rtol=1e-6,
                                   atol=1e-9)
    assert got.mean()[0].min() < 1.0  # border taps average in the zeros of the padding


def test_budget_skips_a_site_and_says_why() -> None:
    model = _matmul_model()
    g = Graph(model)
    sites = [moments.site(g, 0), moments.site(g, 2)]
    budget = sites[1].accumulator_bytes(paired=False)  # fits M2 (width 5), not M1 (width 6)
    got = moments.collect(model, sites, [{"X": np.ones((1, 4, 6), np.float32)}],
                          budget=budget)
    assert list(got.moments) == [2]
    assert "over the budget" in got.skipped[0]


def test_unsupported_nodes() -> None:
    model = _matmul_model()
    with pytest.raises(moments.Unsupported, match="no input moments"):
        moments.site(Graph(model), 1)  # Relu
