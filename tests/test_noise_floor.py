"""The exact check's noise floor: outputs that amplify float32 rounding past the static
tolerance pass on the masked original's own measured noise, and wrong rewrites still fail.

Regression models (models/cnn/float_noise.py, exported as torch exports by default: dynamo,
with external data): a sigmoid map near 1e-4 (onnxruntime's Sigmoid is accurate to ~1e-7
absolute there) and a deep conv stack with a saturated softmax. Correct rewrites of both
fail the static tolerance and pass on the noise floor, in all three exact-check paths (side
by side, memory-mapped, segmented); a one-column-off or wrong-order rewrite of either fails.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo  # noqa: F401 - puts the repository root (models/) on sys.path
from graphprune.passes import noise, rewrite, segments, validation
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import cli, external, load
from graphprune.errors import ValidationError
from graphprune.external import array, path_of
from models.cnn import float_noise

EPS32 = float(np.finfo(np.float32).eps)


# -- the comparison, on synthetic arrays ----------------------------------------------------
def _one(ref, cand, floor=None) -> validation.OutputDiff:
    ref, cand = np.asarray(ref, np.float32), np.asarray(cand, np.float32)
    return validation.compare([ref], [cand], ["y"], None if floor is None else [floor])[0]


def test_static_verdict_without_a_noise_floor_or_with_a_zero_one():
    ref = np.float32([1e-4, 2e-4, 5e-5])
    off = ref + np.float32([1.2e-7, 0, 0])  # 6e-4 relative: over rtol 1e-4
    for floor in (None, 0.0):
        d = _one(ref, off, floor)
        assert not d.passed and not d.static and d.verdict == "failed"
    d = _one(ref, ref + np.float32([1e-9, 0, 0]))  # within 1e-4 relative
    assert d.passed and d.static and d.verdict == "static" and d.noise_floor is None
    d = _one(ref, ref, 0.0)
    assert d.passed and d.verdict == "static" and d.max_abs_err == 0.0


def test_a_noise_floor_allows_its_multiple_and_no_more():
    ref = np.float32([1e-4, 2e-4, 5e-5])  # scale 2e-4: the ulp cap (9.5e-7) governs
    floor = 1.2e-7
    allowed = validation.NOISE_MULTIPLE * floor
    assert validation.allowance(floor, 2e-4) == pytest.approx(allowed)
    inside = ref + np.float32([0.9 * allowed, 0, -0.5 * allowed])
    d = _one(ref, inside, floor)
    assert d.passed and not d.static and d.verdict == "noise floor"
    assert d.noise_floor == floor and d.allowed == pytest.approx(allowed)
    outside = ref + np.float32([1.2 * allowed, 0, 0])
    d = _one(ref, outside, floor)
    assert not d.passed and d.verdict == "failed"


def test_the_allowance_is_capped_by_scale_and_ulps():
    # scale 1: the cap is NOISE_CAP x scale, whatever the floor
    assert validation.allowance(1.0, 1.0) == pytest.approx(validation.NOISE_CAP)
    ref = np.float32([1.0, 0.5, 0.25])
    d = _one(ref, ref + np.float32([0, 2e-3, 0]), 1.0)  # 2e-3 > cap 1e-3, < 4 x floor
    assert not d.passed and d.allowed == pytest.approx(1e-3)
    d = _one(ref, ref + np.float32([0, 9e-4, 0]), 1.0)
    assert d.passed and d.verdict == "noise floor"
    # tiny scale: never more than NOISE_CAP_ULPS ulps of 1.0 (float32), 7.6e-7 here
    cap = validation.NOISE_CAP_ULPS * EPS32
    assert validation.allowance(1.0, 1e-4) == pytest.approx(cap)
    ref = np.float32([1e-4, 3e-5])
    assert not _one(ref, ref + np.float32([1.5 * cap, 0]), 1.0).passed
    assert _one(ref, ref + np.float32([0.9 * cap, 0]), 1.0).passed
    # float16 outputs: ulps of float16's 1.0
    assert validation.allowance(1.0, 1e-4, np.float16) == pytest.approx(
        validation.NOISE_CAP_ULPS * float(np.finfo(np.float16).eps))


def test_non_finite_values_and_shapes_are_not_excused_by_noise():
    ref = np.float32([np.nan, np.inf, 1.0])
    assert not _one(ref, np.float32([0.0, np.inf, 1.0]), 1.0).passed
    assert not _one(ref, np.float32([np.nan, 1e30, 1.0]), 1.0).passed
    assert _one(ref, np.float32([np.nan, np.inf, 1.0 + 1e-4]), 1e-4).passed
    d = validation.compare([np.zeros(3, np.float32)], [np.zeros(4, np.float32)], ["y"], [1.0])[0]
    assert not d.passed
    # integer outputs (an argmax, token ids): a flip is no rounding, whatever the floor
    ids = np.int64([3, 12, 7])
    d = validation.compare([ids], [np.int64([3, 13, 7])], ["ids"], [5.0])[0]
    assert not d.passed and d.allowed is None
    # the floor itself only counts positions both evaluations give finite values
    assert validation.noise_floor(ref, np.float32([1.0, np.inf, 1.5])) == 0.5
    assert validation.noise_floor(ref, ref) == 0.0


class _Source:
    def __init__(self, label: str, outs=None, error: str | None = None):
        self.calls = 0
        self.outs, self.error = outs, error
        self.source = validation.NoiseSource(label, self)

    def __call__(self, feeds):
        self.calls += 1
        if self.error:
            raise RuntimeError(self.error)
        return self.outs


def test_outcome_measures_noise_only_when_needed_and_until_it_suffices():
    ref = [[np.float32([1e-4, 2e-4])]]
    feeds = [{"x": np.zeros(1, np.float32)}]
    near = [[np.float32([1e-4 + 1.2e-7, 2e-4])]]
    quiet = _Source("quiet", [[np.float32([1e-4, 2e-4])]])  # agrees: floor 0
    broken = _Source("broken", error="no kernel\nNOT_IMPLEMENTED: Conv(double)")
    loud = _Source("loud", [[np.float32([1e-4 - 6e-8, 2e-4 + 3e-8])]])
    unused = _Source("unused", [[np.float32([0.0, 0.0])]])
    srcs = [quiet.source, broken.source, loud.source, unused.source]

    ok = validation.outcome([1], ["y"], ref, ref, None, feeds, srcs)  # static passes
    assert ok.passed and quiet.calls == 0 and ok.runs[0]["verdict"] == "static"
    assert "noise_floor" not in ok.runs[0]

    res = validation.outcome([1], ["y"], ref, near, None, feeds, srcs)
    assert res.passed and (quiet.calls, broken.calls, loud.calls, unused.calls) == (1, 1, 1, 0)
    run = res.runs[0]
    assert run["verdict"] == "noise floor" and run["noise_by"] == "loud"
    assert run["noise_floor"] == pytest.approx(6e-8, rel=1e-2)
    assert run["allowed"] == pytest.approx(4 * 6e-8, rel=1e-2)
    assert res.noise_errors == {"broken": "no kernel NOT_IMPLEMENTED: Conv(double)"}  # 1 line
    assert res.to_dict()["noise_errors"] == res.noise_errors

    far = [[np.float32([1e-4 + 5e-6, 2e-4])]]  # 5e-6: ~80 times the floor
    bad = validation.outcome([1], ["y"], ref, far, None, feeds, [quiet.source, loud.source])
    assert not bad.passed and bad.runs[0]["verdict"] == "failed"
    text = bad.failure()
    assert "differs from the masked original by 5.000e-06" in text
    floor = bad.runs[0]["noise_floor"]
    assert floor == pytest.approx(6e-8, rel=1e-2)
    assert f"float noise of the masked original on the same inputs {floor:.3e} (loud)" in text
    assert f"allowing {4 * floor:.3e}" in text
    nothing = validation.outcome([1], ["y"], ref, far, None, feeds, [broken.source])
    assert "could not be measured: broken: no kernel NOT_IMPLEMENTED" in nothing.failure()


# -- the noise sources ----------------------------------------------------------------------
def _ops_model(dtype: int = TensorProto.FLOAT) -> tuple[onnx.ModelProto, dict]:
    """Every split kind: Conv (dense and depthwise), ConvTranspose (grouped), MatMul (weight
    second, first, 1-D), Gemm (transB, with C; weight as A)."""
    rng = np.random.default_rng(0)
    np_t = helper.tensor_dtype_to_np_dtype(dtype)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np_t), name)

    inits = [w("cw", 8, 4, 3, 3), w("cb", 8), w("dw", 8, 1, 3, 3), w("tw", 8, 3, 2, 2),
             w("tb", 6), w("m1", 6, 5), w("m0", 4, 7), w("g", 5, 5), w("gc", 5),
             w("ga", 3, 5), w("v", 5)]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c", "dw"], ["d"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["d", "tw", "tb"], ["t"], group=2, strides=[2, 2]),
        helper.make_node("ReduceMean", ["t", "axes23"], ["p"], keepdims=0),  # [1, 6]
        helper.make_node("MatMul", ["p", "m1"], ["q"]),  # [1, 5]
        helper.make_node("Gemm", ["q", "g", "gc"], ["r"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["ga", "r"], ["s"], transB=1),  # [3, 1]
        helper.make_node("MatMul", ["r", "v"], ["u"]),  # 1-D weight: [1]
        helper.make_node("MatMul", ["m0", "z"], ["o"]),  # weight first: [4, 2]
    ]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"))
    graph = helper.make_graph(
        nodes, "ops", [helper.make_tensor_value_info("x", dtype, [1, 4, 5, 6]),
                       helper.make_tensor_value_info("z", dtype, [7, 2])],
        [helper.make_tensor_value_info(n, dtype, None) for n in ("t", "s", "u", "o")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": rng.standard_normal((1, 4, 5, 6)).astype(np_t),
             "z": rng.standard_normal((7, 2)).astype(np_t)}
    return model, feeds


def test_split_sums_is_the_same_function_with_every_contraction_in_two_halves():
    model, feeds = _ops_model()
    graph, values = noise.split_sums(model)
    ops = [n.op_type for n in graph.graph.node]
    for op, n in (("Conv", 2), ("ConvTranspose", 1), ("MatMul", 3), ("Gemm", 2)):
        assert ops.count(op) == 2 * n, (op, ops)
    assert ops.count("Add") == 8
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, value in inits.items():
        halves = [values[k] for k in values if k.startswith(f"{name}/split_")]
        if not halves:
            continue
        a, b = halves
        assert np.array_equal(a + b, value)  # complementary halves of the same weight
        assert not np.any((a != 0) & (b != 0))
        assert np.count_nonzero(a) and np.count_nonzero(b)
    names = {t.name for t in graph.graph.initializer}
    assert names >= {"cb", "tb", "gc", "axes23"}
    assert not {"cw", "dw", "tw", "m1", "m0", "g", "ga", "v"} & names
    want = validation.session(model).run(None, feeds)
    got = validation.session(graph, overrides=values).run(None, feeds)
    for a, b in zip(want, got, strict=True):  # the same function, rounded differently
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_split_sums_and_the_optimised_session_use_the_masked_weights():
    model, feeds = _ops_model()
    masked = {"cw": np.zeros((8, 4, 3, 3), np.float32)}  # a removed... everything
    plain = validation.session(model, overrides=masked).run(None, feeds)
    graph, values = noise.split_sums(model, masked)
    split = validation.session(graph, overrides=values).run(None, feeds)
    optimised = noise.optimised_session(model, masked).run(None, feeds)
    unmasked = validation.session(model).run(None, feeds)
    assert not np.allclose(plain[0], unmasked[0])
    for want, a, b in zip(plain, split, optimised, strict=True):
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-6)


def test_optimised_session_reads_split_and_mapped_weights(tmp_path):
    """The optimised source runs on split weights (in memory) and on memory-mapped ones."""
    from graphprune.io import save_atomic
    model = onnx.load(str(zoo.EXAMPLE))
    feeds = validation.make_inputs(model)
    want = validation.session(model).run(None, feeds)[0]
    save_atomic(model, tmp_path / "m.onnx", external=True)
    for m in (model, load(tmp_path / "m.onnx", external_data="map")):
        got = noise.optimised_session(m).run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- regression models, end to end ----------------------------------------------------------
def _export(build, shape, path: Path) -> Path:
    """torch's default export (dynamo, external data), as a user's script writes it."""
    import torch
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build(), (torch.randn(*shape),), str(path), dynamo=True)
    assert path.with_name(path.name + ".data").exists()
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("float_noise")
    return {"detector": _export(float_noise.text_detector, float_noise.DETECTOR_INPUT,
                                folder / "detector.onnx"),
            "recognizer": _export(float_noise.text_recognizer, float_noise.RECOGNIZER_INPUT,
                                  folder / "recognizer.onnx")}


def _compress(path: Path, how: str, ratio: float, tmp_path: Path, monkeypatch):
    """compress through one of the exact check's three paths."""
    if how == "side by side":
        return graphprune.compress(load(path), ratio)
    if how == "segmented":
        monkeypatch.setattr(segments, "SEGMENT_MIN_BYTES", 0)
        monkeypatch.setattr(segments, "SEGMENT_BYTES", 1 << 14)
        real, cuts = segments.plan_cuts, []
        monkeypatch.setattr(segments, "plan_cuts", lambda *a: cuts.extend(real(*a)) or cuts)
    spill = external.Spill(tmp_path)
    try:
        out = graphprune.compress(load(path, external_data="map"), ratio, spill=spill)
    finally:
        spill.close()
    if how == "segmented":
        assert len(cuts) >= 2  # really segmented
    return out


PATHS = ["side by side", "memory-mapped", "segmented"]


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_tiny_sigmoid_map_passes_on_its_noise_floor(exports, how, ratio, tmp_path,
                                                    monkeypatch):
    _, report = _compress(exports["detector"], how, ratio, tmp_path, monkeypatch)
    check = report.exact_check
    [run] = check["runs"]
    assert check["passed"] and run["verdict"] == "noise floor", run
    assert run["scale"] < 3e-4  # a map near 1e-4
    # the static tolerance fails even at its loosest (rtol at the largest value)
    assert run["max_abs_err"] > (validation.ATOL + validation.RTOL) * run["scale"]
    assert 0 < run["noise_floor"] < 5e-7 and run["noise_by"] in (noise.OPTIMISED,
                                                                 noise.SPLIT_SUMS)
    assert run["max_abs_err"] <= run["allowed"] == pytest.approx(
        min(4 * run["noise_floor"], max(1e-3 * run["scale"], 8 * EPS32)))
    assert check["tolerance"]["noise_multiple"] == validation.NOISE_MULTIPLE


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_deep_softmax_passes_on_its_noise_floor(exports, how, ratio, tmp_path, monkeypatch):
    _, report = _compress(exports["recognizer"], how, ratio, tmp_path, monkeypatch)
    check = report.exact_check
    [run] = check["runs"]
    assert check["passed"] and run["verdict"] == "noise floor", run
    assert 0 < run["max_abs_err"] <= run["allowed"] <= validation.NOISE_CAP * run["scale"]
    assert run["noise_floor"] > run["max_abs_err"] / validation.NOISE_MULTIPLE


def test_noise_floor_is_the_same_in_every_path(exports, tmp_path, monkeypatch):
    """The same inputs, the same reference, the same sources: the same figures, except that a
    segmented optimised session fuses within a segment only (its floor may differ)."""
    got = {}
    for how in PATHS:
        with monkeypatch.context() as m:
            _, report = _compress(exports["detector"], how, 0.3, tmp_path, m)
        got[how] = report.exact_check["runs"][0]
    assert got["side by side"] == got["memory-mapped"]
    assert got["segmented"]["max_abs_err"] == got["side by side"]["max_abs_err"]


# -- wrong rewrites still fail, at tiny scale and on a deep path ----------------------------
def _value(t: onnx.TensorProto) -> np.ndarray:
    return np.array(array(t) if path_of(t) else numpy_helper.to_array(t))


def _kept(original: np.ndarray, pruned: np.ndarray, axis: int) -> list[int]:
    """For each slice of `pruned` along `axis`, the index of the equal slice of `original`."""
    return [next(i for i in range(original.shape[axis])
                 if np.array_equal(np.take(original, i, axis), np.take(pruned, j, axis)))
            for j in range(pruned.shape[axis])]


def _wrong_rewrite(monkeypatch, weight: str, axis: int, kind: str, hits: list) -> None:
    """Make rewrite.prune_model's output wrong on `weight`: "column" takes one kept slice
    along `axis` from its removed neighbour (an off-by-one in the kept indices; the slice
    whose weights change most), "order" swaps the first two kept slices."""
    real = rewrite.prune_model

    def wrong(model, an, removed, spill=None):
        pruned = real(model, an, removed, spill)
        original = _value(next(t for t in model.graph.initializer if t.name == weight))
        t = next(t for t in pruned.graph.initializer if t.name == weight)
        value = _value(t)
        kept = _kept(original, value, axis)
        if kind == "column":
            moves = [(j, i + 1) for j, i in enumerate(kept)
                     if i + 1 < original.shape[axis] and i + 1 not in kept]
            j, src = max(moves, key=lambda m: np.abs(np.take(original, m[1], axis)
                                                     - np.take(value, m[0], axis)).sum())
            index = [slice(None)] * value.ndim
            index[axis] = j
            value[tuple(index)] = np.take(original, src, axis)
        else:
            order = list(range(value.shape[axis]))
            order[0], order[1] = 1, 0
            value = np.take(value, order, axis)
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), weight))
        hits.append((weight, kind))
        return pruned

    monkeypatch.setattr(rewrite, "prune_model", wrong)


def _weight_named(model: onnx.ModelProto, suffix: str) -> str:
    return next(t.name for t in model.graph.initializer if t.name.endswith(suffix))


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("kind", ["column", "order"])
def test_wrong_rewrite_of_a_tiny_sigmoid_map_fails(exports, how, kind, tmp_path, monkeypatch):
    """The head's ConvTranspose reads the pruned channels: a slice of its weight off by one
    (or two swapped) moves a map of scale ~1e-4 by ~1e-5, far above its noise allowance."""
    path = exports["detector"]
    hits: list = []
    _wrong_rewrite(monkeypatch, _weight_named(onnx.load(str(path), load_external_data=False),
                                              "head.3.weight"), 0, kind, hits)
    with pytest.raises(ValidationError, match="exact check failed") as info:
        _compress(path, how, 0.3, tmp_path, monkeypatch)
    assert hits
    text = str(info.value)
    assert "float noise of the masked original on the same inputs" in text
    err = float(text.split("differs from the masked original by ")[1].split(" ")[0])
    allowed = float(text.split("allowing ")[1].split(")")[0])
    assert err > 10 * allowed, text


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("kind", ["column", "order"])
def test_wrong_rewrite_on_a_deep_path_fails(exports, how, kind, tmp_path, monkeypatch):
    """The first conv's filters off by one (or two swapped): the error travels 16 layers to a
    saturated softmax, and still lands far above the noise allowance."""
    path = exports["recognizer"]
    hits: list = []
    _wrong_rewrite(monkeypatch, _weight_named(onnx.load(str(path), load_external_data=False),
                                              "body.0.weight"), 0, kind, hits)
    with pytest.raises(ValidationError, match="exact check failed") as info:
        _compress(path, how, 0.3, tmp_path, monkeypatch)
    assert hits
    text = str(info.value)
    err = float(text.split("differs from the masked original by ")[1].split(" ")[0])
    assert err > 1e-2, text  # the noise allowance is capped at 1e-3 of the scale (1.0)


def test_cli_refuses_a_wrong_rewrite_of_a_tiny_map_and_writes_nothing(exports, tmp_path,
                                                                      monkeypatch, capsys):
    path = exports["detector"]
    hits: list = []
    _wrong_rewrite(monkeypatch, _weight_named(onnx.load(str(path), load_external_data=False),
                                              "head.3.weight"), 0, "column", hits)
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["compress", str(path), "-o", str(out / "p.onnx"), "--quiet"])
    err = capsys.readouterr().err
    assert hits and code == 1, err
    assert err.strip().startswith("graphprune: error: exact check failed"), err
    assert "allowing" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_cli_writes_a_correct_rewrite_of_a_tiny_map(exports, tmp_path):
    import json
    out = tmp_path / "p.onnx"
    report = tmp_path / "r.json"
    assert cli.main(["compress", str(exports["detector"]), "-o", str(out), "--quiet",
                     "--report", str(report)]) == 0
    check = json.loads(report.read_text())["exact_check"]
    assert check["passed"] and check["runs"][0]["verdict"] == "noise floor"
    assert out.exists()
