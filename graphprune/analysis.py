"""Dependency analysis: walk the graph once, let each op's rule label, couple and freeze slots.

The result lists the *members* (constant tensors sliced when a slot goes), the *edits* (size
encodings fixed at rewrite time) and the *groups* (units that share the same members).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from . import ops
from .blocks import Block, Join, find_blocks
from .edits import Edit, Member
from .ir import Graph, folds, subgraph_references, value_dims
from .names import dedupe, layer_name
from .rules.common import keep_whole
from .rules.context import Ctx, State
from .slots import Span, UnionFind, constant_along
from .topology import holds_subgraph


@dataclass(eq=False)
class Group:
    """Units (slot roots) sharing the same members: ratios apply per group.

    `name` is the readable name of the layer whose weight produces the units
    (graphprune.names: `layers.0.query`); `node` the name of that layer's node, as groups
    were named before (plans of version 1 use it)."""

    name: str
    units: list[int]
    frozen: dict[int, list[str]]
    members: list[Member]
    inexact: bool = False
    kind: str = "channels"
    edits: list[dict[str, str]] = field(default_factory=list)
    """What the rewrite sets from these units' count besides slicing (Edit.describe)."""
    node: str = ""

    @property
    def prunable(self) -> list[int]:
        return [u for u in self.units if u not in self.frozen]

    def to_dict(self, graph: Graph) -> dict[str, Any]:
        reasons = sorted({r for rs in self.frozen.values() for r in rs})
        return {
            "name": self.name,
            "node": self.node,
            "kind": self.kind,
            "units": len(self.units),
            "prunable": len(self.prunable),
            "members": sorted({f"{graph.node_name(m.node)}[{m.index}]" for m in self.members}),
            "frozen_reasons": reasons,
            "edits": self.edits,
        }


@dataclass
class Analysis:
    graph: Graph
    uf: UnionFind
    spans: dict[str, list[Span]]
    members: list[Member]
    edits: list[Edit]
    blockers: Counter
    groups: list[Group] = field(default_factory=list)
    roots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    io: bool = False
    """Graph inputs/outputs may change shape (allow_io_change): their spans in `spans` say
    along which axes; only units that enter through a graph input and leave through a graph
    output (state such as a KV cache) are left unfrozen there."""
    blocks: list[Block] = field(default_factory=list)
    """Residual branches (graphprune.blocks), the units of the `blocks` group, when asked."""
    joins: list[Join] = field(default_factory=list)
    """Adds of two computed paths that are no branch (projection shortcuts), when asked."""


IO_MAX_POSITIONS = 1 << 16
"""A graph input gets units (allow_io_change) over at most this many static positions."""


class _Analyzer(State):
    def __init__(self, graph: Graph, inexact: bool = False,
                 io_inputs: dict[str, str] | None = None) -> None:
        super().__init__(graph, inexact)
        self.io_inputs = io_inputs
        """None: inputs carry no units, outputs freeze theirs. Else: graph input -> how its
        static axes are labelled, "joint" (one span over them all) or "split" (one each)."""

    def run(self) -> Analysis:
        g = self.graph
        if self.io_inputs is not None:
            self._label_inputs()
        for i, node in g.iter_nodes():
            ctx = Ctx(self, i)
            fn = ops.lookup(node.domain, node.op_type, g.opset)
            traits = ops.traits(node.domain, node.op_type)
            if not traits.tiled:
                self._untile_inputs(ctx)
            marked = any(ctx.marks(j) for j in range(len(node.input)))
            if not traits.marks and marked:  # marks: entries of shape tensors read through
                ctx.freeze_marks("channel count read as a value")  # Shape from a unit axis
            if fn is not None and not traits.multi_input:
                for j in range(1, len(node.input)):
                    ctx.freeze_spans(ctx.spans(j), "units reach a weight or parameter input")
            if fn is None:
                if any(ctx.spans(j) for j in range(len(node.input))):
                    ctx.blocker()
                ctx.freeze_inputs(f"no rule for op {node.domain + '::' if node.domain else ''}"
                                  f"{node.op_type}")
            else:
                fn(ctx)
                if not ctx.marks_handled and any(ctx.marks(j) for j in range(len(node.input))):
                    ctx.freeze_marks("channel count read as a value")
            for name in _subgraph_names(g, i):
                for s in self.spans.get(name, []):
                    self.uf.freeze(
                        s.ids, f"used inside a subgraph of {node.op_type} {g.node_name(i)}")
        for name in g.outputs:
            if self.io_inputs is None:
                for s in self.spans.get(name, []):
                    self.uf.freeze(s.ids, f"reaches graph output '{name}'")
            for m in self.marks.get(name, []):
                if m is not None:
                    self.uf.freeze(m, f"reaches graph output '{name}'")
        for m in self.members:  # a weight that is itself a graph output
            name = g.nodes[m.node].input[m.index]
            if name in g.outputs:
                self.uf.freeze(m.span.ids, f"reaches graph output '{name}'")
        self._couple_shared_constants()
        self._freeze_weights_read_elsewhere()
        self._make_rectangular()
        if self.io_inputs is not None:
            self._freeze_io()
        an = Analysis(g, self.uf, self.spans, self.members, self.edits, self.blockers,
                      io=self.io_inputs is not None)
        an.roots = self.uf.roots()
        an.groups = build_groups(an)
        return an

    def _untile_inputs(self, ctx: Ctx) -> None:
        """Before an op that knows nothing of tiling: units stay whole along tiled axes
        (collapsed, or frozen when that is all they span), and those axes drop out."""
        for name in ctx.node.input:
            spans = self.spans.get(name, [])
            if not any(s.tiled for s in spans):
                continue
            out = []
            for s in spans:
                if not s.tiled:
                    out.append(s)
                    continue
                if not keep_whole(ctx, s, set(s.tiled), "units interleaved with a dynamic axis"):
                    continue
                keep = [k for k, a in enumerate(s.axes) if a not in s.tiled]
                index = tuple(slice(None) if k in keep else 0 for k in range(len(s.axes)))
                out.append(Span(tuple(s.axes[k] for k in keep), s.ids[index]))
            self.spans[name] = out

    def _label_inputs(self) -> None:
        """allow_io_change: a graph input gets fresh slots over its static axes (size > 1),
        one per position; the op rules then couple them like any tensor's (a past key
        concatenated with the new key along the sequence axis shares its head slots).
        "joint": one span over all those axes (it meets [heads, dim] spans, as a KV cache
        does); "split": one span per axis (it meets spans of fewer axes, e.g. [channels]
        beside a static batch axis)."""
        assert self.io_inputs is not None
        g = self.graph
        for name in g.inputs:
            shape = g.shape(name)
            how = self.io_inputs.get(name)
            if how is None or shape is None:
                continue
            axes = tuple(a for a, d in enumerate(shape) if isinstance(d, int) and d > 1)
            dims = tuple(int(shape[a]) for a in axes)  # type: ignore[arg-type]
            if not axes or int(np.prod(dims)) > IO_MAX_POSITIONS:
                continue
            if how == "joint":
                ids = self.uf.fresh(int(np.prod(dims))).reshape(dims)
                spans = [Span(axes, ids)]
            else:
                spans = [Span((a,), self.uf.fresh(n)) for a, n in zip(axes, dims, strict=True)]
            for span in spans:
                self.uf.tag(span.ids, "io")
            self.spans[name] = spans

    def state_roots(self) -> set[int]:
        """Roots that enter through a graph input and leave through a graph output."""
        def roots_of(names) -> set[int]:
            return {self.uf.find(x) for n in names for s in self.spans.get(n, [])
                    for x in np.unique(s.ids).tolist()}

        return roots_of(self.graph.inputs) & roots_of(self.graph.outputs)

    def _freeze_io(self) -> None:
        """Units may change the interface only where they are state: they enter through a
        graph input and leave through a graph output (the caller feeds one back as the
        other, both shrink alike), and only along static axes of the declared shapes. Any
        other unit reaching a graph output, or read from a graph input, stays."""
        g = self.graph
        state = self.state_roots()
        declared = {v.name: v for v in (*g.g.input, *g.g.output)}
        for names, why in ((g.outputs, "reaches graph output '{}'"),
                           (g.inputs, "comes from graph input '{}'")):
            for name in names:
                dims = _declared_dims(declared.get(name))
                for s in self.spans.get(name, []):
                    roots = np.vectorize(self.uf.find, otypes=[np.int64])(s.ids)
                    inside = np.isin(roots, np.fromiter(state, np.int64, len(state)))
                    if not inside.all():
                        self.uf.freeze(s.ids[~inside], why.format(name))
                    static = dims is not None and all(
                        a < len(dims) and dims[a] == n
                        for a, n in zip(s.axes, s.ids.shape, strict=True))
                    if inside.any() and not static:
                        self.uf.freeze(s.ids[inside], why.format(name)
                                       + " (its declared shape has no static size there)")

    def _members_by_root(self) -> dict[str, list[Member]]:
        """Members by the initializer (or Constant) their input folds from."""
        g = self.graph
        by_root: dict[str, list[Member]] = {}
        for m in self.members:
            name = g.nodes[m.node].input[m.index]
            by_root.setdefault(g.const_root(name) or name, []).append(m)
        return by_root

    def _freeze_weights_read_elsewhere(self) -> None:
        """A weight also read where it is no member (as data, inside a subgraph) would have to
        be cloned to be sliced, growing the model: its units stay. (Per-unit parameters may
        be cloned: they are small.)"""
        g = self.graph
        for root, ms in self._members_by_root().items():
            if all(m.role == "param" for m in ms):
                continue
            sliced = {(m.node, m.index) for m in ms}
            other = next((u for u in _final_uses(g, root) if (u.node, u.index) not in sliced),
                         None)
            if other is not None:
                where = f"{g.nodes[other.node].op_type} {g.node_name(other.node)}"
                for m in ms:
                    self.uf.freeze(m.span.ids, f"weight also read elsewhere ({where})")

    def _couple_shared_constants(self) -> None:
        """Tied weights (one non-trivial initializer sliced for several nodes, directly or
        through an Identity an exporter put in between) prune the same positions at every
        use, so the pruned copies stay one tensor. Other views of the same initializer (a
        Split piece, a transpose) are different tensors: not tied. Constants whose values
        are all equal are shared by exporters' deduplication, not by design: they are cloned."""
        g = self.graph
        for ms in self._members_by_root().values():
            uses = {(m.node, m.index) for m in ms}
            ref_name = g.nodes[ms[0].node].input[ms[0].index]
            ref = g.const(ref_name)
            if len(uses) < 2 or _uniform(ref):
                continue  # an exporter shared equal constants (zero biases): clone, don't tie
            first = [m for m in ms if (m.node, m.index) == (ms[0].node, ms[0].index)]
            for m in ms:
                if (m.node, m.index) == (ms[0].node, ms[0].index):
                    continue
                name = g.nodes[m.node].input[m.index]
                if name != ref_name and not _same_array(g.const(name), ref):
                    continue
                twin = next((f for f in first if f.span.axes == m.span.axes
                             and f.span.ids.shape == m.span.ids.shape), None)
                if twin is None:
                    self.uf.freeze(m.span.ids, "shared weight sliced along different axes")
                else:
                    self.uf.unify(twin.span.ids, m.span.ids)

    def _make_rectangular(self) -> None:
        """Collapse multi-axis spans so removal is a product pattern: keep the longest axis."""
        changed = True
        while changed:
            changed = False
            for spans in self.spans.values():
                for s in spans:
                    if len(s.axes) < 2:
                        continue
                    roots = np.vectorize(self.uf.find, otypes=[np.int64])(s.ids)
                    if any(constant_along(roots, k) for k in range(roots.ndim)):
                        continue
                    keep = int(np.argmax(roots.shape))
                    for k in range(roots.shape[keep]):
                        self.uf.unify_all(np.take(roots, k, axis=keep))
                    changed = True


def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b)

def _declared_dims(value: onnx.ValueInfoProto | None) -> list[int | None] | None:
    """Static dims of a declared graph input/output (None per dynamic dim)."""
    dims = None if value is None else value_dims(value)
    return None if dims is None else [d if isinstance(d, int) else None for d in dims]


def _uniform(value: np.ndarray | None) -> bool:
    return value is None or value.size == 0 or bool(np.all(value == value.flat[0]))


def _final_uses(graph: Graph, name: str) -> list:
    """Uses of a constant, looking through the layout ops that fold it (a Transpose of a
    tied embedding is the same weight)."""
    out = []
    for u in graph.uses(name):
        node = graph.nodes[u.node]
        if u.index == 0 and folds(node) and graph.is_const(node.output[0]):
            out.extend(x for o in node.output for x in _final_uses(graph, o))
        else:
            out.append(u)
    return out


def _subgraph_names(graph: Graph, i: int) -> list[str]:
    node = graph.nodes[i]
    if not holds_subgraph(node):
        return []
    return sorted(subgraph_references(node))


def build_groups(an: Analysis) -> list[Group]:
    """Units with identical member sets form a group; order follows the graph."""
    roots = an.roots
    sig: dict[int, list[int]] = {}
    for k, m in enumerate(an.members):
        for r in dict.fromkeys(roots[m.span.ids.ravel()].tolist()):
            sig.setdefault(r, []).append(k)
    by_sig: dict[tuple[int, ...], list[int]] = {}
    for r, ks in sig.items():
        by_sig.setdefault(tuple(ks), []).append(r)
    groups = []
    for ks, units in by_sig.items():
        members = [an.members[k] for k in ks]
        anchor = next((m for m in members if m.role == "source"), members[0])
        order = {r: n for n, r in enumerate(dict.fromkeys(roots[anchor.span.ids.ravel()].tolist()))}
        units.sort(key=lambda r: order.get(r, len(order)))
        frozen = {r: sorted(an.uf.reasons[r]) for r in units if r in an.uf.reasons}
        tags = set().union(*(an.uf.tags.get(r, set()) for r in units))
        node = an.graph.node_name(anchor.node)
        groups.append(Group(_layer_name(an.graph, anchor), units, frozen, members,
                            inexact="inexact" in tags, kind=_kind(an, anchor, tags), node=node))
    for g, name, node in zip(groups, dedupe([g.name for g in groups]),
                             dedupe([g.node for g in groups]), strict=True):
        g.name, g.node = name, node
    _describe_edits(an, groups)
    return groups


def _describe_edits(an: Analysis, groups: list[Group]) -> None:
    """List each edit with every group whose units it counts."""
    where = {r: k for k, g in enumerate(groups) for r in g.units}
    for e in an.edits:
        hit = {where[r] for ids in e.ids() for r in np.unique(an.roots[ids]).tolist()
               if r in where}
        for k in sorted(hit):
            groups[k].edits.append(e.describe(an.graph, an.roots))


def _kind(an: Analysis, anchor: Member, tags: set[str]) -> str:
    """channels (conv), heads (attention), ffn (other linear units), hidden (inexact)."""
    if "inexact" in tags or "hidden" in tags:
        return "hidden"
    if "heads" in tags:
        return "heads"
    node = an.graph.nodes[anchor.node]
    return ops.traits(node.domain, node.op_type).kind


def _layer_name(graph: Graph, anchor: Member) -> str:
    """The readable name of the anchor's layer (graphprune.names)."""
    node = graph.nodes[anchor.node]
    weight = graph.const_root(node.input[anchor.index]) or node.input[anchor.index]
    return layer_name(node, graph.node_name(anchor.node), weight,
                            tied=len(_final_uses(graph, weight)) > 1)


def analyze_graph(graph: Graph, *, inexact: bool = False, io: bool = False,
                  blocks: bool = False) -> Analysis:
    """`inexact`: let units pass through statistics over their axis (LayerNorm, RMSNorm,
    mean reductions) instead of freezing them; they are tagged "inexact" (hidden-size pruning).

    `io` (allow_io_change): graph inputs and outputs may shrink along static unit axes where
    they carry state (units entering through an input and leaving through an output, as a
    KV cache's past and present key/values do). A first pass labels every graph input and
    finds which ones carry such state; the analysis then runs again labelling only those, so
    a model without state (or an input that is plain data) is analysed exactly as without
    `io` apart from its state.

    `blocks`: residual branches become units too, of one group of kind `blocks`
    (`add_blocks`)."""
    an = _analyze(graph, inexact, io)
    if blocks:
        add_blocks(an)
    return an


def _analyze(graph: Graph, inexact: bool, io: bool) -> Analysis:
    if not io:
        return _Analyzer(graph, inexact).run()
    chosen: dict[str, str] = {}
    for how in ("joint", "split"):  # the first labelling under which an input carries state
        probe = _Analyzer(graph, inexact, {n: how for n in graph.inputs if n not in chosen})
        probe.run()
        weighted = {probe.uf.find(x) for m in probe.members for x in np.unique(m.span.ids).tolist()}
        live = {r for r in probe.state_roots() & weighted if r not in probe.uf.reasons}
        chosen.update({name: how for name in graph.inputs if name not in chosen and any(
            probe.uf.find(x) in live
            for s in probe.spans.get(name, []) for x in np.unique(s.ids).tolist())})
    return _Analyzer(graph, inexact, chosen).run()


def state_io(graph: Graph, *, inexact: bool = False) -> list[str]:
    """Graph inputs and outputs whose units are state, which `allow_io_change` would let
    shrink (a KV cache's past and present key/values), in graph order. Found by the
    analysis with io; not run (nothing found) unless some output declares the static dims
    of some input, as a cache fed back does."""
    declared = {v.name: _declared_dims(v) for v in (*graph.g.input, *graph.g.output)}

    def static(name: str) -> tuple | None:
        dims = declared.get(name)
        return None if dims is None else tuple(d if d and d > 1 else None for d in dims)

    ins = {static(n) for n in graph.inputs} - {None}
    if not any(static(n) in ins and any(static(n) or ()) for n in graph.outputs):
        return []
    an = analyze_graph(graph, inexact=inexact, io=True)
    return [name for name in (*graph.inputs, *graph.outputs)
            if any(int(r) not in an.uf.reasons for s in an.spans.get(name, [])
                   for r in np.unique(an.roots[s.ids]))]


def add_blocks(an: Analysis) -> None:
    """Residual branches (graphprune.blocks) as the units of one group named `blocks`, in
    graph order: a slot each, frozen with the reasons a branch cannot go. One group, so a
    ratio or a global ranking runs over all blocks (ShortGPT ranks layers across the
    model) and a plan names blocks by position. Each block lists the units that go with
    it: those of groups whose members all lie inside it, and of blocks nested in it."""
    found, an.joins = find_blocks(an.graph)
    if not found:
        return
    ids = an.uf.fresh(len(found))
    an.roots = np.concatenate([an.roots, ids])
    for b, u in zip(found, ids.tolist(), strict=True):
        b.unit = u
        for reason in b.reasons:
            an.uf.freeze(np.array([u]), reason)
    inside = [{m.node for m in g.members} for g in an.groups]
    for b in found:
        nodes = set(b.nodes)
        b.inner = [u for g, ns in zip(an.groups, inside, strict=True) if ns and ns <= nodes
                   for u in g.units]
        b.inner += [o.unit for o in found if o is not b and o.add in nodes]
    frozen = {b.unit: sorted(an.uf.reasons[b.unit]) for b in found if b.unit in an.uf.reasons}
    an.groups.append(Group("blocks", [b.unit for b in found], frozen, [], kind="blocks"))
    for gr, name in zip(an.groups, dedupe([g.name for g in an.groups]), strict=True):
        gr.name = name
    an.blocks = found


def blocks_group(an: Analysis) -> Group | None:
    """The group of residual blocks, when the analysis has one."""
    return next((g for g in an.groups if g.kind == "blocks"), None)


SCOPES = ("channels", "heads", "ffn", "hidden", "blocks")
DEFAULT_SCOPE = ("channels", "heads", "ffn")


def apply_scope(an: Analysis, scope: tuple[str, ...] | list[str]) -> None:
    """Freeze the units of groups whose kind is outside `scope` (with that reason)."""
    bad = sorted(set(scope) - set(SCOPES))
    if bad:
        from .errors import InputError

        raise InputError(f"unknown scope {', '.join(bad)} (choose from {', '.join(SCOPES)})")
    for g in an.groups:
        if g.kind not in scope:
            for u in g.units:
                if u not in g.frozen:
                    g.frozen[u] = [f"{g.kind} not in --scope"]
