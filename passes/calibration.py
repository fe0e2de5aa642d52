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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.analysis import Analysis, Member
from graphprune.errors import InputError, stage
from graphprune.slots import Span

from . import validation
from .criteria import MemberScore, ScoreContext, criterion, fallback, per_unit
from .weights import l1

ZERO = 1e-6
STATS_BYTES = 256 << 20


# -- calibration data ---------------------------------------------------------------------------
class Calibration:
    """Calibration batches for a model: from arrays (or an .npz file) or generated."""

    def __init__(self, model: onnx.ModelProto, data: dict | str | os.PathLike | None = None, *,
                 samples: int = 32, batch: int = 8, seed: int = 0,
                 sizes: dict[str, list[int]] | None = None) -> None:
        self.model, self.seed, self.sizes = model, seed, sizes
        self.offset = 0  # the first sample (a split's second part starts later)
        self.specs = validation.input_specs(model)
        static = {d[0] for _, _, d in self.specs if d and isinstance(d[0], int)}
        self.static_batch = min(static) if static else None
        self.batch = self.static_batch or max(1, batch)
        self.arrays = None if data is None else _load_arrays(data, self.specs)
        self.source = ("generated" if data is None
                       else str(data) if isinstance(data, (str, os.PathLike)) else "arrays")
        available = None if self.arrays is None else len(next(iter(self.arrays.values())))
        self.samples = max(1, samples if available is None else min(samples, available))
        if self.static_batch and self.samples < self.static_batch:
            raise InputError(f"calibration needs at least {self.static_batch} samples "
                             f"(the model's fixed batch size), got {self.samples}")

    def batches(self, samples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        total = min(samples or self.samples, self.samples)
        if self.static_batch:
            total = max(self.static_batch, total - total % self.static_batch)
        start = 0
        while start < total:
            b = min(self.batch, total - start)
            yield self._batch(start, b)
            start += b

    def block(self, samples: int) -> list[dict[str, np.ndarray]]:
        """`samples` rows as one feed (dynamic batch) or as fixed-size batches (static)."""
        parts = list(self.batches(samples))
        if self.static_batch:
            return parts
        return [{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}]

    def _batch(self, start: int, b: int) -> dict[str, np.ndarray]:
        start += self.offset
        if self.arrays is not None:
            return {k: v[start:start + b] for k, v in self.arrays.items()}
        return validation.make_inputs(self.model, batch=b, seed=self.seed + 7919 + start,
                                      sizes=self.sizes)

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
        return {"source": self.source, "samples": self.samples}


def _load_arrays(data, specs) -> dict[str, np.ndarray]:
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read calibration data {path}: {exc}") from None
    arrays = {}
    for name, elem, dims in specs:
        if name not in data:
            raise InputError(f"calibration data has no array for input '{name}' "
                             f"(has: {', '.join(sorted(data)) or 'nothing'})")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        a = np.asarray(data[name])
        if a.dtype.kind != np.dtype(dtype).kind and not (a.dtype.kind in "iu" and
                                                         np.dtype(dtype).kind in "iu"):
            raise InputError(f"calibration array '{name}' has dtype {a.dtype}, "
                             f"the input expects {np.dtype(dtype)}")
        if a.ndim != len(dims) or any(isinstance(d, int) and d != n
                                      for d, n in zip(dims[1:], a.shape[1:], strict=True)):
            want = "x".join(str(d) if isinstance(d, int) else "?" for d in dims[1:])
            raise InputError(f"calibration array '{name}' has shape {list(a.shape)}; the input "
                             f"expects samples × {want or 'scalar'}")
        arrays[name] = np.ascontiguousarray(a.astype(dtype, copy=False))
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise InputError("calibration arrays must share a non-empty first (sample) axis")
    return arrays


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
    sess = fast_session(_with_outputs(ctx.model, list(spans)))
    chunks = _chunks(an, list(spans), calib.batch)
    for k, chunk in enumerate(chunks):
        ctx.run.say(f"calibration statistics: pass {k + 1}/{len(chunks)} over "
                    f"{calib.samples} samples ({len(chunk)} tensors)")
        for feeds in calib.batches():
            for name, value in zip(chunk, sess.run(chunk, feeds), strict=True):
                if value.shape[1:] and _fits(value, spans[name]):
                    stats.tensors[name].add(value, spans[name].axes)
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


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return out


def _chunks(an: Analysis, names: list[str], batch: int) -> list[list[str]]:
    """Split `names` so one batch of their values stays under STATS_BYTES."""
    chunks: list[list[str]] = [[]]
    used = 0
    for n in names:
        dims = an.graph.shape(n) or []
        size = batch * 4 * int(np.prod([d if isinstance(d, int) else 32 for d in dims[1:]]))
        if chunks[-1] and used + size > STATS_BYTES:
            chunks.append([])
            used = 0
        chunks[-1].append(n)
        used += size
    return chunks


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
