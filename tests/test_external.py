"""graphprune/external.py on its own: values of tensors wherever their bytes lie, spilled
tensors referred to where they lie, copies without the weights that keep every field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphprune import external
from graphprune.errors import InputError
from graphprune.io import load, save_atomic


def _model(weight: np.ndarray) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _weight() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)


def test_values_wherever_the_bytes_lie(tmp_path: Path):
    w = _weight()
    path = tmp_path / "m.onnx"
    save_atomic(_model(w), path, external=True)
    mapped = load(path, external_data="map").graph.initializer[0]
    assert external.path_of(mapped) == str(path.with_name("m.onnx.data").absolute())
    got = external.value(mapped)
    assert isinstance(got, np.memmap) and np.array_equal(got, w)
    assert external.mapping(got) is not None and external.is_mapped(got[1:])
    unloaded = onnx.load(str(path), load_external_data=False).graph.initializer[0]
    assert external.value(unloaded) is None and not external.has_value(unloaded)
    with pytest.raises(InputError, match="was not loaded"):
        external.check_loaded(onnx.load(str(path), load_external_data=False))
    inline = _model(w).graph.initializer[0]
    assert np.array_equal(external.value(inline), w) and external.has_value(inline)
    stripped = onnx.TensorProto()
    stripped.CopyFrom(inline)
    stripped.ClearField("raw_data")  # a weight-free copy: dims without data
    assert external.stripped(stripped) and external.value(stripped) is None


def test_a_spilled_tensor_is_referred_to_where_it_lies(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(external.Spill, "MIN_BYTES", 0)
    spill = external.Spill(tmp_path)
    try:
        small = spill.put(np.arange(3, dtype=np.int64))  # 24 bytes, then a page boundary
        view = spill.put(_weight())
        assert external.mapping(small)[1] == 0 and external.mapping(view)[1] == external.ALIGN
        assert external.remap(view) is not view and np.array_equal(external.remap(view), view)
        plain = np.ones(3, dtype=np.float32)
        assert external.remap(plain) is plain
        t = onnx.TensorProto()
        assert external.refer(t, "w", view)
        info = {e.key: e.value for e in t.external_data}
        assert info == {"location": Path(spill.path).name, "offset": str(external.ALIGN),
                        "length": str(view.nbytes), external.PATH_KEY: spill.path}
        assert np.array_equal(external.value(t), _weight())
        assert not external.refer(onnx.TensorProto(), "x", plain)  # in memory: no file
    finally:
        spill.close()
    assert not Path(spill.path).exists()


def _with_unknown_field(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with field 1000 of ModelProto set: a field this onnx does not know."""
    data = model.SerializeToString() + bytes([0xC0, 0x3E, 0x2A])  # field 1000, varint 42
    out = onnx.ModelProto()
    out.ParseFromString(data)
    return out


def test_copies_keep_fields_this_onnx_does_not_know(tmp_path: Path):
    model = _with_unknown_field(_model(_weight()))
    tail = bytes([0xC0, 0x3E, 0x2A])
    assert tail in external.shell(model).SerializeToString()
    assert len(external.shell(model).graph.initializer) == 0
    for name, ext in (("inline", False), ("ext", True)):
        save_atomic(model, tmp_path / f"{name}.onnx", external=ext)
        assert tail in (tmp_path / f"{name}.onnx").read_bytes(), name
    written = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    assert written.graph.initializer[0].data_location == TensorProto.EXTERNAL
