"""The segmented exact check (large models): the same runs and comparisons as the whole-graph
check, a segment of each graph at a time. Forced on small models here (thresholds
monkeypatched), it must give the whole-graph check's result, and still fail a wrong rewrite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import zoo
from graphprune.passes import segments

from graphprune import cli, external, load
from graphprune.io import save_atomic
from graphprune.pipeline import compress


def _llama(tmp_path: Path) -> Path:
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_llama", zoo.ROOT / "bench" / "make_synthetic_llama.py")
    mod = sys.modules.get("make_synthetic_llama")
    if mod is None:
        mod = importlib.util.module_from_spec(spec)
        sys.modules["make_synthetic_llama"] = mod  # its dataclasses look their module up
        spec.loader.exec_module(mod)
    path = tmp_path / "llama" / "m.onnx"
    path.parent.mkdir()
    mod.build(mod.SIZES["tiny"], path)
    return path


def _cnn(tmp_path: Path) -> Path:
    import onnx
    path = tmp_path / "cnn" / "m.onnx"
    path.parent.mkdir()
    save_atomic(onnx.load(str(zoo.EXAMPLE)), path, external=True)
    return path


def _check(path: Path, tmp_path: Path, monkeypatch, segment_bytes: int | None):
    """The exact check of a mapped compress, segmented with `segment_bytes` per segment (None:
    whole), and the cuts it used."""
    if segment_bytes is None:
        monkeypatch.setattr(segments, "SEGMENT_MIN_BYTES", 1 << 62)
    else:
        monkeypatch.setattr(segments, "SEGMENT_MIN_BYTES", 0)
        monkeypatch.setattr(segments, "SEGMENT_BYTES", segment_bytes)
    cuts = []
    real = segments.plan_cuts

    def spy(*args):
        cuts.extend(real(*args))
        return cuts

    monkeypatch.setattr(segments, "plan_cuts", spy)
    spill = external.Spill(tmp_path)
    try:
        _, report = compress(load(path, external_data="map"), ratio=0.3, spill=spill)
    finally:
        spill.close()
    return report.exact_check, cuts


@pytest.mark.parametrize("make", [_llama, _cnn])
def test_segmented_check_equals_whole(make, tmp_path, monkeypatch):
    path = make(tmp_path)
    whole, none = _check(path, tmp_path, monkeypatch, None)
    assert whole["passed"] and none == []
    for per_segment in (0, 2 << 20):  # a cut at every shared position; a few segments
        got, cuts = _check(path, tmp_path, monkeypatch, per_segment)
        assert len(cuts) >= 2
        assert got == whole  # same outputs compared: same errors, same verdicts, per run


def test_cuts_between_decoder_layers_carry_one_tensor(tmp_path, monkeypatch):
    path = _llama(tmp_path)
    _, cuts = _check(path, tmp_path, monkeypatch, 4 << 20)
    assert cuts and all(len(c) <= 3 for c in cuts)
    assert any(len(c) == 1 for c in cuts)  # the residual stream alone


def test_segmented_check_catches_a_wrong_rewrite(tmp_path, monkeypatch, capsys):
    path = _llama(tmp_path)
    monkeypatch.setattr(segments, "SEGMENT_MIN_BYTES", 0)
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 2 << 20)
    monkeypatch.setattr(external.Spill, "MIN_BYTES", 0)
    real_put = external.Spill.put
    real_plan = segments.plan_cuts
    hits, planned = [], []

    def wrong(self, value):
        if not hits and value.dtype == np.float32 and value.ndim == 2 and value.size > 1000:
            hits.append(1)
            value = value.copy()
            value[:, 0] += 1.0  # one column off (a row would be one token's embedding)
        return real_put(self, value)

    def spy(*args):
        planned.extend(real_plan(*args))
        return planned

    monkeypatch.setattr(external.Spill, "put", wrong)
    monkeypatch.setattr(segments, "plan_cuts", spy)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = cli.main(["compress", str(path), "-o", str(out_dir / "p.onnx"), "--quiet"])
    err = capsys.readouterr().err
    assert hits and planned and code == 1, err
    assert err.strip().startswith("graphprune: error: exact check failed"), err
    assert list(out_dir.iterdir()) == []


def test_a_node_no_output_needs_makes_the_check_run_whole(monkeypatch):
    """Segments run only what the outputs need; the whole graph runs every node (which could
    fail in onnxruntime), so a graph with such a node is checked whole."""
    import onnx
    from onnx import TensorProto, helper

    def model(dead: bool) -> onnx.ModelProto:
        nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
                 helper.make_node("Relu", ["b"], ["y"])]
        if dead:
            nodes.append(helper.make_node("Neg", ["a"], ["unused"]))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    monkeypatch.setattr(segments, "SEGMENT_BYTES", 0)
    for dead in (False, True):
        m = model(dead)
        cuts = segments.plan_cuts(m, m)
        assert cuts  # {a}, {b}
        assert segments._covers(m, segments._segments(m, cuts)) is not dead
        result = segments.exact_check(segments.Side(m), segments.Side(m), m)
        assert result.passed and result.max_abs_err == 0.0
