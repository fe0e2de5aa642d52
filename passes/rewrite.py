"""Rewrite pass: turn an analysis plus a set of removed units into a smaller dense model.

Every member is sliced along its span, keeping positions whose slot survives; every recorded
edit fixes a size encoding (group, Reshape/Expand shapes, Split sizes, Slice bounds, Gather
indices). New constant values are stored per use, so a constant shared with another node is
cloned before it changes. The masked original used by the exact check is built with the same
machinery: sink slices of removed units set to zero, nothing sliced.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import sys
import tempfile
import weakref

import numpy as np
import onnx
from google.protobuf import unknown_fields
from onnx import helper, numpy_helper

from graphprune.analysis import Analysis
from graphprune.edits import (
    AttrCount,
    Edit,
    EntryCount,
    EntryScale,
    GatherIndices,
    Member,
    SliceBounds,
    SplitSizes,
)
from graphprune.errors import GraphpruneError
from graphprune.io import ALIGN, copy_fields
from graphprune.ir import EXTERNAL_PATH, attr, subgraph_references
from graphprune.shapeval import known_value, to_ints
from graphprune.slots import Span


class RewriteError(GraphpruneError):
    """An internal inconsistency: the analysis promised a cut the rewrite cannot make."""

    exit_code = 3


class Spill:
    """A temporary file that takes large new tensors as the rewrite makes them, so they are
    not all held in memory: each is written at a page-aligned offset and read back as a
    memory-mapped view, which the rewritten model refers to as external data (graphprune's
    writer copies the bytes into the output's data file; validation maps them). Removed by
    `close` (or when the process ends)."""

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
        if (value.nbytes < self.MIN_BYTES or value.dtype not in _PLAIN
                or sys.byteorder != "little" or self.file.closed):
            return value
        pad = -self.offset % ALIGN
        if pad:
            self.file.write(b"\0" * pad)
            self.offset += pad
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


def _mapped_file(value: np.ndarray) -> tuple[str, int] | None:
    """(file, offset) when `value` is a whole memory-mapped tensor (as `Spill.put` or
    `ir.external_array` make them), in the order its bytes lie."""
    if (isinstance(value, np.memmap) and isinstance(value.filename, str)
            and value.flags.c_contiguous and value.dtype.byteorder in ("=", "<", "|")
            and isinstance(value.base, mmap.mmap)):
        return value.filename, int(value.offset)
    return None


class Rewriter:
    """Applies slices and edits to a copy of the model. `removed[root]` marks removed units.
    With a `spill`, large new tensors go to its file as they are made (see `Spill`)."""

    def __init__(self, model: onnx.ModelProto, an: Analysis, removed: np.ndarray,
                 copy: bool = True, spill: Spill | None = None) -> None:
        self.spill = spill
        self.source = model
        if copy:
            self.model = _copy_without_initializers(model)  # they come in _materialize
        else:
            self.model = model  # read-only use (mask_overrides)
        self.nodes = self.model.graph.node
        self.an = an
        self.gone = removed[an.roots]  # per slot id: removed?
        self.pending: dict[tuple[int, int], np.ndarray] = {}
        self.overrides: dict[tuple[int, int], dict[int, int]] = {}
        self.scales: dict[tuple[int, int], dict[int, tuple[int, int]]] = {}

    # -- what survives --------------------------------------------------------------------------
    def kept_mask(self, ids: np.ndarray) -> np.ndarray:
        return ~self.gone[ids]

    def count(self, ids: np.ndarray) -> int:
        return int(self.kept_mask(ids).sum())

    def axis_masks(self, span: Span) -> list[np.ndarray]:
        """Per-axis keep masks of a span; the kept set must be their outer product."""
        masks = rectangle(self.kept_mask(span.ids))
        if masks is None:
            raise RewriteError(f"units on axes {span.axes} do not form a rectangle")
        return masks

    def axis_count(self, span: Span, axis: int) -> int:
        return int(self.axis_masks(span)[span.axes.index(axis)].sum())

    # -- node changes ---------------------------------------------------------------------------
    def value(self, node: int, index: int) -> np.ndarray:
        if (node, index) in self.pending:
            return self.pending[(node, index)]
        v = self.an.graph.const(self.nodes[node].input[index])
        if v is None:
            raise RewriteError(f"input {index} of {self.an.graph.node_name(node)} is not constant")
        return v

    def set_input_const(self, node: int, index: int, value: np.ndarray) -> None:
        self.pending[(node, index)] = value

    def entry(self, node: int, index: int, pos: int) -> int | str | None:
        """Entry `pos` of a size input as it stands: an int when known statically (a literal,
        an edit made already, or shape arithmetic over static dims), else a symbol or None."""
        if (node, index) in self.pending:
            return int(self.pending[(node, index)].reshape(-1)[pos])
        name = self.nodes[node].input[index]
        known = known_value(self.an.graph, name)
        if known is None or pos >= known.size:
            return None
        return known.reshape(-1)[pos]

    def set_const_entry(self, node: int, index: int, pos: int, value: int) -> None:
        """Set one entry of a size input where it changes: in a clone of a literal, or, for a
        computed shape, by an override (see `_settle_overrides`, `_insert_overrides`)."""
        if self.entry(node, index, pos) == value:
            return
        if (node, index) not in self.pending and self.an.graph.const(
                self.nodes[node].input[index]) is None:
            self.overrides.setdefault((node, index), {})[pos] = value
            return
        v = np.array(self.value(node, index), copy=True)
        v.reshape(-1)[pos] = value
        self.pending[(node, index)] = v

    def _settle_overrides(self) -> None:
        """A computed size `Concat(…, piece, …)` whose every reader overrides the same entries
        alike: a piece holding such entries whose values are all known (a literal, or shape
        arithmetic over static dims) becomes a constant with the new values, so no node is
        added and shape inference still follows the whole shape."""
        graph = self.an.graph
        readers: dict[str, list[tuple[int, int]]] = {}
        for node, index in sorted(self.overrides):
            readers.setdefault(self.nodes[node].input[index], []).append((node, index))
        for name, keys in readers.items():
            wanted = self.overrides[keys[0]]
            if ({(u.node, u.index) for u in graph.uses(name)} != set(keys)
                    or name in graph.outputs or any(self.overrides[k] != wanted for k in keys)):
                continue
            for pos, value in list(wanted.items()):
                piece = self._static_piece(name, pos)
                if piece is None:
                    continue
                p, j, at, v = piece
                v.reshape(-1)[at] = value
                self.pending[(p, j)] = v
                for k in keys:
                    del self.overrides[k][pos]
        self.overrides = {k: v for k, v in self.overrides.items() if v}

    def _static_piece(self, name: str, pos: int) -> tuple[int, int, int, np.ndarray] | None:
        """(Concat node, input, entry, a copy of its value) of the piece of `name` that holds
        entry `pos`, when that piece's entries are all known statically."""
        graph = self.an.graph
        p = graph.producer.get(name)
        if p is None or graph.nodes[p].op_type != "Concat":
            return None
        start = 0
        for j, piece in enumerate(graph.nodes[p].input):
            shape = graph.shape(piece)
            if not shape or len(shape) != 1 or not isinstance(shape[0], int):
                return None
            if start <= pos < start + shape[0]:
                value = self.pending.get((p, j), graph.const(piece))
                if value is None:
                    known = known_value(graph, piece)
                    ints = None if known is None else to_ints(known)
                    if ints is None or None in ints:
                        return None
                    value = np.array(ints, dtype=_np_dtype(graph.dtypes.get(
                        piece, onnx.TensorProto.INT64))).reshape(known.shape)
                return p, j, pos - start, np.array(value, copy=True)
            start += shape[0]
        return None

    def scale_const_entry(self, node: int, index: int, pos: int, num: int, den: int) -> None:
        """Scale one entry of a size input by num/den (a batch-folded head axis: B·H → B·H′):
        in a clone of a literal, or at run time for a computed shape (Mul, then exact Div)."""
        if num == den:
            return
        if (node, index) not in self.pending and self.an.graph.const(
                self.nodes[node].input[index]) is None:
            self.scales.setdefault((node, index), {})[pos] = (num, den)
            return
        v = np.array(self.value(node, index), copy=True)
        flat = v.reshape(-1)
        if flat[pos] % den:
            raise RewriteError(f"size {flat[pos]} of {self.an.graph.node_name(node)} is not a "
                               f"multiple of {den}")
        flat[pos] = flat[pos] // den * num
        self.pending[(node, index)] = v

    def set_attr(self, node: int, name: str, value) -> None:
        n = self.nodes[node]
        if attr(n, name) == value:
            return
        self.remove_attr(node, name)
        n.attribute.append(helper.make_attribute(name, value))

    def remove_attr(self, node: int, name: str) -> None:
        n = self.nodes[node]
        for a in list(n.attribute):
            if a.name == name:
                n.attribute.remove(a)

    # -- passes ---------------------------------------------------------------------------------
    def prune(self) -> onnx.ModelProto:
        for (node, index), spans in _by_use(self.an.members).items():
            v = self.value(node, index)
            for span in spans:
                v = self._slice(v, span, node, index)
            self.pending[(node, index)] = self.spill.put(v) if self.spill else v
        for edit in self.an.edits:
            apply_edit(self, edit)
        model = self._materialize()
        _resize_interface(model, io_changes(self.an, self.gone))
        return model

    def mask(self) -> onnx.ModelProto:
        self._mask_sinks()
        return self._materialize()

    def mask_overrides(self) -> dict[str, np.ndarray] | None:
        """The masked weights by initializer name, when each is a plain single-use
        initializer (then a session can swap them in without copying the model)."""
        self._mask_sinks()
        graph = self.an.graph
        inputs = {i.name for i in self.model.graph.input}
        out = {}
        for (node, index), v in self.pending.items():
            name = self.nodes[node].input[index]
            if (not graph.is_initializer(name) or len(graph.uses(name)) != 1 or name in inputs
                    or name in graph.outputs):  # a weight that is also a graph output
                return None
            out[name] = v
        return out

    def _mask_sinks(self) -> None:
        for (node, index), spans in _by_use(self.an.members, roles=("sink",)).items():
            v = self.value(node, index)
            for span in spans:
                keep = self.kept_mask(span.ids)
                if keep.all():
                    continue
                shape = [1] * v.ndim
                for a, n in zip(span.axes, span.ids.shape, strict=True):
                    shape[a] = n
                v = v * keep.reshape(shape).astype(v.dtype)
            self.pending[(node, index)] = self.spill.put(v) if self.spill else v

    def _slice(self, v: np.ndarray, span: Span, node: int, index: int) -> np.ndarray:
        dims = tuple(v.shape[a] if a < v.ndim else -1 for a in span.axes)
        if dims != span.ids.shape:
            raise RewriteError(
                f"member {self.an.graph.node_name(node)}[{index}] has dims {dims} on axes "
                f"{span.axes}, units expect {span.ids.shape}")
        for a, m in zip(span.axes, self.axis_masks(span), strict=True):
            v = np.compress(m, v, axis=a)
        return v

    def _materialize(self) -> onnx.ModelProto:
        self._settle_overrides()
        g = self.model.graph
        graph = self.an.graph
        inits = {t.name: t for t in self.source.graph.initializer}
        taken = set(inits) | set(graph.producer)
        shared: dict[tuple[str, bytes], str] = {}
        replaced: dict[str, np.ndarray] = {}  # sole uses: the new value takes the old place
        clones: list[tuple[str, np.ndarray]] = []
        for (node, index), value in sorted(self.pending.items()):
            n = self.nodes[node]
            old = n.input[index] if index < len(n.input) else ""
            sole = old in inits and len(graph.uses(old)) == 1 and old not in graph.outputs
            if _mapped_file(value) is None:
                value = np.ascontiguousarray(value)
            if old and _same_value(graph.const(old), value):
                continue  # nothing removed here: the tensor stays as it is, shared or not
            if sole:  # its only use: nothing else can share it
                name = old
                replaced[old] = value
            else:  # tied weights pruned alike (directly or through an Identity) stay one
                key = (graph.const_root(old) or old, _digest(value))
                if key in shared:
                    name = shared[key]
                else:
                    name = _unique(f"{old or n.name or n.op_type}_gp", taken)
                    taken.add(name)
                    shared[key] = name
                    clones.append((name, value))
            while len(n.input) <= index:
                n.input.append("")
            n.input[index] = name
        if self.model is not self.source:  # copied without initializers: add them, in order
            for t in self.source.graph.initializer:
                if t.name in replaced:
                    _fill_tensor(g.initializer.add(), t, replaced[t.name])
                else:
                    g.initializer.append(t)
        else:
            for name, value in replaced.items():
                _fill_tensor(inits[name], inits[name], value)
        for name, value in clones:
            _fill_tensor(g.initializer.add(), None, value, name)
        self._insert_overrides(taken)
        _remove_dead(self.model, _unused(self.an.graph.g))
        del g.value_info[:]
        return self.model

    def _insert_overrides(self, taken: set[str]) -> None:
        """Computed size inputs whose entries change: one whose entries are all known
        statically becomes a constant; in others, scaled entries get `Div(Mul(shape, num),
        den)`, replaced entries `Where(mask, values, shape)`, the other entries pass unchanged."""
        if not self.overrides and not self.scales:
            return
        g = self.model.graph
        before: dict[int, list[onnx.NodeProto]] = {}
        for node, index in sorted({*self.overrides, *self.scales}):
            n = self.nodes[node]
            src = n.input[index]
            length = self.an.graph.shape(src)
            if not length or len(length) != 1 or not isinstance(length[0], int):
                raise RewriteError(f"cannot override entries of '{src}' (unknown length)")
            dtype = _np_dtype(self.an.graph.dtypes.get(src, onnx.TensorProto.INT64))
            scales = self.scales.get((node, index), {})
            entries = self.overrides.get((node, index), {})
            static = self._static(node, index, scales, entries)
            if static is not None:
                name = _unique(f"{src}_gp_value", taken)
                taken.add(name)
                g.initializer.append(numpy_helper.from_array(static.astype(dtype), name))
                n.input[index] = name
                continue
            added = before.setdefault(node, [])
            if scales:
                num, den = np.ones(length[0], dtype=dtype), np.ones(length[0], dtype=dtype)
                for pos, (a, b) in scales.items():
                    num[pos], den[pos] = a, b
                names = [_unique(f"{src}_gp_{tag}", taken) for tag in ("num", "den", "mul", "div")]
                taken.update(names)
                g.initializer.extend([numpy_helper.from_array(num, names[0]),
                                      numpy_helper.from_array(den, names[1])])
                added.append(helper.make_node("Mul", [src, names[0]], [names[2]], name=names[2]))
                added.append(helper.make_node("Div", [names[2], names[1]], [names[3]],
                                              name=names[3]))
                src = names[3]
            if entries:
                mask = np.zeros(length[0], dtype=bool)
                vals = np.zeros(length[0], dtype=dtype)
                for pos, v in entries.items():
                    mask[pos], vals[pos] = True, v
                names = [_unique(f"{src}_gp_{tag}", taken) for tag in ("mask", "value", "shape")]
                taken.update(names)
                g.initializer.extend([numpy_helper.from_array(mask, names[0]),
                                      numpy_helper.from_array(vals, names[1])])
                added.append(helper.make_node("Where", [names[0], names[1], src], [names[2]],
                                              name=names[2]))
                src = names[2]
            n.input[index] = src
        if not any(before.values()):
            return
        nodes = list(g.node)
        del g.node[:]
        for i, n in enumerate(nodes):
            g.node.extend(before.get(i, []))
            g.node.append(n)

    def _static(self, node: int, index: int, scales: dict[int, tuple[int, int]],
                entries: dict[int, int]) -> np.ndarray | None:
        """The new value of a computed size input whose entries are all known statically.
        Entries not set here keep their values: the analysis lets a unit count reach a size
        only where the size is overridden or the units are frozen (a batch-folded B·H read
        back from the tensor shrinks by itself, but is dynamic: never known here)."""
        known = known_value(self.an.graph, self.nodes[node].input[index])
        ints = None if known is None else to_ints(known)
        if ints is None or None in ints:
            return None
        flat = np.array(ints, dtype=np.int64)
        for pos, (num, den) in scales.items():
            if flat[pos] % den:
                raise RewriteError(f"size {flat[pos]} of {self.an.graph.node_name(node)} is "
                                   f"not a multiple of {den}")
            flat[pos] = flat[pos] // den * num
        for pos, v in entries.items():
            flat[pos] = v
        return flat.reshape(known.shape)


# -- edits: each record type and what it does ----------------------------------------------------
def _attr_count(rw: Rewriter, e: AttrCount) -> None:
    rw.set_attr(e.node, e.name, rw.count(e.units))


def _entry_count(rw: Rewriter, e: EntryCount) -> None:
    rw.set_const_entry(e.node, e.index, e.pos, rw.axis_count(e.span, e.axis))


def _entry_scale(rw: Rewriter, e: EntryScale) -> None:
    rw.scale_const_entry(e.node, e.index, e.pos, rw.axis_count(e.span, e.axis), e.period)


def _split_sizes(rw: Rewriter, e: SplitSizes) -> None:
    """Sizes in the `split` attribute before opset 13, in input 1 from then on (which also
    replaces an opset-18 `num_outputs`)."""
    sizes = np.array([rw.count(p) for p in e.pieces], dtype=np.int64)
    if all(n == len(p) for n, p in zip(sizes.tolist(), e.pieces, strict=True)):
        return  # every piece whole: the sizes stand
    if rw.an.graph.opset < 13:
        rw.set_attr(e.node, "split", sizes.tolist())
    else:
        rw.remove_attr(e.node, "num_outputs")
        rw.set_input_const(e.node, 1, sizes)


def _slice_bounds(rw: Rewriter, e: SliceBounds) -> None:
    start = rw.count(e.axis_ids[:e.start])
    rw.set_const_entry(e.node, 1, e.k, start)
    rw.set_const_entry(e.node, 2, e.k, start + rw.count(e.kept))


def _gather_indices(rw: Rewriter, e: GatherIndices) -> None:
    keep = rw.kept_mask(e.axis_ids)
    renumbered = np.cumsum(keep) - 1
    rw.set_input_const(e.node, 1, renumbered[e.pos[keep[e.pos]]].astype(np.int64))


_EDITS = {AttrCount: _attr_count, EntryCount: _entry_count, EntryScale: _entry_scale,
          SplitSizes: _split_sizes, SliceBounds: _slice_bounds, GatherIndices: _gather_indices}


def apply_edit(rw: Rewriter, edit: Edit) -> None:
    """Interpret one edit record (graphprune.edits) on the model being rewritten."""
    fn = _EDITS.get(type(edit))
    if fn is None:
        raise RewriteError(f"no rewrite for edit {type(edit).__name__} of "
                           f"{rw.an.graph.node_name(edit.node)}")
    fn(rw, edit)


def _copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose graph has no initializers yet: copying the weights that the
    rewrite replaces anyway costs as much as the rest of it."""
    out = onnx.ModelProto()
    if len(unknown_fields.UnknownFieldSet(model)) or len(
            unknown_fields.UnknownFieldSet(model.graph)):
        out.CopyFrom(model)  # fields this onnx does not know survive only a whole copy
        del out.graph.initializer[:]
        return out
    copy_fields(model, out, skip={"graph"})
    copy_fields(model.graph, out.graph, skip={"initializer"})
    return out


def store(dst: onnx.TensorProto, value: np.ndarray, spill: Spill | None = None) -> None:
    """Give initializer `dst` the value `value` (same name), as the rewrite writes its own:
    large values go to `spill`'s file and are referred to there. For passes that change
    weights in the original's shape (recovery) on their own copy of the model."""
    value = spill.put(value) if spill is not None else value
    _fill_tensor(dst, dst, value if _mapped_file(value) else np.ascontiguousarray(value))


def _fill_tensor(dst: onnx.TensorProto, src: onnx.TensorProto | None, value: np.ndarray,
                 name: str | None = None) -> None:
    """`dst` := the tensor numpy_helper.from_array(value, name) makes (the name of `src` by
    default), written in place: plain numeric arrays on a little-endian machine skip from_array's
    copies."""
    name = name if name is not None else src.name
    dtype = _PLAIN.get(value.dtype)
    where = _mapped_file(value)
    if where is not None and dtype is not None:  # refer to the bytes where they lie
        dst.Clear()
        dst.name = name
        dst.data_type = dtype
        dst.dims.extend(value.shape)
        dst.data_location = onnx.TensorProto.EXTERNAL
        for key, v in (("location", os.path.basename(where[0])), ("offset", where[1]),
                       ("length", value.nbytes), (EXTERNAL_PATH, where[0])):
            dst.external_data.add(key=key, value=str(v))
        return
    if dtype is None or sys.byteorder != "little":
        dst.CopyFrom(numpy_helper.from_array(value, name))
        return
    dst.Clear()
    dst.name = name
    dst.data_type = dtype
    dst.dims.extend(value.shape)
    dst.raw_data = value.tobytes()


_PLAIN = {np.dtype(t): onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t))
          for t in (np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64,
                    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}


def _same_value(old: np.ndarray | None, new: np.ndarray) -> bool:
    return (old is not None and old.shape == new.shape and old.dtype == new.dtype
            and np.array_equal(old, new))


def _digest(value: np.ndarray) -> bytes:
    return hashlib.blake2b(value.tobytes(), digest_size=16).digest() + str(
        (value.dtype, value.shape)).encode()


def _np_dtype(elem: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))


def _by_use(members: list[Member], roles=("source", "sink", "param")):
    uses: dict[tuple[int, int], list[Span]] = {}
    for m in members:
        if m.role in roles:
            uses.setdefault((m.node, m.index), []).append(m.span)
    return uses


def _unique(base: str, taken: set[str]) -> str:
    k = 0
    while f"{base}{k}" in taken:
        k += 1
    return f"{base}{k}"


def _live(g: onnx.GraphProto, keep: set[tuple[str, ...]] | frozenset = frozenset()):
    """Nodes that feed a graph output (or whose outputs are in `keep`), in order, and every
    name they or the graph outputs read."""
    needed = {o.name for o in g.output}
    live = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output if o) or tuple(node.output) in keep:
            live.append(node)
            needed.update(i for i in node.input if i)
            needed.update(subgraph_references(node))
    return live[::-1], needed


def _unused(g: onnx.GraphProto) -> tuple[set[tuple[str, ...]], set[str]]:
    """What nothing read in the original: its dead nodes (by outputs) and initializers."""
    live, needed = _live(g)
    live_keys = {tuple(n.output) for n in live}
    return ({tuple(n.output) for n in g.node} - live_keys,
            {t.name for t in g.initializer} - needed)


def _remove_dead(model: onnx.ModelProto, unused_before=(frozenset(), frozenset())) -> None:
    """Drop nodes and initializers nothing reads any more (old weights replaced by clones).
    What nothing read in the original (`unused_before`) stays: not ours to clean up."""
    g = model.graph
    nodes_before, inits_before = unused_before
    kept, needed = _live(g, nodes_before)
    if len(kept) != len(g.node):
        del g.node[:]
        g.node.extend(kept)
    dead = [t for t in g.initializer if t.name not in needed and t.name not in inits_before]
    for t in dead:
        g.initializer.remove(t)
    _sync_weight_inputs(model, {t.name for t in dead})


def _sync_weight_inputs(model: onnx.ModelProto, dropped: set[str]) -> None:
    """Initializers also listed as graph inputs (old exporters; required before IR 4) keep
    their entries true: new dims, dropped weights unlisted, clones listed when required."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for vi in [i for i in g.input if i.name in dropped]:
        g.input.remove(vi)
    for vi in g.input:
        if vi.name in inits:
            t = inits[vi.name]
            vi.type.CopyFrom(helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    if model.ir_version < 4:
        listed = {i.name for i in g.input}
        g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in g.initializer if t.name not in listed)


IoChanges = dict[str, dict[int, np.ndarray]]
"""Graph input/output name -> axis -> keep mask, for the interfaces that shrink."""


def io_changes(an: Analysis, gone: np.ndarray) -> IoChanges:
    """Which positions of which graph inputs and outputs survive (allow_io_change): their
    spans' kept positions; `gone` marks removed slots (per slot id, as Rewriter.gone)."""
    graph = an.graph
    out: IoChanges = {}
    for name in dict.fromkeys([*graph.inputs, *graph.outputs]):
        for span in an.spans.get(name, []):
            keep = ~gone[span.ids]
            if keep.all():
                continue
            if not an.io:
                raise RewriteError(f"units of graph input/output '{name}' were removed")
            masks = rectangle(keep)
            if masks is None:
                raise RewriteError(f"units of '{name}' on axes {span.axes} are no rectangle")
            axes = out.setdefault(name, {})
            for a, m in zip(span.axes, masks, strict=True):
                axes[a] = axes[a] & m if a in axes else m
    return out


def rectangle(keep: np.ndarray) -> list[np.ndarray] | None:
    """Per-axis keep masks whose outer product is `keep`, or None when it is no product
    (what is removed must be whole rows along every axis for a dense slice)."""
    masks = [keep.any(axis=tuple(j for j in range(keep.ndim) if j != k))
             for k in range(keep.ndim)]
    product = masks[0]
    for m in masks[1:]:
        product = np.multiply.outer(product, m)
    return masks if np.array_equal(product, keep) else None


def removed_io(an: Analysis, removed: np.ndarray) -> IoChanges:
    """io_changes for `removed` (per root, as the pipeline holds it)."""
    return io_changes(an, removed[an.roots]) if an.io else {}


def _resize_interface(model: onnx.ModelProto, changes: IoChanges) -> None:
    """Declared shapes of shrunk graph inputs/outputs: the static dims take the kept count."""
    for vi in (*model.graph.input, *model.graph.output):
        for axis, keep in changes.get(vi.name, {}).items():
            dims = vi.type.tensor_type.shape.dim
            if axis >= len(dims) or dims[axis].dim_value != len(keep):
                raise RewriteError(f"'{vi.name}' has no static size {len(keep)} on axis {axis}")
            dims[axis].dim_value = int(keep.sum())


def prune_model(model: onnx.ModelProto, an: Analysis, removed: np.ndarray,
                spill: Spill | None = None) -> onnx.ModelProto:
    return Rewriter(model, an, removed, spill=spill).prune()


def masked_model(model: onnx.ModelProto, an: Analysis, removed: np.ndarray) -> onnx.ModelProto:
    return Rewriter(model, an, removed).mask()


def mask_overrides(model: onnx.ModelProto, an: Analysis, removed: np.ndarray,
                   spill: Spill | None = None) -> dict[str, np.ndarray] | None:
    return Rewriter(model, an, removed, copy=False, spill=spill).mask_overrides()
