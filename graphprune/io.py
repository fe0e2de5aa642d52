"""Loading and saving models, and the guards that keep bad input from becoming a traceback.

Every way an input can be unusable ends in one `InputError` line (exit 2): a missing or
unreadable file, bytes that are not an ONNX model, missing or short external data, an opset
older than 11, an output or report path that would overwrite the input (or its external data)
or cannot be written. (A model that parses but that onnxruntime itself cannot run is
diagnosed by the API's entry points only when something later fails, so the happy path pays
nothing for it: `pipeline.guard_input`.) External data itself, read, mapped or written, is
graphprune/external.py's.

Writes are atomic (a temporary file beside the target, then a rename) and never modify the
model being written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import onnx

from . import external as ext  # (`external` is save_atomic's keyword)
from .errors import InputError, one_line

MIN_OPSET = 11

PathLike = str | os.PathLike


# -- loading ----------------------------------------------------------------------------------
def load(source: PathLike | bytes, *, external_data: bool | str = True) -> onnx.ModelProto:
    """Read and sanity-check a model from a path (or serialized bytes).

    External data is read from beside the file unless `external_data` is False (then call
    `external.load_data` yourself, e.g. after listing the files with `external.data_files`)
    or "map" (checked, then served on demand as memory-mapped views: `external.attach`).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return parse(bytes(source), "model")
    p = Path(source)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an .onnx file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    model = parse(data, str(p))
    if external_data == "map":
        ext.attach(model, p.parent)
    elif external_data:
        ext.load_data(model, p.parent)
    return model


def parse(data: bytes, where: str = "model") -> onnx.ModelProto:
    """Bytes → ModelProto, refusing what is not a usable ONNX model."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ...
        raise InputError(f"{where}: not a valid ONNX model ({one_line(exc, 300)})") from exc
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{where}: not a valid ONNX model (empty graph)")
    check_opset(model, where)
    return model


def check_opset(model: onnx.ModelProto, where: str = "model") -> None:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise InputError(f"{where}: no default-domain opset import")
    if versions[0] < MIN_OPSET:
        raise InputError(f"{where}: opset {versions[0]} is older than the supported {MIN_OPSET} "
                         "(convert it with onnx.version_converter first)")


def load_checked(src: PathLike, out: PathLike, *, keep: tuple[PathLike, ...] = (),
                 map_external: bool = False,
                 **extra: PathLike | None) -> tuple[onnx.ModelProto, bool]:
    """Load the input of a compress run after refusing output paths — the model `out` and
    the named `extra` files (report=, plan=) — that would overwrite the input (its external
    data, or other input files in `keep`) or each other, or cannot be written. Returns
    (model, had external data)."""
    src = Path(src)
    kept = [Path(k) for k in keep]
    if src.exists():
        check_outputs(src, out, inputs=kept, **extra)  # cheap, before reading a large model
    model = load(src, external_data=False)
    data_files = ext.data_files(model, src.parent)
    check_outputs(src, out, inputs=[*kept, *data_files], **extra)
    if map_external:
        ext.attach(model, src.parent)
    else:
        ext.load_data(model, src.parent)
    return model, bool(data_files)


# -- output paths -----------------------------------------------------------------------------
def data_path(out: PathLike) -> Path:
    """Where `save_atomic` puts the external data of a model written to `out`."""
    p = Path(out)
    return p.with_name(f"{p.name}.data")


def check_outputs(src: PathLike, out: PathLike, *, inputs: list[Path] | None = None,
                  **extra: PathLike | None) -> None:
    """Refuse output paths (the model `out`, and named `extra` files such as report=, plan=)
    that are the input model or one of its data files (`inputs`), that collide with each
    other, that are directories, or that lie in a missing or read-only directory."""
    protected = [Path(src), *(inputs or [])]
    targets = [("output", Path(out)), ("output data", data_path(out))]
    targets += [(what, Path(p)) for what, p in extra.items() if p is not None]
    for k, (what, path) in enumerate(targets):
        if any(_same_file(path, p) for p in protected):
            which = "input model" if _same_file(path, Path(src)) else "input file"
            raise InputError(f"{what} path {path} is the {which} "
                             f"{next(p for p in protected if _same_file(path, p)).name}; "
                             "refusing to overwrite it")
        clash = next((w for w, p in targets[:k] if _same_file(path, p)), None)
        if clash is not None:
            raise InputError(f"{what} path {path} is also the {clash} path")
        if what != "output data":
            check_writable(path, what)


def check_writable(path: PathLike, what: str = "output") -> None:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} path {p} is a directory")
    parent = p.absolute().parent
    if not parent.exists():
        raise InputError(f"{what} directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{what} directory {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} directory {parent} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    if a.absolute() == b.absolute() or a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# -- saving -----------------------------------------------------------------------------------
def save_atomic(model: onnx.ModelProto, path: PathLike, *,
                external: bool | None = None) -> bool:
    """Write to a temp file beside the target, then rename: never a half-written model.

    External data is used when asked, or when the model would pass protobuf's 2 GB limit; its
    data file sits beside the model as `<name>.data`. `model` itself is not modified.
    Returns whether external data was written.
    """
    p = Path(path)
    if external is None:
        external = ext.approx_bytes(model) > ext.TWO_GB or ext.mapped(model)
    if not external and ext.mapped(model):
        model = ext.inline(model)

    def write(f: BinaryIO) -> None:
        if external:
            with _temp_beside(data_path(p)) as (tmp_data, fd):
                f.write(ext.write_data(model, fd, data_path(p).name).SerializeToString())
                fd.close()
                os.replace(tmp_data, data_path(p))
        else:
            f.write(model.SerializeToString())

    _write_atomic(p, write)
    return external


def write_text_atomic(path: PathLike, text: str) -> None:
    """A text file (the JSON report), written like a model: whole or not at all."""
    _write_atomic(Path(path), lambda f: f.write(text.encode()))


def _write_atomic(p: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write` into a temporary file beside `p`, then rename it to `p`."""
    try:
        with _temp_beside(p) as (tmp, f):
            write(f)
            f.close()
            os.replace(tmp, p)
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc.strerror or exc}") from exc


class _temp_beside:  # noqa: N801 - used as a context manager, like a function
    """A temporary file in the target's directory, with the mode a plain `open` would give;
    removed on the way out unless it was renamed into place."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> tuple[str, BinaryIO]:
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp",
                                        dir=self.target.absolute().parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        self.file = os.fdopen(fd, "wb")
        return self.tmp, self.file

    def __exit__(self, *exc) -> None:
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def file_size(path: PathLike, external: bool | None = None) -> int:
    """Bytes on disk of a model file and its external data files (`external=False`: the
    caller knows it has none, and the file is not parsed to find them)."""
    p = Path(path)
    if external is False:
        return p.stat().st_size
    m = onnx.load(str(p), load_external_data=False)
    return p.stat().st_size + sum(f.stat().st_size for f in ext.data_files(m, p.parent)
                                  if f.is_file())
