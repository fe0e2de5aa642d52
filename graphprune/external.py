"""External data in one place: where a tensor's bytes lie, and every way graphprune reads,
keeps, writes and hands them on.

ONNX keeps large tensors' bytes in data files beside the model (`location`, `offset`,
`length` among a tensor's external_data entries). graphprune never holds all of a large
model's weights at once:

- reading: `attach` checks every external tensor against its file without reading its bytes
  and marks the tensors it can map with the file's absolute path (PATH_KEY); `value` then
  serves their bytes as read-only memory-mapped views (pages read when touched, released
  with the view). `load_data` reads them in instead (onnx's loader), as for small models.
- spilling: the rewrite's large new tensors go to a temporary file (`Spill`) and are read
  back mapped; `refer` makes a tensor refer to the bytes where such a view lies.
- writing: `write_data` streams the large tensors of a model into one data file at
  page-aligned offsets (ALIGN), from the file they lie in (a kernel copy) or from memory.
- views for onnxruntime: `split` gives a weight-free graph plus the large weights as arrays
  (sessions share the arrays, the checker reads the graph), `located` points the graph's
  mapped tensors at their files again (sessions that must read weights themselves),
  `write_graph` writes a weight-free graph to run or check, `serialize` gives a model's bytes
  where that is cheap.

Copies of models are built field by field (`shell`, `copy_fields`): a protobuf CopyFrom of
a model would copy every weight's bytes only to throw them away.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from google.protobuf import unknown_fields
from onnx import numpy_helper

from .errors import InputError, one_line

PATH_KEY = "graphprune:path"
"""External-data key that `attach` adds to a tensor whose bytes were checked and are read
on demand: the absolute path of its data file (the `location` stays as the input file wrote
it). Never written out: `write_data` copies such tensors' bytes."""
TWO_GB = (1 << 31) - (1 << 24)
"""About protobuf's limit on one serialised message: larger models need external data."""
ALIGN = 4096
"""Offsets of tensors in graphprune's data files (and spill files) are multiples of this (a
page), so readers (onnxruntime, graphprune itself) can map them instead of copying."""
MIN_EXTERNAL_BYTES = 1024
"""Initializers of at least this many bytes go to the data file when writing external data."""
COPY_CHUNK = 16 << 20
DATA_FIELDS = frozenset({"raw_data", "float_data", "int32_data", "int64_data", "double_data",
                          "uint64_data", "string_data", "external_data", "data_location"})
"""The fields of a TensorProto that hold (or locate) its value."""
PLAIN = {np.dtype(t): onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t))
         for t in (np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64,
                   np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}
"""numpy dtype -> ONNX element type, for the plain numeric types: their raw bytes are the
array's bytes (little-endian), so they can be written, mapped and handed over as they are."""


# -- where a tensor's bytes lie ----------------------------------------------------------------
def tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sub in [a.g] if a.HasField("g") else []:
                yield from tensors(sub)
            for sub in a.graphs:
                yield from tensors(sub)


def location_of(t: onnx.TensorProto) -> str | None:
    """The data file a tensor's `location` names (relative to the model's folder)."""
    return next((e.value for e in t.external_data if e.key == "location"), None)


def path_of(t: onnx.TensorProto) -> str | None:
    """The checked data file of a tensor served mapped (see PATH_KEY), else None."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return next((e.value for e in t.external_data if e.key == PATH_KEY), None)


def byte_range(t: onnx.TensorProto) -> tuple[str, int, int]:
    """(data file, offset, length) of a tensor served mapped."""
    info = {e.key: e.value for e in t.external_data}
    return info[PATH_KEY], int(info.get("offset", 0)), int(info["length"])


def nbytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's value, from its type and dims (its data is not read)."""
    return math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(nbytes(t) for t in model.graph.initializer)


def approx_bytes(model: onnx.ModelProto) -> int:
    """Serialized size estimate from weight dims: protobuf's ByteSize walks every byte."""
    return weight_bytes(model) + 64 * len(model.graph.node)


def mapped(model: onnx.ModelProto) -> bool:
    """Whether some initializer is served from mapped external data (`attach`)."""
    return any(path_of(t) is not None for t in model.graph.initializer)


def data_files(model: onnx.ModelProto, base: str | os.PathLike) -> list[Path]:
    """The data files a not-yet-loaded model refers to, in order of first use."""
    locs = [location_of(t) for t in tensors(model.graph)
            if t.data_location == onnx.TensorProto.EXTERNAL]
    return [Path(base) / loc for loc in dict.fromkeys(x for x in locs if x)]


# -- values ------------------------------------------------------------------------------------
def array(t: onnx.TensorProto) -> np.ndarray:
    """A read-only memory-mapped view of a mapped tensor's bytes (no copy: pages are read when
    touched and released with the view)."""
    path, offset, length = byte_range(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(t.dims)
    if length == 0 or math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def value(t: onnx.TensorProto) -> np.ndarray | None:
    """A tensor's value: a mapped view when it is served mapped, else what numpy_helper reads
    from its own bytes; None when its bytes are not at hand (external data never loaded, or
    a weight-free copy whose tensors carry no data)."""
    if path_of(t) is not None:
        return array(t)
    if t.data_location == onnx.TensorProto.EXTERNAL or stripped(t):
        return None
    return numpy_helper.to_array(t)


def has_value(t: onnx.TensorProto) -> bool:
    """Whether `value(t)` is not None, decided without reading the bytes."""
    return path_of(t) is not None or (
        t.data_location != onnx.TensorProto.EXTERNAL and not stripped(t))


def typed_data(t: onnx.TensorProto) -> bool:
    """Whether the value lies in a typed field (float_data, int64_data, ...), not raw_data."""
    return bool(len(t.float_data) or len(t.int32_data) or len(t.int64_data)
                or len(t.double_data) or len(t.uint64_data) or len(t.string_data))


def stripped(t: onnx.TensorProto) -> bool:
    """Whether an inline tensor carries less data than its dims say (a weight-free copy)."""
    if t.data_location == onnx.TensorProto.EXTERNAL or math.prod(t.dims) == 0:
        return False
    if t.HasField("raw_data"):  # (reading t.raw_data would copy the bytes just to test them)
        return t.ByteSize() < nbytes(t)
    return not typed_data(t)


def is_mapped(value: np.ndarray | None) -> bool:
    """Whether `value` is, or views, a memory-mapped array."""
    while value is not None:
        if isinstance(value, np.memmap):
            return True
        value = value.base if isinstance(value.base, np.ndarray) else None
    return False


def mapping(value: np.ndarray) -> tuple[str, int] | None:
    """(file, offset) when `value` is a whole memory-mapped tensor (as `Spill.put` or `array`
    make them) in the order its bytes lie, little-endian."""
    if (isinstance(value, np.memmap) and isinstance(value.filename, str)
            and value.flags.c_contiguous and value.dtype.byteorder in ("=", "<", "|")
            and isinstance(value.base, mmap.mmap)):
        return value.filename, int(value.offset)
    return None


def remap(value: np.ndarray) -> np.ndarray:
    """A whole memory-mapped tensor mapped again, so that the pages one user touches are
    released with its own view (the caller's view stays untouched); anything else as is."""
    where = mapping(value)
    if where is None:
        return value
    return np.memmap(where[0], dtype=value.dtype, mode="r", offset=where[1], shape=value.shape)


# -- reading a model's external data --------------------------------------------------------------
def load_data(model: onnx.ModelProto, base: str | os.PathLike) -> None:
    """Read every external tensor's bytes into the model (from files relative to `base`)."""
    base = Path(base)
    for t in tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = location_of(t)
        if not loc:
            raise InputError(f"tensor '{t.name}' has external data but no location")
        if not (base / loc).is_file():
            raise InputError(f"external data file '{loc}' for tensor '{t.name}' is missing "
                             f"(looked in {base})")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, onnx's ValidationError, ...
        raise InputError(f"cannot read external data: {one_line(exc, 300)}") from exc


def attach(model: onnx.ModelProto, base: str | os.PathLike) -> None:
    """Check every external tensor's location and byte range against its data file, without
    reading the bytes, and mark the initializers graphprune can map (plain numeric types,
    whole and in range) with their data file's absolute path (PATH_KEY): their values are
    then memory-mapped when asked for, never all held at once. Other external tensors
    (attribute tensors, strings) are read in as usual."""
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
        t.external_data.add(key=PATH_KEY, value=key)
    if rest or any(t.data_location == onnx.TensorProto.EXTERNAL and path_of(t) is None
                   for t in tensors(model.graph)):
        _load_unmapped(model, base)


def _load_unmapped(model: onnx.ModelProto, base: Path) -> None:
    for t in tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL and path_of(t) is None:
            if not location_of(t):
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
    for t in tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL and path_of(t) is None:
            raise InputError(f"tensor '{t.name}' refers to external data "
                             f"'{location_of(t) or '?'}' that was not loaded: pass the model's "
                             "path, load it with onnx.load(path), or call "
                             "graphprune.external.attach(model, its folder)")


# -- copies without the weights ------------------------------------------------------------------
def copy_fields(src, dst, skip: Iterable[str]) -> None:
    """Copy the set fields of message `src` into `dst`, except those named in `skip`, which
    are never read (reading raw_data copies the weights; ListFields would read them all)."""
    skip = frozenset(skip)
    for fd in src.DESCRIPTOR.fields:
        if fd.name in skip:
            continue
        if fd.is_repeated:
            values = getattr(src, fd.name)
            if len(values):
                getattr(dst, fd.name).extend(values)
        elif src.HasField(fd.name):
            if fd.type == fd.TYPE_MESSAGE:
                getattr(dst, fd.name).CopyFrom(getattr(src, fd.name))
            else:
                setattr(dst, fd.name, getattr(src, fd.name))


def shell(model: onnx.ModelProto, skip: Iterable[str] = ("initializer",)) -> onnx.ModelProto:
    """A copy of `model` whose graph lacks the fields in `skip` (the initializers, by default:
    copying weights that the caller replaces costs as much as the rest of the model). A model
    with fields this onnx does not know is copied whole first (they survive only that)."""
    skip = tuple(skip)
    out = onnx.ModelProto()
    if len(unknown_fields.UnknownFieldSet(model)) or len(
            unknown_fields.UnknownFieldSet(model.graph)):
        out.CopyFrom(model)
        for name in skip:
            out.graph.ClearField(name)
        return out
    copy_fields(model, out, skip={"graph"})
    copy_fields(model.graph, out.graph, skip=skip)
    return out


def inline(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose mapped tensors carry their bytes (for writers and callers that
    want one self-contained ModelProto)."""
    out = shell(model)
    for t in model.graph.initializer:
        if path_of(t) is None:
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add()
        copy_fields(t, ref, skip=DATA_FIELDS)
        ref.raw_data = array(t).tobytes()  # little-endian, as the file holds it
    return out


# -- writing data files --------------------------------------------------------------------------
def write_data(model: onnx.ModelProto, data: BinaryIO, location: str) -> onnx.ModelProto:
    """A copy of `model` whose large initializers refer to `data` (written here, each at a
    page-aligned offset) at `location`; the weights are streamed out, never copied in
    memory."""
    out = shell(model)
    offset = 0
    for t in model.graph.initializer:
        src = path_of(t)
        raw = None if src is not None else _raw_bytes(t)
        if src is None and (raw is None or len(raw) < MIN_EXTERNAL_BYTES):
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add()
        copy_fields(t, ref, skip=DATA_FIELDS)
        offset += _pad(data, offset)
        if src is not None:
            size = copy_range(*byte_range(t), data)
        else:
            data.write(raw)
            size = len(raw)
        _point(ref, location, offset, size)
        offset += size
    return out


def _pad(f: BinaryIO, offset: int) -> int:
    """Write zeros up to the next multiple of ALIGN; how many."""
    pad = -offset % ALIGN
    if pad:
        f.write(b"\0" * pad)
    return pad


def _point(t: onnx.TensorProto, location: str, offset: int, length: int,
           path: str | None = None) -> None:
    """Make `t` (whose data fields are empty) refer to bytes of the data file `location`."""
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, v in (("location", location), ("offset", offset), ("length", length)):
        t.external_data.add(key=key, value=str(v))
    if path is not None:
        t.external_data.add(key=PATH_KEY, value=path)


def _raw_bytes(t: onnx.TensorProto) -> bytes | None:
    if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING:
        return None
    if t.HasField("raw_data"):
        return t.raw_data
    return numpy_helper.from_array(np.asarray(numpy_helper.to_array(t))).raw_data


def copy_range(path: str, offset: int, length: int, out: BinaryIO) -> int:
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


# -- spilling new tensors ------------------------------------------------------------------------
class Spill:
    """A temporary file that takes large new tensors as the rewrite makes them, so they are
    not all held in memory: each is written at a page-aligned offset and read back as a
    memory-mapped view, which the rewritten model refers to as external data (`refer`;
    `write_data` copies the bytes into the output's data file; sessions map them). Removed
    by `close` (or when the process ends)."""

    MIN_BYTES = 1 << 20

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix=".graphprune-", suffix=".tmp",
                                         dir=None if folder is None else str(folder))
        self.path = os.path.abspath(self.path)
        self.file = os.fdopen(fd, "wb")
        self.offset = 0
        self._finalizer = weakref.finalize(self, _unlink, self.path, self.file)

    def put(self, value: np.ndarray) -> np.ndarray:
        """`value`, or, when large and plain, its bytes in the file as a read-only view."""
        if (value.nbytes < self.MIN_BYTES or value.dtype not in PLAIN
                or sys.byteorder != "little" or self.file.closed):
            return value
        self.offset += _pad(self.file, self.offset)
        self.file.write(np.ascontiguousarray(value).data)
        self.file.flush()
        view = np.memmap(self.path, dtype=value.dtype, mode="r", offset=self.offset,
                         shape=value.shape)
        self.offset += value.nbytes
        return view

    def close(self) -> None:
        self._finalizer()


def _unlink(path: str, file) -> None:
    file.close()
    if os.path.exists(path):
        os.unlink(path)


def refer(dst: onnx.TensorProto, name: str, value: np.ndarray) -> bool:
    """Make `dst` the tensor `name` that refers to the bytes where `value` lies, when it is a
    whole mapped tensor of a plain type (`mapping`); False (and `dst` untouched) otherwise."""
    dtype = PLAIN.get(value.dtype)
    where = mapping(value)
    if where is None or dtype is None:
        return False
    dst.Clear()
    dst.name = name
    dst.data_type = dtype
    dst.dims.extend(value.shape)
    _point(dst, os.path.basename(where[0]), where[1], value.nbytes, where[0])
    return True


# -- the views sessions and the checker need ------------------------------------------------------
Serialized = bytes
"""A model as protobuf bytes (for callers that want one buffer; validation avoids it)."""


def serialize(model: onnx.ModelProto) -> Serialized | None:
    """Bytes for models under protobuf's 2 GB limit, None above it or when weights are served
    mapped (use `split` then)."""
    if approx_bytes(model) >= TWO_GB or mapped(model):
        return None
    return model.SerializeToString()


SPLIT_MIN_BYTES = 1 << 16
"""Initializers of at least this many bytes leave the weight-free copy (shape-like int tensors
are far smaller, so the checker's shape inference sees the same constants)."""
WEIGHTS_FILE = "graphprune-weights.bin"
"""The external-data location the weight-free copy names (an empty file: nothing reads it)."""
SPLIT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
                         onnx.TensorProto.UINT8})
"""Element types whose inline initializers leave the weight-free copy (weights; integer
tables stay in the graph, where shape inference reads them)."""


@dataclass
class Split:
    """A model as a weight-free graph plus its large weights as arrays.

    The graph keeps every field of the model; each large initializer keeps its name, type
    and dims but refers to external data, and its value (read from the same raw bytes the
    file would hold) is in `weights`. Sessions take the arrays as shared initializers and
    the checker reads the graph, so no one serialises hundreds of MB of weights: the cost
    of validation no longer grows with the model's bytes."""

    graph: onnx.ModelProto
    weights: dict[str, np.ndarray]

    @property
    def graph_bytes(self) -> int:
        return self.graph.ByteSize()


def split(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None = None, *,
          known: dict[str, np.ndarray] | None = None) -> Split:
    """`model` as a Split; `overrides` (by initializer name) replace weights' values; `known`
    holds values already read from these same tensors (numpy_helper.to_array's arrays: the
    analysis's constants of an unmodified model), reused instead of read again.

    A tensor leaves the graph only when its bytes are exactly what its type and dims say, in
    raw_data alone, of a SPLIT_TYPES type: anything else stays inline, so onnxruntime and
    the checker judge it from the model's own bytes, as they would the whole file. Overridden
    initializers always leave (their value comes from the override), unless their type is
    not one of those (then validation's session swaps them in with add_initializer).
    Mapped tensors always leave, except small ones of other types (shape-like integers),
    which are inlined: nothing in the copy refers to a data file."""
    overrides = overrides or {}
    out = shell(model)
    weights: dict[str, np.ndarray] = {}
    little = sys.byteorder == "little"
    for t in model.graph.initializer:
        plain = t.data_type in SPLIT_TYPES
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)) if plain else None
        served = little and path_of(t) is not None
        v = None
        if t.name in overrides and (plain or served):
            v = np.ascontiguousarray(overrides[t.name])
        elif served:
            v = array(t)  # memory-mapped: onnxruntime reads the file's pages
            if not plain and v.nbytes < SPLIT_MIN_BYTES:
                # a shape-like integer constant (torch's dynamo export puts them in the data
                # file too): inline, as in a self-contained model, so the checker sees it
                ref = out.graph.initializer.add()
                copy_fields(t, ref, skip=DATA_FIELDS)
                ref.raw_data = v.tobytes()
                continue
        elif (plain and little and t.data_location != onnx.TensorProto.EXTERNAL
              and nbytes(t) >= SPLIT_MIN_BYTES and t.HasField("raw_data")
              and not typed_data(t)):
            cached = (known or {}).get(t.name)
            if (cached is not None and cached.dtype == dtype and cached.shape == tuple(t.dims)
                    and cached.flags.c_contiguous):
                v = cached
            else:
                raw = t.raw_data
                if len(raw) == nbytes(t):
                    v = np.frombuffer(raw, dtype=dtype).reshape(tuple(t.dims))
        if v is None:
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add()
        copy_fields(t, ref, skip=DATA_FIELDS)
        ref.data_location = onnx.TensorProto.EXTERNAL
        ref.external_data.add(key="location", value=WEIGHTS_FILE)
        weights[t.name] = v
    return Split(out, weights)


def located(parts: Split, model: onnx.ModelProto,
            overrides: dict[str, np.ndarray] | None = None, *, folder_option: bool = True,
            ) -> tuple[onnx.ModelProto, str | None, dict[str, np.ndarray]]:
    """`parts`' graph with the weights `model` maps (not overridden) referring to their data
    file again, by its real path, for onnxruntime to read.

    Returns (graph, folder, arrays): the files named lie in `folder` (the folder holding
    most of the mapped bytes, when the model maps from several: onnxruntime reads data files
    from one folder), and `arrays` are the split weights that stay arrays (overrides, weights
    from inline bytes, mapped ones whose file lies elsewhere; all of them when the reader
    cannot be told the folder: `folder_option` False)."""
    overrides = overrides or {}
    sources = {t.name: t for t in model.graph.initializer
               if folder_option and t.name in parts.weights and t.name not in overrides
               and path_of(t) is not None}
    real = {name: os.path.realpath(path_of(t)) for name, t in sources.items()}
    weight: dict[str, int] = {}
    for name, path in real.items():
        where = os.path.dirname(path)
        weight[where] = weight.get(where, 0) + byte_range(sources[name])[2]
    folder = max(sorted(weight), key=weight.__getitem__) if weight else None
    graph = onnx.ModelProto()
    graph.CopyFrom(parts.graph)  # weight-free: a cheap copy; `parts` may serve others
    arrays: dict[str, np.ndarray] = {}
    for ref in graph.graph.initializer:
        if ref.name not in parts.weights:
            continue
        path = real.get(ref.name)
        if path is None or os.path.dirname(path) != folder:
            arrays[ref.name] = parts.weights[ref.name]
            continue
        _, offset, length = byte_range(sources[ref.name])
        del ref.external_data[:]
        _point(ref, os.path.basename(path), offset, length)
    return graph, folder, arrays


def write_graph(parts: Split, folder: str) -> str:
    """Write the weight-free graph into `folder` (with its own data file, should its inline
    tensors pass protobuf's 2 GB limit), beside an empty file at the location its split
    tensors name: their values come from elsewhere, but the checker and onnxruntime want
    the location to exist. Returns the model's path."""
    path = os.path.join(folder, "m.onnx")
    if parts.weights:
        open(os.path.join(folder, WEIGHTS_FILE), "wb").close()
    with open(path, "wb") as f:
        if parts.graph_bytes < TWO_GB:
            f.write(parts.graph.SerializeToString())
        else:
            with open(f"{path}.data", "wb") as data:
                f.write(write_data(parts.graph, data, "m.onnx.data").SerializeToString())
    return path
