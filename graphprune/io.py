"""Loading and saving models: clear errors for bad files, atomic writes, external data kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import InputError
from .ir import approx_bytes

MIN_OPSET = 11
TWO_GB = (1 << 31) - (1 << 24)


def load(path: str | os.PathLike) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{p}: not a valid ONNX model ({_first_line(exc)})") from exc
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{p}: not a valid ONNX model (empty graph)")
    if uses_external_data(model):
        _load_external(model, p.parent)
    check_opset(model, str(p))
    return model


def _load_external(model: onnx.ModelProto, base: Path) -> None:
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc is None or not (base / loc).exists():
                raise InputError(f"external data file '{loc}' for tensor '{t.name}' is missing "
                                 f"(looked in {base})")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read external data: {_first_line(exc)}") from exc


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def check_opset(model: onnx.ModelProto, where: str = "model") -> None:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise InputError(f"{where}: no default-domain opset import")
    if versions[0] < MIN_OPSET:
        raise InputError(f"{where}: opset {versions[0]} is older than the supported {MIN_OPSET} "
                         "(convert it with onnx.version_converter first)")


def save_atomic(model: onnx.ModelProto, path: str | os.PathLike, *,
                external: bool | None = None) -> None:
    """Write to a temp file beside the target, then rename: never a half-written model.

    External data is used when asked, or when the model would pass protobuf's 2 GB limit; its
    data file sits beside the model as `<name>.data`.
    """
    p = Path(path)
    if external is None:
        external = approx_bytes(model) > TWO_GB
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    data_name = f"{p.name}.data"
    tmp_data = None
    try:
        if external:
            tmp_data = f".{data_name}.tmp"
            onnx.save(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=tmp_data, size_threshold=1024)
            _relocate(tmp, tmp_data, data_name)
            os.replace(p.parent / tmp_data, p.parent / data_name)
        else:
            onnx.save(model, tmp)
        os.replace(tmp, p)
    except BaseException:
        for f in (tmp, p.parent / tmp_data if tmp_data else None):
            if f and os.path.exists(f):
                os.unlink(f)
        raise


def _relocate(model_path: str, old: str, new: str) -> None:
    """Point the saved model's external references at the final data file name."""
    m = onnx.load(model_path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location" and e.value == old:
                e.value = new
    onnx.save(m, model_path)


def file_size(path: str | os.PathLike) -> int:
    p = Path(path)
    size = p.stat().st_size
    m = onnx.load(str(p), load_external_data=False)
    locs = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    return size + sum((p.parent / loc).stat().st_size for loc in locs if (p.parent / loc).exists())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
