"""Sensitivity scan: the output error of pruning each group alone, then least error per cost.

For every candidate group and up to `LEVELS` removal counts (spread over what its ceiling and
`round_to` allow), the group's lowest-scored units are masked (sink slices zeroed, through the
gates of `probe.py`: one session, trials batched along the batch axis, no model copies) and the
relative L2 error of all outputs against the original is measured on calibration samples:
‖f_masked − f‖ / ‖f‖. Between measured counts the error is interpolated linearly, and made
non-decreasing.

Allocation (AIMET's greedy per-layer selection and ModelOpt FastNAS sort layers the same way):
each group's curve is error against the cost removing c units saves (c × the group's per-unit
MACs or parameters, from the cost model); the steps of the curve's lower convex hull, sorted by
slope, are the cheapest error per removed cost first. Taking a prefix of that order is the
greedy allocation; the target search bisects on the prefix length.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.context import RunContext
from graphprune.errors import stage
from graphprune.metrics import count_macs

from . import depth
from .allocation import allowed_counts, make_order
from .calibration import Calibration
from .cost import CostModel
from .options import Options
from .probe import measure, probe_for
from .selection import ranked

LEVELS = 8
SAMPLES = 16
BUDGET = 2e11
"""Multiply-accumulates the scan aims to spend; beyond it, fewer samples (at least one)."""


@stage("sensitivity scan")
def scan(model: onnx.ModelProto, an: Analysis, scores: np.ndarray, groups: list[int],
         opts: Options, calib: Calibration,
         run: RunContext) -> dict[int, list[tuple[int, float]]]:
    """Measured (count, relative error) points per group (count 0 → error 0 included)."""
    blocks = [gi for gi in groups if an.groups[gi].kind == "blocks"]
    groups = [gi for gi in groups if gi not in blocks]
    curves = {gi: _block_curve(model, an, scores, gi, opts, calib, run) for gi in blocks}
    probe = probe_for(model, an, calib.static_batch, calib.sample_axes)
    ok = [gi for gi in groups if set(an.groups[gi].prunable) <= probe.units]
    if len(ok) < len(groups):
        run.note(f"sensitivity: {len(groups) - len(ok)} groups have sinks that cannot be "
                     "gated; they are kept whole")
    plan = [(gi, c) for gi in ok for c in levels(allowed_counts(an.groups[gi], opts))]
    trials = [dict.fromkeys(ranked(an.groups[gi], scores)[:c], 0.0) for gi, c in plan]
    macs = max(1, count_macs(model, next(iter(calib.batches(1)))))
    samples = max(1, min(SAMPLES, calib.samples, int(BUDGET // max(1, len(trials) * macs))))
    if calib.static_batch:
        samples = max(calib.static_batch, samples - samples % calib.static_batch)
    if samples < min(SAMPLES, calib.samples):
        run.note(f"sensitivity: {len(trials)} trials × {macs:.3g} MACs: scanned on "
                     f"{samples} calibration samples (of {min(SAMPLES, calib.samples)}) to "
                     "bound the time")
    total = len(trials)

    run.say(f"sensitivity scan: {total} trials ({len(ok)} groups × up to {LEVELS} ratios, "
            f"{samples} samples)")

    def report(done: int, runs: int) -> None:
        run.count("sensitivity scan", done, runs, "trials")

    change, norm = measure(probe, calib.block(samples), trials, report)
    errors = np.sqrt(change / max(norm, 1e-30))
    curves.update({gi: [(0, 0.0)] for gi in ok})
    for (gi, c), e in zip(plan, errors, strict=True):
        curves[gi].append((c, float(e)))
    return curves


def _block_curve(model: onnx.ModelProto, an: Analysis, scores: np.ndarray, gi: int,
                 opts: Options, calib: Calibration, run: RunContext) -> list[tuple[int, float]]:
    """The blocks group's curve: its lowest-scored blocks zeroed through the block probe
    (depth.py), one run per trial."""
    g = an.groups[gi]
    counts = levels(allowed_counts(g, opts))
    order = ranked(g, scores)
    probe = depth.BlockProbe(model, an, [b for b in an.blocks if b.unit in set(g.prunable)])
    run.say(f"sensitivity scan: {len(counts)} trials removing blocks")
    errors = depth.measure(probe, list(calib.batches(min(SAMPLES, calib.samples))),
                           [set(order[:c]) for c in counts])
    return [(0, 0.0), *((c, float(e)) for c, e in zip(counts, errors, strict=True))]


def levels(allowed: list[int]) -> list[int]:
    """Up to LEVELS removal counts spread evenly over the allowed ones (the largest included)."""
    steps = allowed[1:]
    if len(steps) <= LEVELS:
        return steps
    picks = np.linspace(0, len(steps) - 1, LEVELS).round().astype(int)
    return [steps[i] for i in sorted(set(picks.tolist()))]


def interpolate(curve: list[tuple[int, float]], counts: list[int]) -> np.ndarray:
    xs, ys = zip(*sorted(curve), strict=True)
    return np.maximum.accumulate(np.interp(counts, xs, ys))


def order(an: Analysis, curves: dict[int, list[tuple[int, float]]], opts: Options,
          cost: CostModel, metric: str, scores: np.ndarray):
    keys = {}
    for gi, curve in curves.items():
        g = an.groups[gi]
        counts = allowed_counts(g, opts)
        per_unit = cost.unit_saving(ranked(g, scores)[:counts[-1]], metric) or 1e-12
        errors = interpolate(curve, counts)
        keys[gi] = hull_keys(np.array(counts, dtype=float) * per_unit, errors, counts)
    return make_order(keys)


def hull_keys(x: np.ndarray, y: np.ndarray, counts: list[int]) -> list[tuple[int, float]]:
    """(count, slope of the lower convex hull segment that reaches it) for counts[1:]."""
    hull = [0]
    for i in range(1, len(x)):
        while len(hull) >= 2 and _cross(x, y, hull[-2], hull[-1], i) <= 0:
            hull.pop()
        hull.append(i)
    keys = []
    for a, b in zip(hull, hull[1:], strict=False):
        slope = (y[b] - y[a]) / max(x[b] - x[a], 1e-30)
        keys += [(counts[i], float(slope)) for i in range(a + 1, b + 1)]
    return keys


def _cross(x, y, o: int, a: int, b: int) -> float:
    return (x[a] - x[o]) * (y[b] - y[o]) - (y[a] - y[o]) * (x[b] - x[o])
