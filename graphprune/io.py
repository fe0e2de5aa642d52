"""Loading and saving models, and the guards that keep bad input from becoming a traceback.

Every way an input can be unusable ends in one `InputError` line (exit 2): a missing or
unreadable file, bytes that are not an ONNX model, missing or short external data, an opset
older than 11, an output or report path that would overwrite the input (or its external data)
or cannot be written. A model that parses but that onnxruntime itself cannot run is diagnosed
only when something later fails (`guard_input`), so the happy path pays nothing for it.

Writes are atomic (a temporary file beside the target, then a rename) and never modify the
model being written.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import GraphpruneError, InputError, one_line
from .ir import EXTERNAL_PATH, approx_bytes, external_path, external_range

MIN_OPSET = 11
TWO_GB = (1 << 31) - (1 << 24)
EXTERNAL_THRESHOLD = 1024
"""Initializers of at least this many bytes go to the data file when writing external data."""
ALIGN = 4096
"""Offsets of tensors in graphprune's data files are multiples of this (a page), so readers
(onnxruntime, graphprune itself) can map them instead of copying."""
COPY_CHUNK = 16 << 20

PathLike = str | os.PathLike


# -- loading ----------------------------------------------------------------------------------
def load(source: PathLike | bytes, *, external_data: bool | str = True) -> onnx.ModelProto:
    """Read and sanity-check a model from a path (or serialized bytes).

    External data is read from beside the file unless `external_data` is False (then call
    `load_external_data` yourself, e.g. after listing the files with `external_data_files`)
    or "map" (checked, then served on demand as memory-mapped views: `attach_external_data`).
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
        attach_external_data(model, p.parent)
    elif external_data:
        load_external_data(model, p.parent)
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


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sub in [a.g] if a.HasField("g") else []:
                yield from _all_tensors(sub)
            for sub in a.graphs:
                yield from _all_tensors(sub)


def _location(t: onnx.TensorProto) -> str | None:
    return next((e.value for e in t.external_data if e.key == "location"), None)


def uses_external_data(model: onnx.ModelProto) -> bool:
    """Whether some tensor still refers to external data (false once it has been loaded)."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(model.graph))


def external_data_files(model: onnx.ModelProto, base: PathLike) -> list[Path]:
    """The data files a not-yet-loaded model refers to, in order of first use."""
    locs = [_location(t) for t in _all_tensors(model.graph)
            if t.data_location == onnx.TensorProto.EXTERNAL]
    return [Path(base) / loc for loc in dict.fromkeys(x for x in locs if x)]


def load_external_data(model: onnx.ModelProto, base: PathLike) -> None:
    base = Path(base)
    for t in _all_tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = _location(t)
        if not loc:
            raise InputError(f"tensor '{t.name}' has external data but no location")
        if not (base / loc).is_file():
            raise InputError(f"external data file '{loc}' for tensor '{t.name}' is missing "
                             f"(looked in {base})")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, onnx's ValidationError, ...
        raise InputError(f"cannot read external data: {one_line(exc, 300)}") from exc


def attach_external_data(model: onnx.ModelProto, base: PathLike) -> None:
    """Check every external tensor's location and byte range against its data file, without
    reading the bytes, and mark the initializers graphprune can map (plain numeric types,
    whole and in range) with their data file's absolute path (`ir.EXTERNAL_PATH`): their
    values are then memory-mapped when asked for, never all held at once. Other external
    tensors (attribute tensors, strings) are read in as usual."""
    base = Path(base)
    sizes: dict[str, int] = {}
    rest = False
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location")
        if not loc:
            raise InputError(f"tensor '{t.name}' has external data but no location")
        if os.path.isabs(loc) or ".." in Path(loc).parts:
            raise InputError(f"cannot read external data: tensor '{t.name}' refers to "
                             f"'{loc}', outside the model's directory")
        path = base / loc
        if not path.is_file():
            raise InputError(f"external data file '{loc}' for tensor '{t.name}' is missing "
                             f"(looked in {base})")
        key = str(path.absolute())
        if key not in sizes:
            sizes[key] = path.stat().st_size
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
            offset = int(info.get("offset", 0))
            want = int(np.prod(t.dims, dtype=np.int64)) * dtype.itemsize
            length = int(info.get("length", want))
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"cannot read external data: tensor '{t.name}' "
                             f"({one_line(exc, 300)})") from exc
        if offset < 0 or length != want or offset + length > sizes[key]:
            raise InputError(f"cannot read external data: tensor '{t.name}' needs bytes "
                             f"{offset}..{offset + want} of '{loc}' ({sizes[key]} bytes)")
        if dtype.kind not in "fiub" or t.data_type == onnx.TensorProto.BFLOAT16:
            rest = True
            continue
        if "length" not in info:
            t.external_data.add(key="length", value=str(length))
        t.external_data.add(key=EXTERNAL_PATH, value=key)
    if rest or any(t.data_location == onnx.TensorProto.EXTERNAL and external_path(t) is None
                   for t in _all_tensors(model.graph)):
        _load_unmapped(model, base)


def _load_unmapped(model: onnx.ModelProto, base: Path) -> None:
    for t in _all_tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL and external_path(t) is None:
            if not _location(t):
                raise InputError(f"tensor '{t.name}' has external data but no location")
            try:
                onnx.external_data_helper.load_external_data_for_tensor(t, str(base))
                t.data_location = onnx.TensorProto.DEFAULT
                del t.external_data[:]
            except Exception as exc:  # noqa: BLE001 - OSError, ValueError, ...
                raise InputError(f"cannot read external data: {one_line(exc, 300)}") from exc


def check_loaded(model: onnx.ModelProto) -> None:
    """Refuse a ModelProto whose external data was never loaded (`onnx.load(path,
    load_external_data=False)`): its tensors name data files relative to a folder the proto
    does not record, so nothing can read them."""
    for t in _all_tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL and external_path(t) is None:
            raise InputError(f"tensor '{t.name}' refers to external data "
                             f"'{_location(t) or '?'}' that was not loaded: pass the model's "
                             "path, load it with onnx.load(path), or call "
                             "graphprune.io.attach_external_data(model, its folder)")


def mapped(model: onnx.ModelProto) -> bool:
    """Whether some initializer is served from mapped external data (`attach_external_data`)."""
    return any(external_path(t) is not None for t in model.graph.initializer)


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
    data_files = external_data_files(model, src.parent)
    check_outputs(src, out, inputs=[*kept, *data_files], **extra)
    if map_external:
        attach_external_data(model, src.parent)
    else:
        load_external_data(model, src.parent)
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
        external = approx_bytes(model) > TWO_GB or mapped(model)
    if not external and mapped(model):
        model = inline_mapped(model)
    try:
        with _temp_beside(p) as (tmp, f):
            if external:
                with _temp_beside(data_path(p)) as (tmp_data, fd):
                    f.write(_with_external_data(model, fd, data_path(p).name)
                            .SerializeToString())
                    fd.close()
                    os.replace(tmp_data, data_path(p))
            else:
                f.write(model.SerializeToString())
            f.close()
            os.replace(tmp, p)
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc.strerror or exc}") from exc
    return external


def write_text_atomic(path: PathLike, text: str) -> None:
    """A text file (the JSON report), written like a model: whole or not at all."""
    p = Path(path)
    try:
        with _temp_beside(p) as (tmp, f):
            f.write(text.encode())
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


DATA_FIELDS = frozenset({"raw_data", "float_data", "int32_data", "int64_data", "double_data",
                          "uint64_data", "string_data", "external_data", "data_location"})


def _with_external_data(model: onnx.ModelProto, data: BinaryIO,
                        location: str) -> onnx.ModelProto:
    """A copy of `model` whose large initializers refer to `data` (written here) at
    `location`; the weights are streamed out, never copied in memory."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip={"graph"})
    copy_fields(model.graph, out.graph, skip={"initializer"})
    offset = 0
    for t in model.graph.initializer:
        src = external_path(t)
        raw = None if src is not None else _raw_bytes(t)
        if src is None and (raw is None or len(raw) < EXTERNAL_THRESHOLD):
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add()
        copy_fields(t, ref, skip=DATA_FIELDS)
        pad = -offset % ALIGN
        if pad:
            data.write(b"\0" * pad)
            offset += pad
        if src is not None:
            size = _copy_range(*external_range(t), data)
        else:
            data.write(raw)
            size = len(raw)
        ref.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", size)):
            ref.external_data.add(key=key, value=str(value))
        offset += size
    return out


def _copy_range(path: str, offset: int, length: int, out: BinaryIO) -> int:
    """Stream bytes [offset, offset+length) of `path` into `out`, a chunk at a time."""
    out.flush()
    with open(path, "rb") as f:
        left = length
        if hasattr(os, "copy_file_range"):  # in the kernel, no user-space buffer
            try:
                while left:
                    n = os.copy_file_range(f.fileno(), out.fileno(), min(left, 1 << 30),
                                           offset + length - left)
                    if n <= 0:
                        break
                    left -= n
            except OSError:
                pass
            if not left:
                return length
            out.seek(0, os.SEEK_END)
        f.seek(offset + length - left)
        while left:
            chunk = f.read(min(COPY_CHUNK, left))
            if not chunk:
                raise OSError(f"{path} is shorter than its tensors say")
            out.write(chunk)
            left -= len(chunk)
    return length


def inline_mapped(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose mapped external tensors carry their bytes (for writers and
    callers that want one self-contained ModelProto)."""
    from .ir import external_array

    out = onnx.ModelProto()
    copy_fields(model, out, skip={"graph"})
    copy_fields(model.graph, out.graph, skip={"initializer"})
    for t in model.graph.initializer:
        if external_path(t) is None:
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add()
        copy_fields(t, ref, skip=DATA_FIELDS)
        ref.raw_data = external_array(t).tobytes()  # little-endian, as the file holds it
    return out


def _raw_bytes(t: onnx.TensorProto) -> bytes | None:
    if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING:
        return None
    if t.HasField("raw_data"):
        return t.raw_data
    return numpy_helper.from_array(np.asarray(numpy_helper.to_array(t))).raw_data


def copy_fields(src, dst, skip: set[str] | frozenset[str]) -> None:
    """Copy the set fields of message `src` into `dst`, except those named in `skip`, which
    are never read (reading raw_data copies the weights; ListFields would read them all)."""
    for fd in src.DESCRIPTOR.fields:
        if fd.name in skip:
            continue
        if fd.is_repeated:
            value = getattr(src, fd.name)
            if len(value):
                getattr(dst, fd.name).extend(value)
        elif src.HasField(fd.name):
            if fd.type == fd.TYPE_MESSAGE:
                getattr(dst, fd.name).CopyFrom(getattr(src, fd.name))
            else:
                setattr(dst, fd.name, getattr(src, fd.name))


def file_size(path: PathLike, external: bool | None = None) -> int:
    """Bytes on disk of a model file and its external data files (`external=False`: the
    caller knows it has none, and the file is not parsed to find them)."""
    p = Path(path)
    if external is False:
        return p.stat().st_size
    m = onnx.load(str(p), load_external_data=False)
    return p.stat().st_size + sum(f.stat().st_size for f in external_data_files(m, p.parent)
                                  if f.is_file())


# -- telling bad input from bugs --------------------------------------------------------------
F = TypeVar("F", bound=Callable)


def guard_input(fn: F) -> F:
    """For API entry points whose first argument is a model or a path.

    When anything fails that is not already an InputError, ask whether the input model itself
    is at fault (`input_problem`); if it is, raise a one-line InputError (exit 2) from the
    failure instead of reporting a graphprune bug. Otherwise the failure goes on as it is (a
    StageError names the stage that failed).
    """

    @functools.wraps(fn)
    def guarded(model_or_path, *args, **kwargs):
        try:
            return fn(model_or_path, *args, **kwargs)
        except InputError:
            raise
        except Exception as exc:
            text = next((e for e in (exc, exc.__cause__) if isinstance(e, UnicodeDecodeError)),
                        None)
            if text is not None:  # protobuf decodes string fields when first read
                raise InputError("the input model cannot be used: a name or text in it is "
                                 f"not valid UTF-8 ({one_line(text, 300)})") from exc
            why = _diagnose(model_or_path, kwargs)
            if why is None:
                raise
            raise InputError(f"the input model cannot be used: {why}") from exc

    return guarded  # type: ignore[return-value]


def _diagnose(model_or_path, kwargs: dict) -> str | None:
    """`input_problem` with the run's validation inputs (shapes, given values), from the
    keywords or, when they do not say, the Options they hold."""
    opts = kwargs.get("options")
    sizes = kwargs.get("input_sizes", getattr(opts, "input_sizes", None))
    seed = kwargs.get("seed", getattr(opts, "seed", 0))
    data = kwargs.get("inputs", getattr(opts, "inputs", None))
    try:
        if isinstance(model_or_path, onnx.ModelProto):
            return input_problem(model_or_path, sizes, seed, data)
        if isinstance(model_or_path, (str, os.PathLike, bytes)):
            return input_problem(load(model_or_path, external_data="map"), sizes, seed, data)
    except GraphpruneError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a failed diagnosis must not hide the original error
        return None
    return None


def input_problem(model: onnx.ModelProto, sizes: dict[str, list[int]] | None = None,
                  seed: int = 0, data=None) -> str | None:
    """Why `model` cannot be pruned and proven as given, or None when it can.

    onnxruntime must load it and run it, in two sessions to the same finite outputs, on
    inputs the validation would use: `data` (given values) or, with `sizes` (shapes as
    given) for the dims they fix, any of the shapes passes/inputs.py tries. The exact check
    compares two sessions, so it needs a model that is valid, deterministic across sessions
    and finite. The sessions hold the weights as onnxruntime holds them when it loads the
    file itself (memory-mapped external data read from its own files), so the verdict is
    onnxruntime's on the model as given, not on graphprune's way of handing it the weights:
    a model that passes here and fails later failed in graphprune (or in the pruned model),
    never because of the input.
    """
    from .passes import inputs

    return inputs.problem(model, sizes, data, seed)
