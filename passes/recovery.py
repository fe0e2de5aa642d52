"""Recovery pass: repair the consumers of removed units from calibration data, no training.

Pruning leaves every *sink* of a removed unit (the conv, Gemm or MatMul that read it) as it
was, minus an input. Recovery changes those sinks' kept weights and biases so that their
outputs stay close to the original's (`refit.py` has the arithmetic, `moments.py` the
statistics). It is a *weight update in the original's shape*: the updated model has the same
graph (plus a zero bias where a sink had none: a Conv/Gemm bias input, an Add after a
MatMul), and the unchanged structural rewrite then removes the units, proven exact against
the updated model with the units masked (DESIGN.md, "Changing weights on purpose").

Methods (`--recover`):

- `bias`: every sink's bias takes the removed inputs' mean contribution (one pass over the
  calibration data, means only).
- `refit` (default with real calibration data): every sink's kept weights and bias are
  refit by ridge least squares to reproduce the original sink's output. `sequential`
  (default): sinks front to back, each from the inputs of the model already refit up to it
  (both models run in lockstep; a pass per layer, over the part of the graph that feeds it),
  so errors do not pile up; `independent`: every sink from the original's statistics, in one
  pass. A sink whose statistics exceed the memory budget, or whose weight is shared with
  another node (a refit would untie it), gets bias compensation instead; the summary says
  which and why.

Sinks of inexact (hidden-size) units, ops other than Conv/Gemm/MatMul (ConvTranspose,
Einsum, …) and sinks whose bias is computed rather than constant are left as they are, and
listed with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphprune import external
from graphprune.analysis import Analysis, analyze_graph, apply_scope
from graphprune.context import RunContext
from graphprune.edits import Member
from graphprune.ir import Graph, attr, folds, subgraph_references

from . import moments, prove, refit, rewrite
from .options import Options

METHODS = ("none", "bias", "refit")
ORDERS = ("sequential", "independent")


@dataclass
class Sink:
    """A node that contracts removed units against a weight, and how to update it."""

    node: int  # index in the analysed graph
    name: str
    site: moments.Site
    keep: np.ndarray  # [d]: row positions kept (channels repeated over kernel taps)
    mode: str = "refit"  # refit | bias
    why: str = ""  # why bias only
    weight: str = ""  # initializer holding the weight (in the prepared model)
    bias: str = ""  # initializer holding the bias (Conv B, Gemm C, the Add's constant)
    beta: float = 1.0  # the bias as applied: beta × initializer (Gemm)
    ridge: float | None = None  # the λ fraction of the refit (the largest over groups)
    w_like: np.ndarray | None = None  # the weight as stored (layout, dtype)
    b_like: np.ndarray | None = None  # the bias initializer as stored


@dataclass
class Summary:
    """What recovery did, for the report (`to_dict` is the report's `recovery`)."""

    method: str
    order: str | None = None
    refit: list[str] = field(default_factory=list)
    ridge: dict[str, float] = field(default_factory=dict)
    bias_only: dict[str, str] = field(default_factory=dict)
    not_recovered: dict[str, str] = field(default_factory=dict)
    samples_used: int = 0
    samples_held_back: int = 0
    fidelity_before: dict = field(default_factory=dict)
    fidelity_after: dict = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict:
        out = {"method": self.method}
        if self.method == "none":
            out["reason"] = self.reason
            return out
        out.update(order=self.order, sinks_refit=list(self.refit), ridge=dict(self.ridge),
                   sinks_bias_only=dict(self.bias_only),
                   sinks_not_recovered=dict(self.not_recovered),
                   samples_used=self.samples_used, samples_held_back=self.samples_held_back,
                   fidelity_before=self.fidelity_before, fidelity_after=self.fidelity_after)
        return out


@dataclass
class Recovered:
    """The updated model (the original's shape), its analysis and the removed units in it."""

    model: onnx.ModelProto
    an: Analysis
    removed: np.ndarray
    summary: Summary


# -- which sinks --------------------------------------------------------------------------------
def sink_members(an: Analysis) -> dict[tuple[int, int], list[Member]]:
    """Sink members by the (node, input index) they read units at, in graph order."""
    by_use: dict[tuple[int, int], list[Member]] = {}
    for m in an.members:
        if m.role == "sink":
            by_use.setdefault((m.node, m.index), []).append(m)
    return dict(sorted(by_use.items()))


def gone_inputs(an: Analysis, members: list[Member], removed: np.ndarray) -> np.ndarray:
    """Which positions of the sink's unit axis read `removed` units (bool, flat)."""
    gone = np.zeros(0, dtype=bool)
    for m in members:
        g = removed[an.roots[m.span.ids]]
        gone = g if not len(gone) else gone | g
    return gone.reshape(-1)


def find_sinks(an: Analysis, removed: np.ndarray) -> tuple[list[Sink], dict[str, str]]:
    """Sinks of removed units (in graph order) and the ones recovery cannot update, why."""
    sinks, skipped = [], {}
    for (node, index), members in sink_members(an).items():
        gone = gone_inputs(an, members, removed)
        if not gone.any():
            continue
        name = an.graph.node_name(node)
        try:
            site = moments.site(an.graph, node)
        except moments.Unsupported as exc:
            skipped[name] = str(exc)
            continue
        axis = _input_axis(site)
        if index != site.weight or any(m.span.axes != (axis,) for m in members):
            skipped[name] = "its units lie on an axis the statistics do not read"
            continue
        sinks.append(Sink(node, name, site, np.repeat(~gone, site.taps)))
    return sinks, skipped


def _input_axis(site: moments.Site) -> int:
    """The weight axis the sink's input positions run along."""
    if site.op == "Gemm":
        return 1 if site.trans_b else 0
    return 1 if site.op == "Conv" else 0


# -- the prepared model: private weights and biases ---------------------------------------------
class Prepared:
    """A copy of the model where every recovered sink reads its weight and bias from its own
    initializer (a bias of zeros added where there was none), numerically the original."""

    def __init__(self, model: onnx.ModelProto, graph: Graph) -> None:
        self.source, self.graph = model, graph
        self.model: onnx.ModelProto | None = None  # made on the first structural change
        self.after: dict[int, list[onnx.NodeProto]] = {}
        self.unhooked: list[str] = []
        self.taken = set(graph.initializers) | set(graph.producer) | set(graph.inputs)

    @property
    def changed(self) -> bool:
        return self.model is not None

    def _copy(self) -> onnx.ModelProto:
        if self.model is None:
            self.model = onnx.ModelProto()
            self.model.CopyFrom(self.source)
        return self.model

    def node(self, i: int) -> onnx.NodeProto:
        return (self.model or self.source).graph.node[i]

    def new_name(self, base: str) -> str:
        k = 0
        while f"{base}{k}" in self.taken:
            k += 1
        self.taken.add(f"{base}{k}")
        return f"{base}{k}"

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = self.new_name(base)
        self._copy().graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def private(self, i: int, index: int, base: str) -> str | None:
        """The initializer input `index` of node `i` reads, made its own: a sole-use
        initializer as is; a folded constant (Transpose, Constant, …) used only here as a new
        initializer of its value. None when the value is shared with other nodes."""
        g = self.graph
        name = g.nodes[i].input[index]
        if not _sole_chain(g, name):
            return None
        if name in g.initializers:
            return name
        value = g.const(name)
        if value is None:
            return None
        new = self.add_initializer(base, np.asarray(value))
        self.node(i).input[index] = new
        self.unhooked.append(name)
        return new

    def set_input(self, i: int, index: int, name: str) -> None:
        n = self._copy().graph.node[i]
        while len(n.input) <= index:
            n.input.append("")
        n.input[index] = name

    def set_attr(self, i: int, name: str, value) -> None:
        n = self._copy().graph.node[i]
        for a in [a for a in n.attribute if a.name == name]:
            n.attribute.remove(a)
        n.attribute.append(helper.make_attribute(name, value))

    def add_after(self, i: int, node: onnx.NodeProto) -> None:
        self._copy()
        self.after.setdefault(i, []).append(node)

    def finish(self) -> onnx.ModelProto:
        """The prepared model (inserted nodes in place, orphaned constants dropped)."""
        if self.model is None:
            return self.source
        g = self.model.graph
        if self.after:
            nodes = list(g.node)
            del g.node[:]
            for i, n in enumerate(nodes):
                g.node.append(n)
                g.node.extend(self.after.get(i, []))
        _drop_orphans(self.model, self.unhooked)
        return self.model


def _sole_chain(g: Graph, name: str) -> bool:
    """`name` and every constant it folds from are read once, by this chain alone."""
    while True:
        if len(g.uses(name)) != 1 or name in g.outputs:
            return False
        if name in g.initializers:
            return name not in g.inputs
        p = g.producer.get(name)
        if p is None:
            return False
        node = g.nodes[p]
        if node.op_type == "Constant":
            return True
        if not folds(node):
            return False
        name = node.input[0]


def _drop_orphans(model: onnx.ModelProto, names: list[str]) -> None:
    """Remove what only fed the inputs we re-pointed: nodes and initializers nothing reads."""
    g = model.graph
    uses: Counter = Counter()
    for n in g.node:
        uses.update(x for x in n.input if x)
        uses.update(subgraph_references(n))
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output if o}
    inits = {t.name: t for t in g.initializer}
    todo = list(names)
    while todo:
        name = todo.pop()
        if uses[name] or name in outputs:
            continue
        if name in inits:
            g.initializer.remove(inits.pop(name))
            continue
        n = producer.get(name)
        if n is None or any(uses[o] or o in outputs for o in n.output if o):
            continue
        g.node.remove(n)
        for x in n.input:
            if x:
                uses[x] -= 1
                todo.append(x)


def prepare_sink(p: Prepared, s: Sink, refitting: bool) -> str | None:
    """Give sink `s` a private weight (when refitting) and bias; None, or why it cannot be
    updated at all. Bias-only when its weight is shared (`s.mode`, `s.why`)."""
    g = p.graph
    if refitting:
        w = p.private(s.node, s.site.weight, f"{s.name}_gp_weight")
        if w is None:
            s.mode, s.why = "bias", "its weight is shared with other nodes (a refit would untie it)"
        else:
            s.weight = w
    s.w_like = np.asarray(g.const(g.nodes[s.node].input[s.site.weight]))
    if s.site.op == "MatMul":
        return _matmul_bias(p, s)
    n = g.nodes[s.node]
    index = 2
    dtype = _dtype(g, n.input[1])
    outputs = s.site.outputs
    if s.site.op == "Gemm":
        s.beta = float(attr(n, "beta", 1.0))
    has = len(n.input) > 2 and n.input[2]
    if not has or s.beta == 0.0:  # no bias (or one Gemm ignores): zeros of its own
        if has:
            p.unhooked.append(n.input[2])
        if s.beta == 0.0:
            p.set_attr(s.node, "beta", 1.0)
            s.beta = 1.0
        return _own_bias(p, s, index, np.zeros(outputs, dtype))
    value = g.const(n.input[2])
    if value is None:
        return "its bias is computed, not a constant"
    if value.size == outputs and value.ndim <= 2 and value.shape[-1] == outputs:
        s.bias = p.private(s.node, index, f"{s.name}_gp_bias") or ""
        if not s.bias:  # shared (an exporter's deduplicated zeros): a copy of its own
            p.unhooked.append(n.input[2])
            return _own_bias(p, s, index, np.array(value))
        s.b_like = np.asarray(value)
        return None
    if value.size == 1:  # a scalar Gemm C: the same value for every output
        p.unhooked.append(n.input[2])
        return _own_bias(p, s, index, np.full(outputs, value.reshape(-1)[0], value.dtype))
    return f"its bias has shape {list(value.shape)}, not one value per output"


def _own_bias(p: Prepared, s: Sink, index: int, value: np.ndarray, node: int | None = None,
              ) -> None:
    """A new initializer `value` as input `index` of `node` (the sink's own by default)."""
    s.bias = p.add_initializer(f"{s.name}_gp_bias", value)
    s.b_like = value
    p.set_input(s.node if node is None else node, index, s.bias)
    return None


def _matmul_bias(p: Prepared, s: Sink) -> str | None:
    """A MatMul's bias: the constant of the Add that alone reads its output, or a new Add."""
    g = p.graph
    n = g.nodes[s.node]
    y = n.output[0]
    uses = g.uses(y)
    if len(uses) == 1 and y not in g.outputs:
        add = g.nodes[uses[0].node]
        if add.op_type == "Add" and len(add.input) == 2:
            j = 1 - uses[0].index
            value = g.const(add.input[j])
            if value is not None and value.size == s.site.outputs and value.shape[-1] == \
                    s.site.outputs and value.ndim <= (g.rank(y) or 0):
                s.bias = p.private(uses[0].node, j, f"{s.name}_gp_bias") or ""
                if not s.bias:
                    p.unhooked.append(add.input[j])
                    return _own_bias(p, s, j, np.array(value), node=uses[0].node)
                s.b_like = np.asarray(value)
                return None
    dtype = _dtype(g, n.input[1])
    s.bias = p.add_initializer(f"{s.name}_gp_bias", np.zeros(s.site.outputs, dtype))
    s.b_like = np.zeros(s.site.outputs, dtype)
    inner = p.new_name(f"{y}_gp_matmul")
    p._copy().graph.node[s.node].output[0] = inner
    p.add_after(s.node, helper.make_node("Add", [inner, s.bias], [y],
                                         name=p.new_name(f"{s.name}_gp_bias_add")))
    return None


def _dtype(g: Graph, name: str) -> np.dtype:
    value = g.const(name)
    return np.dtype(np.float32) if value is None else value.dtype


# -- carrying the selection over to the prepared model's analysis -------------------------------
def carry(old: Analysis, removed: np.ndarray, new: Analysis) -> np.ndarray:
    """The same removal in another analysis of the same model (a bias input or an Add
    added): groups in the same order with the same units."""
    if len(old.groups) != len(new.groups):
        raise RuntimeError(f"the prepared model has {len(new.groups)} groups, the original "
                           f"{len(old.groups)}")
    out = np.zeros(len(new.roots), dtype=bool)
    for a, b in zip(old.groups, new.groups, strict=True):
        if len(a.units) != len(b.units) or a.kind != b.kind:
            raise RuntimeError(f"group '{a.name}' changed when biases were added")
        for u, v in zip(a.units, b.units, strict=True):
            out[v] = removed[u]
    return out


def reanalysed(model: onnx.ModelProto, an: Analysis) -> Analysis:
    """`an` over `model`, a copy of its model with other initializer values only: the same
    groups, spans and members, constants read from `model` (shapes as `an` found them)."""
    g = Graph(model, infer=False)
    g.shapes, g.dtypes = dict(an.graph.shapes), dict(an.graph.dtypes)
    return dataclasses.replace(an, graph=g)


# -- the pass -----------------------------------------------------------------------------------
def recover(model: onnx.ModelProto, an: Analysis, removed: np.ndarray, opts: Options,
            calibration, run: RunContext | None = None,
            spill: external.Spill | None = None) -> Recovered:
    """Update the sinks of the `removed` units (see the module docstring) with statistics of
    `calibration` (a `calibration.Calibration`: the samples recovery may use). Returns the
    updated model, its analysis and the removal in it."""
    run = run or RunContext()
    method = opts.recovery
    summary = Summary(method, opts.refit_order if method == "refit" else None)
    summary.samples_used = calibration.samples
    exact = removed & ~prove.inexact_roots(an)
    if (removed & ~exact).any():
        run.note("recovery leaves the sinks of hidden (inexact) units as they are")
    sinks, summary.not_recovered = find_sinks(an, exact)
    prep = Prepared(model, an.graph)
    live = []
    for s in sinks:
        why = prepare_sink(prep, s, method == "refit")
        if why:
            summary.not_recovered[s.name] = why
        else:
            live.append(s)
    base = prep.finish()
    if prep.changed:
        new_an = analyze_graph(Graph(base), inexact="hidden" in opts.scope,
                               io=opts.allow_io_change, blocks="blocks" in opts.scope)
        apply_scope(new_an, opts.scope)
        removed = carry(an, removed, new_an)
        exact = removed & ~prove.inexact_roots(new_an)
        new_an_of = new_an
    else:
        new_an_of = an
    budget = opts.recover_budget_mb << 20
    sequential = method == "refit" and opts.refit_order == "sequential"
    for s in live:
        if s.mode == "refit" and s.site.accumulator_bytes(sequential, halves=True) > budget:
            need = s.site.accumulator_bytes(sequential, halves=True) / 2**20
            s.mode, s.why = "bias", (f"its input statistics need {need:.0f} MB (rows of "
                                     f"{s.site.width}), over the budget of "
                                     f"{opts.recover_budget_mb} MB")
        if method == "bias":
            s.mode, s.why = "bias", "--recover bias"
    updates = Updates(base, live)
    _bias_only(updates, model, calibration, run)
    todo = [s for s in live if s.mode == "refit"]
    if todo and sequential:
        masked = rewrite.mask_overrides(base, new_an_of, exact)
        session_model = base
        if masked is None:
            session_model, masked = rewrite.masked_model(base, new_an_of, exact), {}
        _sequential(updates, todo, model, session_model, masked, an.graph, calibration, run)
    elif todo:
        _independent(updates, todo, model, calibration, run)
    summary.refit = [s.name for s in live if s.mode == "refit"]
    summary.ridge = {s.name: s.ridge for s in live if s.mode == "refit"}
    summary.bias_only = {s.name: s.why for s in live if s.mode == "bias"}
    updated = updates.write(model, spill)
    return Recovered(updated, reanalysed(updated, new_an_of), removed, summary)


class Updates:
    """New weight rows and biases per sink (float64), and the values they give the model."""

    def __init__(self, base: onnx.ModelProto, sinks: list[Sink]) -> None:
        self.base = base
        self.sinks = sinks
        self.w = {s.node: moments.weight_rows(s.site, s.w_like) for s in sinks}
        self.b = {s.node: (np.asarray(s.b_like, np.float64).reshape(-1) * s.beta).reshape(
            s.site.groups, -1) for s in sinks}

    def overrides(self, masked: bool = True) -> dict[str, np.ndarray]:
        """The updated weights (refit sinks) and biases by initializer name; `masked`: the
        removed inputs' weights zeroed, as in the masked reference."""
        out = {}
        for s in self.sinks:
            if s.mode == "refit":
                w = self.w[s.node]
                if masked:
                    w = w.copy()
                    w[:, :, ~s.keep] = 0.0
                out[s.weight] = moments.weight_from_rows(s.site, w, s.w_like)
            out[s.bias] = (self.b[s.node].reshape(-1) / s.beta).reshape(
                s.b_like.shape).astype(s.b_like.dtype)
        return out

    def write(self, source: onnx.ModelProto, spill: external.Spill | None) -> onnx.ModelProto:
        """The updated model: the base (a copy when it is the `source` model itself) with the
        new values."""
        out = self.base
        if out is source:
            out = onnx.ModelProto()
            out.CopyFrom(self.base)
        inits = {t.name: t for t in out.graph.initializer}
        for name, value in self.overrides(masked=False).items():
            rewrite.store(inits[name], value, spill)
        return out


def _bias_only(updates: Updates, model: onnx.ModelProto, calibration,
               run: RunContext) -> None:
    """Bias compensation of the bias-only sinks, from the original's input means."""
    sinks = [s for s in updates.sinks if s.mode == "bias"]
    if not sinks:
        return
    run.say(f"recovery: input means of {len(sinks)} layers")
    got = moments.collect(model, [s.site for s in sinks], calibration.batches(), second=False,
                          budget=1 << 62, progress=run.say)
    for s in sinks:
        mean = got.moments[s.site.node].mean()
        updates.b[s.node] = updates.b[s.node] + refit.bias_delta(updates.w[s.node], mean, s.keep)


def _independent(updates: Updates, sinks: list[Sink], model: onnx.ModelProto, calibration,
                 run: RunContext) -> None:
    """Every sink refit from the original's statistics (x̂ = x_K), in one pass."""
    run.say(f"recovery: input statistics of {len(sinks)} layers")
    got = moments.collect(model, [s.site for s in sinks], calibration.batches(), halves=True,
                          budget=1 << 62, progress=run.say)
    for s in sinks:
        m = got.moments[s.site.node]
        halves = m.folds()
        folds = None if halves is None else tuple((h.augmented(), h.augmented())
                                                  for h in halves)
        aug = m.augmented()
        _apply(updates, s, *refit.refit(updates.w[s.node], updates.b[s.node], aug, aug,
                                        s.keep, folds))


def _apply(updates: Updates, s: Sink, w: np.ndarray, b: np.ndarray,
           chosen: list[float]) -> None:
    updates.w[s.node], updates.b[s.node] = w, b
    if all(math.isinf(f) for f in chosen):
        s.mode, s.why = "bias", ("cross-validation on the calibration samples kept its "
                                 "weights: no refit of them generalised")
    else:
        s.ridge = max(f for f in chosen if not math.isinf(f))


def _sequential(updates: Updates, sinks: list[Sink], model: onnx.ModelProto,
                session_model: onnx.ModelProto, masked: dict[str, np.ndarray], graph: Graph,
                calibration, run: RunContext) -> None:
    """Sinks front to back: each step takes the sinks no pending sink feeds, measures their
    inputs in the model refit so far (masked) beside the original's, and refits them."""
    order = [s.node for s in sinks]
    upstream = _upstream(graph, order)
    pending = {s.node: s for s in sinks}
    step = 0
    while pending:
        mask = sum(1 << k for k, node in enumerate(order) if node in pending)
        ready = [s for s in pending.values() if not upstream.get(s.site.x, 0) & mask]
        step += 1
        run.say(f"recovery: step {step}, refitting {len(ready)} layers "
                f"({len(pending)} left)")
        overrides = {**masked, **updates.overrides()}
        got = moments.collect(session_model, [s.site for s in ready], calibration.batches(),
                              paired=model, overrides=overrides, halves=True,
                              budget=1 << 62, progress=run.say)
        for s in ready:
            m = got.moments[s.site.node]
            halves = m.folds()
            folds = None if halves is None else tuple(
                (h.augmented_cross(), h.augmented()) for h in halves)
            _apply(updates, s, *refit.refit(updates.w[s.node], updates.b[s.node],
                                            m.augmented_cross(), m.augmented(), s.keep,
                                            folds))
            del pending[s.node]


def _upstream(graph: Graph, nodes: list[int]) -> dict[str, int]:
    """Per tensor: a bit set of the `nodes` whose output reaches it (bit k for nodes[k])."""
    bit = {n: 1 << k for k, n in enumerate(nodes)}
    reach: dict[str, int] = {}
    for i, node in graph.iter_nodes():
        acc = 0
        for x in [*node.input, *sorted(subgraph_references(node))]:
            acc |= reach.get(x, 0) if x else 0
        acc |= bit.get(i, 0)
        for o in node.output:
            if o:
                reach[o] = acc
    return reach
