"""Residual blocks: the branches a model adds back onto a tensor, found over the graph.

For `Add(t, y)` (either input order) the *branch* is every node computed from t's values
that feeds y: the value-descendants of t (nodes that read t's values, not only its shape)
that are ancestors of y. No layer names are read: a transformer layer's attention and FFN
branches, a ResNet basic or bottleneck block with an identity shortcut, a MobileNetV2
inverted residual and a ConvNeXt block (its layer scale inside the branch) are all found by
this one rule. A branch is a candidate when it holds a weight (a float constant of more than
one element); it is *removable* when removing it turns the Add into the identity, exactly
and completely:

- every node of the branch dies once the Add stops reading y: the Add post-dominates it
  through y, so no tensor computed inside is read elsewhere (by a node, a subgraph, or as a
  graph output). Found by a dead-code sweep from y's producer, in reverse graph order: a node
  dies when every reader of its outputs has died (the Add's read of y excepted). The nodes
  that die include side computations only this branch reads (shape arithmetic over t, a
  position table), which go with it;
- the Add's output has t's shape (t is not broadcast up by y);
- nothing in it is random (its influence could not be measured, nor its removal proven) and
  it holds no control flow (subgraphs are not analysed).

Why not dominators for the branch itself: a transformer branch reads side inputs computed
from other graph inputs (the attention mask, rotary tables), so t does not dominate the
branch's nodes; the descendant/ancestor sets with the dead-code sweep (post-dominance by the
Add, for live nodes, and stricter for nodes nothing reads) state the rule directly. Dominators
do serve to explain the Adds that are *not* branches: for an Add joining two computed paths
(a ResNet block with a projection shortcut: `Add(proj(t), f(t))`), the Add's immediate
dominator in the node graph (networkx's `immediate_dominators` from a virtual source) is
where the paths fork; when both paths hold a contraction with a weight, the Add is listed as
a *join* with the reason it is no removable branch.

What a removal does (passes/rewrite.py): readers of the Add's output read t instead (or the
Add becomes `Identity(t)` when its output is a graph output or read inside a subgraph), and
the dead nodes and weights go. The exact check's reference multiplies y by zero before the
Add (the masked original of a block).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from .ir import Dim, Graph, subgraph_references

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
          onnx.TensorProto.BFLOAT16}
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli"}
SHAPE_READERS = {"Shape", "Size"}
"""Ops that read only the shape of their input: t's values do not flow through them."""
CONTRACTIONS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class Block:
    """One residual branch: `exit` = Add(`entry`, `output`), `nodes` die with it."""

    add: int
    entry: str
    exit: str
    output: str
    nodes: list[int]
    """Nodes that die when the branch goes (the Add excluded), in graph order."""
    weights: list[str]
    """Constants (initializers, Constant outputs) only those nodes read."""
    params: int
    """Elements of the float weights among them (as metrics.count_params counts)."""
    label: str
    """A name a user recognises: the module path the branch's nodes share, and its parts."""
    reasons: list[str] = field(default_factory=list)
    """Why the branch cannot be removed (empty: removable)."""
    unit: int = -1
    """Its slot (the unit of the `blocks` group) once in an analysis."""
    inner: list[int] = field(default_factory=list)
    """Units that go with the block: those of groups whose members all lie inside it and
    of blocks nested in it (their removal is moot once it is removed)."""

    def to_dict(self, graph: Graph, index: int) -> dict:
        return {"index": index, "label": self.label, "entry": self.entry,
                "exit": graph.node_name(self.add), "nodes": len(self.nodes),
                "params": self.params, "weights": self.weights,
                "removable": not self.reasons, "reasons": list(self.reasons)}


@dataclass
class Join:
    """An Add of two computed paths from one fork (a projection shortcut): no branch."""

    add: int
    fork: int
    reason: str

    def to_dict(self, graph: Graph) -> dict:
        return {"add": graph.node_name(self.add), "fork": graph.node_name(self.fork),
                "reason": self.reason}


def find_blocks(graph: Graph) -> tuple[list[Block], list[Join]]:
    """Every residual branch (removable or with the reasons it is not), in graph order, and
    the joins of computed paths that are no branch."""
    blocks: list[Block] = []
    others: list[int] = []
    for i, node in graph.iter_nodes():
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        a, b = node.input
        if not _activation(graph, a) or not _activation(graph, b) or a == b:
            continue
        found = _branch(graph, i, a, b) or _branch(graph, i, b, a)
        if found is not None:
            blocks.append(found)
        else:
            others.append(i)
    return blocks, _joins(graph, others)


def _activation(graph: Graph, name: str) -> bool:
    """A computed float tensor (not a constant)."""
    return (bool(name) and graph.dtypes.get(name) in FLOATS and not graph.is_const(name))


def _branch(graph: Graph, add: int, t: str, y: str) -> Block | None:
    p = graph.producer.get(y)
    if p is None:
        return None
    start = graph.producer.get(t, -1)
    if start >= p:
        return None  # y is computed before t: not from it
    shape = _shape_problem(graph, t, y, graph.node_name(add))
    if shape == BROADCAST:
        return None  # t broadcast up to y (a mask added to attention scores): no residual
    core = _values_of(graph, t, p) & _ancestors(graph, p, start)
    if not core or not any(_reads_weight(graph, n) for n in core):
        return None
    dead = dying(graph, [(add, y)])
    reasons = _unsafe(graph, core | dead)
    escaped = sorted(core - dead)
    if escaped:
        reasons.insert(0, _escape(graph, escaped, core, dead, add))
    if shape:
        reasons.append(shape)
    nodes = sorted(dead if not escaped else core | dead)
    weights = weights_of(graph, set(nodes))
    return Block(add, t, graph.nodes[add].output[0], y, nodes, weights,
                 _params(graph, weights), label(graph, sorted(core), add), reasons)


def _readers(graph: Graph, name: str) -> list[int]:
    return [u.node for u in graph.uses(name)]


def _values_of(graph: Graph, t: str, last: int) -> set[int]:
    """Nodes up to index `last` that read t's values, directly or through other such
    nodes (reading only a shape, through Shape or Size, passes no values)."""
    out: set[int] = set()
    todo = [t]
    while todo:
        name = todo.pop()
        for u in graph.uses(name):
            n = u.node
            if n in out or n > last or (graph.nodes[n].op_type in SHAPE_READERS and u.index == 0):
                continue
            out.add(n)
            todo.extend(o for o in graph.nodes[n].output if o)
        # nodes reached only through a subgraph (u.index -1) read the values too: kept above
    return out


def _ancestors(graph: Graph, p: int, after: int) -> set[int]:
    """Node p and the nodes it depends on, down to (not including) index `after`."""
    out = {p}
    todo = [p]
    while todo:
        n = todo.pop()
        for name in _inputs(graph, n):
            q = graph.producer.get(name)
            if q is not None and q > after and q not in out:
                out.add(q)
                todo.append(q)
    return out


def _inputs(graph: Graph, n: int) -> list[str]:
    """Names node n reads, its subgraphs' outer references included."""
    node = graph.nodes[n]
    names = [x for x in node.input if x]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        names += sorted(subgraph_references(node))
    return names


def _reads_weight(graph: Graph, n: int) -> bool:
    """Node n reads a float constant of more than one element."""
    for name in graph.nodes[n].input:
        if name and graph.dtypes.get(name) in FLOATS and graph.is_const(name):
            shape = graph.shape(name)
            if shape and all(isinstance(d, int) for d in shape) and math.prod(shape) > 1:
                return True
    return False


def dying(graph: Graph, exits: list[tuple[int, str]]) -> set[int]:
    """Nodes that die when each Add of `exits` (Add node, branch output y) no longer reads
    its y: a sweep from the y's producers in reverse graph order (a node's readers come
    after it, so they are settled first). For several blocks at once, what only they
    together read dies too (a mask or a table their branches share)."""
    outputs = set(graph.outputs)
    cut = set(exits)
    dead: set[int] = set()
    heap = sorted({-graph.producer[y] for _, y in exits})
    seen = {-n for n in heap}
    while heap:
        n = -heapq.heappop(heap)
        if not _dies(graph, n, cut, dead, outputs):
            continue
        dead.add(n)
        for name in _inputs(graph, n):
            q = graph.producer.get(name)
            if q is not None and q not in seen:
                seen.add(q)
                heapq.heappush(heap, -q)
    return dead


def _dies(graph: Graph, n: int, cut: set[tuple[int, str]], dead: set[int],
          outputs: set[str]) -> bool:
    for o in graph.nodes[n].output:
        if not o:
            continue
        if o in outputs:
            return False
        for u in graph.uses(o):
            if u.node in dead or (u.index >= 0 and (u.node, o) in cut):
                continue
            return False
    return True


def _escape(graph: Graph, escaped: list[int], core: set[int], dead: set[int], add: int) -> str:
    """Why the branch does not die with the Add: a tensor computed inside that is a graph
    output, else one whose values are read outside, else one whose shape is."""
    outputs = set(graph.outputs)
    names = [o for n in escaped for o in graph.nodes[n].output if o]
    for o in names:
        if o in outputs:
            return f"'{o}' computed in the branch is a graph output"
    outside = [(o, r) for o in names for r in _readers(graph, o)
               if r != add and r not in core and r not in dead]
    for o, r in sorted(outside, key=lambda x: graph.nodes[x[1]].op_type in SHAPE_READERS):
        node = graph.nodes[r]
        return (f"'{o}' computed in the branch is also read by {node.op_type} "
                f"'{graph.node_name(r)}' outside it")
    return "a tensor computed in the branch is read outside it"


def _unsafe(graph: Graph, nodes: set[int]) -> list[str]:
    """Random ops and control flow inside the branch, named."""
    out = []
    for n in sorted(nodes):
        node = graph.nodes[n]
        name = graph.node_name(n)
        if node.op_type in RANDOM_OPS or _random_dropout(graph, n):
            out.append(f"the branch is random ({node.op_type} '{name}')")
        elif any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                 for a in node.attribute):
            out.append(f"the branch holds control flow ({node.op_type} '{name}'), whose "
                       "subgraphs are not analysed")
    return out


def _random_dropout(graph: Graph, n: int) -> bool:
    """A Dropout whose training_mode is not a constant false."""
    node = graph.nodes[n]
    if node.op_type != "Dropout" or len(node.input) < 3 or not node.input[2]:
        return False
    mode = graph.const(node.input[2])
    return mode is None or bool(np.any(mode))


BROADCAST = "broadcast"


def _shape_problem(graph: Graph, t: str, y: str, add: str) -> str | None:
    """None when Add(t, y) has t's shape (y broadcasts to t), BROADCAST when t is
    broadcast up to y (no residual: the Add does not add a branch back onto t), else why
    it cannot be told."""
    st, sy = graph.shape(t), graph.shape(y)
    if st is None or sy is None:
        return f"the shapes of '{t}' and of the branch output '{y}' are not known"
    if len(sy) > len(st):
        return BROADCAST
    for dt, dy in zip(reversed(st), reversed(sy), strict=False):
        if dy == 1 or dy == dt or (isinstance(dt, int) and dt > 1):
            continue
        if dt == 1 and dy is not None:
            return BROADCAST
        return (f"cannot tell that the branch output '{y}' {_dims(sy)} does not broadcast "
                f"'{t}' {_dims(st)} in Add '{add}'")
    return None


def _dims(dims: list[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def weights_of(graph: Graph, nodes: set[int]) -> list[str]:
    """Weights only `nodes` read: float initializers and outputs of Constant nodes among
    them, of more than one element (scalars are formula constants, not parameters)."""
    out = []
    for n in sorted(nodes):
        node = graph.nodes[n]
        names = node.output if node.op_type == "Constant" else [
            x for x in node.input if x in graph.initializers
            and all(u.node in nodes for u in graph.uses(x)) and x not in graph.outputs]
        out.extend(x for x in names if x and x not in out and elements(graph, x) > 1)
    return out


def elements(graph: Graph, name: str) -> int:
    """Elements of a float constant (0 for other types), from its declared dims."""
    t = graph.initializers.get(name)
    if t is not None:
        return math.prod(t.dims) if t.data_type in FLOATS else 0
    shape = graph.shape(name)
    if graph.dtypes.get(name) in FLOATS and shape and all(isinstance(d, int) for d in shape):
        return math.prod(shape)
    value = graph.const(name)
    return value.size if value is not None and np.issubdtype(value.dtype, np.floating) else 0


def together(graph: Graph, blocks: list[Block]) -> tuple[set[int], list[str]]:
    """What goes when `blocks` are removed at once: the nodes (their Adds included, whose
    readers read t instead) and the weights only those nodes read."""
    nodes = dying(graph, [(b.add, b.output) for b in blocks]) if blocks else set()
    nodes |= {b.add for b in blocks}
    return nodes, weights_of(graph, nodes)


def _params(graph: Graph, weights: list[str]) -> int:
    return sum(elements(graph, name) for name in weights)


def nested(blocks: list[Block]) -> dict[int, list[int]]:
    """Block index → indices of the blocks whose nodes all lie inside it."""
    sets = [set(b.nodes) | {b.add} for b in blocks]
    return {i: [j for j, s in enumerate(sets) if j != i and s <= set(blocks[i].nodes)]
            for i in range(len(blocks))}


# -- joins ----------------------------------------------------------------------------------
def _joins(graph: Graph, adds: list[int]) -> list[Join]:
    """Adds of two computed paths that fork at one node (the Add's immediate dominator),
    each path holding a contraction with a weight: a projection shortcut."""
    if not adds:
        return []
    idom = _dominators(graph)
    out = []
    for a in adds:
        fork = idom.get(a)
        if fork is None or fork < 0:
            continue
        sides = [graph.producer.get(x) for x in graph.nodes[a].input]
        if any(s is None or s <= fork for s in sides):
            continue
        if all(_contracts(graph, _ancestors(graph, s, fork)) for s in sides):
            node = graph.nodes[fork]
            out.append(Join(a, fork, (
                f"both inputs are computed from {node.op_type} '{graph.node_name(fork)}' "
                "(a projection shortcut): neither is the other path's input, so no branch "
                "can go")))
    return out


def _dominators(graph: Graph) -> dict[int, int]:
    """Immediate dominator of every node, from a virtual source (-1) that feeds every
    node reading no node's output. (networkx is imported here, on first use: its import
    costs about 0.07 s that runs without blocks need not pay.)"""
    import networkx as nx

    g = nx.DiGraph()
    g.add_node(-1)
    for i in range(len(graph.nodes)):
        preds = {graph.producer[x] for x in _inputs(graph, i) if x in graph.producer}
        g.add_edges_from((q, i) for q in sorted(preds))
        if not preds or any(x not in graph.producer and not graph.is_const(x)
                            for x in graph.nodes[i].input if x):
            g.add_edge(-1, i)
    return nx.immediate_dominators(g, -1)


def _contracts(graph: Graph, nodes: set[int]) -> bool:
    return any(graph.nodes[n].op_type in CONTRACTIONS and _reads_weight(graph, n)
               for n in nodes)


# -- names ----------------------------------------------------------------------------------
def label(graph: Graph, nodes: list[int], add: int) -> str:
    """The module path the branch's nodes share, with its parts: `layers.0: input_layernorm,
    self_attn`. Read from the dynamo exporter's name scopes, else from TorchScript's node
    names (`/layers.0/self_attn/q_proj/MatMul`), else the Add's name."""
    paths = [p.split(".") for p in (_module(graph.nodes[n]) for n in nodes) if p]
    if not paths:
        return graph.node_name(add)
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    parts = list(dict.fromkeys(p[len(common)] for p in paths if len(p) > len(common)))
    head = ".".join(common) or "(top)"
    shown = ", ".join(parts[:4]) + (", …" if len(parts) > 4 else "")
    return f"{head}: {shown}" if shown else head


def _module(node: onnx.NodeProto) -> str | None:
    """The module path of a node: the deepest name scope (dynamo), or its name's path."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            scopes = [s.strip(" '\"") for s in p.value.strip("[]").split(",")]
            scopes = [s for s in scopes[:-1] if s]  # the last one is the op itself
            return scopes[-1] if scopes else None
    if not node.name.startswith("/") or node.name.count("/") < 2:
        return None
    path = ""  # TorchScript scopes repeat the path so far ("/layers/layers.0/layers.0.1/…")
    for part in (x for x in node.name.split("/")[1:-1] if x):
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path or None


# -- reports --------------------------------------------------------------------------------
def report(blocks: list[Block], graph: Graph, removed=None, *, frozen: dict[int, list[str]],
           scores: list[float] | None = None, criterion: str | None = None,
           macs: list[int] | None = None) -> dict:
    """The report's `blocks`: counts, what the removed blocks took together (nodes,
    parameters, MACs: what only they read goes too), and per block (alone) its names,
    size, score and fate
    (`removed`: per root, None for none; `frozen`: reasons by unit, the scope's and
    --protect's included; `macs`: MACs per node at the report's input sizes)."""
    rows = []
    for k, b in enumerate(blocks):
        row = b.to_dict(graph, k)
        row["reasons"] = list(frozen.get(b.unit, []))
        row["removable"] = not row["reasons"]
        row["removed"] = removed is not None and bool(removed[b.unit])
        if macs is not None:
            row["macs"] = int(sum(macs[n] for n in b.nodes))
        if scores is not None:
            row["score"] = scores[k]
        rows.append(row)
    out = {"criterion": criterion, "total": len(rows),
           "removable": sum(1 for r in rows if r["removable"]),
           "removed": sum(1 for r in rows if r["removed"])}
    gone = [b for b in blocks if removed is not None and removed[b.unit]]
    if gone:  # together: what only the removed blocks read goes too
        nodes, weights = together(graph, gone)
        kept = sum(1 for b in gone if b.exit in graph.outputs
                   or any(u.index < 0 for u in graph.uses(b.exit)))  # Adds become Identity
        out.update(nodes_removed=len(nodes) - kept, params_removed=_params(graph, weights))
        if macs is not None:
            out["macs_removed"] = int(sum(macs[n] for n in nodes))
    out["list"] = rows
    return out
