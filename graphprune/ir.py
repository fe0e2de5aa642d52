"""A thin, read-mostly view of an ONNX graph for analysis and rewriting.

We work on the ModelProto directly (no import/export round trip), so opset imports, metadata,
functions, names and external-data references survive untouched. The view adds what the
analysis needs: producers, copies of use lists, constant values and inferred shapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from . import ops
from .errors import GraphError

Dim = int | str | None
"""A dimension: an int when static, a symbol name when dynamic, None when unknown."""

EXTERNAL_PATH = "graphprune:path"
"""External-data key that `io.attach_external_data` adds to a tensor whose bytes were checked
and are read on demand: the absolute path of its data file (the `location` stays as the input
file wrote it). Never written out: graphprune's writer copies such tensors' bytes."""
CACHE_ELEMENTS = 1 << 16
"""Constants up to this many elements are kept once computed (shape values, small tables);
larger ones (weights) are read again, from memory-mapped external data, when asked for."""


@dataclass(frozen=True)
class Use:
    """One consumption of a tensor: node index and input slot."""

    node: int
    index: int


class Graph:
    """Index over `model.graph`; node order is the (topological) order of the file."""

    def __init__(self, model: onnx.ModelProto, *, infer: bool = True) -> None:
        self.model = model
        self.g = model.graph
        self.opset = _default_opset(model)
        self.nodes: list[onnx.NodeProto] = list(self.g.node)
        self.initializers = {t.name: t for t in self.g.initializer}
        self.inputs = [i.name for i in self.g.input if i.name not in self.initializers]
        self.outputs = [o.name for o in self.g.output]
        self.producer: dict[str, int] = {}
        self._uses: dict[str, list[Use]] = {}
        self._const_cache: dict[str, np.ndarray | None] = {}
        for i, node in enumerate(self.nodes):
            for j, name in enumerate(node.input):
                if name:
                    self._uses.setdefault(name, []).append(Use(i, j))
            for name in node.output:
                if name:
                    if name in self.producer:
                        raise GraphError(f"tensor '{name}' is produced by two nodes")
                    self.producer[name] = i
            for name in sorted(subgraph_references(node)):  # a set: fix the order
                self._uses.setdefault(name, []).append(Use(i, -1))
        self._toposort_check()
        self.shapes: dict[str, list[Dim]] = {}
        self.dtypes: dict[str, int] = {}
        if infer:
            self._infer_with_known_shapes()
        else:
            self._collect_shapes(model)

    # -- structure -------------------------------------------------------------------------
    def uses(self, name: str) -> list[Use]:
        """A copy, so callers may mutate the graph while iterating."""
        return list(self._uses.get(name, ()))

    def node_name(self, i: int) -> str:
        node = self.nodes[i]
        return node.name or f"{node.op_type}_{i}"

    def iter_nodes(self) -> Iterator[tuple[int, onnx.NodeProto]]:
        return enumerate(self.nodes)

    # -- values ----------------------------------------------------------------------------
    def is_initializer(self, name: str) -> bool:
        return name in self.initializers

    def const(self, name: str) -> np.ndarray | None:
        """The value of a tensor computable from constants alone through layout ops, else None."""
        if not name:
            return None
        if name in self._const_cache:
            return self._const_cache[name]
        value = self._eval_const(name)
        if value is None or value.size <= CACHE_ELEMENTS or not _mapped(value):
            self._const_cache[name] = value
        return value

    def is_const(self, name: str) -> bool:
        """Whether `const(name)` has a value, decided without reading large weights."""
        if not name:
            return False
        if name in self._const_cache:
            return self._const_cache[name] is not None
        if name in self.initializers:
            t = self.initializers[name]
            return external_path(t) is not None or (
                t.data_location != onnx.TensorProto.EXTERNAL and not _stripped(t))
        return self.const(name) is not None

    def loaded_initializers(self) -> dict[str, np.ndarray]:
        """Initializer values read so far, as numpy_helper.to_array gave them."""
        return {k: v for k, v in self._const_cache.items()
                if v is not None and k in self.initializers}

    def const_root(self, name: str) -> str | None:
        """The initializer or Constant output a foldable constant comes from (for reports)."""
        while name not in self.initializers:
            p = self.producer.get(name)
            if p is None:
                return None
            node = self.nodes[p]
            if node.op_type == "Constant":
                return name
            if not folds(node):
                return None
            name = node.input[0]
        return name

    def _eval_const(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            t = self.initializers[name]
            if external_path(t) is not None:
                return external_array(t)
            if _stripped(t):
                return None  # a weight-free copy (shape inference, MAC counting)
            return numpy_helper.to_array(t)
        p = self.producer.get(name)
        if p is None:
            return None
        node = self.nodes[p]
        if node.op_type == "Constant":
            return _constant_node_value(node)
        fold = ops.traits(node.domain, node.op_type).fold
        if fold is None:
            return None
        x = self.const(node.input[0])
        if x is None:
            return None
        args = [x, *(self.const(n) for n in node.input[1:])]
        return fold(node, args, list(node.output).index(name), self.opset)

    # -- shapes ----------------------------------------------------------------------------
    def shape(self, name: str) -> list[Dim] | None:
        if name in self.shapes:
            return self.shapes[name]
        c = self.const(name)
        return None if c is None else list(c.shape)

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def _infer_with_known_shapes(self, rounds: int = 64) -> None:
        """ONNX inference loses dims behind shape arithmetic it cannot follow (Div of a Shape
        entry); we fill Reshape/Slice/Expand outputs from statically known shape values and
        infer again, until nothing new is learned. What is still unknown then goes through
        onnxruntime's symbolic inference."""
        light = strip_weights(self.model)
        del light.graph.value_info[:]
        for out in light.graph.output:  # a declared output shape may be wrong (onnxruntime
            out.type.tensor_type.ClearField("shape")  # only warns); inference must not trust it
        all_hints: dict[str, list] = {}
        for _ in range(rounds):
            inferred = _infer(light)
            self.shapes.clear()
            self._collect_shapes(inferred)
            self.__dict__.pop("_known_cache", None)
            hints = {}
            for node in self.nodes:
                hint = ops.traits(node.domain, node.op_type).dims
                old = self.shapes.get(node.output[0]) if node.output else None
                if hint is None or (old is not None and not any(_vague(d) for d in old)):
                    continue
                new = [None if _vague(d) else d for d in (hint(self, node) or [])]
                if (any(isinstance(d, int) for d in new) and all_hints.get(node.output[0]) != new
                        and _more_known(new, old)):
                    hints[node.output[0]] = new
            if not hints:
                break
            all_hints.update(hints)
            del light.graph.value_info[:]
            for name, dims in all_hints.items():
                light.graph.value_info.append(onnx.helper.make_tensor_value_info(
                    name, self.dtypes.get(name, onnx.TensorProto.FLOAT), dims))
        if any(_vague(d) for dims in self.shapes.values() for d in dims):
            self._symbolic_refine(light)

    def _symbolic_refine(self, light: onnx.ModelProto) -> None:
        """onnxruntime's sympy-based inference follows shape arithmetic ONNX's inference
        loses (a causal mask's ConstantOfShape, RoPE's broadcasts). It is slower to import, so
        it only runs when dims are still unknown, and fills in only what it knows better."""
        try:
            inferred = _symbolic_inference().infer_shapes(light, auto_merge=True)
        except Exception:  # noqa: BLE001 - best effort: unknown dims freeze units, never guess
            return
        if inferred is None:
            return
        for vi in [*inferred.graph.value_info, *inferred.graph.output]:
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
                continue
            new = [_dim(d) for d in t.shape.dim]
            old = self.shapes.get(vi.name)
            if old is None or (len(old) == len(new) and any(_vague(d) for d in old)):
                self.shapes[vi.name] = [n if _vague(o) else o for o, n in zip(old, new, strict=True)
                                        ] if old is not None else new
        self.__dict__.pop("_known_cache", None)

    def _collect_shapes(self, model: onnx.ModelProto) -> None:
        vis = [*model.graph.value_info, *model.graph.input, *model.graph.output]
        for vi in vis:
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                continue
            self.dtypes[vi.name] = t.elem_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [_dim(d) for d in t.shape.dim]
        for name, init in self.initializers.items():
            self.shapes[name] = list(init.dims)
            self.dtypes[name] = init.data_type

    def _toposort_check(self) -> None:
        known = set(self.initializers) | {i.name for i in self.g.input} | {""}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                if name not in known:
                    raise GraphError(
                        f"node {self.node_name(i)} ({node.op_type}) reads '{name}' before it "
                        "is produced (graph is not topologically sorted or the input is missing)"
                    )
            known.update(node.output)


def _symbolic_inference():
    """onnxruntime's SymbolicShapeInference, loaded from its file: importing it through
    `onnxruntime.tools` would import torch (seconds) when torch is installed."""
    import importlib.util
    import sys

    name = "_graphprune_symbolic_shape_infer"
    if name not in sys.modules:
        base = importlib.util.find_spec("onnxruntime").submodule_search_locations[0]
        spec = importlib.util.spec_from_file_location(name, f"{base}/tools/symbolic_shape_infer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.onnx = _NoSaveOnnx()  # it saves "sym_shape_infer_temp.onnx" into the cwd
        cls = module.SymbolicShapeInference
        if hasattr(cls, "_add_suggested_merge"):  # our own copy of the module: patch it alone
            cls._add_suggested_merge = _ordered_merge(module)
        sys.modules[name] = module
    return sys.modules[name].SymbolicShapeInference


def _ordered_merge(module):
    """SymbolicShapeInference._add_suggested_merge with the surviving symbol chosen in a fixed
    order. onnxruntime's version iterates a set of names, so which of two merged symbols
    survived (`s19 + s70` or `s70 + s92` for a dim downstream) changed with PYTHONHASHSEED,
    and with it what the analysis sees. The same preference (a literal, then a graph input's
    symbol, then a plain symbol, then the shortest expression); ties go to the symbol of the
    earliest graph input, then the shortest name, then the name."""
    is_literal, sympy = module.is_literal, module.sympy

    def merge(self, symbols, apply=False) -> None:
        merged = self.suggested_merge_
        names = list(dict.fromkeys(merged.get(s, s) for s in symbols))
        first: dict[str, int] = {}
        for vi in self.out_mp_.graph.input:
            if vi.type.HasField("tensor_type"):
                for d in vi.type.tensor_type.shape.dim:
                    if d.dim_param:
                        first.setdefault(d.dim_param, len(first))

        def preference(s) -> tuple:
            if is_literal(s):
                kind = 0
            elif s in self.input_symbols_:
                kind = 1
            elif type(self.symbolic_dims_[s]) is sympy.Symbol:
                kind = 2
            else:
                kind = 3
            text = str(s)
            return kind, first.get(text, len(first)), len(text), text

        target = min(names, key=preference)
        for s in names:
            if s == target:
                continue
            if is_literal(s):  # two literals: they must agree (onnxruntime asserts it too)
                assert is_literal(target) and int(s) == int(target)
                continue
            merged[s] = int(target) if is_literal(target) else target
            for k in [k for k, v in merged.items() if v == s]:
                merged[k] = merged[s]
        if apply and self.auto_merge_:
            self._apply_suggested_merge()

    return merge


class _NoSaveOnnx:
    """The onnx module, minus saving: the symbolic inference writes a debugging copy of
    the model into the working directory when some shapes stay unknown."""

    def __getattr__(self, name: str):
        return getattr(onnx, name)

    @staticmethod
    def save_model(*_args, **_kwargs) -> None:
        return None


def _more_known(new: list[Dim], old: list[Dim] | None) -> bool:
    if old is None or len(old) != len(new):
        return True
    return any(_vague(o) and not _vague(n) for o, n in zip(old, new, strict=True))


def _vague(d: Dim) -> bool:
    return d is None or (isinstance(d, str) and d.startswith("unk__"))


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise GraphError("model has no default-domain opset import")


def _dim(d: onnx.TensorShapeProto.Dimension) -> Dim:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    if d.HasField("dim_param"):
        return d.dim_param
    return None


def value_dims(value: onnx.ValueInfoProto) -> list[Dim] | None:
    """Declared dims of a graph value: an int where static, the symbol (None when unnamed)
    where not; None when the value declares no shape. A declared size below 1 is dynamic:
    paddle2onnx writes `dim_value: -1` for its dynamic axes."""
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [(d.dim_value if d.dim_value > 0 else None) if d.HasField("dim_value")
            else (d.dim_param or None) for d in t.shape.dim]


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Symbolic shape inference; weights are stripped first so 2 GB+ models stay cheap."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference is best effort; rules freeze on unknowns
        raise GraphError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from exc


def strip_weights(model: onnx.ModelProto, keep_elements: int = 256) -> onnx.ModelProto:
    """A copy for shape inference, built without copying the weights: large initializers
    become graph inputs of the same dtype and dims (an initializer without its data would be
    read, and fail, by onnxruntime's symbolic inference)."""
    out = onnx.ModelProto()
    out.ir_version = model.ir_version
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    g, h = model.graph, out.graph
    h.name = g.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(h, field).extend(getattr(g, field))
    declared = {i.name for i in g.input}
    for t in g.initializer:
        if math.prod(t.dims) <= keep_elements and t.data_location != onnx.TensorProto.EXTERNAL:
            h.initializer.append(t)
        elif t.name not in declared:
            h.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    return out


def external_path(t: onnx.TensorProto) -> str | None:
    """The checked data file of a tensor served from external data (see EXTERNAL_PATH)."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return next((e.value for e in t.external_data if e.key == EXTERNAL_PATH), None)


def external_range(t: onnx.TensorProto) -> tuple[str, int, int]:
    """(data file, offset, length) of a tensor served from external data."""
    info = {e.key: e.value for e in t.external_data}
    return info[EXTERNAL_PATH], int(info.get("offset", 0)), int(info["length"])


def external_array(t: onnx.TensorProto) -> np.ndarray:
    """A read-only memory-mapped view of a checked external tensor's bytes (no copy: pages are
    read when touched and released with the view)."""
    path, offset, length = external_range(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(t.dims)
    if length == 0 or math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _mapped(value: np.ndarray) -> bool:
    while value is not None:
        if isinstance(value, np.memmap):
            return True
        value = value.base if isinstance(value.base, np.ndarray) else None
    return False


def _stripped(t: onnx.TensorProto) -> bool:
    if t.data_location == onnx.TensorProto.EXTERNAL or math.prod(t.dims) == 0:
        return False
    if t.HasField("raw_data"):  # (reading t.raw_data would copy the bytes just to test them)
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        return t.ByteSize() < math.prod(t.dims) * itemsize
    return not (len(t.float_data) or len(t.int64_data) or len(t.int32_data)
                or len(t.double_data) or len(t.uint64_data) or len(t.string_data))


def approx_bytes(model: onnx.ModelProto) -> int:
    """Serialized size estimate from weight dims: protobuf's ByteSize walks every byte."""
    n = 0
    for t in model.graph.initializer:
        n += math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return n + 64 * len(model.graph.node)


def subgraph_references(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names read inside If/Loop/Scan bodies: uses that no rule can see."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for sub in graphs:
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for n in sub.node:
                local.update(n.output)
            for n in sub.node:
                names.update(x for x in n.input if x and x not in local)
                names.update(x for x in subgraph_references(n) if x not in local)
            names.update(o.name for o in sub.output if o.name not in local)
    return names


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's Python value, or default."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def folds(node: onnx.NodeProto) -> bool:
    """Whether the op is layout-only over a constant data input (its rule declares `fold`):
    its output is that constant, rearranged. (Casts and DequantizeLinear are no such ops:
    folding them would change stored dtypes.)"""
    return ops.traits(node.domain, node.op_type).fold is not None


# -- folds of layout ops over constants, declared by their rules (Traits.fold) ------------------
def fold_identity(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    return args[0]


def fold_transpose(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    return np.transpose(args[0], attr(node, "perm"))


def fold_reshape(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    x, shape = args[0], args[1] if len(args) > 1 else None
    if shape is None:
        return None
    shape = [x.shape[i] if s == 0 and not attr(node, "allowzero", 0) else s
             for i, s in enumerate(shape.tolist())]
    return x.reshape(shape)


def _axes(node: onnx.NodeProto, args: list) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = args[1].tolist()
    return axes


def fold_unsqueeze(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    x, axes = args[0], _axes(node, args)
    if axes is None:
        return None
    out_rank = x.ndim + len(axes)
    for a in sorted(a % out_rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def fold_squeeze(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    x, axes = args[0], _axes(node, args)
    return np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))


def fold_gather(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    x, idx = args[0], args[1] if len(args) > 1 else None
    if idx is None or not np.issubdtype(idx.dtype, np.integer):
        return None
    axis = int(attr(node, "axis", 0)) % max(x.ndim, 1)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[axis]):
        return None
    return np.take(x, idx, axis=axis)


def fold_split(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    """Output `k` of a Split of a constant (in_proj weights split into Q/K/V by an exporter)."""
    x = args[0]
    axis = int(attr(node, "axis", 0)) % x.ndim
    sizes = attr(node, "split")
    if sizes is None and len(args) > 1 and args[1] is not None:
        sizes = [int(v) for v in np.ravel(args[1])]
    n = len(node.output)
    if sizes is None:
        parts = int(attr(node, "num_outputs", n))
        step = -(-x.shape[axis] // parts)  # the last piece may be smaller (opset 18)
        sizes = [min(step, x.shape[axis] - step * i) for i in range(parts)]
    if len(sizes) != n or sum(sizes) != x.shape[axis]:
        return None
    start = sum(sizes[:k])
    return np.take(x, np.arange(start, start + sizes[k]), axis=axis)


def fold_slice(node: onnx.NodeProto, args: list, k: int, opset: int) -> np.ndarray | None:
    x, rest = args[0], args[1:]
    if opset < 10:
        starts, ends, axes = attr(node, "starts"), attr(node, "ends"), attr(node, "axes")
        steps = None
    else:
        if len(rest) < 2 or rest[0] is None or rest[1] is None:
            return None
        if any(len(rest) > j and node.input[j + 1] and rest[j] is None for j in (2, 3)):
            return None
        starts, ends = rest[0].tolist(), rest[1].tolist()
        axes = rest[2].tolist() if len(rest) > 2 and rest[2] is not None else None
        steps = rest[3].tolist() if len(rest) > 3 and rest[3] is not None else None
    if starts is None or ends is None:
        return None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if st == 0:
            return None
        index[int(a) % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(index)]
