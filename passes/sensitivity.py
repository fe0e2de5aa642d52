"""Sensitivity scan: the output error of pruning each group alone, then least error per cost.

For every candidate group and up to `LEVELS` removal counts (spread over what its ceiling and
`round_to` allow), the group's lowest-scored units are masked (sink slices zeroed, through the
gates of `probe.py`: one session, trials batched along the batch axis, no model copies) and the
relative L2 error of all outputs against the original is measured on calibration samples:
‖f_masked − f‖ / ‖f‖. Between measured counts the error is interpolated linearly, and made
non-decreasing. *Compensated* trials (`Options.trials`, the default when recovery runs) add
recovery's bias compensation of the removed units to their sinks' outputs
(`compensation.py`): the error of the model `--recover bias` writes for that removal alone,
so groups that recovery repairs well are pruned more.

Allocation (AIMET's greedy per-layer selection and ModelOpt FastNAS sort layers the same way):
each group's curve is error against the cost removing c units saves (c × the group's per-unit
MACs or parameters, from the cost model); the steps of the curve's lower convex hull, sorted by
slope, are the cheapest error per removed cost first. Taking a prefix of that order is the
greedy allocation; the target search bisects on the prefix length.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.context import RunContext
from graphprune.errors import stage
from graphprune.metrics import count_macs

from . import depth
from .allocation import allowed_counts, make_order
from .calibration import Calibration
from .compensation import Compensation
from .cost import CostModel
from .options import Options
from .probe import measure, probe_for
from .selection import ranked

LEVELS = 8
"""Removal counts measured per group at most."""
MIN_LEVELS = 2
"""Counts measured per group in the first round when the budget is tight."""
SAMPLES = 16
"""Calibration samples every trial is measured on (all, when there are fewer)..."""
MIN_SAMPLES = 8
"""...and never fewer than these to fit the budget: one sample ranks groups by chance."""
FORWARDS = 1024
"""Sample-forwards (one sample through the model once) the scan aims to spend: its time
scales with the model's cost per sample."""
MAC_BUDGET = 2e11
"""...or this many multiply-accumulates, when more (small models measure every count)."""
ROUNDS = 3
"""Rounds of refinement around the selection's operating point."""


@dataclass
class Scan:
    """The sensitivity scan of the candidate `groups` (see the module docstring).

    When every group's LEVELS counts on SAMPLES samples fit the budget, one round measures
    them. Otherwise positions are chosen adaptively: a first round measures each group at a
    few counts spread over what it may lose (half the budget; at least MIN_LEVELS, on at least
    MIN_SAMPLES samples), then up to ROUNDS rounds spend the rest where the allocation lands:
    `refine(counts)` measures each group at the count the selection gives it and between it
    and the nearest measured counts around it, round-robin over groups, until the budget is
    spent. Never fewer samples than MIN_SAMPLES (or all there are) to save time: the scan
    measures fewer counts instead, and says so when even the first round exceeds the budget."""

    model: onnx.ModelProto
    an: Analysis
    scores: np.ndarray
    groups: list[int]
    opts: Options
    calib: Calibration
    run: RunContext
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    samples: int = 0
    budget: float = 0.0  # sample-forwards
    spent: int = 0  # trials measured
    seconds: float = 0.0
    rounds: int = 0

    def __post_init__(self) -> None:
        an, calib = self.an, self.calib
        self.compensation = None
        if self.opts.trials == "compensated":
            units = [u for gi in self.groups for u in an.groups[gi].prunable]
            self.compensation = Compensation(self.model, an, units, calib, self.run)
        self.probe = probe_for(self.model, an, calib.static_batch, calib.sample_axes,
                               self.compensation.tails if self.compensation else None)
        self.ok = [gi for gi in self.groups if set(an.groups[gi].prunable) <= self.probe.units]
        if len(self.ok) < len(self.groups):
            self.run.note(f"sensitivity: {len(self.groups) - len(self.ok)} groups have sinks "
                          "that cannot be gated; they are kept whole")
        self.allowed = {gi: allowed_counts(an.groups[gi], self.opts) for gi in self.ok}
        self.curves = {gi: [(0, 0.0)] for gi in self.ok}
        macs = max(1, count_macs(self.model, next(iter(calib.batches(1)))))
        self.macs = macs
        self.budget = max(float(FORWARDS), MAC_BUDGET / macs)

    # -- rounds ---------------------------------------------------------------------------------
    def first(self) -> None:
        """The first round: every group at LEVELS counts, or at fewer when the budget is tight
        (then fewer samples too, down to MIN_SAMPLES)."""
        g = max(1, len(self.ok))
        samples = self._fit(min(SAMPLES, self.calib.samples))
        full = sum(len(levels(a, self._n(gi))) for gi, a in self.allowed.items())
        per = LEVELS
        if full * samples > self.budget:
            per = int(self.budget // (2 * samples * g))
            if per < MIN_LEVELS:
                floor = self._fit(min(MIN_SAMPLES, self.calib.samples))
                samples = max(floor, min(samples,
                                         self._fit(int(self.budget // (MIN_LEVELS * g)))))
                per = MIN_LEVELS
        self.samples = samples
        self._measure([(gi, c) for gi in self.ok
                       for c in levels(self.allowed[gi], self._n(gi), per)])
        if self.spent * samples > self.budget:
            self.run.note(f"sensitivity: {self.spent} trials × {samples} samples exceed the "
                          f"budget of {self.budget:.0f} sample-forwards ({g} groups, at least "
                          f"{MIN_LEVELS} counts each, {self.macs:.3g} MACs per sample)")

    def refine(self, counts: dict[int, int]) -> bool:
        """One round around the allocation `counts` (removed units per group); False when
        nothing is left to measure or no budget is left."""
        left = int(self.budget // max(1, self.samples)) - self.spent
        if self.rounds > ROUNDS or left <= 0:
            return False
        todo = [around(self.allowed[gi], [c for c, _ in self.curves[gi]], counts.get(gi, 0))
                for gi in self.ok]
        plan = [(gi, c) for k in range(max(map(len, todo), default=0))
                for gi, cs in zip(self.ok, todo, strict=True) if k < len(cs)
                for c in cs[k:k + 1]][:left]
        if not plan:
            return False
        self._measure(plan)
        return True

    def _n(self, gi: int) -> int:
        return len(self.an.groups[gi].units)

    def _fit(self, samples: int) -> int:
        """`samples` made a multiple of a fixed batch size (at least one batch)."""
        b = self.calib.static_batch
        return max(b, samples - samples % b) if b else max(1, samples)

    def _measure(self, plan: list[tuple[int, int]]) -> None:
        start = time.perf_counter()
        self.rounds += 1
        trials = [dict.fromkeys(ranked(self.an.groups[gi], self.scores)[:c], 0.0)
                  for gi, c in plan]
        total, base = len(trials), self.spent

        self.run.say(f"sensitivity scan, round {self.rounds}: {total} trials ({base} before, "
                     f"{self.samples} samples)")

        def report(done: int, runs: int) -> None:
            self.run.count("sensitivity scan", done, runs, "trial runs")

        shifts = (None if self.compensation is None
                  else [self.compensation.shifts(list(t)) for t in trials])
        change, norm = measure(self.probe, self.calib.block(self.samples), trials, report,
                               shifts)
        errors = np.sqrt(change / max(norm, 1e-30))
        for (gi, c), e in zip(plan, errors, strict=True):
            self.curves[gi].append((c, float(e)))
        self.spent += total
        self.seconds += time.perf_counter() - start

    def describe(self) -> str:
        """What was measured, for the report."""
        per = [len(c) - 1 for c in self.curves.values()] or [0]
        return (f"sensitivity: {len(self.ok)} groups measured at {min(per)}-{max(per)} "
                f"removal counts each ({self.spent} trials in {self.rounds} "
                f"round{'s' if self.rounds != 1 else ''}) on "
                f"{self.samples} calibration samples: {self.spent * self.samples} "
                f"sample-forwards of {self.macs:.3g} MACs (budget {self.budget:.0f}); "
                + (self.compensation.describe() if self.compensation else
                   "trials plain (removed units zeroed, no bias compensation)"))


@stage("sensitivity scan")
def scan(model: onnx.ModelProto, an: Analysis, scores: np.ndarray, groups: list[int],
         opts: Options, calib: Calibration, run: RunContext,
         focus: Callable[[dict[int, list[tuple[int, float]]]], dict[int, int]] | None = None,
         ) -> dict[int, list[tuple[int, float]]]:
    """Measured (count, relative error) points per group (count 0 → error 0 included).
    `focus(curves)`: the removal counts the allocation makes of these curves, around which
    the scan refines when the first round could not measure every level."""
    blocks = [gi for gi in groups if an.groups[gi].kind == "blocks"]
    curves = {gi: _block_curve(model, an, scores, gi, opts, calib, run) for gi in blocks}
    s = Scan(model, an, scores, [gi for gi in groups if gi not in blocks], opts, calib, run)
    s.first()
    while focus is not None and s.refine(focus({**curves, **s.curves})):
        pass
    run.note(s.describe())
    return {**curves, **{gi: sorted(c) for gi, c in s.curves.items()}}


def _block_curve(model: onnx.ModelProto, an: Analysis, scores: np.ndarray, gi: int,
                 opts: Options, calib: Calibration, run: RunContext) -> list[tuple[int, float]]:
    """The blocks group's curve: its lowest-scored blocks zeroed through the block probe
    (depth.py), one run per trial."""
    g = an.groups[gi]
    counts = levels(allowed_counts(g, opts), len(g.units))
    order = ranked(g, scores)
    probe = depth.BlockProbe(model, an, [b for b in an.blocks if b.unit in set(g.prunable)])
    run.say(f"sensitivity scan: {len(counts)} trials removing blocks")
    errors = depth.measure(probe, list(calib.batches(min(SAMPLES, calib.samples))),
                           [set(order[:c]) for c in counts])
    return [(0, 0.0), *((c, float(e)) for c, e in zip(counts, errors, strict=True))]


POSITIONS = (0.1, 0.3, 0.6, 0.9, 0.2, 0.45, 0.75, 0.05)
"""Where a group's curve is measured, as fractions of its units, most informative first: a
scan with k counts per group takes the first k (small ratios first: that is where targets
land and where a fragile group shows; beyond, errors saturate near 1)."""


def levels(allowed: list[int], n: int, k: int = LEVELS) -> list[int]:
    """Up to k removal counts of a group of n units: the allowed counts nearest to the first
    k POSITIONS × n (all allowed counts when there are no more than k)."""
    steps = allowed[1:]
    if len(steps) <= k:
        return steps
    picks = [min(steps, key=lambda c, f=f: (abs(c - f * n), c)) for f in POSITIONS[:k]]
    return sorted(dict.fromkeys(picks))


def around(allowed: list[int], measured: list[int], c: int) -> list[int]:
    """Counts to measure next near `c`: c itself, then the allowed counts halfway to the
    nearest measured counts below and above it (those not measured yet)."""
    done = set(measured)
    lo = max((m for m in done if m <= c), default=0)
    hi = min((m for m in done if m > c), default=None)
    want = [c]
    for a, b in ((lo, c), (c, hi)):
        if b is None:
            continue
        inside = [x for x in allowed if a < x < b]
        if inside:
            want.append(inside[(len(inside) - 1) // 2])
    if hi is None and c >= max(done):  # at the end of what was measured: look beyond
        beyond = [x for x in allowed if x > c]
        if beyond:
            want.append(min(beyond, key=lambda x: (abs(x - 2 * max(c, 1)), x)))
    return [x for x in dict.fromkeys(want) if x in allowed and x > 0 and x not in done]


def interpolate(curve: list[tuple[int, float]], counts: list[int]) -> np.ndarray:
    xs, ys = zip(*sorted(curve), strict=True)
    return np.maximum.accumulate(np.interp(counts, xs, ys))


def order(an: Analysis, curves: dict[int, list[tuple[int, float]]], opts: Options,
          cost: CostModel, metric: str, scores: np.ndarray):
    keys = {}
    for gi, curve in curves.items():
        g = an.groups[gi]
        top = max(c for c, _ in curve)  # not beyond what was measured: nothing is known there
        counts = [c for c in allowed_counts(g, opts) if c <= top]
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
