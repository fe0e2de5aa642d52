"""`graphprune.sparsify` on graphs written here: which weights, laid out how per op (MatMul
x·W and W·x, Gemm with and without transB, Conv grouped and not), each method's choice of
zeros against numpy written here, SparseGPT against magnitude on the same layer and data,
sequential statistics, what stays dense and why, the written model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphprune.passes import sparsegpt
from graphprune.passes.calibration import Calibration
from graphprune.passes.sparse_masks import Pattern, count
from helpers import make_model, run
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.errors import InputError, ValidationError

SAMPLES = 32
FIT = 24
"""Of the SAMPLES calibration samples, the methods read the first FIT; the last quarter
(holdout 0.25) is held back for the fidelity measurement."""


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def data(shape: list[int], n: int = SAMPLES, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((shape[-1], shape[-1])) / np.sqrt(shape[-1])
    return (rng.standard_normal((n, *shape)) @ mix).astype(np.float32)


def init(name: str, shape: list[int], seed: int) -> onnx.TensorProto:
    w = np.random.default_rng(seed).standard_normal(shape) / np.sqrt(shape[0])
    return numpy_helper.from_array(w.astype(np.float32), name)


def linear_layouts() -> onnx.ModelProto:
    """x [b, 16] → MatMul(x, A[16, 24]) → Gemm(·, B[32, 24], transB) → Gemm(·, C[32, 16])
    → MatMul(D[8, 16], ·ᵀ) (weight first) → Transpose → MatMul(·, E[8, 4]) (the head)."""
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["a"], name="mm"),
        helper.make_node("Relu", ["a"], ["ar"], name="r1"),
        helper.make_node("Gemm", ["ar", "B"], ["b"], name="gemm_t", transB=1),
        helper.make_node("Relu", ["b"], ["br"], name="r2"),
        helper.make_node("Gemm", ["br", "C"], ["c"], name="gemm"),
        helper.make_node("Transpose", ["c"], ["ct"], name="t1"),
        helper.make_node("MatMul", ["D", "ct"], ["d"], name="mm_left"),
        helper.make_node("Transpose", ["d"], ["dt"], name="t2"),
        helper.make_node("MatMul", ["dt", "E"], ["y"], name="head"),
    ]
    inits = [init("A", [16, 24], 1), init("B", [32, 24], 2), init("C", [32, 16], 3),
             init("D", [8, 16], 4), init("E", [8, 4], 5)]
    return make_model(nodes, inits, [("x", ["batch", 16], TensorProto.FLOAT)], ["y"])


def conv_layouts() -> onnx.ModelProto:
    """x [b, 8, 6, 6] → Conv 3x3 (16←8) → Relu → grouped Conv 3x3 (16←16, group 2) → Relu
    → depthwise Conv 3x3 → GlobalAveragePool → Flatten → Gemm (head)."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv_g", pads=[1, 1, 1, 1],
                         group=2),
        helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
        helper.make_node("Conv", ["r2", "W3"], ["c3"], name="conv_dw", pads=[1, 1, 1, 1],
                         group=16),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "F"], ["y"], name="fc", transB=1),
    ]
    inits = [init("W1", [16, 8, 3, 3], 1), init("W2", [16, 8, 3, 3], 2),
             init("W3", [16, 1, 3, 3], 3), init("F", [10, 16], 4)]
    return make_model(nodes, inits, [("x", ["batch", 8, 6, 6], TensorProto.FLOAT)], ["y"])


def nm_keep(scores: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Keep the n largest of every m consecutive entries along `axis`."""
    moved = np.moveaxis(scores, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], -1, m)
    ranks = np.argsort(np.argsort(-groups, axis=-1, kind="stable"), axis=-1, kind="stable")
    return np.moveaxis((ranks < n).reshape(moved.shape), -1, axis)


# -- which weights, which axis ------------------------------------------------------------------
def test_linear_layouts_magnitude_2_4_along_k() -> None:
    model = linear_layouts()
    out, report = graphprune.sparsify(model, pattern="2:4")
    w0, w1 = weights(model), weights(out)
    # MatMul(x, A[K, N]): groups along axis 0; Gemm transB B[N, K]: along axis 1; Gemm C[K, N]
    # along axis 0; MatMul(D[M, K], x): along axis 1 (D is W·x's weight: rows M, K its last)
    for name, axis in (("A", 0), ("B", 1), ("C", 0), ("D", 1)):
        want = np.where(nm_keep(np.abs(w0[name]), 2, 4, axis), w0[name], 0.0)
        np.testing.assert_array_equal(w1[name], want, err_msg=name)
    np.testing.assert_array_equal(w1["E"], w0["E"])  # the head stays dense by default
    sp = report.sparsity
    assert [(x["node"], x["input_axis"]) for x in sp["layers"]] == [
        ("mm", 0), ("gemm_t", 1), ("gemm", 0), ("mm_left", 1)]
    assert all(x["sparsity"] == 0.5 for x in sp["layers"])
    assert sp["skipped"] == [{"node": "head", "weight": "E", "reason":
                              "kind head is outside the scope (final layer: add 'head' to "
                              "--scope)"}]
    assert sp["totals"]["zeros"] == (16 * 24 + 32 * 24 + 32 * 16 + 8 * 16) // 2
    assert report.exact_check == {} and sp["check"].startswith("no exact check")
    assert [n.name for n in out.graph.node] == [n.name for n in model.graph.node]
    assert [(t.name, list(t.dims)) for t in out.graph.initializer] == [
        (t.name, list(t.dims)) for t in model.graph.initializer]


def test_conv_layouts_2_4_per_tap_and_groups() -> None:
    model = conv_layouts()
    out, report = graphprune.sparsify(model, pattern="2:4", sparse_scope="conv,head")
    w0, w1 = weights(model), weights(out)
    for name in ("W1", "W2"):  # along the input channels (axis 1) at each of the 9 taps
        want = np.where(nm_keep(np.abs(w0[name]), 2, 4, 1), w0[name], 0.0)
        np.testing.assert_array_equal(w1[name], want, err_msg=name)
    np.testing.assert_array_equal(w1["F"], np.where(nm_keep(np.abs(w0["F"]), 2, 4, 1),
                                                    w0["F"], 0.0))
    np.testing.assert_array_equal(w1["W3"], w0["W3"])  # depthwise: one channel per group
    assert report.sparsity["skipped"] == [{
        "node": "conv_dw", "weight": "W3",
        "reason": "1 input channels are not a multiple of 4 (2:4 needs whole groups)"}]
    kinds = {x["node"]: x["kind"] for x in report.sparsity["layers"]}
    assert kinds == {"conv": "conv", "conv_g": "conv", "fc": "head"}


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_unstructured_magnitude_is_per_layer(sparsity: float) -> None:
    model = conv_layouts()
    out, report = graphprune.sparsify(model, sparsity)
    w0, w1 = weights(model), weights(out)
    for name in ("W1", "W2", "W3"):
        w, new = w0[name], w1[name]
        k = count(w.size, sparsity)
        assert (new == 0).sum() == k
        order = np.argsort(np.abs(w).reshape(-1), kind="stable")
        want = w.reshape(-1).copy()
        want[order[:k]] = 0
        np.testing.assert_array_equal(new.reshape(-1), want)
    assert [x["sparsity"] for x in report.sparsity["layers"]] == [
        round(count(w0[n].size, sparsity) / w0[n].size, 6) for n in ("W1", "W2", "W3")]


def test_weights_through_layout_ops_go_back_to_their_source() -> None:
    """Weights read through Transpose/Reshape are traced to their initializer; a tied
    weight (one initializer, two layers) stays dense; --protect leaves a layer dense."""
    nodes = [
        helper.make_node("Transpose", ["Wt"], ["W"], name="tw", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm_t"),
        helper.make_node("Reshape", ["V", "shape"], ["Vr"], name="rv"),
        helper.make_node("MatMul", ["a", "Vr"], ["b"], name="mm_r"),
        helper.make_node("MatMul", ["b", "T"], ["c"], name="tied1"),
        helper.make_node("MatMul", ["c", "T"], ["d"], name="tied2"),
        helper.make_node("MatMul", ["d", "P"], ["e"], name="kept"),
        helper.make_node("MatMul", ["e", "H"], ["y"], name="head"),
    ]
    inits = [init("Wt", [12, 8], 1), init("V", [3, 4, 12], 2),
             numpy_helper.from_array(np.array([12, 12], np.int64), "shape"),
             init("T", [12, 12], 3), init("P", [12, 12], 4), init("H", [12, 4], 5)]
    model = make_model(nodes, inits, [("x", ["batch", 8], TensorProto.FLOAT)], ["y"])
    out, report = graphprune.sparsify(model, pattern="2:4", protect="^kept$")
    w0, w1 = weights(model), weights(out)
    want_w = np.where(nm_keep(np.abs(w0["Wt"].T), 2, 4, 0), w0["Wt"].T, 0.0)
    np.testing.assert_array_equal(w1["Wt"], want_w.T)
    vr = w0["V"].reshape(12, 12)
    np.testing.assert_array_equal(w1["V"], np.where(nm_keep(np.abs(vr), 2, 4, 0), vr,
                                                    0.0).reshape(3, 4, 12))
    for name in ("T", "P", "H"):
        np.testing.assert_array_equal(w1[name], w0[name])
    reasons = {x["node"]: x["reason"] for x in report.sparsity["skipped"]}
    assert "shared with tied2" in reasons["tied1"] and "shared with" in reasons["tied2"]
    assert reasons["kept"] == "protected by --protect"
    np.testing.assert_allclose(run(out, {"x": np.ones((2, 8), np.float32)})[0].shape, (2, 4))


# -- data-driven methods against numpy ----------------------------------------------------------
def test_wanda_scores_weight_times_input_norm_per_output_row() -> None:
    model = conv_layouts()
    x = data([8, 6, 6])
    out, report = graphprune.sparsify(model, method="wanda", calib={"x": x},
                                      calib_samples=SAMPLES, sequential=False)
    w0, w1 = weights(model), weights(out)
    # conv: ‖x_c‖ over samples and positions, the same at every tap; one row per filter
    norms = np.sqrt((x[:FIT].astype(np.float64) ** 2).mean(axis=(0, 2, 3)))
    score = np.abs(w0["W1"]) * norms[None, :, None, None]
    rows = score.reshape(16, -1)
    want = np.ones_like(rows, dtype=bool)
    for r in range(16):
        want[r, np.argsort(rows[r], kind="stable")[:36]] = False
    np.testing.assert_array_equal(w1["W1"], w0["W1"] * want.reshape(w0["W1"].shape))
    # grouped conv: group g's filters read channels 8g..8g+7 of the relu output
    r1 = np.maximum(_conv_out(model, x[:FIT]), 0)
    norms2 = np.sqrt((r1.astype(np.float64) ** 2).mean(axis=(0, 2, 3)))
    scale = np.concatenate([np.broadcast_to(norms2[8 * g:8 * g + 8], (8, 8)) for g in (0, 1)])
    score2 = (np.abs(w0["W2"]) * scale[:, :, None, None]).reshape(16, -1)
    want2 = np.ones_like(score2, dtype=bool)
    for r in range(16):
        want2[r, np.argsort(score2[r], kind="stable")[:36]] = False
    np.testing.assert_array_equal(w1["W2"], w0["W2"] * want2.reshape(w0["W2"].shape))
    assert report.sparsity["calibration"] == {"source": "arrays", "samples": FIT}
    assert report.sparsity["holdout"] == {"source": f"calibration samples {FIT}.."
                                          f"{SAMPLES - 1}", "samples": SAMPLES - FIT}


def _conv_out(model: onnx.ModelProto, x: np.ndarray, name: str = "c1") -> np.ndarray:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return run(probe, {"x": x})[-1]


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_error_below_magnitude_on_the_same_layer_and_data(pattern: str) -> None:
    """The first conv's output error on the calibration inputs, measured in onnxruntime:
    SparseGPT's below magnitude's, and equal to what the report says."""
    model = conv_layouts()
    x = data([8, 6, 6])
    calib = {"x": x}
    sg, rep = graphprune.sparsify(model, pattern=pattern, method="sparsegpt", calib=calib,
                                  calib_samples=SAMPLES)
    mag, _ = graphprune.sparsify(model, pattern=pattern)
    dense = _conv_out(model, x[:FIT])

    def error(sparse: onnx.ModelProto) -> float:
        return float(np.sum((_conv_out(sparse, x[:FIT]) - dense) ** 2) / np.sum(dense ** 2))

    assert error(sg) < error(mag)
    first = next(r for r in rep.sparsity["layers"] if r["node"] == "conv")
    assert first["error"] == pytest.approx(error(sg), rel=1e-3)
    assert first["sparsity"] >= 0.5 and first["zeros"] == first["size"] // 2
    fid = rep.sparsity["fidelity"]["y"]
    assert 0.9 < fid["cosine"] <= 1.0 and 0 < fid["rel_l2"] < 0.5


def mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "A"], ["a"], name="l1"),
             helper.make_node("Relu", ["a"], ["ar"], name="r1"),
             helper.make_node("MatMul", ["ar", "B"], ["b"], name="l2"),
             helper.make_node("Relu", ["b"], ["br"], name="r2"),
             helper.make_node("MatMul", ["br", "C"], ["y"], name="l3")]
    inits = [init("A", [32, 64], 1), init("B", [64, 32], 2), init("C", [32, 8], 3)]
    return make_model(nodes, inits, [("x", ["batch", 5, 32], TensorProto.FLOAT)], ["y"])


@pytest.mark.parametrize("sequential", [True, False])
def test_sparsegpt_sequential_takes_inputs_from_the_sparsified_model(sequential: bool) -> None:
    """Layer 2's Hessian comes from layer 1 already sparsified (sequential) or from the dense
    model: its weights equal the solver's on exactly those inputs."""
    model = mlp()
    x = data([5, 32])
    out, report = graphprune.sparsify(model, pattern="2:4", method="sparsegpt",
                                      calib={"x": x}, calib_samples=SAMPLES,
                                      sequential=sequential)
    assert report.sparsity["sequential"] is sequential
    source = out if sequential else model
    probe = onnx.ModelProto()
    probe.CopyFrom(source)
    probe.graph.output.append(helper.make_tensor_value_info("ar", TensorProto.FLOAT, None))
    ar = np.concatenate([run(probe, b)[-1] for b in Calibration(model, {"x": x},
                                                                 samples=FIT).batches()])
    rows = ar.reshape(-1, 64).astype(np.float64)
    h = rows.T @ rows / len(rows)
    w0 = weights(model)["B"]
    want = sparsegpt.solve(w0.T, h, Pattern(2, 4)).weight.T
    got = weights(out)["B"]
    np.testing.assert_array_equal(got == 0, want == 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(w0).max())
    other, _ = graphprune.sparsify(model, pattern="2:4", method="sparsegpt", calib={"x": x},
                                   calib_samples=SAMPLES, sequential=not sequential)
    np.testing.assert_array_equal(weights(other)["A"], weights(out)["A"])  # same first wave
    assert not np.array_equal(weights(other)["B"], got)


# -- the written model --------------------------------------------------------------------------
def test_output_is_checked_and_runs_with_the_original_shapes() -> None:
    model = conv_layouts()
    out, _ = graphprune.sparsify(model, method="magnitude", pattern="1:4", sparse_scope="conv")
    onnx.checker.check_model(out, full_check=True)
    xs = np.random.default_rng(0).standard_normal((3, 8, 6, 6)).astype(np.float32)
    assert run(out, {"x": xs})[0].shape == run(model, {"x": xs})[0].shape == (3, 10)
    w = weights(out)["W1"]
    assert ((np.moveaxis(w, 1, -1).reshape(16, 3, 3, 2, 4) != 0).sum(-1) <= 1).all()


def test_a_write_that_misses_the_pattern_is_refused(monkeypatch) -> None:
    """The pattern is checked on the weights as written: one lost zero fails the run."""
    from graphprune.passes import sparsify as sp

    real = sp.with_values

    def broken(model, values, spill=None):
        values = {k: v.copy() for k, v in values.items()}
        v = values["A"]
        v.reshape(-1)[np.flatnonzero(v.reshape(-1) == 0)[0]] = 1.0
        return real(model, values, spill)

    monkeypatch.setattr(sp, "with_values", broken)
    with pytest.raises(ValidationError, match="mm lacks the 2:4 pattern: 1 of 96 groups"):
        graphprune.sparsify(linear_layouts(), pattern="2:4")


def test_bad_options_are_one_line_input_errors() -> None:
    model = mlp()
    for kw, text in ((dict(pattern="4:2"), "0 < N < M"),
                     (dict(pattern="2:4", sparsity=0.3), "contradicts"),
                     (dict(method="obs"), "unknown method"),
                     (dict(sparse_scope="linear,embedding"), "unknown sparsify scope embedding"),
                     (dict(sparsity=1.5), "sparsity must be in"),
                     (dict(method="wanda", calib={"y": np.zeros((4, 5, 32))}),
                      "no array for input 'x'")):
        with pytest.raises(InputError, match=text):
            graphprune.sparsify(model, **kw)


def test_input_model_is_not_modified() -> None:
    model = mlp()
    before = model.SerializeToString()
    graphprune.sparsify(model, method="sparsegpt", pattern="2:4")
    assert model.SerializeToString() == before


def test_spilled_weights_are_the_same(tmp_path, monkeypatch) -> None:
    """With a spill (large models), new weights live in its file, memory-mapped, until the
    model is saved: the same values, saved with external data and read back."""
    from graphprune.external import Spill

    model = mlp()
    x = data([5, 32])
    plain, _ = graphprune.sparsify(model, pattern="2:4", method="sparsegpt", calib={"x": x})
    monkeypatch.setattr(Spill, "MIN_BYTES", 0)
    spill = Spill(tmp_path)
    try:
        spilled, _ = graphprune.sparsify(model, pattern="2:4", method="sparsegpt",
                                         calib={"x": x}, spill=spill)
        assert all(t.data_location == onnx.TensorProto.EXTERNAL
                   for t in spilled.graph.initializer if t.name in ("A", "B"))
        graphprune.save_atomic(spilled, tmp_path / "out.onnx", external=True)
    finally:
        spill.close()
    back = onnx.load(str(tmp_path / "out.onnx"))
    assert weights(back).keys() == weights(plain).keys()
    for name, value in weights(plain).items():
        np.testing.assert_array_equal(weights(back)[name], value, err_msg=name)


def test_weight_ops_without_a_rule_are_listed_dense() -> None:
    nodes = [helper.make_node("ConvTranspose", ["x", "W"], ["c"], name="up"),
             helper.make_node("Conv", ["c", "V"], ["y"], name="conv")]
    inits = [init("W", [4, 8, 2, 2], 1), init("V", [8, 8, 1, 1], 2)]
    model = make_model(nodes, inits, [("x", ["batch", 4, 5, 5], TensorProto.FLOAT)], ["y"])
    out, report = graphprune.sparsify(model, sparse_scope="conv,head")
    assert report.sparsity["skipped"] == [{"node": "up", "weight": "W",
                                           "reason": "no sparsify rule for ConvTranspose"}]
    assert [r["node"] for r in report.sparsity["layers"]] == ["conv"]
    np.testing.assert_array_equal(weights(out)["W"], weights(model)["W"])


def test_a_model_the_checker_refuses_is_not_written(monkeypatch) -> None:
    from graphprune.passes import sparsify as sp

    real = sp.with_values

    def broken(model, values, spill=None):
        out = real(model, values, spill)
        out.graph.node[0].input[1] = "no_such_tensor"
        return out

    monkeypatch.setattr(sp, "with_values", broken)
    with pytest.raises(ValidationError, match="fails onnx.checker"):
        graphprune.sparsify(mlp())
