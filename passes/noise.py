"""Float noise of the masked original: the same computation evaluated in other ways that are
exactly equal in real arithmetic, on the exact check's inputs (see validation.compare).

The pruned model and the masked original compute the same sums but not the same float
roundings: the pruned model's contractions are shorter, so onnxruntime's kernels group their
partial sums into other blocks, and may pick other kernels. That is usually far below the
static tolerance, but some outputs amplify it past it. Two sources measure how far the
reference itself moves under such changes:

- "onnxruntime optimised": every graph optimisation on (Conv with BatchNormalization and
  activations fused, NCHWc convolution kernels, MatMul+Add as Gemm, fused LayerNorm and
  attention): other kernels and other accumulation orders for the same graph.
- "split sums": every contraction against a constant float weight (Conv, ConvTranspose,
  MatMul, Gemm) computed as two contractions over complementary halves of the weight, added:
  W·x = (W⊙M)·x + (W⊙(1-M))·x exactly, the same products summed in two groups, which is what
  a shorter contraction does to a kernel's blocks. It sees what the optimiser leaves alone (a
  chain of MatMuls) and rounding that only shows when a sum crosses a rounding boundary of a
  large offset added after it (features of ~100 move by steps of 7.6e-6 or not at all).

Neither changes a weight's value (the masked zeros stay zero). Split sums hand the weights'
halves to onnxruntime as arrays, as the check does; the optimised session gets its weights
where onnxruntime's optimiser reads them (validation.session with optimize=True).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort

from graphprune import external, topology

from . import validation

OPTIMISED = "onnxruntime optimised"
SPLIT_SUMS = "split sums"

Masked = Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray] | None]]
"""Makes the masked original as (model, overrides): the model, and the masked weights that
replace its own by initializer name (None when the model itself is masked)."""

_HALVED = (np.float16, np.float32, np.float64)


def sources(masked: Masked, *, threads: int = 0) -> list[validation.NoiseSource]:
    """The two noise sources for the masked original that `masked` makes (only when one is
    evaluated: the check's happy path pays nothing); the optimised one first, being cheaper
    to run."""

    def optimised(feeds: validation.Feeds) -> list[list[np.ndarray]]:
        model, overrides = masked()
        return _run(optimised_session(model, overrides, threads=threads), feeds)

    def split(feeds: validation.Feeds) -> list[list[np.ndarray]]:
        model, overrides = masked()
        graph, values = split_sums(model, overrides)
        return _run(validation.session(graph, overrides=values, threads=threads), feeds)

    return [validation.NoiseSource(OPTIMISED, optimised),
            validation.NoiseSource(SPLIT_SUMS, split)]


def _run(sess: ort.InferenceSession, feeds: validation.Feeds) -> list[list[np.ndarray]]:
    return [sess.run(None, f) for f in feeds]


def optimised_session(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None = None,
                      *, threads: int = 0) -> ort.InferenceSession:
    """`model` (with `overrides` swapped in) in onnxruntime with every graph optimisation on
    (validation.session hands the weights over where the optimiser reads them)."""
    return validation.session(model, overrides=overrides, threads=threads, optimize=True)


def split_sums(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None = None,
               ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(graph, weights): `model` with each contraction against a constant float weight
    computed as two contractions over complementary halves of the weight, added; `weights`
    replace initializers by name (validation.session's overrides): the given overrides still
    in use and the halves (whose initializers in `graph` carry no data).

    Top-level Conv, ConvTranspose, MatMul and Gemm nodes of the default domain whose weight is
    an initializer of a float type are split; anything else is left as it is."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    given = dict(overrides or {})
    taken = ({x for n in g.node for x in (*n.input, *n.output, n.name)} | set(inits)
             | {v.name for v in (*g.input, *g.output, *g.value_info)})
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    out = external.shell(model, skip=("node", "initializer"))
    halves: dict[str, np.ndarray] = {}
    templates: dict[str, onnx.TensorProto] = {}
    for node in g.node:
        found = _contraction(node, inits, opset)
        value = None if found is None else _value(inits[node.input[found[0]]], given)
        mask = None if value is None else _half_mask(node, found[1], value)
        if mask is None:
            out.graph.node.append(node)
            continue
        index = found[0]
        pieces = []
        for part, weight in (("a", np.where(mask, value, 0)), ("b", np.where(mask, 0, value))):
            name = _fresh(f"{node.input[index]}/split_{part}", taken)
            halves[name] = np.ascontiguousarray(weight, dtype=value.dtype)
            templates[name] = inits[node.input[index]]
            half = out.graph.node.add()
            half.CopyFrom(node)
            half.name = _fresh(f"{node.name or node.output[0]}/split_{part}", taken)
            half.input[index] = name
            half.output[0] = _fresh(f"{node.output[0]}/split_{part}", taken)
            if part == "b" and node.op_type != "MatMul" and len(half.input) > 2:
                del half.input[2:]  # the bias (Conv, ConvTranspose, Gemm's C) is added once
            pieces.append(half.output[0])
        out.graph.node.add().CopyFrom(onnx.helper.make_node(
            "Add", pieces, [node.output[0]], name=_fresh(f"{node.output[0]}/split_add", taken)))
    read = _read_names(out.graph)
    for t in g.initializer:
        if read is None or t.name in read:
            out.graph.initializer.append(t)
    for name, half in halves.items():
        ref = out.graph.initializer.add()
        ref.name, ref.data_type = name, templates[name].data_type
        ref.dims.extend(half.shape)
        if sys.byteorder != "little":  # external.split serves overrides on little-endian only
            ref.raw_data = half.astype(half.dtype.newbyteorder("<")).tobytes()
    kept = {t.name for t in out.graph.initializer}
    values = {k: v for k, v in given.items() if k in kept}
    values.update(halves)
    return out, values


def _contraction(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], opset: int,
                 ) -> tuple[int, str | int] | None:
    """(input index of the constant weight, how its contraction runs: 'conv', 'convT' or the
    weight's contracted axis), or None when `node` is no contraction against a constant."""
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    ins = list(node.input)
    const = [k < len(ins) and ins[k] in inits for k in (0, 1)]
    if node.op_type in ("Conv", "ConvTranspose") and const[1] and not const[0]:
        return 1, "conv" if node.op_type == "Conv" else "convT"
    if node.op_type == "MatMul" and const[1] != const[0]:
        rank = len(inits[ins[1 if const[1] else 0]].dims)
        return (1, 0 if rank == 1 else -2) if const[1] else (0, -1)
    if node.op_type == "Gemm" and const[1] != const[0] and opset >= 11:  # C optional from 11
        attrs = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
        if const[1]:
            return 1, 1 if attrs.get("transB", 0) else 0
        return 0, 0 if attrs.get("transA", 0) else 1
    return None


def _value(t: onnx.TensorProto, given: dict[str, np.ndarray]) -> np.ndarray | None:
    """The weight's value (the override when there is one), or None when it is of no float
    type we split or its bytes are not at hand."""
    if onnx.helper.tensor_dtype_to_np_dtype(t.data_type) not in _HALVED:
        return None
    if t.name in given:
        return np.asarray(given[t.name])
    return external.value(t)


def _half_mask(node: onnx.NodeProto, how: str | int, w: np.ndarray) -> np.ndarray | None:
    """Boolean mask over `w`, broadcastable to it, that puts the first half of every output's
    summands in one contraction and the rest in the other; None when a sum has one term."""
    if how == "conv":  # [M, C/group, *kernel]: each output sums over all of axes 1..
        inner = w.shape[1:]
        n = math.prod(inner)
        return None if n < 2 else (np.arange(n) < n // 2).reshape((1, *inner))
    if how == "convT":  # [C, M/group, *kernel]: each output sums over its group's C/group rows
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        per, taps = w.shape[0] // max(group, 1), math.prod(w.shape[2:])
        n = per * taps
        if n < 2:
            return None
        index = (np.arange(w.shape[0]) % per)[:, None] * taps + np.arange(taps)[None, :]
        return (index < n // 2).reshape((w.shape[0], 1, *w.shape[2:]))
    axis = how % w.ndim
    k = w.shape[axis]
    if k < 2:
        return None
    shape = [1] * w.ndim
    shape[axis] = k
    return (np.arange(k) < k // 2).reshape(shape)


def _fresh(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _read_names(g: onnx.GraphProto) -> set[str] | None:
    """Names the graph's nodes, inputs and outputs read; None when a node has a subgraph
    (its reads of outer names are not listed as inputs: keep every initializer then)."""
    if topology.has_subgraphs(g):
        return None
    return ({x for n in g.node for x in n.input} | {v.name for v in g.input}
            | {v.name for v in g.output})
