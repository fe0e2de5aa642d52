"""Residual blocks on small graphs: which Adds are removable branches and why not, removal
proven against the branch gated by zero, plans by position, protect, the cost model.

Every graph is a conv stem, residual blocks `Add(t, conv(relu(conv(t))))` and a pooled
linear head, with one thing changed per test (an outside reader, a broadcast, a random op,
control flow, a projection shortcut, nesting)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphprune.passes import rewrite, validation
from graphprune.passes.cost import CostModel
from graphprune.passes.selection import drop_inner
from helpers import Builder, run
from onnx import TensorProto, helper

import graphprune
from graphprune.analysis import analyze_graph
from graphprune.errors import InputError
from graphprune.ir import Graph
from graphprune.metrics import count_macs, count_params
from graphprune.plan import Plan

C = 8
"""Channels of the residual stream and of each branch."""


def _branch(b: Builder, t: str, tag: str, c: int = C) -> str:
    """conv → relu → conv: the branch of a basic block (its weights named after `tag`)."""
    h = b.op("Relu", [b.conv(t, c, c, name=f"{tag}_conv1")], name=f"{tag}_relu")
    return b.conv(h, c, c, name=f"{tag}_conv2")


def _head(b: Builder, x: str, c: int = C) -> str:
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    return b.gemm(pooled, c, 5, name="head")


def net(blocks: int = 3, change=None, c: int = C) -> onnx.ModelProto:
    """Stem, `blocks` residual blocks of width `c` (`change(b, index, t, y)` may alter
    block i's y or add nodes), head."""
    b = Builder(seed=3)
    x = b.op("Relu", [b.conv(b.input(), 3, c, name="stem")])
    for i in range(blocks):
        y = _branch(b, x, f"b{i}", c)
        if change is not None:
            y = change(b, i, x, y)
        x = b.op("Add", [x, y], name=f"b{i}_add")
    return b.build(_head(b, x, c))


def found(model: onnx.ModelProto):
    an = analyze_graph(Graph(model), blocks=True)
    return an, an.blocks


# -- which Adds are blocks ------------------------------------------------------------------
def test_each_identity_block_is_one_removable_unit() -> None:
    an, blocks = found(net(3))
    assert [an.graph.node_name(b.add) for b in blocks] == ["b0_add", "b1_add", "b2_add"]
    assert all(not b.reasons for b in blocks)
    assert [len(b.nodes) for b in blocks] == [3, 3, 3]  # conv, relu, conv
    assert blocks[1].weights == ["b1_conv1_W", "b1_conv1_B", "b1_conv2_W", "b1_conv2_B"]
    assert blocks[1].params == 2 * (C * C * 9 + C)
    group = next(g for g in an.groups if g.kind == "blocks")
    assert group.units == [b.unit for b in blocks] and not group.frozen
    # each block's inner channels (conv1's outputs) go with it
    inner = [g for g in an.groups if g.units[0] in blocks[1].inner]
    assert [g.name for g in inner] == ["b1_conv1_W"]


def test_add_order_does_not_matter() -> None:
    def swap(b, i, t, y):
        return y

    model = net(2, swap)
    for n in model.graph.node:
        if n.op_type == "Add":
            n.input[0], n.input[1] = n.input[1], n.input[0]
    _, blocks = found(model)
    assert len(blocks) == 2 and all(not b.reasons for b in blocks)


def test_no_residual_no_blocks() -> None:
    b = Builder()
    x = b.op("Relu", [b.conv(b.input(), 3, C)])
    model = b.build(_head(b, b.conv(x, C, C)))
    an, blocks = found(model)
    assert blocks == [] and an.joins == []
    assert not any(g.kind == "blocks" for g in an.groups)


def test_outside_reader_freezes_the_block() -> None:
    b = Builder(seed=3)
    x = b.op("Relu", [b.conv(b.input(), 3, C, name="stem")])
    y = _branch(b, x, "b0")
    x = b.op("Add", [x, y], name="b0_add")
    y1 = _branch(b, x, "b1")
    x = b.op("Add", [x, y1], name="b1_add")
    gate = b.op("Sigmoid", [b.op("GlobalAveragePool", ["b0_relu_out"], name="late")])
    x = b.op("Mul", [x, gate])  # block 0's relu read again after block 1
    an, blocks = found(b.build(_head(b, x)))
    assert [bool(k.reasons) for k in blocks] == [True, False]
    assert blocks[0].reasons == [
        "'b0_relu_out' computed in the branch is also read by GlobalAveragePool 'late' "
        "outside it"]
    group = next(g for g in an.groups if g.kind == "blocks")
    assert group.prunable == [blocks[1].unit]


def test_graph_output_inside_freezes_the_block() -> None:
    model = net(2)
    model.graph.output.append(helper.make_tensor_value_info("b1_relu_out", TensorProto.FLOAT,
                                                            None))
    _, blocks = found(model)
    assert blocks[1].reasons == ["'b1_relu_out' computed in the branch is a graph output"]
    assert not blocks[0].reasons


def test_broadcast_of_the_input_is_no_block() -> None:
    """Add(t, y) where y is larger than t: the Add broadcasts t (an attention mask added to
    scores), no branch is added back onto t."""
    b = Builder(seed=3)
    x = b.op("Relu", [b.conv(b.input(), 3, C)])
    small = b.op("GlobalAveragePool", [x])  # [2, C, 1, 1]
    y = b.conv(b.op("Mul", [x, small]), C, C)  # [2, C, 6, 7], computed from `small`
    out = b.op("Add", [small, y], name="bcast")
    an, blocks = found(b.build(_head(b, out)))
    assert [an.graph.node_name(k.add) for k in blocks] == []


def test_branch_broadcast_to_its_input_is_removable() -> None:
    """Add(t, y) with y smaller than t (a per-channel term computed from t): y broadcasts,
    the output has t's shape, and removing y is exact."""
    b = Builder(seed=3)
    x = b.op("Relu", [b.conv(b.input(), 3, C, name="stem")])
    y = b.conv(b.op("GlobalAveragePool", [x]), C, C, k=1, name="gate")  # [2, C, 1, 1]
    out = b.op("Add", [x, y], name="bias_add")
    model = b.build(_head(b, b.op("Add", [out, _branch(b, out, "b0")], name="b0_add")))
    an, blocks = found(model)
    assert [(an.graph.node_name(k.add), k.reasons) for k in blocks] == [
        ("bias_add", []), ("b0_add", [])]
    _, report = graphprune.compress(model, scope="blocks", ratio=0.5, calib_samples=4)
    assert report.exact_check["passed"] and report.blocks["removed"] == 1


def test_random_branch_is_frozen() -> None:
    def noisy(b, i, t, y):
        if i != 1:
            return y
        return b.op("Add", [y, b.op("RandomNormalLike", [y], name="noise", scale=0.01)])

    _, blocks = found(net(2, noisy))
    assert blocks[1].reasons == ["the branch is random (RandomNormalLike 'noise')"]


def test_control_flow_in_a_branch_is_frozen() -> None:
    def branchy(b, i, t, y):
        if i != 0:
            return y
        then = helper.make_graph([helper.make_node("Relu", [y], ["then_out"])], "then", [],
                                 [helper.make_tensor_value_info("then_out", 1, None)])
        other = helper.make_graph([helper.make_node("Identity", [y], ["else_out"])], "else",
                                  [], [helper.make_tensor_value_info("else_out", 1, None)])
        cond = b.const(np.array(True))
        return b.op("If", [cond], name="choose", then_branch=then, else_branch=other)

    _, blocks = found(net(2, branchy))
    assert blocks[0].reasons == [
        "the branch holds control flow (If 'choose'), whose subgraphs are not analysed"]
    assert not blocks[1].reasons


def test_projection_shortcut_is_a_join_not_a_block() -> None:
    b = Builder(seed=3)
    x = b.op("Relu", [b.conv(b.input(), 3, C, name="stem")])
    proj = b.conv(x, C, C, k=1, name="proj")
    x = b.op("Add", [proj, _branch(b, x, "b0")], name="proj_add")
    x = b.op("Add", [x, _branch(b, x, "b1")], name="b1_add")
    an, blocks = found(b.build(_head(b, x)))
    assert [an.graph.node_name(k.add) for k in blocks] == ["b1_add"]
    assert [j.to_dict(an.graph) for j in an.joins] == [{
        "add": "proj_add", "fork": "Relu_1",
        "reason": "both inputs are computed from Relu 'Relu_1' (a projection shortcut): "
                  "neither is the other path's input, so no branch can go"}]


def test_nested_blocks_go_with_their_outer_block() -> None:
    b = Builder(seed=3)
    t = b.op("Relu", [b.conv(b.input(), 3, C, name="stem")])
    u = b.conv(t, C, C, name="outer_in")
    u = b.op("Add", [u, _branch(b, u, "inner")], name="inner_add")
    out = b.op("Add", [t, b.conv(u, C, C, name="outer_out")], name="outer_add")
    an, blocks = found(b.build(_head(b, out)))
    inner, outer = blocks
    assert an.graph.node_name(outer.add) == "outer_add" and inner.unit in outer.inner
    removed = np.zeros(len(an.roots), bool)
    removed[[inner.unit, outer.unit]] = True
    drop_inner(an, removed)
    assert removed[outer.unit] and not removed[inner.unit]


# -- removal and its proof ----------------------------------------------------------------------
def _removed(an, *indices: int) -> np.ndarray:
    removed = np.zeros(len(an.roots), bool)
    for k in indices:
        removed[an.blocks[k].unit] = True
    return removed


def test_removal_equals_the_branch_gated_by_zero() -> None:
    model = net(3)
    an, _ = found(model)
    removed = _removed(an, 1)
    pruned = rewrite.prune_model(model, an, removed)
    masked = rewrite.masked_model(model, an, removed)
    assert [n.op_type for n in masked.graph.node].count("Mul") == 1
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 7)).astype(np.float32)
    (a,), (r,), (o,) = run(pruned, {"X": x}), run(masked, {"X": x}), run(model, {"X": x})
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
    assert np.abs(a - o).max() > 1e-3  # the block mattered
    assert len(pruned.graph.node) == len(model.graph.node) - 4  # conv, relu, conv, Add
    assert count_params(pruned) == count_params(model) - an.blocks[1].params
    assert not {"b1_conv1_W", "b1_conv2_W"} & {t.name for t in pruned.graph.initializer}


def test_removing_another_block_than_the_reference_fails_the_check() -> None:
    model = net(3)
    an, _ = found(model)
    reference = validation.session(rewrite.masked_model(model, an, _removed(an, 0)))
    wrong = validation.session(rewrite.prune_model(model, an, _removed(an, 1)))
    right = validation.session(rewrite.prune_model(model, an, _removed(an, 0)))
    assert not validation.exact_check(reference, wrong, model).passed
    assert validation.exact_check(reference, right, model).passed


def test_graph_output_at_the_add_becomes_identity() -> None:
    model = net(2)
    model.graph.output.append(helper.make_tensor_value_info("b1_add_out", TensorProto.FLOAT,
                                                            None))
    pruned, report = graphprune.compress(model, scope="blocks", ratio=0.5, calib_samples=4)
    assert report.exact_check["passed"] and report.blocks["removed"] == 1
    gone = next(b for b in report.blocks["list"] if b["removed"])
    if gone["exit"] == "b1_add":
        assert [n.op_type for n in pruned.graph.node if n.name == "b1_add_gp_identity"] == [
            "Identity"]
    assert [o.name for o in pruned.graph.output] == [o.name for o in model.graph.output]


def test_compress_removes_the_lowest_influence_blocks() -> None:
    model = net(4)
    pruned, report = graphprune.compress(model, scope="blocks", ratio=0.5, calib_samples=8)
    b = report.blocks
    assert report.exact_check["passed"]
    assert (b["total"], b["removable"], b["removed"], b["criterion"]) == (4, 4, 2, "influence")
    scores = [x["score"] for x in b["list"]]
    gone = sorted(x["index"] for x in b["list"] if x["removed"])
    assert gone == sorted(np.argsort(scores, kind="stable")[:2].tolist())
    assert all(0 < s < 2 for s in scores)  # 1 - cosine
    assert report.params_after == report.params_before - sum(
        x["params"] for x in b["list"] if x["removed"])
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7)).astype(np.float32)
    assert count_macs(pruned, {"X": x}) == count_macs(model, {"X": x}) - sum(
        x["macs"] for x in b["list"] if x["removed"])


def test_sensitivity_criterion_and_plan_by_position() -> None:
    model = net(4)
    pruned, report = graphprune.compress(model, scope="blocks", ratio=0.25,
                                         block_criterion="sensitivity", calib_samples=4)
    assert report.blocks["criterion"] == "sensitivity" and report.blocks["removed"] == 1
    plan = report.plan.to_dict()
    assert plan["groups"] == [] and [b["index"] for b in plan["blocks"]] == [
        x["index"] for x in report.blocks["list"] if x["removed"]]
    again, _ = graphprune.apply_plan(model, plan)
    assert again.SerializeToString() == pruned.SerializeToString()
    # ShortFormer-style: blocks by position alone, in a plan written by hand
    hand = {**plan, "settings": {}, "blocks": [{"index": 1}, {"index": 3}]}
    out, rep = graphprune.apply_plan(model, hand)
    assert rep.exact_check["passed"]
    assert [x["index"] for x in rep.blocks["list"] if x["removed"]] == [1, 3]
    assert {"b1_add", "b3_add"}.isdisjoint(n.name for n in out.graph.node)


def test_plan_block_that_does_not_fit_is_refused() -> None:
    model = net(3)
    _, report = graphprune.compress(model, scope="blocks", ratio=0.4, calib_samples=4)
    plan = report.plan.to_dict()
    bad_exit = {**plan, "blocks": [{"index": 0, "exit": "b2_add"}]}
    with pytest.raises(InputError, match="plan block 0 ends at 'b2_add'; the model's block 0 "
                                         "ends at 'b0_add'"):
        graphprune.apply_plan(model, bad_exit)
    with pytest.raises(InputError, match="plan block index 7 out of range"):
        graphprune.apply_plan(model, {**plan, "blocks": [{"index": 7}]})
    with pytest.raises(InputError, match="removes every residual block"):
        graphprune.apply_plan(model, {**plan, "blocks": [{"index": k} for k in range(3)]})
    with pytest.raises(InputError, match="malformed"):
        Plan.from_dict({**plan, "blocks": [{"index": "1"}]})


def test_protect_keeps_a_block() -> None:
    model = net(2)
    _, report = graphprune.compress(model, scope="blocks", ratio=0.5, protect="^b0_",
                                    calib_samples=4)
    rows = report.blocks["list"]
    assert rows[0]["reasons"] == ["protected by --protect"] and not rows[0]["removed"]
    assert rows[1]["removed"]


def test_cost_model_counts_a_block_once_with_its_inner_units() -> None:
    model = net(3)
    an, blocks = found(model)
    x = {"X": np.zeros((1, 3, 6, 7), np.float32)}
    cost = CostModel(model, an, x)
    removed = _removed(an, 1)
    inner = next(g for g in an.groups if g.name == "b1_conv1_W")
    removed[inner.units[:4]] = True  # half of the block's own channels, moot once it goes
    other = next(g for g in an.groups if g.name == "b2_conv1_W")
    removed[other.units[:2]] = True
    drop_inner(an, removed)
    assert not removed[inner.units].any()
    pruned = rewrite.prune_model(model, an, removed)
    assert cost.evaluate(removed) == {"macs": count_macs(pruned, x),
                                      "params": count_params(pruned)}


@pytest.mark.parametrize("allocation", ["global", "sensitivity"])
def test_width_and_depth_share_one_target(allocation: str) -> None:
    """One MAC target met by removing blocks and channels together (the removed blocks'
    own channels are not counted again: groups inside them are reported as gone)."""
    model = net(4, c=16)
    _, report = graphprune.compress(model, scope="channels,blocks", target_macs=0.5,
                                    allocation=allocation, calib_samples=4)
    assert report.exact_check["passed"] and report.target["met"], report.target
    assert report.blocks["removed"] == 2
    gone = {f"b{x['index']}_conv1_W" for x in report.blocks["list"] if x["removed"]}
    details = {d.name: d for d in report.group_details}
    assert all(details[name].units_after == 0 for name in gone)
    kept = [d for name, d in details.items() if name.endswith("conv1_W") and name not in gone]
    assert any(d.units_after < d.units_before for d in kept)


def test_width_criteria_leave_blocks_to_the_block_criterion() -> None:
    """A data criterion scores channels; blocks are no group it failed to score."""
    _, report = graphprune.compress(net(3), scope="channels,blocks", criterion="taylor",
                                    ratio=0.4, calib_samples=4)
    assert report.exact_check["passed"] and report.blocks["criterion"] == "influence"
    assert not [n for n in report.notes if "could not be scored" in n], report.notes


def test_analyze_lists_blocks_and_joins() -> None:
    result = graphprune.analyze(net(2), scope="blocks").to_dict()
    assert [(b["index"], b["exit"], b["removable"]) for b in result["blocks"]] == [
        (0, "b0_add", True), (1, "b1_add", True)]
    assert result["joins"] == []
    assert "blocks" not in graphprune.analyze(net(2)).to_dict()
