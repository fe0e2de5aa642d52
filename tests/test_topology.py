"""Graph structure (graphprune/topology.py): the topological order segments cut along, the
live nodes the rewrite keeps, the live tensors between positions."""

from __future__ import annotations

import onnx
import zoo
from onnx import TensorProto, helper

from graphprune import topology


def _graph(nodes: list[onnx.NodeProto], outputs: tuple[str, ...] = ("y",)) -> onnx.GraphProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 4]) for o in outputs]
    return helper.make_graph(nodes, "g", [x], outs)


def _first_ready_each_time(graph: onnx.GraphProto, order: list[int]) -> bool:
    """`order` is topological, and each node in it is the first in the file of those whose
    inputs are all made by then."""
    seen = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    left = set(range(len(graph.node)))
    for i in order:
        ready = [j for j in sorted(left) if all(x in seen for x in graph.node[j].input)]
        if not ready or i != ready[0]:
            return False
        left.discard(i)
        seen.update(graph.node[i].output)
    return not left


def test_order_is_the_files_where_it_is_topological():
    model = onnx.load(str(zoo.EXAMPLE))
    assert topology.order(model.graph) == list(range(len(model.graph.node)))


def test_order_sorts_a_shuffled_graph_ready_nodes_first_in_file_order():
    model = onnx.load(str(zoo.EXAMPLE))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[::-1])  # every reader now stands before its producer
    order = topology.order(model.graph)
    assert order is not None and _first_ready_each_time(model.graph, order)
    assert order != list(range(len(nodes)))


def test_order_refuses_cycles_tensors_made_twice_and_subgraphs():
    relu = helper.make_node("Relu", ["x"], ["a"])
    cycle = _graph([helper.make_node("Add", ["x", "b"], ["a"]),
                    helper.make_node("Neg", ["a"], ["b"]), helper.make_node("Relu", ["b"], ["y"])])
    assert topology.order(cycle) is None
    twice = _graph([relu, helper.make_node("Neg", ["x"], ["a"]),
                    helper.make_node("Relu", ["a"], ["y"])])
    assert topology.producers(twice) is None and topology.order(twice) is None
    branch = _graph([helper.make_node("Identity", ["a"], ["y"])], ("y",))
    cond = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    with_if = _graph([relu, helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
        "c", TensorProto.BOOL, [], [True])), cond])
    assert topology.has_subgraphs(with_if) and topology.order(with_if) is None
    assert topology.order(_graph([relu, helper.make_node("Relu", ["a"], ["y"])])) == [0, 1]


def test_node_graph_counts_reads_inside_subgraphs():
    branch = _graph([helper.make_node("Identity", ["a"], ["y"])], ("y",))
    g = _graph([helper.make_node("Relu", ["x"], ["a"]),
                helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
                    "c", TensorProto.BOOL, [], [True])),
                helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)])
    assert sorted(topology.node_graph(g).edges) == [(0, 2), (1, 2)]


def test_live_keeps_what_feeds_an_output_or_is_kept():
    g = _graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["dead"]),
                helper.make_node("Exp", ["dead"], ["deader"]),
                helper.make_node("Relu", ["a"], ["y"])])
    kept, needed = topology.live(g)
    assert [n.output[0] for n in kept] == ["a", "y"]
    assert needed == {"x", "a", "y"}
    kept, needed = topology.live(g, keep=[("deader",)])
    assert [n.output[0] for n in kept] == ["a", "dead", "deader", "y"]
    assert "dead" in needed


def test_live_sets_between_positions():
    g = _graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
                helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])])
    sets = topology.live_sets(g, topology.order(g))
    assert sets == [frozenset(), {"a"}, {"a", "b"}, {"c"}, {"y"}]
