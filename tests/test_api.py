"""The Python API: `graphprune.compress`, `graphprune.analyze`, the report, external data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from zoo import exported

import graphprune

REPORT_KEYS = {
    "params_before", "params_after", "macs_before", "macs_after", "bytes_before", "bytes_after",
    "criterion", "ratio", "exact_check", "groups", "group_details", "blockers",
    "frozen_reasons", "seconds", "timings", "params_ratio", "macs_ratio",
}
"""The keys the README documents for `Report.to_dict()`."""


def _outputs(model: onnx.ModelProto | Path, x: np.ndarray) -> list[np.ndarray]:
    return zoo.run(model, x, optimize=False)


# -- compress ---------------------------------------------------------------------------------
def test_compress_accepts_path_and_model(tmp_path: Path) -> None:
    path = zoo.copy_example(tmp_path)
    model = onnx.load(str(path))
    before = model.SerializeToString()
    from_path, r1 = graphprune.compress(path, 0.4)  # a Path
    from_str, r2 = graphprune.compress(str(path), 0.4)  # a str
    from_proto, r3 = graphprune.compress(model, 0.4)  # a ModelProto
    assert model.SerializeToString() == before, "compress modified the model it was given"
    for r in (r1, r2, r3):
        assert r.exact_check["passed"], r.exact_check
    assert r1.params_after == r2.params_after == r3.params_after < r1.params_before
    assert [g.units_after for g in r1.group_details] == [g.units_after for g in r3.group_details]
    x = zoo.random_input((2, 3, 32, 32))
    for a, b in zip(_outputs(from_path, x), _outputs(from_proto, x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert from_str.graph.output[0].name == from_proto.graph.output[0].name


def test_compress_is_deterministic() -> None:
    path = str(exported("shufflenet_v2", "torchscript"))
    a, ra = graphprune.compress(path, 0.5, criterion="random", seed=3)
    b, rb = graphprune.compress(path, 0.5, criterion="random", seed=3)
    assert a.SerializeToString() == b.SerializeToString()
    assert ra.params_after == rb.params_after


@pytest.mark.parametrize("name", ["resnet_basic", "shufflenet_v2", "yolo_csp"])
def test_ratio_zero_is_bit_identical(name: str) -> None:
    path = exported(name, "torchscript")
    original = onnx.load(str(path))
    pruned, report = graphprune.compress(original, 0.0)
    assert report.exact_check["passed"]
    assert report.params_after == report.params_before
    assert report.groups["pruned"] == 0
    assert all(g.units_after == g.units_before for g in report.group_details)
    for batch in (1, 3):
        x = zoo.random_input(zoo.input_shape(name, batch), seed=batch)
        for a, b in zip(_outputs(original, x), _outputs(pruned, x), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(a, b), f"batch {batch}: max diff {np.abs(a - b).max()}"


@pytest.mark.parametrize("criterion", ["l1", "l2", "random"])
def test_criteria(criterion: str) -> None:
    pruned, report = graphprune.compress(exported("resnet_basic", "torchscript"), 0.5,
                                         criterion=criterion)
    assert report.exact_check["passed"]
    assert report.criterion == criterion
    onnx.checker.check_model(pruned, full_check=True)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"ratio": 1.0}, "ratio"),
    ({"ratio": -0.1}, "ratio"),
    ({"criterion": "l7"}, "criterion"),
    ({"round_to": 0}, "round"),
])
def test_compress_rejects_bad_options(kwargs: dict, words: str) -> None:
    with pytest.raises(graphprune.InputError, match=words) as info:
        graphprune.compress(zoo.EXAMPLE, **kwargs)
    assert isinstance(info.value, graphprune.GraphpruneError)
    assert "\n" not in str(info.value)


def test_compress_rejects_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(graphprune.InputError, match="no such file"):
        graphprune.compress(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xff" * 100)
    with pytest.raises(graphprune.InputError):
        graphprune.compress(tmp_path / "junk.onnx")
    with pytest.raises(graphprune.InputError):
        graphprune.compress(12345)  # type: ignore[arg-type]


# -- analyze ----------------------------------------------------------------------------------
def test_analyze_groups() -> None:
    path = exported("resnet_basic", "torchscript")
    result = graphprune.analyze(path)
    assert len(result.groups) > 0
    for g in result.groups:
        assert len(g.units) >= 1, g.name
        assert set(g.prunable) <= set(g.units)
    assert any(g.prunable for g in result.groups)
    assert isinstance(result.blockers, dict)
    # the same groups from a ModelProto
    again = graphprune.analyze(onnx.load(str(path)))
    assert [(g.name, len(g.units)) for g in again.groups] \
        == [(g.name, len(g.units)) for g in result.groups]


def test_analyze_to_dict() -> None:
    d = graphprune.analyze(exported("resnet_basic", "torchscript")).to_dict()
    assert set(d) >= {"groups", "summary", "blockers"}
    s = d["summary"]
    assert s["total"] == len(d["groups"]) > 0
    assert s["units"] == sum(g["units"] for g in d["groups"])
    assert s["prunable_units"] == sum(g["prunable"] for g in d["groups"])
    for g in d["groups"]:
        assert set(g) >= {"name", "units", "prunable", "members", "frozen_reasons"}
    json.dumps(d)  # plain data


# -- the report -------------------------------------------------------------------------------
def test_report_to_dict_keys() -> None:
    _, report = graphprune.compress(exported("resnet_basic", "torchscript"), 0.4)
    d = report.to_dict()
    assert set(d) >= REPORT_KEYS, REPORT_KEYS - set(d)
    assert set(d["exact_check"]) >= {"passed", "max_abs_err", "runs"}
    assert set(d["groups"]) >= {"total", "pruned", "frozen"}
    for g in d["group_details"]:
        assert set(g) >= {"name", "units_before", "units_after", "frozen", "reasons"}
        assert 1 <= g["units_after"] <= g["units_before"]
    assert d["groups"]["total"] == len(d["group_details"])
    assert d["groups"]["pruned"] == sum(g["units_after"] < g["units_before"]
                                        for g in d["group_details"])
    assert d["params_ratio"] == pytest.approx(d["params_after"] / d["params_before"], abs=1e-4)
    assert d["macs_ratio"] == pytest.approx(d["macs_after"] / d["macs_before"], abs=1e-4)
    assert d["bytes_after"] < d["bytes_before"]
    assert d["seconds"] > 0 and all(v >= 0 for v in d["timings"].values())
    assert json.loads(report.to_json()) == json.loads(json.dumps(d))
    text = report.render()
    assert "exact check" in text and "passed" in text


# -- external data ----------------------------------------------------------------------------
def _external_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "ext.onnx"
    onnx.save(onnx.load(str(zoo.EXAMPLE)), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    assert (src / "ext.onnx.data").exists()
    assert path.stat().st_size < zoo.EXAMPLE.stat().st_size // 4
    return path


def _uses_external(path: Path) -> bool:
    m = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


def test_external_data_api(tmp_path: Path) -> None:
    path = _external_copy(tmp_path)
    digests = {p.name: zoo.sha256(p) for p in path.parent.iterdir()}
    pruned, report = graphprune.compress(path, 0.4)
    assert report.exact_check["passed"]
    assert report.params_after < report.params_before
    # the pruned model carries its weights (not dangling references to the input's file)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in pruned.graph.initializer)
    onnx.checker.check_model(pruned, full_check=True)
    assert {p.name: zoo.sha256(p) for p in path.parent.iterdir()} == digests


def test_external_data_cli(tmp_path: Path) -> None:
    path = _external_copy(tmp_path)
    digests = {p.name: zoo.sha256(p) for p in path.parent.iterdir()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "pruned.onnx"
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "compress", str(path),
                        "-o", str(out), "--quiet"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
    assert _uses_external(out)
    loaded = onnx.load(str(out))  # resolves the data file beside it
    onnx.checker.check_model(loaded, full_check=True)
    x = zoo.random_input((2, 3, 32, 32))
    want = [o.shape for o in zoo.run(zoo.EXAMPLE, x)]
    assert [o.shape for o in zoo.run(out, x)] == want
    assert {p.name: zoo.sha256(p) for p in path.parent.iterdir()} == digests


def test_external_data_missing_file(tmp_path: Path) -> None:
    path = _external_copy(tmp_path)
    (path.parent / "ext.onnx.data").unlink()
    with pytest.raises(graphprune.InputError, match="external data"):
        graphprune.compress(path, 0.4)
