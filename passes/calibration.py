"""Data-driven scoring passes: run calibration inputs through onnxruntime and score units.

Calibration data is `--calib inputs.npz` (one array per graph input, samples along axis 0) or,
when absent, seeded inputs of the right dtypes from `validation.make_inputs` (integer inputs
that index an embedding table are drawn from its rows). Statistics are streamed: a copy of the
model exposes the tensors that feed the units' sink members (the conv/linear inputs) as extra
outputs, batches run one at a time, and only per-position sums are kept, never activations.
Outputs are requested in chunks whose size is bounded (`STATS_BYTES` per batch).

For a sink member W contracting input X over the unit's positions p (x_p: X at p, averaged
over batch and spatial positions):

- `activation` — mean |x_p| over the unit's positions (Hu et al. 2016 use it alongside APoZ).
- `apoz` — 1 − APoZ, the fraction of non-zero x_p (|x| > `ZERO`): a channel that ReLU kills
  on every input scores 0 (Hu et al. 2016).
- `wanda` — Σ_p Σ_rows |W| · √E[x_p²] (Sun et al. 2024, |W|·‖X‖ per weight, summed per unit).
- `obd` — Optimal Brain Damage (LeCun et al. 1990) with the *layer-wise* Hessian: removing the
  unit perturbs the sink's output by ΔY, and ‖ΔY‖² has Hessian 2·E[x xᵀ] in the sink's
  weights (the Gauss-Newton matrix of the layer's reconstruction error, as in OBS/OBC). OBD
  keeps its diagonal, so saliency = ½ Σ_p Σ_rows W² · E[x_p²]. Exact for linear and 1×1 conv
  sinks, the diagonal approximation for larger kernels. No labels, one pass, any model size.
- `taylor` — by gate probes: see `probe.py`.

Groups none of whose members can be scored from data (no sink) fall back to `l1` (reported).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.analysis import Analysis, Member
from graphprune.errors import InputError, stage
from graphprune.slots import Span

from . import validation
from .criteria import MemberScore, ScoreContext, criterion, fallback, per_unit
from .inputs import CheckInputs, load_arrays, resolve
from .weights import l1

T = TypeVar("T")
ZERO = 1e-6
STATS_BYTES = 256 << 20


# -- calibration data ---------------------------------------------------------------------------
class Calibration:
    """Calibration batches for a model: from arrays (or an .npz file) or generated.

    Generated batches have the shapes the exact check runs (`inputs`, passes/inputs.py) with
    every batch axis at the batch size, on every input alike (a batch named apart per input
    included); given arrays are sliced along their sample axis, inputs that take one value
    for every sample (a scalar sample rate, a state: `inputs.Given.fixed`) are fed as given.
    `hold_back` samples at the end of the arrays are left out (the exact check's)."""

    def __init__(self, model: onnx.ModelProto, data: dict | str | os.PathLike | None = None, *,
                 samples: int = 32, batch: int = 8, seed: int = 0,
                 sizes: dict[str, list[int]] | None = None,
                 inputs: CheckInputs | None = None, hold_back: int = 0) -> None:
        self.model, self.seed, self.sizes = model, seed, sizes
        self.offset = 0  # the first sample (a split's second part starts later)
        self.specs = validation.input_specs(model)
        self.inputs = inputs or _default_inputs(model, sizes, seed)
        self.given = None if data is None else load_arrays(data, self.specs, "calibration data")
        static = {d[0] for name, _, d in self.specs if d and isinstance(d[0], int)
                  and (self.given is None or name not in self.given.fixed)}
        self.static_batch = min(static) if static else None
        if self.static_batch is None and (not self.inputs.batch_varies or (
                self.given is not None and self.given.sized)):
            self.static_batch = 1  # the original runs at one batch size only, or a given
            # state fixes it
        self.batch = self.static_batch or max(1, batch)
        self.source = ("generated" if data is None
                       else str(data) if isinstance(data, (str, os.PathLike)) else "arrays")
        self.held_back = hold_back if self.given is not None else 0
        available = None if self.given is None else self.given.samples - self.held_back
        self.samples = max(1, samples if available is None else min(samples, available))
        if self.static_batch and self.samples < self.static_batch:
            raise InputError(f"calibration needs at least {self.static_batch} samples "
                             f"(the model's fixed batch size), got {self.samples}")

    def batches(self, samples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        total = self._rows(samples)
        start = 0
        while start < total:
            b = min(self.batch, total - start)
            yield self._batch(start, b)
            start += b

    def count(self, samples: int | None = None) -> int:
        """How many batches `batches(samples)` yields."""
        return -(-self._rows(samples) // self.batch)

    def _rows(self, samples: int | None) -> int:
        total = min(samples or self.samples, self.samples)
        if self.static_batch:
            total = max(self.static_batch, total - total % self.static_batch)
        return total

    def block(self, samples: int) -> list[dict[str, np.ndarray]]:
        """`samples` rows as one feed (dynamic batch) or as fixed-size batches (static)."""
        parts = list(self.batches(samples))
        if self.static_batch:
            return parts
        axes = self.sample_axes
        return [{k: parts[0][k] if axes.get(k) is None
                 else np.concatenate([p[k] for p in parts], axis=axes[k]) for k in parts[0]}]

    @property
    def sample_axes(self) -> dict[str, int | None]:
        """Per input, the axis its samples run along (None: the same value in every batch,
        such as a scalar sample rate)."""
        if self.given is not None:
            return {name: None if name in self.given.fixed else 0 for name in self.given.arrays}
        rank = {name: len(dims) for name, _, dims in self.specs}
        return {name: None if name in self.inputs.fixed or not rank[name]
                else axes[0] if axes else 0 for name, axes in self.inputs.batch_axes.items()}

    def _batch(self, start: int, b: int) -> dict[str, np.ndarray]:
        start += self.offset
        if self.given is not None:
            return self.given.take(start, b)
        return self.inputs.generated(self.model, b, self.seed + 7919 + start)

    def split(self, share: float) -> tuple[Calibration, Calibration | None]:
        """The samples to fit on, and the last `share` of them held back (never used for
        fitting; None when there are too few to hold any back: a model with a fixed batch
        size holds back whole batches)."""
        step = self.static_batch or 1
        held = int(round(self.samples * share / step)) * step
        if share > 0 and held == 0 and self.samples >= 2 * step:
            held = step
        if held <= 0 or self.samples - held < step:
            return self, None
        fit, back = copy.copy(self), copy.copy(self)
        fit.samples = self.samples - held
        back.samples, back.offset = held, self.offset + fit.samples
        return fit, back

    def describe(self) -> dict:
        out = {"source": self.source, "samples": self.samples}
        if self.held_back:
            out["held_back"] = self.held_back
        return out


def _default_inputs(model: onnx.ModelProto, sizes: dict[str, list[int]] | None,
                    seed: int) -> CheckInputs:
    """The default shapes (`sizes` as given), not run: for callers that resolved none."""
    return resolve(model, sizes, seed=seed, run="never")


def calibration_of(ctx: ScoreContext) -> Calibration:
    if ctx.calibration is None:
        ctx.calibration = Calibration(ctx.model, seed=ctx.seed)
    return ctx.calibration


# -- sink inputs and their statistics -----------------------------------------------------------
@dataclass
class SinkUse:
    """A sink member and the activation it contracts: tensor `x`, units on `span` of it."""

    member: Member
    x: str
    act_index: int
    span: Span


def sink_uses(an: Analysis) -> list[SinkUse]:
    uses = []
    for m in an.members:
        if m.role != "sink":
            continue
        node = an.graph.nodes[m.node]
        act = 1 if m.index == 0 else 0
        x = node.input[act] if act < len(node.input) else ""
        span = next((s for s in an.spans.get(x, []) if s.ids.shape == m.span.ids.shape
                     and np.array_equal(s.ids, m.span.ids)), None)
        if x and span is not None and 0 not in span.axes:
            uses.append(SinkUse(m, x, act, span))
    return uses


@dataclass
class TensorStats:
    """Per position of a span: Σ|x|, Σx², #zeros over `count` reduced elements each."""

    abs_sum: np.ndarray
    sq_sum: np.ndarray
    zeros: np.ndarray
    count: int = 0

    def add(self, x: np.ndarray, axes: tuple[int, ...]) -> None:
        other = tuple(a for a in range(x.ndim) if a not in axes)
        x = np.asarray(x, dtype=np.float64)
        self.abs_sum += np.abs(x).sum(axis=other)
        self.sq_sum += (x * x).sum(axis=other)
        self.zeros += (np.abs(x) <= ZERO).sum(axis=other)
        self.count += x.size // self.abs_sum.size

    def mean_abs(self) -> np.ndarray:
        return self.abs_sum / max(self.count, 1)

    def mean_sq(self) -> np.ndarray:
        return self.sq_sum / max(self.count, 1)

    def nonzero(self) -> np.ndarray:
        return 1.0 - self.zeros / max(self.count, 1)


@dataclass
class Stats:
    tensors: dict[str, TensorStats] = field(default_factory=dict)
    uses: list[SinkUse] = field(default_factory=list)


@stage("calibration statistics")
def activation_stats(ctx: ScoreContext) -> Stats:
    """Streamed statistics of every sink input (cached on the context)."""
    if "stats" in ctx.cache:
        return ctx.cache["stats"]
    an, calib = ctx.an, calibration_of(ctx)
    uses = sink_uses(an)
    spans = {u.x: u.span for u in uses}
    stats = Stats({x: TensorStats(*(np.zeros(s.ids.shape) for _ in range(3)))
                   for x, s in spans.items()}, uses)
    sess = fast_session(with_outputs(ctx.model, list(spans)))
    chunks = runs(list(spans), lambda n: batch_bytes(an.graph.shape(n), calib.batch))
    ctx.run.say(f"calibration statistics: {calib.samples} samples, {len(spans)} tensors in "
                f"{len(chunks)} pass{'es' if len(chunks) > 1 else ''}")
    total = len(chunks) * calib.count()
    done = 0
    for chunk in chunks:
        for feeds in calib.batches():
            for name, value in zip(chunk, sess.run(chunk, feeds), strict=True):
                if value.shape[1:] and _fits(value, spans[name]):
                    stats.tensors[name].add(value, spans[name].axes)
            done += 1
            ctx.run.count("calibration statistics", done, total, "batches")
    ctx.cache["stats"] = stats
    return stats


def fast_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A session with onnxruntime's optimisations on: statistics and probes measure, they do
    not prove, and the optimised graph runs several times faster (graph outputs are kept).
    Weights in memory-mapped external data are read from their files (`validation.session`)."""
    return validation.session(model, optimize=True)


def _fits(value: np.ndarray, span: Span) -> bool:
    return all(a < value.ndim and value.shape[a] == n
               for a, n in zip(span.axes, span.ids.shape, strict=True))


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return out


def runs(items: list[T], nbytes: Callable[[T], int]) -> list[list[T]]:
    """`items` in runs whose `nbytes` stay under STATS_BYTES together (one item alone may
    exceed it); none for no items (a session asked for no outputs would return them all)."""
    out: list[list[T]] = []
    used = 0
    for item in items:
        size = nbytes(item)
        if not out or (out[-1] and used + size > STATS_BYTES):
            out.append([])
            used = 0
        out[-1].append(item)
        used += size
    return out


def batch_bytes(dims: list | None, batch: int, itemsize: int = 4) -> int:
    """Bytes of one batch of a tensor of `dims` (dynamic dims guessed at 32)."""
    return batch * itemsize * int(np.prod([d if isinstance(d, int) else 32
                                           for d in (dims or [])[1:]]))


# -- criteria -----------------------------------------------------------------------------------
def _per_sink(ctx: ScoreContext, fn) -> np.ndarray:
    """Aggregate fn(use, stats) over sink members; groups without any fall back to l1."""
    stats = activation_stats(ctx)
    scores = [fn(u, stats.tensors[u.x]) for u in stats.uses if stats.tensors[u.x].count]
    out = ctx.combine(scores)
    fallback(ctx, out, {int(r) for units, _ in scores for r in units}, "l1", l1)
    return out


def _rows(ctx: ScoreContext, u: SinkUse, power: int) -> np.ndarray:
    """Σ over the weight's other axes of |W|^power, per position of the member's span."""
    w = np.abs(ctx.weight(u.member)) ** power
    other = tuple(a for a in range(w.ndim) if a not in u.member.span.axes)
    return w.sum(axis=other) if other else w


@criterion("activation", data=True)
def activation(ctx: ScoreContext) -> np.ndarray:
    return _per_sink(ctx, lambda u, t: per_unit(ctx.an, u.span.ids, t.mean_abs(), "mean"))


@criterion("apoz", data=True)
def apoz(ctx: ScoreContext) -> np.ndarray:
    return _per_sink(ctx, lambda u, t: per_unit(ctx.an, u.span.ids, t.nonzero(), "mean"))


@criterion("wanda", data=True)
def wanda(ctx: ScoreContext) -> np.ndarray:
    def score(u: SinkUse, t: TensorStats) -> MemberScore:
        return per_unit(ctx.an, u.span.ids, _rows(ctx, u, 1) * np.sqrt(t.mean_sq()))

    return _per_sink(ctx, score)


@criterion("obd", data=True)
def obd(ctx: ScoreContext) -> np.ndarray:
    def score(u: SinkUse, t: TensorStats) -> MemberScore:
        return per_unit(ctx.an, u.span.ids, 0.5 * _rows(ctx, u, 2) * t.mean_sq())

    return _per_sink(ctx, score)


# -- per-channel statistics of any tensors ------------------------------------------------------
def channel_stats(model: onnx.ModelProto, shape_of, axes: dict[str, int],
                  calib: Calibration, say=None,
                  overrides: dict[str, np.ndarray] | None = None) -> dict[str, TensorStats]:
    """Streamed TensorStats of the tensors `axes` names, per position of each one's channel
    axis (negative: from the end), as `activation_stats` takes them for units: one pass per
    chunk of tensors whose batch stays under STATS_BYTES (`shape_of(name)`: a tensor's dims,
    as `Graph.shape` gives them); `overrides` replace initializers' values (a model whose
    weights were changed)."""
    names = list(axes)
    stats: dict[str, TensorStats] = {}
    sess = validation.session(with_outputs(model, names), overrides=overrides, optimize=True)
    chunks = runs(names, lambda n: batch_bytes(shape_of(n), calib.batch))
    for k, chunk in enumerate(chunks):
        if say is not None:
            say(f"calibration statistics: pass {k + 1}/{len(chunks)} over {calib.samples} "
                f"samples ({len(chunk)} tensors)")
        for feeds in calib.batches():
            for name, value in zip(chunk, sess.run(chunk, feeds), strict=True):
                axis = axes[name] % value.ndim
                if name not in stats:
                    stats[name] = TensorStats(*(np.zeros(value.shape[axis]) for _ in range(3)))
                stats[name].add(value, (axis,))
    return stats
