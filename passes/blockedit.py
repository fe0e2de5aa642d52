"""Graph edits for residual blocks (graphprune.blocks): drop a branch, or gate it.

`drop` removes blocks: readers of the Add's output read the block's input t instead, and
dead-code removal (the rewrite's) takes the branch's nodes and weights. Where the Add's
output is a graph output, or read inside a subgraph by its outer name, the Add becomes
`Identity(t)` in place (named `<Add's name>_gp_identity`: another op, so another name), so
the tensor's name survives. `gate` multiplies each block's branch output
y by a gate before its Add: a constant zero gives the masked original of the exact check
(`t + 0·y`), a scalar graph input gives the probe of `passes/depth.py` (1 is the model, 0
the block removed). Both keep node indices where they can: `drop` adds no node, `gate` adds
one Mul right before each Add.
"""

from __future__ import annotations

import onnx
from onnx import helper

from graphprune.blocks import Block
from graphprune.ir import subgraph_references


def removed_blocks(blocks: list[Block], removed) -> list[Block]:
    """The blocks whose unit is marked in `removed` (per root)."""
    return [b for b in blocks if removed[b.unit]]


def drop(graph: onnx.GraphProto, blocks: list[Block]) -> None:
    """Turn each block's Add into the identity on its input: readers of the Add's output
    read t (through earlier dropped blocks' inputs: consecutive blocks chain)."""
    if not blocks:
        return
    nodes = graph.node
    outputs = {o.name for o in graph.output}
    inner = set().union(*(subgraph_references(n) for n in nodes if _has_subgraph(n)))
    alias: dict[str, str] = {}
    for b in sorted(blocks, key=lambda b: b.add):
        t = alias.get(b.entry, b.entry)
        if b.exit in outputs or b.exit in inner:
            add = nodes[b.add]
            del add.input[:]
            del add.attribute[:]
            add.input.append(t)
            add.op_type, add.domain = "Identity", ""
            if add.name:
                add.name = f"{add.name}_gp_identity"
        else:
            alias[b.exit] = t
    for n in nodes:
        for k, name in enumerate(n.input):
            if name in alias:
                n.input[k] = alias[name]


def gate(graph: onnx.GraphProto, blocks: list[Block], gates: dict[int, str]) -> None:
    """Multiply each block's branch output by the tensor `gates[block.unit]` (a constant or
    an input the caller adds) right before its Add, found by the Add's output name."""
    if not blocks:
        return
    taken = {x for n in graph.node for x in (*n.input, *n.output)}
    by_exit = {b.exit: b for b in blocks}
    nodes = list(graph.node)
    del graph.node[:]
    for n in nodes:
        b = by_exit.get(n.output[0]) if n.op_type == "Add" and n.output else None
        if b is not None:
            gated = _fresh(f"{b.output}_gp_gated", taken)
            graph.node.append(helper.make_node("Mul", [b.output, gates[b.unit]], [gated],
                                               name=gated))
            n.input[list(n.input).index(b.output)] = gated
        graph.node.append(n)


def zero_gates(graph: onnx.GraphProto, blocks: list[Block],
               dtypes: dict[str, int]) -> dict[int, str]:
    """A scalar zero initializer per dtype of the blocks' branch outputs, by block unit."""
    taken = {t.name for t in graph.initializer} | {x for n in graph.node for x in n.output}
    made: dict[int, str] = {}
    out = {}
    for b in blocks:
        elem = dtypes.get(b.output, onnx.TensorProto.FLOAT)
        if elem not in made:
            name = _fresh("gp_block_zero", taken)
            graph.initializer.append(helper.make_tensor(name, elem, [], [0]))
            made[elem] = name
        out[b.unit] = made[elem]
    return out


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute)


def _fresh(base: str, taken: set[str]) -> str:
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
