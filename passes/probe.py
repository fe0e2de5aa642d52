"""Gate probes: measure the model's output with some units scaled down, many trials per run.

A copy of the model multiplies the activation input of every sink node by a *gate*, a new
graph input shaped like that activation with 1 on the non-unit axes ([B, C, 1, 1] for a conv).
Gates of 1 give the model exactly (× 1 is exact); gate 0 on a unit's positions at all its
sinks is the masked original (sink slices zeroed) of that unit. Trials are stacked along the
batch axis: K trials × S samples run as one batch of K·S rows, so one session serves every
trial and no model is copied per trial (`taylor` scoring and the sensitivity scan use this).
A model with a fixed batch size runs one trial per call instead.

A probe can also carry *shifts*: an input added to a sink's output, one value per output
feature ([B, O, 1, 1] for a conv), 0 by default (+ 0 is exact). A trial that gates units off
and shifts their sinks by the removed inputs' mean contribution is the model with those units
removed and bias compensation applied (`compensation.py`; the sensitivity scan's compensated
trials).

- `taylor` — first-order Taylor estimate of the change of the *model output*: the output's
  directional derivative along the unit's own activation, ‖∂f/∂g_u‖² with g_u a gate on the
  unit at its sinks (g = 1 is the model, g = 0 removes the unit), measured by a forward finite
  difference (step `TAYLOR_STEP`) through onnxruntime, averaged over calibration samples.
  Without labels a loss-based first-order term vanishes (the model is at its own optimum of
  ‖f − f₀‖²), so we expand the output itself; onnxruntime has no backward pass, so each unit
  costs one forward per sample. Probes are batched along the batch axis (above), on
  `TAYLOR_SAMPLES` samples. A model whose units × samples exceed the probe budget
  (`TAYLOR_FORWARDS` sample-forwards, or `TAYLOR_BUDGET` MACs when more: time that scales
  with the model) is probed in **blocks**: each group's units sorted by `obd` and cut into
  contiguous runs, as many per group as its share of the units, one gate per block; a
  block's measured ‖∂f/∂g_block‖² is shared among its units by their `obd` (units that
  contribute independently add: ‖Σ ∂f/∂g_u‖² ≈ Σ ‖∂f/∂g_u‖²). The ranking across blocks
  is the model output's, within a block the layer's. The report says so (note, and the
  criterion line of the table); groups whose sinks cannot be gated take `obd` (said alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from graphprune.analysis import Analysis
from graphprune.errors import stage
from graphprune.metrics import count_macs

from .calibration import SinkUse, calibration_of, fast_session, obd, sink_uses
from .criteria import ScoreContext, criterion, fallback

ROWS_PER_RUN = 64
TAYLOR_STEP = 1e-2
TAYLOR_FORWARDS = 1024
"""Sample-forwards (one sample through the model once) `taylor` may spend: its time scales
with the model's cost per sample..."""
TAYLOR_BUDGET = 1e11
"""...or this many multiply-accumulates, when more (≈ 10 s of a 2-core CPU): small models
probe every unit."""
TAYLOR_SAMPLES = 8
Trial = dict[int, float]
"""Unit root → gate value for one trial ({} is the unmodified model)."""


Shifts = dict[int, np.ndarray]
"""Sink node → the values added to its output features for one trial ({}: none)."""


@dataclass
class Gate:
    name: str
    tail: tuple[int, ...]
    positions: dict[int, np.ndarray]  # root → flat indices into the gate's tail
    dtype: np.dtype


@dataclass
class Shift:
    """An input added to sink `node`'s first output: [batch, *tail], the features on one
    axis of the tail."""

    name: str
    node: int
    tail: tuple[int, ...]
    dtype: np.dtype


class GateProbe:
    def __init__(self, model: onnx.ModelProto, an: Analysis, uses: list[SinkUse],
                 static_batch: int | None = None,
                 axes: dict[str, int | None] | None = None,
                 shifts: dict[int, tuple[int, ...]] | None = None) -> None:
        """`shifts`: sink node → the tail of its shift input (see the module docstring)."""
        self.an = an
        self.static_batch = static_batch
        self.axes = dict(axes or {})
        """Per graph input, the axis its samples run along (default 0; None: no samples, a
        scalar sample rate say, fed as it is)."""
        self.gates: list[Gate] = []
        self.units: set[int] = set()
        self.shifts: list[Shift] = []
        self.model = self._gated(model, uses, shifts or {})
        self.session = fast_session(self.model)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _gated(self, model: onnx.ModelProto, uses: list[SinkUse],
               shifts: dict[int, tuple[int, ...]]) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        g = out.graph
        nodes = list(g.node)
        before: dict[int, list[onnx.NodeProto]] = {}
        after = {node: self._shift(nodes[node], node, tail, g, k)
                 for k, (node, tail) in enumerate(sorted(shifts.items()))}
        done: set[tuple[int, int]] = set()
        for u in uses:
            key = (u.member.node, u.act_index)
            if key in done:
                continue
            done.add(key)
            gate, gated = self._gate(u, len(self.gates))
            before.setdefault(u.member.node, []).append(
                helper.make_node("Mul", [u.x, gate.name], [gated], name=f"{gate.name}_mul"))
            nodes[u.member.node].input[u.act_index] = gated
            elem = helper.np_dtype_to_tensor_dtype(gate.dtype)
            batch = self.static_batch or "gp_probe_batch"
            g.input.append(helper.make_tensor_value_info(gate.name, elem, [batch, *gate.tail]))
            self.gates.append(gate)
        del g.node[:]
        for i, n in enumerate(nodes):
            g.node.extend(before.get(i, []))
            g.node.append(n)
            if i in after:
                g.node.append(after[i])
        return out

    def _shift(self, node: onnx.NodeProto, i: int, tail: tuple[int, ...], g: onnx.GraphProto,
               k: int) -> onnx.NodeProto:
        """Renames `node`'s first output and returns the Add that adds shift k to it under
        the old name (its readers and the graph outputs unchanged)."""
        y = node.output[0]
        elem = self.an.graph.dtypes.get(y, onnx.TensorProto.FLOAT)
        shift = Shift(f"gp_shift_{k}", i, tuple(tail),
                      np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
        node.output[0] = f"gp_unshifted_{k}"
        batch = self.static_batch or "gp_probe_batch"
        g.input.append(helper.make_tensor_value_info(shift.name, elem, [batch, *shift.tail]))
        self.shifts.append(shift)
        return helper.make_node("Add", [node.output[0], shift.name], [y],
                                name=f"{shift.name}_add")

    def _gate(self, u: SinkUse, k: int) -> tuple[Gate, str]:
        rank = self.an.graph.rank(u.x) or (max(u.span.axes) + 1)
        tail = [1] * (rank - 1)
        for a, n in zip(u.span.axes, u.span.ids.shape, strict=True):
            tail[a - 1] = n
        roots = self.an.roots[u.span.ids].reshape(tail)
        flat = roots.ravel()
        positions = {int(r): np.flatnonzero(flat == r) for r in np.unique(flat)}
        self.units.update(positions)
        elem = self.an.graph.dtypes.get(u.x, onnx.TensorProto.FLOAT)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        return Gate(f"gp_gate_{k}", tuple(tail), positions, dtype), f"gp_gated_{k}"

    def run(self, feeds: dict[str, np.ndarray], trials: list[Trial],
            shifts: list[Shifts] | None = None) -> list[list[np.ndarray]]:
        """Outputs of every trial on `feeds` (S samples along each input's sample axis, see
        `axes`): a list per trial, one array per model output, S rows each. `shifts`: per
        trial, the values added to sink outputs (none: 0)."""
        s = self.samples(feeds)
        per_run = 1 if self.static_batch else max(1, ROWS_PER_RUN // s)
        shifts = shifts or [{}] * len(trials)
        results = []
        for start in range(0, len(trials), per_run):
            results += self._run(feeds, trials[start:start + per_run],
                                 shifts[start:start + per_run], s)
        return results

    def samples(self, feeds: dict[str, np.ndarray]) -> int:
        """How many samples `feeds` hold."""
        return next((v.shape[self.axes.get(n, 0)] for n, v in feeds.items()
                     if self.axes.get(n, 0) is not None), 1)

    def _run(self, feeds, trials: list[Trial], shifts: list[Shifts],
             s: int) -> list[list[np.ndarray]]:
        k = len(trials)
        tiled = {n: np.concatenate([v] * k, axis=self.axes.get(n, 0))
                 if k > 1 and self.axes.get(n, 0) is not None else v for n, v in feeds.items()}
        for gate in self.gates:
            arr = np.ones((k, s, int(np.prod(gate.tail))), dtype=gate.dtype)
            for t, trial in enumerate(trials):
                for root, value in trial.items():
                    pos = gate.positions.get(root)
                    if pos is not None:
                        arr[t, :, pos] = value
            tiled[gate.name] = arr.reshape(k * s, *gate.tail)
        for shift in self.shifts:
            arr = np.zeros((k, s, int(np.prod(shift.tail))), dtype=shift.dtype)
            for t, values in enumerate(shifts):
                if shift.node in values:
                    arr[t] = values[shift.node]
            tiled[shift.name] = arr.reshape(k * s, *shift.tail)
        outs = self.session.run(None, tiled)
        for o in outs:
            if o.ndim == 0 or o.shape[0] != k * s:
                raise ValueError("a model output has no batch axis")
        return [[o[t * s:(t + 1) * s] for o in outs] for t in range(k)]


def gateable(an: Analysis, uses: list[SinkUse]) -> list[SinkUse]:
    """The sink uses of groups whose every sink member can be gated (else none of theirs)."""
    ok = {id(u.member) for u in uses}
    bad = {id(g) for g in an.groups
           if any(m.role == "sink" and id(m) not in ok for m in g.members)}
    owner = {id(m): g for g in an.groups for m in g.members}
    return [u for u in uses if id(owner[id(u.member)]) not in bad]


def probe_for(model: onnx.ModelProto, an: Analysis, static_batch: int | None,
              axes: dict[str, int | None] | None = None,
              shifts: dict[int, tuple[int, ...]] | None = None) -> GateProbe:
    return GateProbe(model, an, gateable(an, sink_uses(an)), static_batch, axes, shifts)


def squared_change(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    return float(sum(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
                     for a, b in zip(ref, out, strict=True)))


def measure(probe: GateProbe, blocks: list[dict[str, np.ndarray]], trials: list[Trial],
            progress: Callable[[int, int], None] | None = None,
            shifts: list[Shifts] | None = None) -> tuple[np.ndarray, float]:
    """Σ over samples of ‖f_trial − f‖² per trial, and Σ‖f‖² (for relative errors).
    `progress(done, total)`: trial runs done (every trial once per block). `shifts`: per
    trial, added to sink outputs (`GateProbe.run`)."""
    change = np.zeros(len(trials))
    norm = 0.0
    step = max(1, ROWS_PER_RUN // max(1, probe.samples(blocks[0])))
    for n, feeds in enumerate(blocks):
        (ref,) = probe.run(feeds, [{}])
        norm += squared_change([np.zeros_like(r) for r in ref], ref)
        for start in range(0, len(trials), step * 8):
            chunk = trials[start:start + step * 8]
            moved = None if shifts is None else shifts[start:start + step * 8]
            for k, out in enumerate(probe.run(feeds, chunk, moved)):
                change[start + k] += squared_change(ref, out)
            if progress:
                progress(n * len(trials) + start + len(chunk), len(blocks) * len(trials))
    return change, norm


# -- taylor -------------------------------------------------------------------------------------
@criterion("taylor", data=True)
@stage("Taylor probes")
def taylor(ctx: ScoreContext) -> np.ndarray:
    an, calib = ctx.an, calibration_of(ctx)
    probe = probe_for(ctx.model, an, calib.static_batch, calib.sample_axes)
    units = [u for g in an.groups for u in g.prunable if u in probe.units]
    if not units:
        ctx.run.note("taylor: no unit's sinks can be gated (probed); scored by obd")
        ctx.run.detail("criterion", "FELL BACK to obd: no unit's sinks can be gated")
        return obd(ctx)
    macs = max(1, count_macs(ctx.model, next(iter(calib.batches(1)))))
    samples = min(calib.samples, TAYLOR_SAMPLES)
    if calib.static_batch:
        samples = max(calib.static_batch, samples - samples % calib.static_batch)
    probes = int(max(TAYLOR_FORWARDS, TAYLOR_BUDGET / macs) // samples)
    blocks = [[u] for u in units] if len(units) <= probes else taylor_blocks(ctx, units, probes)
    trials = [dict.fromkeys(b, 1.0 - TAYLOR_STEP) for b in blocks]
    ctx.run.say(f"Taylor probes: {len(trials)} probes of {len(units)} units on {samples} "
                f"samples")
    report = _progress(ctx, "Taylor probes")
    change, _ = measure(probe, calib.block(samples), trials, report)
    scores = np.zeros(len(an.roots))
    per_block = change / (samples * TAYLOR_STEP ** 2)
    if len(blocks) < len(units):
        shares = ctx.cache["taylor_shares"]
        for b, value in zip(blocks, per_block, strict=True):
            scores[b] = value * shares[b]
        sizes = [len(b) for b in blocks]
        ctx.run.note(f"taylor: {len(units)} units × {macs:.3g} MACs exceed the probe budget "
                     f"({probes} probes of {samples} samples); probed in {len(blocks)} blocks "
                     f"of {min(sizes)}-{max(sizes)} units (one gate per block of units "
                     f"adjacent in obd order), shared within a block by obd")
        ctx.run.detail("criterion", f"probed in {len(blocks)} blocks of units, obd within "
                                    "a block")
    else:
        scores[units] = per_block
    fallback(ctx, scores, set(units), "obd", obd)
    return scores


def taylor_blocks(ctx: ScoreContext, units: list[int], probes: int) -> list[list[int]]:
    """`units` cut into about `probes` blocks: a group's units sorted by obd and cut into
    contiguous runs, as many per group as its share of the units (at least one). Leaves each
    unit's share of its block's obd in `ctx.cache["taylor_shares"]` (equal shares where the
    block's obd is 0): the blocks' measured change is split by it, so a block of units that
    contribute independently scores as their sum (‖Σ ∂f/∂g‖² ≈ Σ ‖∂f/∂g‖²)."""
    base = obd(ctx)
    gate = set(units)
    shares = np.zeros(len(ctx.an.roots))
    blocks = []
    for g in ctx.an.groups:
        mine = sorted((u for u in g.prunable if u in gate), key=lambda u: (base[u], u))
        if not mine:
            continue
        k = max(1, min(len(mine), round(probes * len(mine) / len(units))))
        for part in np.array_split(np.asarray(mine), k):
            b = [int(u) for u in part]
            total = float(base[b].sum())
            shares[b] = base[b] / total if total > 0 else 1.0 / len(b)
            blocks.append(b)
    ctx.cache["taylor_shares"] = shares
    return blocks


def _progress(ctx: ScoreContext, what: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        ctx.run.count(what, done, total, "unit probes")

    return report
