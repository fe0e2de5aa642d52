"""Partial evaluation of small integer tensors (shape arithmetic).

Exporters compute shapes at run time: `Shape → Gather → Div → Unsqueeze → Concat` in the
TorchScript exporter, `Shape → Slice` for chunk bounds. Where the dimensions involved are
static we can know those values without running the model; dynamic ones stay unknown (NaN).
The rules use the known entries to map units through the consumer (Reshape, Slice, Split…),
and the rewrite overrides exactly those entries with the new sizes.

This module is the evaluator and a library of per-op evaluations; which op uses which is
declared with the op's rule (`shape_eval`, `dims` in graphprune.ops.Traits).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import onnx

from . import ops
from .ir import Graph, attr

MAX_ELEMENTS = 64

Known = np.ndarray
"""object array: int where known, the symbol name (str) of a dynamic dim read unchanged through
Shape, None where unknown. Arithmetic on anything but ints gives None."""


def known_value(graph: Graph, name: str) -> Known | None:
    """Known entries of a small tensor, or None if nothing about it is known."""
    cache = graph.__dict__.setdefault("_known_cache", {})
    if name not in cache:
        cache[name] = _evaluate(graph, name)
    return cache[name]


def to_ints(v: Known) -> list[int | None]:
    """Known integer entries; symbols and unknowns become None."""
    return [x if isinstance(x, int) else None for x in np.ravel(v).tolist()]


def _obj(a: np.ndarray) -> Known:
    out = np.empty(a.shape, dtype=object)
    out.ravel()[:] = [int(x) for x in np.ravel(a)]
    return out


def _lift(fn, arity: int = 2):
    """Elementwise int arithmetic over object arrays; non-ints give None."""
    def op(*xs):
        if any(not isinstance(x, int) for x in xs):
            return None
        return fn(*xs)

    return np.frompyfunc(op, arity, 1)


def _evaluate(graph: Graph, name: str) -> Known | None:
    c = graph.const(name)
    if c is not None:
        if c.size > MAX_ELEMENTS or not (np.issubdtype(c.dtype, np.integer) or c.dtype == bool):
            return None
        return _obj(c)
    p = graph.producer.get(name)
    if p is None:
        return None
    node = graph.nodes[p]
    fn = ops.traits(node.domain, node.op_type).shape_eval
    if fn is None or node.output[0] != name:
        return None
    args = [known_value(graph, i) if i else None for i in node.input]
    try:
        out = fn(graph, node, args)
    except (ValueError, IndexError, TypeError):
        return None
    if out is not None and not isinstance(out, np.ndarray):
        scalar = np.empty((), dtype=object)
        scalar[()] = out
        out = scalar
    if out is None or out.size > MAX_ELEMENTS:
        return None
    return out


# -- evaluations, declared by the rules as their op's `shape_eval` -------------------------------
def shape_of(graph: Graph, node, args) -> Known | None:
    dims = graph.shape(node.input[0])
    if dims is None:
        return None
    rank = len(dims)
    start = int(attr(node, "start", 0))
    end = attr(node, "end")
    start = max(0, start + rank if start < 0 else start)
    end = rank if end is None else min(rank, int(end) + rank if int(end) < 0 else int(end))
    out = np.empty(len(dims[start:end]), dtype=object)
    out[:] = list(dims[start:end])
    return out


def gather(graph: Graph, node, args) -> Known | None:
    data, idx = args[0], args[1]
    if data is None or idx is None or data.ndim > 1 or None in to_ints(idx):
        return None
    return np.take(data, np.array(to_ints(idx), dtype=np.int64).reshape(idx.shape),
                   axis=int(attr(node, "axis", 0)))


def slice_values(graph: Graph, node, args) -> Known | None:
    data = args[0]
    if data is None or any(a is None for a in args[1:3]):
        return None
    starts, ends = to_ints(args[1]), to_ints(args[2])
    axes = to_ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = to_ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if None in (s, e, a, st):
            return None
        index[a % data.ndim] = slice(s, e, st)
    return data[tuple(index)]


def concat(graph: Graph, node, args) -> Known | None:
    """Pieces we know nothing about still have a length: their entries stay unknown."""
    if int(attr(node, "axis", 0)) not in (0, -1):
        return None
    parts = []
    for name, a in zip(node.input, args, strict=True):
        if a is None:
            shape = graph.shape(name)
            if not shape or len(shape) != 1 or not isinstance(shape[0], int):
                return None
            a = np.array([None] * shape[0], dtype=object)
        parts.append(np.atleast_1d(a))
    return np.concatenate(parts)


def reshape_like(graph: Graph, node, args) -> Known | None:
    """Reshape/Squeeze/Unsqueeze: the entries, in the inferred output shape."""
    x = args[0]
    out = graph.shape(node.output[0])
    if x is None or out is None or any(not isinstance(d, int) for d in out):
        return None
    return x.reshape(out)


def _binary(op: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def fn(graph: Graph, node, args) -> Known | None:
        if args[0] is None or args[1] is None:
            return None
        return op(args[0], args[1])

    return fn


def arithmetic(fn: Callable[[int, int], int | None]):
    """The evaluation of an entry-wise binary int op (Add, Max…), from its int function."""
    return _binary(_lift(fn))


def trunc_div(a: int, b: int) -> int | None:
    """ONNX integer Div: truncates toward zero."""
    if b == 0:
        return None
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def mod(graph: Graph, node, args) -> Known | None:
    """Integer Mod: the sign follows the divisor (Python's %), or the dividend with fmod=1."""
    if args[0] is None or args[1] is None:
        return None
    fmod = int(attr(node, "fmod", 0))

    def one(a: int, b: int) -> int | None:
        if b == 0:
            return None
        return int(np.fmod(a, b)) if fmod else a % b

    return _lift(one)(args[0], args[1])


def identity(graph: Graph, node, args) -> Known | None:
    return args[0]


def negate(graph: Graph, node, args) -> Known | None:
    return None if args[0] is None else _lift(operator.neg, 1)(args[0])


def cast(graph: Graph, node, args) -> Known | None:
    """Only integer-to-integer casts keep values we track."""
    return args[0] if int(attr(node, "to", 1)) in INT_TYPES else None


INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)


def where(graph: Graph, node, args) -> Known | None:
    """Entry-wise select (exporters write `Where(shape == -1, 1, shape)`; our rewrite
    overrides computed shape entries with `Where(mask, values, shape)`)."""
    cond, x, y = args
    if cond is None or x is None or y is None:
        return None
    c, x, y = np.broadcast_arrays(cond, x, y)
    out = np.empty(c.shape, dtype=object)
    for i, (ci, xi, yi) in enumerate(zip(c.ravel(), x.ravel(), y.ravel(), strict=True)):
        out.ravel()[i] = None if ci is None else (xi if ci else yi)
    return out


def _equal_entry(a, b) -> int | None:
    if isinstance(a, int) and isinstance(b, int):
        return int(a == b)
    if isinstance(a, str) and isinstance(b, int) and b < 0:
        return 0  # a dimension is never negative
    if isinstance(b, str) and isinstance(a, int) and a < 0:
        return 0
    return None


equal = _binary(np.frompyfunc(_equal_entry, 2, 1))


def constant_of_shape(graph: Graph, node, args) -> Known | None:
    shape = args[0]
    if shape is None or None in to_ints(shape):
        return None
    value = attr(node, "value")
    fill = 0 if value is None else int(np.ravel(onnx.numpy_helper.to_array(value))[0])
    out = np.empty(to_ints(shape), dtype=object)
    out.fill(fill)
    return out


def transpose(graph: Graph, node, args) -> Known | None:
    return None if args[0] is None else np.transpose(args[0], attr(node, "perm"))


# -- output dims from known shape values, declared by the rules as their op's `dims` -------------
def reshape_dims(graph: Graph, node) -> list | None:
    """A Reshape's output dims from its input dims and the statically known target shape:
    ints where known, the input's symbol where a 0 copies it, None elsewhere."""
    v = known_value(graph, node.input[1]) if len(node.input) > 1 else None
    ins = graph.shape(node.input[0])
    if v is None or v.ndim != 1:
        return None
    vals = list(np.ravel(v))
    allowzero = int(attr(node, "allowzero", 0))
    dims: list = []
    for k, x in enumerate(vals):
        if isinstance(x, str):
            dims.append(x)
        elif x is None or x == -1:
            dims.append(None)
        elif x == 0 and not allowzero:
            dims.append(ins[k] if ins and k < len(ins) else None)
        else:
            dims.append(x)
    holes = [k for k, d in enumerate(dims) if d is None]
    if len(holes) == 1 and vals[holes[0]] == -1 and ins and None not in ins:
        dims[holes[0]] = _infer_minus_one(ins, [d for d in dims if d is not None])
    return dims


def _infer_minus_one(ins: list, outs: list) -> int | None:
    """Element count of `ins` over that of `outs`, symbols cancelling pairwise."""
    syms = [d for d in ins if isinstance(d, str)]
    for d in outs:
        if isinstance(d, str):
            if d not in syms:
                return None
            syms.remove(d)
    if syms:
        return None
    num = int(np.prod([d for d in ins if isinstance(d, int)]))
    den = int(np.prod([d for d in outs if isinstance(d, int)]))
    return num // den if den and num % den == 0 else None


def slice_dims(graph: Graph, node) -> list | None:
    """A Slice's output dims when its bounds are statically known."""
    ins = graph.shape(node.input[0])
    args = [known_value(graph, x) if x else None for x in node.input[1:5]]
    if ins is None or args[0] is None or args[1] is None:
        return None
    starts, ends = to_ints(args[0]), to_ints(args[1])
    axes = to_ints(args[2]) if len(args) > 2 and args[2] is not None else list(range(len(starts)))
    steps = to_ints(args[3]) if len(args) > 3 and args[3] is not None else [1] * len(starts)
    dims = list(ins)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        if a is None:
            return None
        a = a + len(ins) if a < 0 else a
        if None in (s, e, st) or not isinstance(ins[a], int):
            dims[a] = None
            continue
        dims[a] = len(range(ins[a])[slice(s, e, st)])
    return dims


def expand_dims(graph: Graph, node) -> list | None:
    """Expand's output: the input broadcast against the statically known shape."""
    ins = graph.shape(node.input[0])
    v = known_value(graph, node.input[1])
    if ins is None or v is None or v.ndim != 1:
        return None
    shape = list(np.ravel(v))
    rank = max(len(ins), len(shape))
    a = [1] * (rank - len(ins)) + list(ins)
    b = [1] * (rank - len(shape)) + shape
    return [_broadcast_dim(x, y) for x, y in zip(a, b, strict=True)]


def _broadcast_dim(x, y):
    if x == 1:
        return y
    if y == 1 or y == x or isinstance(x, int):
        return x
    if isinstance(y, str) and (x is None or x.startswith("unk__")):
        return y  # the shape names the dim that inference lost
    return None


def constant_of_shape_dims(graph: Graph, node) -> list | None:
    v = known_value(graph, node.input[0])
    return None if v is None or v.ndim != 1 else list(v)


def range_dims(graph: Graph, node) -> list | None:
    """arange(S) keeps the symbol S (start 0, step 1); all-int ranges are counted."""
    start, limit, delta = (known_value(graph, x) for x in node.input[:3])
    if start is None or limit is None or delta is None:
        return None
    a, b, d = (np.ravel(x)[0] for x in (start, limit, delta))
    if a == 0 and d == 1 and b is not None:
        return [b]
    if all(isinstance(x, int) for x in (a, b, d)) and d:
        return [max(0, -(-(b - a) // d))]
    return None

