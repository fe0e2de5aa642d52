"""Scoring residual blocks (graphprune.blocks), and the block probe.

- `influence` (the default; ShortGPT, Men et al. 2024): BI = 1 − E[cos(t, Add(t, y))], the
  cosine between a block's input and its output along the feature axis (the axis of t that
  carries units in the analysis: a CNN's channels, a transformer's hidden size; the whole
  sample when t has none), averaged over positions and calibration samples. A block that
  barely turns its input scores near 0 and goes first. Streamed: the blocks' inputs and
  outputs are extra outputs of one session, requested in chunks under STATS_BYTES per batch,
  and only sums are kept.
- `sensitivity`: the relative L2 change of all model outputs when the block alone is
  removed, ‖f₋ᵦ − f‖ / ‖f‖ over calibration samples, measured with the block probe.

The block probe is one copy of the model in which every removable branch output is
multiplied by a scalar gate, a new graph input, before its Add (`blockedit.gate`): gate 1 is
the model exactly (× 1 is exact), gate 0 is the block removed (what the exact check's
reference computes). A trial zeroes some gates; one run per trial per batch. Scalar gates
broadcast to any layout, so no axis of the branch need be the batch axis. The sensitivity
scan (`--allocation sensitivity`) uses it for the blocks group.

Blocks that cannot be removed score 0 (they are frozen: never removed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from graphprune.analysis import Analysis
from graphprune.blocks import Block
from graphprune.errors import stage

from . import blockedit
from .calibration import (
    Calibration,
    batch_bytes,
    calibration_of,
    fast_session,
    runs,
    with_outputs,
)
from .criteria import ScoreContext

BLOCK_CRITERIA = ("influence", "sensitivity")
DEFAULT_BLOCK_CRITERION = "influence"
SAMPLES = 16
"""Calibration samples the sensitivity measurement runs (each costs one run per block)."""
Trial = set[int]
"""Block units whose branches are zeroed in one trial (empty: the model)."""


def removable(an: Analysis) -> list[Block]:
    return [b for b in an.blocks if not b.reasons]


def score_blocks(ctx: ScoreContext, scores: np.ndarray, how: str) -> None:
    """Fill the blocks' units of `scores` (raw block scores, before normalisation) and keep
    them for the report (`ctx.run.figures["block_scores"]`, by block index)."""
    an = ctx.an
    blocks = removable(an)
    values = {b.unit: 0.0 for b in an.blocks}
    if blocks:
        calib = calibration_of(ctx)
        say = ctx.run.say
        found = (influence(ctx.model, an, blocks, calib, say) if how == "influence"
                 else sensitivity(ctx.model, an, blocks, calib, say))
        values.update(found)
    for unit, v in values.items():
        scores[unit] = v
    ctx.run.figures["block_scores"] = [round(values[b.unit], 6) for b in an.blocks]
    ctx.run.figures["block_criterion"] = how


# -- influence ----------------------------------------------------------------------------------
@stage("block influence")
def influence(model: onnx.ModelProto, an: Analysis, blocks: list[Block], calib: Calibration,
              say: Callable[[str], None]) -> dict[int, float]:
    """1 − mean cosine between each block's input and output, by block unit."""
    names = list(dict.fromkeys(x for b in blocks for x in (b.entry, b.exit)))
    sess = fast_session(with_outputs(model, names))
    sums = {b.unit: [0.0, 0] for b in blocks}
    chunks = runs(blocks, lambda b: 2 * batch_bytes(an.graph.shape(b.entry), calib.batch, 8))
    for k, chunk in enumerate(chunks):
        say(f"block influence: pass {k + 1}/{len(chunks)} over {calib.samples} samples "
            f"({len(chunk)} blocks)")
        wanted = list(dict.fromkeys(x for b in chunk for x in (b.entry, b.exit)))
        for feeds in calib.batches():
            values = dict(zip(wanted, sess.run(wanted, feeds), strict=True))
            for b in chunk:
                c = cosines(values[b.entry], values[b.exit], feature_axis(an, b.entry))
                sums[b.unit][0] += float(c.sum())
                sums[b.unit][1] += c.size
    return {u: 1.0 - s / max(n, 1) for u, (s, n) in sums.items()}


def feature_axis(an: Analysis, name: str) -> int | None:
    """The axis of `name` that carries units in the analysis (the widest one-axis span past
    the first axis), or None: then each sample is one vector."""
    spans = [s for s in an.spans.get(name, []) if len(s.axes) == 1 and s.axes[0] > 0]
    return max(spans, key=lambda s: s.ids.size).axes[0] if spans else None


def cosines(x: np.ndarray, y: np.ndarray, axis: int | None) -> np.ndarray:
    """Cosine of x and y along `axis` at every other position (per sample when None);
    1 where both vectors are zero, 0 where one is."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if axis is None or axis >= x.ndim:
        x, y, axis = x.reshape(len(x), -1), y.reshape(len(y), -1), 1
    dot = (x * y).sum(axis)
    norms = np.sqrt((x * x).sum(axis) * (y * y).sum(axis))
    both_zero = ((x == 0).all(axis)) & ((y == 0).all(axis))
    return np.where(both_zero, 1.0, dot / np.maximum(norms, 1e-300))


# -- the block probe and sensitivity ------------------------------------------------------------
class BlockProbe:
    """The model with a scalar gate on every given block's branch output (see above)."""

    def __init__(self, model: onnx.ModelProto, an: Analysis, blocks: list[Block]) -> None:
        gated = onnx.ModelProto()
        gated.CopyFrom(model)
        self.gates: dict[int, tuple[str, np.dtype]] = {}
        taken = {i.name for i in gated.graph.input}
        for k, b in enumerate(blocks):
            name = f"gp_block_gate_{k}"
            while name in taken:
                name += "_"
            elem = an.graph.dtypes.get(b.output, onnx.TensorProto.FLOAT)
            gated.graph.input.append(helper.make_tensor_value_info(name, elem, []))
            self.gates[b.unit] = (name, np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
        blockedit.gate(gated.graph, blocks, {u: g[0] for u, g in self.gates.items()})
        self.session = fast_session(gated)
        self.outputs = [o.name for o in model.graph.output]

    def run(self, feeds: dict[str, np.ndarray], zeroed: Trial) -> list[np.ndarray]:
        gates = {name: np.array(0 if unit in zeroed else 1, dtype=dtype)
                 for unit, (name, dtype) in self.gates.items()}
        return self.session.run(self.outputs, {**feeds, **gates})


def measure(probe: BlockProbe, batches: list[dict[str, np.ndarray]], trials: list[Trial],
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Relative L2 change of all outputs per trial, ‖f_trial − f‖ / ‖f‖ over the batches."""
    change = np.zeros(len(trials))
    norm = 0.0
    for feeds in batches:
        ref = [np.asarray(o, np.float64) for o in probe.run(feeds, set())]
        norm += sum(float(np.sum(r * r)) for r in ref)
        for k, trial in enumerate(trials):
            out = probe.run(feeds, trial)
            change[k] += sum(float(np.sum((np.asarray(o, np.float64) - r) ** 2))
                             for o, r in zip(out, ref, strict=True))
            if progress:
                progress(k + 1)
    return np.sqrt(change / max(norm, 1e-30))


@stage("block sensitivity")
def sensitivity(model: onnx.ModelProto, an: Analysis, blocks: list[Block], calib: Calibration,
                say: Callable[[str], None]) -> dict[int, float]:
    """Relative output error with each block alone removed, by block unit."""
    probe = BlockProbe(model, an, blocks)
    samples = min(SAMPLES, calib.samples)

    def progress(done: int) -> None:
        say(f"block sensitivity: {done}/{len(blocks)} blocks removed one at a time")

    errors = measure(probe, list(calib.batches(samples)), [{b.unit} for b in blocks], progress)
    return {b.unit: float(e) for b, e in zip(blocks, errors, strict=True)}
