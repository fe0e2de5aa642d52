"""Parameter and MAC counts, from the graph alone (weights' dims and inferred shapes)."""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import ops
from .errors import GraphpruneError
from .ir import Graph, attr, strip_weights

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}



def count_params(model: onnx.ModelProto) -> int:
    """Elements of floating-point initializers and Constant nodes (weights, not shapes).

    Left out: scalars (formula constants such as GELU's 0.5 that one exporter writes once
    and another once per use) and tensors used only as settings (Resize scales)."""
    settings = _used_only_as_settings(model)
    n = sum(_size(t) for t in model.graph.initializer
            if t.data_type in FLOAT_TYPES and t.name not in settings)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] not in settings:
            t = attr(node, "value")
            if t is not None and t.data_type in FLOAT_TYPES:
                n += _size(t)
    return n


def _used_only_as_settings(model: onnx.ModelProto) -> set[str]:
    uses: dict[str, list[bool]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append(i in ops.traits(node.domain, node.op_type).settings)
    return {name for name, flags in uses.items() if all(flags)}


def _size(t: onnx.TensorProto) -> int:
    n = math.prod(t.dims)
    return n if n > 1 else 0


def count_macs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> int:
    """Multiply-accumulates at the given input shapes, of every op whose rule declares a
    MAC formula (Conv, ConvTranspose, Gemm, MatMul)."""
    return sum(node_macs(model, feeds))


def node_macs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[int]:
    """MACs of each node at the given input shapes (all 0 for a graph we cannot infer:
    MACs are informative)."""
    light = strip_weights(model)
    for vi in light.graph.input:
        if vi.name in feeds:
            dims = vi.type.tensor_type.shape.dim
            for d, n in zip(dims, feeds[vi.name].shape, strict=False):
                d.Clear()
                d.dim_value = int(n)
    del light.graph.value_info[:]
    try:
        graph = Graph(light)
    except GraphpruneError:
        return [0] * len(model.graph.node)
    shapes = {k: [d if isinstance(d, int) else 0 for d in v] for k, v in graph.shapes.items()}
    return [_node_macs(n, shapes) for n in model.graph.node]


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    formula = ops.traits(node.domain, node.op_type).macs
    return formula(node, shapes) if formula is not None else 0
