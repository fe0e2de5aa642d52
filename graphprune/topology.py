"""Graph structure over node indices: the node graph, a topological order, what is live.

Liveness is a sweep over the nodes in the file's order, which is topological in every graph
graphprune reads or writes (ir.Graph refuses others; the rewrite inserts a node just before
its reader): one pass backwards finds the live nodes, one forwards the live tensors at every
position. Orders and graph algorithms go through networkx's node graph (`node_graph`):
nodes are the node indices, an edge i -> j says node j reads an output of node i.

networkx is imported when first needed: importing it costs about 0.12 s and 16 MB, which a
run on a small model (segments are for models of 1 GiB of weights and more) should not pay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import onnx

from .ir import subgraph_references

if TYPE_CHECKING:
    import networkx as nx


def holds_subgraph(node: onnx.NodeProto) -> bool:
    """Whether the node holds a subgraph (If, Loop, Scan): its reads of outer names are no
    inputs of the node (ir.subgraph_references lists them)."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute)


def has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(holds_subgraph(n) for n in graph.node)


def producers(graph: onnx.GraphProto) -> dict[str, int] | None:
    """Tensor name -> index of the node that makes it; None when a tensor is made twice."""
    made: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if o:
                if o in made:
                    return None
                made[o] = i
    return made


def node_graph(graph: onnx.GraphProto, made: dict[str, int] | None = None) -> nx.DiGraph:
    """The node graph (networkx): nodes 0..n-1 in the file's order, an edge i -> j when node j
    reads an output of node i (as an input, or inside a subgraph). `made`: `producers`, when
    the caller has it (a tensor made twice takes its last producer otherwise)."""
    import networkx as nx

    if made is None:
        made = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(graph.node)))
    for j, node in enumerate(graph.node):
        reads = [x for x in node.input if x]
        reads += sorted(subgraph_references(node))  # a set: fix the order
        g.add_edges_from((made[x], j) for x in reads if x in made)
    return g


def order(graph: onnx.GraphProto) -> list[int] | None:
    """A topological order of the nodes, the file's order where it is one (of the nodes
    ready, the first in the file goes first); None when the graph has subgraphs (their
    outer-scope reads are no inputs), a cycle or a tensor made twice."""
    import networkx as nx

    made = producers(graph)
    if made is None or has_subgraphs(graph):
        return None
    try:
        return list(nx.lexicographical_topological_sort(node_graph(graph, made)))
    except nx.NetworkXUnfeasible:  # a cycle
        return None


def live(graph: onnx.GraphProto, keep: Iterable[tuple[str, ...]] = (),
         ) -> tuple[list[onnx.NodeProto], set[str]]:
    """Nodes that feed a graph output (or whose outputs are in `keep`), in order, and every
    name they or the graph outputs read."""
    keep = frozenset(keep)
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o) or tuple(node.output) in keep:
            kept.append(node)
            needed.update(i for i in node.input if i)
            needed.update(subgraph_references(node))
    return kept[::-1], needed


def live_sets(graph: onnx.GraphProto, positions: list[int]) -> list[frozenset[str]]:
    """For each position p (0..len(positions)) of a topological order of the nodes: the
    tensors made by the nodes before p that a node at or after p reads, or that are graph
    outputs."""
    end = len(positions)
    last = {o.name: end for o in graph.output}
    for pos, i in enumerate(positions):
        for x in graph.node[i].input:
            if x:
                last[x] = max(last.get(x, -1), pos)
    alive: set[str] = set()
    out = [frozenset()]
    for pos, i in enumerate(positions):
        alive = {x for x in alive if last[x] > pos}
        alive.update(o for o in graph.node[i].output if o and last.get(o, -1) > pos)
        out.append(frozenset(alive))
    return out
