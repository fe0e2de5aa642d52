"""Builders and checks shared by the per-op rule tests.

A rule test builds a tiny graph with `Builder` (seeded random weights, opset chosen per test),
then checks (a) the groups `graphprune.analyze` finds and (b) the numbers after a rewrite with
`assert_exact`: compress, then an independent onnxruntime comparison of the pruned model against
the masked original, both with graph optimisations disabled.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from graphprune.passes import rewrite, scoring, selection
from graphprune.passes.options import Options
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.analysis import analyze_graph
from graphprune.errors import first_line
from graphprune.ir import Graph, folds
from graphprune.metrics import count_params

DEFAULT_OPSET = 17
X_SHAPE = [2, 3, 6, 7]
"""Batch 2, 3 channels, distinct spatial sizes so no axis is mistaken for another."""
RTOL = 1e-4
ATOL = 1e-5
FEED_SEED = 1234
"""Not the tool's validation seed (0): the independent check uses other inputs."""


# -- building graphs ------------------------------------------------------------------------------
def make_model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
               inputs: list[tuple[str, list[int], int]], outputs: list[str],
               opset: int = DEFAULT_OPSET, domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A model over the default domain at `opset` (plus custom `domains` at version 1)."""
    graph = helper.make_graph(
        nodes, "rule_test",
        [helper.make_tensor_value_info(n, dt, shape) for n, shape, dt in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=inits,
    )
    default = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=default + [helper.make_opsetid(d, 1) for d in domains],
        producer_name="graphprune-tests")
    model.ir_version = helper.find_min_ir_version_for(default)
    _type_outputs(model)
    return model


def _type_outputs(model: onnx.ModelProto) -> None:
    """Give graph outputs their shapes (onnx.checker's full check wants them): from shape
    inference, else (ops without inference, e.g. GroupNormalization) from a run."""
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    missing = []
    for out, typed in zip(model.graph.output, inferred, strict=True):
        if typed.type.tensor_type.HasField("shape"):
            out.type.CopyFrom(typed.type)
        else:
            missing.append(out)
    if not missing or model.opset_import[1:]:
        return  # custom domains cannot run here: leave their outputs untyped
    values = dict(zip([o.name for o in model.graph.output],
                      run(model, feeds_for(model)), strict=True))
    for out in missing:
        out.type.CopyFrom(helper.make_tensor_type_proto(
            helper.np_dtype_to_tensor_dtype(values[out.name].dtype), values[out.name].shape))


class Builder:
    """Collects nodes and seeded initializers; every method returns the new tensor's name."""

    def __init__(self, opset: int = DEFAULT_OPSET, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[tuple[str, list[int], int]] = []
        self.domains: set[str] = set()
        self._count = 0

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def input(self, name: str = "X", shape: list[int] | None = None,
              dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append((name, list(X_SHAPE if shape is None else shape), dtype))
        return name

    def const(self, value, name: str | None = None) -> str:
        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values, name: str | None = None) -> str:
        return self.const(np.asarray(values, dtype=np.int64), name)

    def weight(self, shape: list[int], fan_in: int | None = None, name: str | None = None,
               scale: float | None = None) -> str:
        """Normal weights scaled by 1/sqrt(fan_in) so activations stay of order one."""
        if scale is None:
            scale = 1.0 / np.sqrt(fan_in or int(np.prod(shape[1:])) or 1)
        w = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        return self.const(w, name)

    def uniform(self, shape: list[int], low: float, high: float, name: str | None = None) -> str:
        return self.const(self.rng.uniform(low, high, shape).astype(np.float32), name)

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None,
           domain: str = "", **attrs):
        """Add a node; returns its output name, or a list of names when n_out > 1."""
        name = name or self.fresh(op_type)
        outs = [f"{name}_out{k}" if n_out > 1 else f"{name}_out" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain,
                                           **attrs))
        if domain:
            self.domains.add(domain)
        return outs if n_out > 1 else outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, dims: int = 2,
             dilation: int = 1, bias: bool = True, name: str | None = None) -> str:
        """Conv with 'same' padding: spatial sizes are kept."""
        name = name or self.fresh("Conv")
        w = self.weight([cout, cin // group, *[k] * dims], name=f"{name}_W")
        ins = [x, w]
        if bias:
            ins.append(self.weight([cout], scale=0.1, name=f"{name}_B"))
        pad = dilation * (k - 1) // 2
        return self.op("Conv", ins, name=name, kernel_shape=[k] * dims, group=group,
                       pads=[pad] * (2 * dims), dilations=[dilation] * dims)

    def conv_transpose(self, x: str, cin: int, cout: int, group: int = 1,
                       name: str | None = None) -> str:
        """3x3 ConvTranspose, stride 1, pads 1: spatial sizes are kept."""
        name = name or self.fresh("ConvTranspose")
        w = self.weight([cin, cout // group, 3, 3], fan_in=cin * 9 // group, name=f"{name}_W")
        b = self.weight([cout], scale=0.1, name=f"{name}_B")
        return self.op("ConvTranspose", [x, w, b], name=name, kernel_shape=[3, 3], group=group,
                       pads=[1, 1, 1, 1])

    def gemm(self, x: str, k: int, n: int, trans_b: int = 1, bias: bool = True,
             name: str | None = None) -> str:
        name = name or self.fresh("Gemm")
        w = self.weight([n, k] if trans_b else [k, n], fan_in=k, name=f"{name}_W")
        ins = [x, w] + ([self.weight([n], scale=0.1, name=f"{name}_B")] if bias else [])
        return self.op("Gemm", ins, name=name, transB=trans_b)

    def build(self, outputs: list[str] | str) -> onnx.ModelProto:
        outputs = [outputs] if isinstance(outputs, str) else outputs
        return make_model(self.nodes, self.inits, self.inputs, outputs, self.opset,
                          tuple(sorted(self.domains)))


def conv_chain(middle: Callable[[Builder, str], tuple[str, int]], opset: int = DEFAULT_OPSET,
               x_shape: list[int] | None = None, cmid: int = 8, cout: int = 4,
               dims: int = 2) -> onnx.ModelProto:
    """X → Conv "A" (source, `cmid` channels) → middle(b, a) → Conv "B" (sink) → Y.

    `middle` returns the tensor it produced and its channel count (B's input channels).
    """
    b = Builder(opset)
    x = b.input("X", x_shape or (X_SHAPE if dims == 2 else [2, 3, *[5, 6, 7][3 - dims:]]))
    a = b.conv(x, 3, cmid, dims=dims, name="A")
    y, channels = middle(b, a)
    b.conv(y, channels, cout, k=1, dims=dims, name="B")
    return b.build("B_out")


# -- reading results ------------------------------------------------------------------------------
def analyze(model: onnx.ModelProto) -> graphprune.AnalysisResult:
    return graphprune.analyze(model)


def group_sizes(result) -> list[tuple[int, int]]:
    """(units, prunable units) of every group, sorted, so order does not matter."""
    return sorted((len(g.units), len(g.prunable)) for g in result.groups)


def group_named(result, name: str):
    """The group anchored at node `name` (the node whose weight produces its units)."""
    found = [g for g in result.groups if g.node == name]
    assert len(found) == 1, f"no single group named {name}: {[g.name for g in result.groups]}"
    return found[0]


def members(result, group) -> set[str]:
    """'NODE[input index]' of every constant sliced with the group's units."""
    return set(group.to_dict(result.analysis.graph)["members"])


def reasons(group) -> str:
    return " | ".join(sorted({r for rs in group.frozen.values() for r in rs}))


def assert_frozen(group, keyword: str) -> None:
    """Every unit of `group` is frozen and some reason mentions `keyword`."""
    assert not group.prunable, f"group {group.name} should be frozen, {len(group.prunable)} free"
    assert keyword.lower() in reasons(group).lower(), f"'{keyword}' not in: {reasons(group)}"


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    found = [n for n in model.graph.node if n.name == name]
    assert len(found) == 1, f"no single node named {name}"
    return found[0]


def attr(model: onnx.ModelProto, name: str, key: str):
    for a in node(model, name).attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return None


def const_input(model: onnx.ModelProto, name: str, index: int) -> np.ndarray:
    """The constant feeding input `index` of node `name` (initializer or Constant node)."""
    tensor = node(model, name).input[index]
    for t in model.graph.initializer:
        if t.name == tensor:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and tensor in n.output:
            return numpy_helper.to_array(n.attribute[0].t)
    raise AssertionError(f"input {index} of {name} is not a constant")


# -- running --------------------------------------------------------------------------------------
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def feeds_for(model: onnx.ModelProto, seed: int = FEED_SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(model).run(None, feeds)


def removed_units(model: onnx.ModelProto, ratio: float, criterion: str = "l1",
                  round_to: int = 1, protect: str | None = None):
    """Re-derive the plan compress uses: (analysis, removed-per-slot array)."""
    an = analyze_graph(Graph(model))
    scores = scoring.score_units(an, criterion, 0)
    removed, _ = selection.select_uniform(
        an, scores, Options(ratio=ratio, round_to=round_to, protect=protect))
    return an, removed


def assert_exact(model: onnx.ModelProto, ratio: float = 0.5, criterion: str = "l1",
                 round_to: int = 1, protect: str | None = None):
    """compress, then check independently: checker, pruned vs masked original in onnxruntime
    (ORT_DISABLE_ALL on both sides, our own inputs), and that weights shrank when they could.
    Returns (pruned, report)."""
    before = model.SerializeToString()
    pruned, report = graphprune.compress(model, ratio=ratio, criterion=criterion,
                                         round_to=round_to, protect=protect)
    assert model.SerializeToString() == before, "compress modified its input model"
    assert report.exact_check["passed"]
    assert_checker(model, pruned)

    an, removed = removed_units(model, ratio, criterion, round_to, protect)
    masked = rewrite.masked_model(model, an, removed)
    feeds = feeds_for(model)
    ref, got = run(masked, feeds), run(pruned, feeds)
    names = [o.name for o in model.graph.output]
    assert [o.name for o in pruned.graph.output] == names
    for name, r, g in zip(names, ref, got, strict=True):
        assert r.shape == g.shape, f"output {name}: shape {g.shape}, masked original {r.shape}"
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL, err_msg=f"output {name}")

    prunable = any(g.prunable and len(g.units) > 1 for g in an.groups)
    before_p, after_p = count_params(model), count_params(pruned)
    assert report.params_before == before_p and report.params_after == after_p
    if ratio > 0 and prunable:
        assert removed.any(), "prunable groups but nothing removed"
        assert after_p < before_p, f"params did not shrink: {before_p} -> {after_p}"
    elif not removed.any():
        assert after_p == before_p, f"nothing removed but params {before_p} -> {after_p}"
    return pruned, report


def checker_error(model: onnx.ModelProto) -> str | None:
    """The first line of `onnx.checker`'s full-check complaint, or None (a model whose
    weights are served from mapped external data is checked as validation checks it: its
    weight-free graph, the weights' bytes being checked when they were mapped)."""
    from graphprune.passes import validation

    from graphprune.external import mapped

    try:
        if mapped(model):
            validation.structural_check(model)
            return None
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is the answer
        return first_line(exc)
    return None


def assert_checker(original: onnx.ModelProto, derived: onnx.ModelProto) -> None:
    """`derived` passes the full check, or fails it exactly as `original` already did (an op
    the checker deprecates, e.g. GroupNormalization-18, is no fault of the rewrite)."""
    err = checker_error(derived)
    assert err is None or err == checker_error(original), f"onnx.checker: {err}"


# -- invariants of every rewrite (used by the autouse fixture in conftest.py) ----------------------
def check_invariants(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    """What any pruned model must keep: a valid graph, the same interface, opsets and IR
    version, its nodes' names and types, and no more parameters than before."""
    assert_checker(original, pruned)
    assert pruned.ir_version == original.ir_version
    assert [(o.domain, o.version) for o in pruned.opset_import] == [
        (o.domain, o.version) for o in original.opset_import]
    inits = {t.name for t in original.graph.initializer}
    ins = [(i.name, i.type.tensor_type.elem_type) for i in original.graph.input
           if i.name not in inits]
    new_inits = {t.name for t in pruned.graph.initializer}
    assert [(i.name, i.type.tensor_type.elem_type) for i in pruned.graph.input
            if i.name not in new_inits] == ins
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    old_types = {n.name: n.op_type for n in original.graph.node if n.name}
    new_names = [n.name for n in pruned.graph.node if n.name]
    assert len(new_names) == len(set(new_names)), "node names are no longer unique"
    for n in pruned.graph.node:
        assert old_types.get(n.name or None, n.op_type) == n.op_type, (
            f"node {n.name} changed op type")
    assert count_params(pruned) <= count_params(original)


def check_masked(original: onnx.ModelProto, masked: onnx.ModelProto) -> None:
    """The masked original only zeroes values: same nodes and attributes (a Constant or
    layout op that only fed a replaced weight may go), same parameter count; a removed
    residual block adds one Mul of its branch output by a scalar zero before its Add."""
    assert_checker(original, masked)
    def sig(n):
        return n.op_type, [a.SerializeToString() for a in n.attribute]

    zeros = {t.name for t in masked.graph.initializer
             if not t.dims and not numpy_helper.to_array(t).any()}
    gates = [n for n in masked.graph.node if n.op_type == "Mul" and n.input[1] in zeros
             and "_gp_gated" in n.name]
    masked = onnx.ModelProto.FromString(masked.SerializeToString())
    for n in gates:
        masked.graph.node.remove(next(m for m in masked.graph.node if m.name == n.name))

    old = {n.name: sig(n) for n in original.graph.node if n.name}
    by_name = {n.name: n for n in original.graph.node if n.name}
    new = {n.name: sig(n) for n in masked.graph.node if n.name}
    assert len(new) == sum(1 for n in masked.graph.node if n.name)
    unnamed = [sig(n) for n in original.graph.node if not n.name]
    for n in masked.graph.node:
        assert n.name or sig(n) in unnamed, f"masked original changed an unnamed {n.op_type}"
    for name, s in new.items():
        assert old.get(name) == s, f"masked original changed node {name}"
    for name in set(old) - set(new):
        gone = by_name[name]
        assert gone.op_type == "Constant" or folds(gone), f"masked original lost {name}"
    assert count_params(masked) == count_params(original)
