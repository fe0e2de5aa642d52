"""The sparsify pass: zero a fraction of every layer's weights in place.

The output is the same graph — same nodes, names, shapes, interface and external-data
layout — with zeros in the weights of MatMul, Gemm and Conv layers (`sparse_layers` says
which and why not), in the pattern asked for (`sparse_masks`: unstructured or N:M along
the input channels). Methods:

- `magnitude`: |w|; unstructured over the whole layer (⌊s·n⌋ smallest of it), N:M per group.
- `wanda` (Sun et al. 2024): |w|·‖x_j‖, the weight times the L2 norm of its input channel j
  over the calibration data, compared per output row (the paper's comparison group) or per
  N:M group. For a convolution, channel j's norm counts at every kernel tap.
- `sparsegpt` (Frantar & Alistarh 2023): see `sparsegpt.py`; it also updates the weights it
  keeps, from the Hessian 2·E[x xᵀ] of each layer's (unfolded) input (`moments`). A layer
  whose input statistics `moments` cannot take (a weight read as MatMul's first input, over
  the memory budget) stays dense, and the report says why.

Data-driven methods run **sequentially** (as both papers' implementations do): the layers
come in waves, a layer's wave after every layer its input depends on, and each wave's input
statistics are taken from the model with the earlier waves already sparsified, so a layer
compensates for what the sparsity upstream changed. `sequential=False` takes every layer's
statistics from the dense model in one pass.

Nothing here is exact, so there is no exact check (`sparse_check`): every sparsified weight,
read back from the model as written, must have the pattern, the output must run in
onnxruntime with the original's output shapes (a ValidationError otherwise), and what the
zeros cost is measured as fidelity against the original on held-back samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphprune import external
from graphprune.context import RunContext
from graphprune.errors import InputError, stage
from graphprune.ir import Graph
from graphprune.metrics import count_params

from . import moments, validation
from .calibration import Calibration, channel_stats
from .options import Options
from .sparse_check import heldout_fidelity, holdout, totals, verify, with_values
from .sparse_layers import Found, Layer, Skipped, dynamic_tensors, find_layers
from .sparse_masks import Pattern, as_matrix, from_matrix, matrix_mask, parse_pattern
from .sparsegpt import group_counts, solve, tap_major

NO_EXACT_CHECK = "no exact check: weights changed on purpose; measured fidelity instead"


@dataclass
class Sparsified:
    """The sparsified model, the new values of the weights it changed (by source name) and
    the report's `sparsity` record; `layers` names the sparsified nodes (a plan's)."""

    model: onnx.ModelProto
    values: dict[str, np.ndarray]
    record: dict
    layers: list[str] = field(default_factory=list)


def sparsify_model(model: onnx.ModelProto, opts: Options, ctx: RunContext, *,
                   calibration: Calibration | None = None, spill: external.Spill | None = None,
                   only: list[str] | None = None) -> Sparsified:
    """Sparsify `model` as `opts` says (`sparsity`, `pattern`, `method`, `sparse_scope`,
    `protect`, `sequential`); `only`: the node names a plan lists, each of which must be
    sparsifiable. Data-driven methods read `calibration`."""
    pattern = parse_pattern(opts.pattern)
    with stage("sparsify: finding layers"):
        graph = Graph(model)
        found = find_layers(graph, opts.sparse_scope, pattern, opts.protect,
                            None if only is None else set(only))
    if only is not None:
        _check_plan_layers(found, only)
    ctx.lap("analysis")
    fit, back = calibration.split(opts.holdout) if calibration is not None else (None, None)
    work = _Work(model, graph, opts, pattern, ctx, fit, spill)
    with stage(f"sparsify ({opts.method}, {pattern.name})"):
        work.run(found.layers)
    ctx.lap("sparsify")
    if only is not None and work.dense:
        raise InputError(f"plan sparsifies layer '{work.dense[0].name}', which this run left "
                         f"dense ({work.dense[0].reason})")
    done = [layer for layer in found.layers if layer.name in work.done]
    with stage("sparsify: writing weights"):
        out = with_values(model, work.values)  # large values are in the spill already
    validation.structural_check(out)  # onnx.checker, full: ValidationError when it fails
    record = {"method": opts.method, "pattern": pattern.name,
              "sparsity": round(opts.sparse_fraction, 6), "scope": list(opts.sparse_scope),
              "sequential": bool(opts.sequential and opts.sparsify_needs_data),
              "layers": verify(out, done, pattern, opts.sparse_fraction, work.errors),
              "skipped": [s.to_dict() for s in [*found.skipped, *work.dense]]}
    record["totals"] = totals(record["layers"], count_params(model))
    if fit is not None and opts.sparsify_needs_data:
        record["calibration"] = fit.describe()
    ctx.lap("verification")
    ctx.say("measuring fidelity on held-back samples")
    with stage("fidelity measurement"):
        record["check"] = NO_EXACT_CHECK
        held, record["holdout"] = holdout(model, opts, back)
        record["fidelity"] = heldout_fidelity(model, out, held)
    ctx.lap("validation")
    return Sparsified(out, work.values, record, [layer.name for layer in done])


def _check_plan_layers(found: Found, only: list[str]) -> None:
    have = {layer.name for layer in found.layers}
    for name in only:
        if name not in have:
            why = next((s.reason for s in found.skipped if s.name == name),
                       "no such MatMul/Gemm/Conv node with a constant weight")
            raise InputError(f"plan sparsifies layer '{name}', which this model cannot "
                             f"sparsify ({why})")


# -- choosing and zeroing -------------------------------------------------------------------
Method = Callable[["_Work", Layer, np.ndarray, object], "np.ndarray | None"]
"""(run, layer, its weight, the wave's statistics) → the new weight, or None when the layer
stays dense (`_Work.leave` says why)."""
METHODS: dict[str, Method] = {}


def method(name: str, stats: str | None = None):
    """Register a method (`stats`: the input statistics it reads: None, "channels", or
    "moments")."""
    def register(fn: Method) -> Method:
        fn.stats = stats
        METHODS[name] = fn
        return fn
    return register


class _Work:
    """One sparsify run's state: the new source values, wave by wave."""

    def __init__(self, model: onnx.ModelProto, graph: Graph, opts: Options, pattern: Pattern,
                 ctx: RunContext, calibration: Calibration | None,
                 spill: external.Spill | None = None) -> None:
        self.model, self.graph, self.opts, self.pattern = model, graph, opts, pattern
        self.fraction = opts.sparse_fraction
        self.ctx, self.calibration, self.spill = ctx, calibration, spill
        self.values: dict[str, np.ndarray] = {}  # by source; large ones spilled (mapped)
        self.errors: dict[str, float] = {}  # layer name -> relative reconstruction error
        self.done: dict[str, None] = {}  # sparsified layers, in order
        self.dense: list[Skipped] = []  # layers a method had to leave dense

    def run(self, layers: list[Layer]) -> None:
        fn = METHODS[self.opts.method]
        waves = (waves_of(self.graph, layers) if fn.stats and self.opts.sequential
                 else [layers])
        for k, wave in enumerate(waves):
            if not wave:
                continue
            if len(waves) > 1:
                self.ctx.say(f"{self.opts.method}: wave {k + 1}/{len(waves)} "
                             f"({len(wave)} layers)")
            stats = self.stats(fn.stats, wave)
            for layer in wave:
                new = fn(self, layer, self.weight(layer), stats)
                if new is not None:
                    self.put(layer, new)
                    self.done[layer.name] = None

    def leave(self, layer: Layer, reason: str) -> None:
        self.dense.append(Skipped(layer.name, layer.source, reason))

    def weight(self, layer: Layer) -> np.ndarray:
        return np.asarray(self.graph.const(layer.weight))

    def put(self, layer: Layer, w: np.ndarray) -> None:
        """Write a layer's new weight into (a copy of) its source."""
        w = np.asarray(w, dtype=self.weight(layer).dtype)
        if layer.where is not None:  # a part of its source: into a copy of the whole
            whole = np.array(self.values.get(layer.source, self.graph.const(layer.source)))
            whole.reshape(-1)[layer.where.reshape(-1)] = w.reshape(-1)
            w = whole
        self.values[layer.source] = self.spill.put(w) if self.spill is not None else w

    def stats(self, kind: str | None, wave: list[Layer]) -> object:
        if kind is None:
            return None
        if self.calibration is None:
            raise ValueError(f"{self.opts.method} needs calibration data")
        model, overrides = session_model(self.model, self.graph, self.values)
        if kind == "channels":  # one pass per channel axis read (almost always one)
            wanted = dict.fromkeys((layer.x, layer.x_axis) for layer in wave)
            part = moments.upto(model, list(dict.fromkeys(x for x, _ in wanted)))
            kept = {t.name for t in part.graph.initializer}  # only what feeds the inputs
            own = {k: v for k, v in (overrides or {}).items() if k in kept} or None
            stats = {}
            for axis in dict.fromkeys(a for _, a in wanted):
                got = channel_stats(part, self.graph.shape,
                                    {x: a for x, a in wanted if a == axis}, self.calibration,
                                    self.ctx.say, own)
                stats.update({(x, axis): t for x, t in got.items()})
            return stats
        if kind == "moments":
            return self.moments(wave, model, overrides)
        raise ValueError(f"unknown statistics '{kind}'")

    def moments(self, wave: list[Layer], model: onnx.ModelProto,
                overrides: dict[str, np.ndarray] | None) -> dict[int, object]:
        """Input moments per layer node (a reason where there are none); layers reading the
        same input the same way share one accumulator."""
        out: dict[int, object] = {}
        shared: dict[tuple, moments.Site] = {}
        for layer in wave:
            try:
                site = moments.site(self.graph, layer.node)
            except moments.Unsupported as exc:
                out[layer.node] = f"no input statistics for sparsegpt: {exc}"
                continue
            key = (site.x, site.op, site.groups, site.width, site.conv, site.trans_a)
            out[layer.node] = shared.setdefault(key, site)
        sites = list(dict.fromkeys(s for s in out.values() if isinstance(s, moments.Site)))
        got = moments.collect(model, sites, self.calibration.batches(), overrides=overrides,
                              progress=None)
        for node, site in out.items():
            if isinstance(site, moments.Site):
                out[node] = got.moments.get(site.node) or (
                    "no input statistics for sparsegpt: " + got.skipped[site.node])
        return out


def session_model(model: onnx.ModelProto, graph: Graph, values: dict[str, np.ndarray],
                  ) -> tuple[onnx.ModelProto, dict[str, np.ndarray] | None]:
    """The model with `values` in place, for a session: the original with initializer
    overrides, or (a Constant node's value changed) a copy holding them."""
    if all(name in graph.initializers for name in values):
        return model, dict(values) or None
    return with_values(model, values), None


def waves_of(graph: Graph, layers: list[Layer]) -> list[list[Layer]]:
    """Layers in waves: a layer's wave is one past the latest wave of the layers its data
    input depends on (the q, k, v projections of a block share one, its output projection
    the next)."""
    by_node = {layer.node: layer for layer in layers}
    data = dynamic_tensors(graph)
    depth: dict[str, int] = {}
    wave_of: dict[int, int] = {}
    for i, node in graph.iter_nodes():
        d = max((depth.get(x, 0) for x in node.input if x in data), default=0)
        if i in by_node:
            wave_of[i] = depth.get(by_node[i].x, 0)
            d = max(d, wave_of[i] + 1)
        for o in node.output:
            if o:
                depth[o] = d
    waves: list[list[Layer]] = [[] for _ in range(max(wave_of.values(), default=-1) + 1)]
    for layer in layers:
        waves[wave_of[layer.node]].append(layer)
    return waves


@method("magnitude")
def magnitude(work: _Work, layer: Layer, w: np.ndarray, stats: object) -> np.ndarray:
    keep = matrix_mask(np.abs(as_matrix(w, layer.row_axis, layer.k_axis)), work.pattern,
                       work.fraction)
    return w * from_matrix(keep, w.shape, layer.row_axis, layer.k_axis)


@method("wanda", stats="channels")
def wanda(work: _Work, layer: Layer, w: np.ndarray, stats: object) -> np.ndarray:
    t = stats[(layer.x, layer.x_axis)]
    norms = np.sqrt(t.mean_sq())
    mat = np.abs(as_matrix(w, layer.row_axis, layer.k_axis)).astype(np.float64)
    mat *= input_scale(layer, norms, mat.shape)
    keep = matrix_mask(mat, work.pattern, work.fraction, per_row=True)
    return w * from_matrix(keep, w.shape, layer.row_axis, layer.k_axis)


@method("sparsegpt", stats="moments")
def sparsegpt(work: _Work, layer: Layer, w: np.ndarray, stats: object) -> np.ndarray | None:
    got = stats[layer.node]
    if isinstance(got, str):
        work.leave(layer, got)
        return None
    mat = as_matrix(w, layer.row_axis, layer.k_axis).astype(np.float64)
    rows, cols = mat.shape
    per, second = rows // layer.groups, got.second()
    perm = tap_major(layer.channels, cols // layer.channels)
    counts = group_counts(layer.groups, per * cols, work.fraction)
    delta = output = 0.0
    for g in range(layer.groups):
        part = slice(g * per, (g + 1) * per)
        solved = solve(mat[part], second[g][np.ix_(perm, perm)], work.pattern, counts[g])
        mat[part] = solved.weight
        delta, output = delta + solved.delta, output + solved.output
    work.errors[layer.name] = round(delta / output, 8) if output > 0 else 0.0
    return from_matrix(mat, w.shape, layer.row_axis, layer.k_axis)


def input_scale(layer: Layer, per_channel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A per-input-channel quantity (length: the data's channels) laid out as the weight's
    matrix view [rows, taps × channels per group]: a grouped convolution's rows read their
    own group's channels, at every tap."""
    rows, cols = shape
    per_group = layer.channels
    if len(per_channel) != per_group * layer.groups:
        raise ValueError(f"{layer.name}: {len(per_channel)} input channels for "
                         f"{layer.groups} groups of {per_group}")
    group = np.arange(rows) // (rows // layer.groups)
    return per_channel[group[:, None] * per_group + np.arange(cols)[None, :] % per_group]
