"""Which weights `sparsify` may zero, and how each one's axes read.

A layer is a MatMul, Gemm or Conv node with a constant weight input and a data input. Its
weight is seen as a matrix of rows (output features) × reduction, N:M groups running along
the input channels (`sparse_masks`); where they lie depends on the op:

| op                      | weight            | rows      | input channels (K) |
|-------------------------|-------------------|-----------|--------------------|
| MatMul(x, W)            | W [K, N]          | axis 1    | axis 0             |
| MatMul(W, x)            | W [M, K]          | axis 0    | axis 1             |
| Gemm(x, B), transB=0    | B [K, N]          | axis 1    | axis 0             |
| Gemm(x, B), transB=1    | B [N, K]          | axis 0    | axis 1             |
| Conv(x, W), any groups  | W [O, C/g, k...]  | axis 0    | axis 1 (each tap)  |

Kinds (`--scope`): `linear` (MatMul, Gemm), `conv`, and `head`, the final layers, after
which no other layer comes on any path to an output (a classifier, an LM head): left dense
by default, as SparseGPT and Wanda leave the LM head. Biases, normalisation parameters and
embedding tables (Gather) are never sparsified: they have no reduction axis to group along
and hold few of the weights.

The weight's values may come from an initializer or a Constant node directly or through
layout ops (Transpose, Reshape, ... that the graph view folds); sparsified values go back to
that source through the traced index of every element. Skipped, with the reason listed: a
source that another node reads too (tied weights), a layout that repeats elements, a
weight computed by other ops (DequantizeLinear), non-float types, rank < 2 weights, layers
matching --protect, and, for N:M, weights whose input-channel count is not a multiple of M.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphprune import ops
from graphprune.ir import Graph, attr

from .sparse_masks import Pattern, channels, fits

KINDS = ("linear", "conv", "head")
DEFAULT_KINDS = ("linear", "conv")
LAYER_OPS = ("MatMul", "Gemm", "Conv")
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass
class Layer:
    """One weight to sparsify: node `node` reads it at input `index` from `source` (an
    initializer or a Constant node's output); `where` gives, per weight element, its flat
    index in the source (None: the weight is the source as stored)."""

    node: int
    name: str
    op: str
    kind: str
    weight: str
    index: int
    source: str
    shape: tuple[int, ...]
    row_axis: int
    k_axis: int
    x: str
    x_axis: int
    """The data input and its channel axis (negative: from the end), the one contracted
    with the weight's input channels."""
    groups: int = 1
    where: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def channels(self) -> int:
        return channels(self.shape, self.k_axis)

    def describe(self) -> dict:
        return {"node": self.name, "weight": self.source, "op": self.op, "kind": self.kind,
                "shape": list(self.shape), "input_axis": self.k_axis % len(self.shape)}


@dataclass
class Skipped:
    name: str
    weight: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.name, "weight": self.weight, "reason": self.reason}


@dataclass
class Found:
    layers: list[Layer]
    skipped: list[Skipped]


def find_layers(graph: Graph, kinds: tuple[str, ...] = DEFAULT_KINDS,
                pattern: Pattern | None = None, protect: str | None = None,
                only: set[str] | None = None) -> Found:
    """The layers to sparsify in graph order, and those left dense with the reason. `only`
    (node names, a plan's layers) restricts the search to them."""
    data = dynamic_tensors(graph)
    heads = final_layers(graph, data)
    layers, skipped = [], []
    for i, node in graph.iter_nodes():
        name = graph.node_name(i)
        if only is not None and name not in only:
            continue
        if node.op_type not in LAYER_OPS or node.domain not in ("", "ai.onnx"):
            weight = _other_weight(graph, node, data)
            if weight:  # a weight-consuming op without a rule here: dense, and said so
                skipped.append(Skipped(name, weight, f"no sparsify rule for {node.op_type}"))
            continue
        found = _layer(graph, i, node, data)
        if found is None:
            continue  # a product of two data tensors (attention): no weight
        if isinstance(found, Skipped):
            skipped.append(found)
            continue
        found.kind = "head" if i in heads else found.kind
        why = _excluded(found, kinds, pattern, protect)
        if why:
            skipped.append(Skipped(name, found.source, why))
        else:
            layers.append(found)
    return Found(layers, skipped)


def _excluded(layer: Layer, kinds: tuple[str, ...], pattern: Pattern | None,
              protect: str | None) -> str | None:
    if layer.kind not in kinds:
        return (f"kind {layer.kind} is outside the scope" + (
            " (final layer: add 'head' to --scope)" if layer.kind == "head" else ""))
    if protect and (re.search(protect, layer.name) or re.search(protect, layer.source)):
        return "protected by --protect"
    if pattern is not None and not fits(layer.shape, layer.k_axis, pattern):
        return (f"{layer.channels} input channels are not a multiple of {pattern.m} "
                f"({pattern.name} needs whole groups)")
    return None


def _other_weight(graph: Graph, node: onnx.NodeProto, data: set[str]) -> str | None:
    """The constant float weight (rank >= 2) of a contraction op sparsify has no rule for
    (ConvTranspose, Einsum, contrib MatMuls), when it also reads data."""
    if node.op_type not in ("ConvTranspose", "Einsum", "FusedMatMul", "MatMul", "Gemm",
                            "Conv", "QLinearMatMul", "MatMulInteger"):
        return None
    if not any(x in data for x in node.input):
        return None
    for x in node.input:
        if x and x not in data and graph.is_const(x):
            shape = graph.shape(x)
            if shape is not None and len(shape) >= 2:
                return x
    return None


# -- one node ---------------------------------------------------------------------------------
def _layer(graph: Graph, i: int, node: onnx.NodeProto, data: set[str]) -> Layer | Skipped | None:
    slots = _weight_slot(graph, node, data)
    if slots is None:
        return None
    if isinstance(slots, str):
        return Skipped(graph.node_name(i), "", slots)
    w_index, x_index = slots
    wname = node.input[w_index]
    value = graph.const(wname)
    name = graph.node_name(i)
    if value is None:
        p = graph.producer.get(wname)
        op = graph.nodes[p].op_type if p is not None else "?"
        return Skipped(name, wname, f"weight computed by {op}, not stored")
    if graph.dtypes.get(wname, _dtype(graph, wname)) not in FLOATS:
        return Skipped(name, wname, f"weight type {value.dtype} is not a float type")
    if value.ndim < 2:
        return Skipped(name, wname, f"weight of rank {value.ndim}")
    traced = trace(graph, wname)
    if isinstance(traced, str):
        return Skipped(name, wname, traced)
    source, where = traced
    layout = _layout(node, w_index, value.ndim)
    if isinstance(layout, str):
        return Skipped(name, source, layout)
    row_axis, k_axis, x_axis, kind = layout
    return Layer(i, name, node.op_type, kind, wname, w_index, source, tuple(value.shape),
                 row_axis, k_axis, node.input[x_index], x_axis,
                 int(attr(node, "group", 1)) if node.op_type == "Conv" else 1, where)


def _weight_slot(graph: Graph, node: onnx.NodeProto,
                 data: set[str]) -> tuple[int, int] | str | None:
    """(weight input, data input) of a layer node; None when both are data (attention's
    products); a reason when both are constant."""
    a, b = (node.input[k] if k < len(node.input) else "" for k in (0, 1))
    if a in data and b in data:
        return None
    if a not in data and b not in data:
        return "both inputs are constant (a product left unfolded)"
    if node.op_type == "MatMul":
        return (1, 0) if a in data else (0, 1)
    if a not in data:
        return f"{node.op_type} with a constant first input"
    return 1, 0


def _layout(node: onnx.NodeProto, w_index: int, ndim: int) -> tuple[int, int, int, str] | str:
    """(row axis, input-channel axis, data's channel axis, kind) of the weight."""
    if node.op_type == "Conv":
        return 0, 1, 1, "conv"
    if ndim != 2:
        return f"{node.op_type} weight of rank {ndim} (a batched product)"
    if node.op_type == "MatMul":
        return (1, 0, -1, "linear") if w_index == 1 else (0, 1, -2, "linear")
    trans_b = int(attr(node, "transB", 0))
    x_axis = 0 if int(attr(node, "transA", 0)) else 1
    return (0, 1, x_axis, "linear") if trans_b else (1, 0, x_axis, "linear")


def _dtype(graph: Graph, name: str) -> int:
    t = graph.initializers.get(name)
    if t is not None:
        return t.data_type
    value = graph.const(name)
    return onnx.helper.np_dtype_to_tensor_dtype(value.dtype) if value is not None else 0


# -- where the values live --------------------------------------------------------------------
def trace(graph: Graph, name: str) -> tuple[str, np.ndarray | None] | str:
    """(source, flat index of each element in it) of a constant read through layout ops, or
    why its values cannot be written back: a source read elsewhere too, an op that repeats
    elements (each must come from one place, and each place feed one element)."""
    chain: list[tuple[onnx.NodeProto, str]] = []
    while name not in graph.initializers:
        p = graph.producer.get(name)
        if p is None:
            return f"'{name}' has no source"
        node = graph.nodes[p]
        if node.op_type == "Constant":
            break
        if ops.traits(node.domain, node.op_type).fold is None:
            return f"weight computed by {node.op_type}, not stored"
        chain.append((node, name))
        name = node.input[0]
    path = [name, *(out for _, out in reversed(chain))]
    for t in path:  # each tensor on the way read once: by the next op, the last by the layer
        if t in graph.outputs:
            return f"'{t}' is also a graph output"
        uses = graph.uses(t)
        if len(uses) != 1:
            others = [graph.node_name(u.node) for u in uses[1:]]
            return (f"weight '{t}' is shared with {others[0] if others else 'a subgraph'} "
                    "(tied weights stay dense)")
    if not chain:
        return name, None
    value = graph.const(name)
    index = np.arange(value.size, dtype=np.int64).reshape(value.shape)
    for node, out in reversed(chain):
        args = [index, *(graph.const(n) for n in node.input[1:])]
        index = ops.traits(node.domain, node.op_type).fold(
            node, args, list(node.output).index(out), graph.opset)
        if index is None:
            return f"weight laid out by {node.op_type} in a way that cannot be traced"
    index = np.asarray(index)
    if len(np.unique(index)) != index.size:
        return f"weight's layout repeats elements of '{name}'"
    return name, index


# -- graph structure --------------------------------------------------------------------------
def dynamic_tensors(graph: Graph) -> set[str]:
    """Tensors that depend on a graph input (the rest are constants)."""
    data = set(graph.inputs)
    for _, node in graph.iter_nodes():
        if any(x in data for x in node.input if x):
            data.update(o for o in node.output if o)
    return data


def final_layers(graph: Graph, data: set[str]) -> set[int]:
    """Layer nodes after which no other layer node comes: nothing downstream of them reads a
    constant weight through MatMul, Gemm or Conv (classifiers, LM heads)."""
    def is_layer(i: int) -> bool:
        node = graph.nodes[i]
        return (node.op_type in LAYER_OPS and node.domain in ("", "ai.onnx")
                and any(x and x not in data for x in node.input[:2]))

    later = [False] * len(graph.nodes)  # some layer lies downstream of node i's outputs
    for i in range(len(graph.nodes) - 1, -1, -1):
        later[i] = any(u.node >= 0 and (is_layer(u.node) or later[u.node])
                       for o in graph.nodes[i].output if o for u in graph.uses(o))
    return {i for i in range(len(graph.nodes)) if is_layer(i) and not later[i]}
