"""Recovery (passes/recovery.py, refit.py): bias compensation restores a unit with a constant
input exactly (conv, Gemm without C, MatMul without bias: an Add is added and carried by the
rewrite); a refit lowers the layer's reconstruction error on its statistics; sequential refit
beats the independent one on a chain; what is reported and why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphprune.passes import moments, recovery, refit
from graphprune.passes.calibration import Calibration
from graphprune.passes.options import Options
from helpers import Builder, run
from onnx import numpy_helper

import graphprune
from graphprune.analysis import analyze_graph
from graphprune.ir import Graph
from graphprune.plan import make_plan

CONST = 0.7


def _remove(model: onnx.ModelProto, anchor: str, units: list[int], **settings):
    """A plan removing `units` of the group `anchor` produces (and its analysis)."""
    an = analyze_graph(Graph(model))
    group = next(g for g in an.groups if g.node == anchor)
    removed = np.zeros(len(an.roots), dtype=bool)
    removed[[group.units[u] for u in units]] = True
    return make_plan(model, an, removed, Options(**settings).to_dict()), an, removed


def _inputs(model: onnx.ModelProto, n: int, seed: int) -> dict[str, np.ndarray]:
    vi = model.graph.input[0]
    shape = [n, *[d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]]
    return {vi.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _constant_channel_conv(bias: bool) -> onnx.ModelProto:
    """X → Conv A (channel 5: zero filter, bias CONST) → Relu → Conv B (3x3, no padding, with
    or without bias) → Y. Channel 5 reaches B as CONST everywhere."""
    b = Builder(seed=3)
    x = b.input("X", ["N", 3, 8, 8])
    a = b.conv(x, 3, 8, name="A")
    w = next(t for t in b.inits if t.name == "A_W")
    arr = numpy_helper.to_array(w).copy()
    arr[5] = 0.0
    w.CopyFrom(numpy_helper.from_array(arr, "A_W"))
    bb = next(t for t in b.inits if t.name == "A_B")
    arr = numpy_helper.to_array(bb).copy()
    arr[5] = CONST
    bb.CopyFrom(numpy_helper.from_array(arr, "A_B"))
    r = b.op("Relu", [a], name="R")
    wb = b.weight([4, 8, 3, 3], name="B_W")
    ins = [r, wb] + ([b.weight([4], scale=0.1, name="B_B")] if bias else [])
    b.op("Conv", ins, name="B", kernel_shape=[3, 3])
    return b.build("B_out")


def _constant_unit_mlp(op: str) -> onnx.ModelProto:
    """X[N, 6] → Gemm H (unit 2: zero row, bias CONST) → Relu → `op` without bias → Y."""
    b = Builder(seed=4)
    x = b.input("X", ["N", 6])
    w = (b.rng.standard_normal((7, 6)) / 3).astype(np.float32)
    w[2] = 0.0
    bias = (b.rng.standard_normal(7) * 0.1).astype(np.float32)
    bias[2] = CONST
    h = b.op("Gemm", [x, b.const(w, "H_W"), b.const(bias, "H_B")], name="H", transB=1)
    r = b.op("Relu", [h], name="R")
    if op == "MatMul":
        b.op("MatMul", [r, b.weight([7, 3], name="O_W")], name="O")
    else:
        b.op("Gemm", [r, b.weight([3, 7], name="O_W")], name="O", transB=1)
    return b.build("O_out")


CASES = {
    "conv with bias": (lambda: _constant_channel_conv(True), "A", [5]),
    "conv without bias": (lambda: _constant_channel_conv(False), "A", [5]),
    "gemm without C": (lambda: _constant_unit_mlp("Gemm"), "H", [2]),
    "matmul without bias": (lambda: _constant_unit_mlp("MatMul"), "H", [2]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bias_compensation_restores_a_constant_unit_exactly(case: str) -> None:
    """The removed unit's input is CONST at every position: moving W[:, P]·CONST into the
    bias gives the original's output, to float rounding, on inputs it never saw; without
    recovery the same removal is far off. Runs the whole pipeline (a plan applied with
    calibration data): the exact check passes against the updated, masked model."""
    build, anchor, units = CASES[case]
    model = build()
    plan, _, _ = _remove(model, anchor, units, recover="bias")
    calib = _inputs(model, 8, seed=0)
    pruned, report = graphprune.apply_plan(model, plan, calib=calib, calib_samples=8)
    assert report.exact_check["passed"]
    rec = report.recovery
    assert rec["method"] == "bias" and len(rec["sinks_bias_only"]) == 1, rec
    # 8 samples: the last 3 are the exact check's (passes/inputs.hold_back), a quarter of
    # the other 5 (1) is recovery's held-back share, 4 are fitted on
    assert rec["samples_used"] == 4 and rec["samples_held_back"] == 1
    assert rec["fidelity_after"][model.graph.output[0].name]["rel_l2"] < 1e-5
    feeds = _inputs(model, 5, seed=9)
    (want,), (got,) = run(model, feeds), run(pruned, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    plain, _ = graphprune.apply_plan(model, plan, recover="none")
    (off,) = run(plain, feeds)
    assert np.abs(off - want).max() > 0.05
    assert pruned.graph.node[-1].output == model.graph.node[-1].output  # names kept
    if case == "matmul without bias":  # an Add carries the new bias, pruned with the rest
        adds = [n for n in pruned.graph.node if n.op_type == "Add"]
        assert len(adds) == 1 and adds[0].output[0] == "O_out"


def _chain(seed: int = 0) -> onnx.ModelProto:
    """X[N, 12] → (Gemm → Relu) × 3 → Gemm → Y: three groups of 16 hidden units."""
    b = Builder(seed=seed)
    h = b.input("X", ["N", 12])
    width = 12
    for k in range(3):
        h = b.op("Relu", [b.gemm(h, width, 16, name=f"L{k}")], name=f"R{k}")
        width = 16
    b.gemm(h, 16, 5, name="OUT")
    return b.build("OUT_out")


def test_refit_lowers_the_reconstruction_error_on_its_statistics() -> None:
    """On the statistics it was fit on, a layer's output error E‖W̃x̃ − W̃'ẑ‖² falls from no
    repair to bias compensation (the best intercept) to the ridge refit (the best kept
    weights; its ridge pulls toward the original's, so it never does worse than bias)."""
    model = _chain()
    _, an, removed = _remove(model, "L1", [0, 3, 5, 8, 9, 12])
    sinks, skipped = recovery.find_sinks(an, removed)
    assert [s.name for s in sinks] == ["L2"] and not skipped
    (s,) = sinks
    calib = Calibration(model, _inputs(model, 64, seed=1), samples=64)
    m = moments.collect(model, [s.site], calib.batches()).moments[s.node]
    aug = m.augmented()
    w = moments.weight_rows(s.site, Graph(model).const("L2_W"))
    b = Graph(model).const("L2_B").astype(np.float64)[None]
    none = refit.reconstruction_error(w, b, w, b, s.keep, aug, aug, aug)
    bias = b + refit.bias_delta(w, m.mean(), s.keep)
    with_bias = refit.reconstruction_error(w, b, w, bias, s.keep, aug, aug, aug)
    new_w, new_b, _ = refit.refit(w, b, aug, aug, s.keep)
    refitted = refit.reconstruction_error(w, b, new_w, new_b, s.keep, aug, aug, aug)
    assert refitted < with_bias < none
    assert refitted < 0.5 * with_bias
    # the error formula is the mean squared error of the outputs computed directly
    x = np.concatenate([f["X"] for f in calib.batches()])
    hidden = _activation(model, x, "R1_out").astype(np.float64)
    keep = s.keep
    direct = np.mean(np.sum((hidden @ w[0].T + b[0] - hidden[:, keep] @ new_w[0][:, keep].T
                             - new_b[0]) ** 2, axis=1))
    assert direct == pytest.approx(refitted, rel=1e-6)


def test_centred_solution_is_the_ridge_least_squares_solution() -> None:
    """Problem.fit (centred, one eigendecomposition) equals the direct solve of the
    augmented normal equations [W'_K, b'](G + λΛ) = W̃C + λ[W_K, 0], Λ = diag(1, …, 1, 0)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6)) + 0.5
    z = x[:, [0, 2, 3, 5]] + 0.1 * rng.standard_normal((50, 4))
    xt, zt = np.hstack([x, np.ones((50, 1))]), np.hstack([z, np.ones((50, 1))])
    target = rng.standard_normal((3, 7))
    keep = np.array([True, False, True, True, False, True])
    cross, gram = np.zeros((7, 7)), np.zeros((7, 7))
    cols = np.array([0, 2, 3, 5, 6])
    cross[:, cols], gram[np.ix_(cols, cols)] = xt.T @ zt / 50, zt.T @ zt / 50
    w_k = target[:, :6][:, keep]
    for fraction in (1e-2, 1.0):
        got = refit.Problem(target, w_k, cross, gram, cols).fit(fraction)
        g = zt.T @ zt / 50
        lam = fraction * np.trace(g[:4, :4]) / 4
        rhs = target @ (xt.T @ zt / 50) + lam * np.hstack([w_k, np.zeros((3, 1))])
        want = np.linalg.solve(g + lam * np.diag([1, 1, 1, 1, 0]), rhs.T).T
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_cross_validation_keeps_weights_when_a_refit_would_overfit() -> None:
    """Twelve samples for a layer 40 inputs wide: the plain refit fits noise and does worse
    than bias compensation on samples it has not seen; the ridge chosen by two-fold
    cross-validation does not."""
    rng = np.random.default_rng(1)
    d, keep = 40, np.arange(40) % 4 != 0
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    w, b = rng.standard_normal((1, 5, d)), np.zeros((1, 5))

    def moments_of(x: np.ndarray):
        xt = np.hstack([x, np.ones((len(x), 1))])
        m = xt.T @ xt / len(x)
        return m[None], m[None]

    fit_x = rng.standard_normal((12, d)) @ mix
    test_x = rng.standard_normal((400, d)) @ mix
    cross, gram = moments_of(fit_x)
    halves = (moments_of(fit_x[::2]), moments_of(fit_x[1::2]))
    xx = moments_of(test_x)[0]

    def test_error(fraction=None, folds=None) -> float:
        if fraction is None and folds is None:  # bias compensation
            nw, nb = w, b + refit.bias_delta(w, fit_x.mean(0)[None], keep)
        else:
            nw, nb, _ = refit.refit(w, b, cross, gram, keep, folds,
                                    ridge=fraction or refit.RIDGE)
        return refit.reconstruction_error(w, b, nw, nb, keep, xx, xx, xx)

    plain, bias, chosen = test_error(1e-3), test_error(), test_error(folds=halves)
    assert plain > bias
    assert chosen < plain and chosen <= 1.05 * bias


def _activation(model: onnx.ModelProto, x: np.ndarray, name: str) -> np.ndarray:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(onnx.ValueInfoProto(name=name))
    return run(out, {"X": x})[-1]


def test_sequential_refit_beats_independent_on_a_chain() -> None:
    """Three pruned layers in a row: refitting each from the inputs of the model refit so
    far (sequential) leaves less error at the output than refitting each from the
    original's inputs (independent), measured on held-back samples; both beat bias only,
    which beats nothing."""
    model = _chain(seed=2)
    calib = _inputs(model, 400, seed=3)
    errors = {}
    for how, kw in {"none": {"recover": "none"}, "bias": {"recover": "bias"},
                    "independent": {"recover": "refit", "refit_order": "independent"},
                    "sequential": {"recover": "refit"}}.items():
        _, report = graphprune.compress(model, 0.5, calib=calib, calib_samples=400, **kw)
        assert report.exact_check["passed"]
        rec = report.recovery
        if how == "none":
            continue
        assert len(rec["sinks_refit" if how != "bias" else "sinks_bias_only"]) == 3
        errors["none"] = rec["fidelity_before"]["OUT_out"]["rel_l2"]
        errors[how] = rec["fidelity_after"]["OUT_out"]["rel_l2"]
    assert errors["sequential"] < errors["independent"] < errors["bias"] < errors["none"]
