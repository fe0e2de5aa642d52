"""External data served memory-mapped (the CLI's path for large models): the weights are read
on demand from the input's data file, the rewritten ones go to a temporary file beside the
output (`external.Spill`), and the output's data file gets every tensor's bytes, streamed.
The result must be the inline path's output bit for bit, the input files untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from onnx import numpy_helper

import graphprune
from graphprune import cli
from graphprune import external as extdata  # (tests name their paths `external`)
from graphprune.io import load, save_atomic
from graphprune.ir import Graph


def _values(model: onnx.ModelProto) -> dict[str, tuple]:
    return {t.name: (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
            for t in model.graph.initializer}


def _nodes(model: onnx.ModelProto) -> list[bytes]:
    return [n.SerializeToString() for n in model.graph.node]


def _compress_cli(src: Path, out: Path, *extra: str) -> None:
    assert cli.main(["compress", str(src), "-o", str(out), "--quiet", *extra]) == 0


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """The example CNN inline and with external data, in their own directories."""
    inline, external = tmp_path / "inline" / "m.onnx", tmp_path / "ext" / "m.onnx"
    inline.parent.mkdir()
    external.parent.mkdir()
    model = onnx.load(str(zoo.EXAMPLE))
    save_atomic(model, inline, external=False)
    save_atomic(model, external, external=True)
    return inline, external


@pytest.mark.parametrize("spill_everything", [False, True])
def test_mapped_output_equals_inline_output(pair, tmp_path, monkeypatch, spill_everything):
    inline, external = pair
    if spill_everything:  # every rewritten tensor goes through the spill file
        monkeypatch.setattr(extdata.Spill, "MIN_BYTES", 0)
    digests = {p: zoo.sha256(p) for p in external.parent.iterdir()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _compress_cli(inline, tmp_path / "inline_out.onnx")
    _compress_cli(external, out_dir / "p.onnx")
    assert {p: zoo.sha256(p) for p in external.parent.iterdir()} == digests  # untouched
    assert sorted(p.name for p in out_dir.iterdir()) == ["p.onnx", "p.onnx.data"]  # no temp
    want = onnx.load(str(tmp_path / "inline_out.onnx"))
    got = onnx.load(str(out_dir / "p.onnx"))
    assert _values(got) == _values(want)
    assert _nodes(got) == _nodes(want)
    light = onnx.load(str(out_dir / "p.onnx"), load_external_data=False)
    refs = [t for t in light.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert refs
    for t in refs:  # plain references to the data beside it, page-aligned
        info = {e.key: e.value for e in t.external_data}
        assert set(info) == {"location", "offset", "length"}
        assert info["location"] == "p.onnx.data" and int(info["offset"]) % extdata.ALIGN == 0
    onnx.checker.check_model(str(out_dir / "p.onnx"), full_check=True)
    x = zoo.random_input((2, 3, 32, 32))
    a = zoo.run(tmp_path / "inline_out.onnx", x, optimize=False)
    b = zoo.run(out_dir / "p.onnx", x, optimize=False)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def test_mapped_apply_plan_equals_inline(pair, tmp_path, monkeypatch):
    inline, external = pair
    monkeypatch.setattr(extdata.Spill, "MIN_BYTES", 0)
    plan = tmp_path / "plan.json"
    _compress_cli(inline, tmp_path / "a.onnx", "--plan-out", str(plan))
    assert cli.main(["apply", str(external), str(plan), "-o", str(tmp_path / "b.onnx"),
                     "--quiet"]) == 0
    assert _values(onnx.load(str(tmp_path / "b.onnx"))) == _values(
        onnx.load(str(tmp_path / "a.onnx")))


def test_mapped_weights_are_views_not_copies(pair):
    _, external = pair
    model = load(external, external_data="map")
    full = load(external)
    graph = Graph(model)
    mapped = [t for t in model.graph.initializer if extdata.path_of(t) is not None]
    assert mapped
    for t in mapped:
        v = graph.const(t.name)
        assert isinstance(v, np.memmap) and not v.flags.writeable
        assert graph.is_const(t.name)
        want = next(numpy_helper.to_array(u) for u in full.graph.initializer if u.name == t.name)
        assert v.dtype == want.dtype and np.array_equal(v, want)
    big = [t.name for t in mapped if np.prod(t.dims) > 1 << 16]
    assert all(n not in graph._const_cache for n in big)  # weights are not cached


def test_mapped_api_analyze_and_inline_copy(pair):
    inline, external = pair
    a = graphprune.analyze(external).to_dict()
    b = graphprune.analyze(inline).to_dict()
    assert a == b
    model = load(external, external_data="map")
    assert _values(extdata.inline(model)) == _values(load(inline))
    assert all(extdata.PATH_KEY not in {e.key for e in t.external_data}
               for t in extdata.inline(model).graph.initializer)


def test_mapped_short_or_misplaced_data_is_refused(pair):
    _, external = pair
    data = external.parent / "m.onnx.data"
    light = onnx.load(str(external), load_external_data=False)
    data.write_bytes(data.read_bytes()[:-1])
    with pytest.raises(graphprune.InputError, match="external data"):
        extdata.attach(onnx.load(str(external), load_external_data=False),
                             external.parent)
    for t in light.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../m.onnx.data"
    with pytest.raises(graphprune.InputError, match="outside the model's directory"):
        extdata.attach(light, external.parent)


def test_mapped_path_catches_a_wrong_rewrite(pair, tmp_path, monkeypatch, capsys):
    """The exact check on the mapped path (reference runs, then candidate runs) still fails
    a rewrite that changed a value, and nothing is written, no temporary file left."""
    _, external = pair
    monkeypatch.setattr(extdata.Spill, "MIN_BYTES", 0)
    real_put = extdata.Spill.put
    hits = []

    def wrong(self, value):
        if not hits and value.dtype == np.float32 and value.ndim == 4:
            hits.append(1)
            value = value.copy()
            value.flat[0] += 1.0  # one weight off
        return real_put(self, value)

    monkeypatch.setattr(extdata.Spill, "put", wrong)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = cli.main(["compress", str(external), "-o", str(out_dir / "p.onnx"), "--quiet"])
    err = capsys.readouterr().err
    assert hits and code == 1, err
    assert err.strip().startswith("graphprune: error: exact check failed"), err
    assert list(out_dir.iterdir()) == []
