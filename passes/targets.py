"""Selection under an allocation and an optional target (MACs, parameters or latency).

Without a target, `ratio` decides: uniform removes that fraction of every group (as
`selection.select_uniform` always has); global and sensitivity remove that fraction of all
candidate units, ordered by their removal order. With a target (a fraction of the original),
the prefix of the removal order is found by bisection: against the cost model for MACs and
parameters (exact for convolutional and linear layers), against onnxruntime measurements for
latency. The result is the smallest prefix at or under the target. Where the cost model misses
costs (MACs of activation × activation products), `select` counts the rewritten model and
corrects the target it aims at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.context import RunContext
from graphprune.metrics import count_macs, count_params

from . import fragile, latency, rewrite, sensitivity, validation
from .allocation import (
    Step,
    bisect,
    candidates,
    counts_at,
    global_order,
    prefix_for_units,
    uniform_order,
)
from .cost import METRICS, CostModel
from .options import Options
from .selection import GroupChoice, removal, uniform_counts

TOLERANCE = 0.02
FILL_STEPS = 256
CORRECTIONS = 3
"""Rewrites `select` may count to correct a MAC target the cost model only approximates."""


@dataclass
class Selection:
    removed: np.ndarray
    choices: list[GroupChoice]
    latency: dict[str, float] = field(default_factory=dict)
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    """A latency target's search: noise, floor, flat, reachable, measured_by (the report's
    `target` takes them)."""


class Selector:
    """Holds what repeated selections share: the cost model, the removal order, the scan."""

    def __init__(self, model: onnx.ModelProto, an: Analysis, scores: np.ndarray, opts: Options,
                 *, calibration=None, run: RunContext | None = None,
                 feeds: dict[str, np.ndarray] | None = None) -> None:
        self.model, self.an, self.scores, self.opts = model, an, scores, opts
        self.calibration, self.run = calibration, run or RunContext()
        self.free, self.protected = candidates(an, opts.protect)
        self._feeds: dict[str, np.ndarray] | None = feeds
        """Inputs of the cost model and latency runs (the exact check's first run's)."""
        self._cost: CostModel | None = None
        self._order: list[Step] | None = None
        self.curves: dict[int, list[tuple[int, float]]] = {}
        self.meter = (latency.OrtMeter() if opts.latency is None else latency.CallableMeter(
            opts.latency, getattr(opts.latency, "name", "the given latency function")))
        self.fragile: fragile.Check | None = None

    @property
    def feeds(self) -> dict[str, np.ndarray]:
        if self._feeds is None:
            self._feeds = validation.make_inputs(self.model, batch=1,
                                                 sizes=self.opts.input_sizes)
        return self._feeds

    @property
    def cost(self) -> CostModel:
        if self._cost is None:
            self._cost = CostModel(self.model, self.an, self.feeds)
        return self._cost

    @property
    def order(self) -> list[Step]:
        if self._order is None:
            self._order = self._make_order()
        return self._order

    def _make_order(self) -> list[Step]:
        an, kind = self.an, self.opts.allocation
        if kind == "uniform":
            return uniform_order(an, self.free, self.opts)
        if kind == "global":
            return global_order(an, self.scores, self.free, self.opts)
        metric = self.opts.metric if self.opts.metric in METRICS else "macs"

        def ordered(curves: dict[int, list[tuple[int, float]]]) -> list[Step]:
            return sensitivity.order(an, curves, self.opts, self.cost, metric, self.scores)

        self.curves = sensitivity.scan(self.model, an, self.scores, self.free, self.opts,
                                       self.calibration, self.run,
                                       focus=lambda curves: self.focus(ordered(curves)))
        return ordered(self.curves)

    def focus(self, order: list[Step]) -> dict[int, int]:
        """The removal counts the ratio or target gives along `order`, by the cost model (a
        latency target by MACs: what the sensitivity scan refines around)."""
        opts = self.opts
        if opts.target is None:
            return counts_at(order, prefix_for_units(self.an, order, opts.ratio, self.free,
                                                     opts.rounding))
        metric = opts.metric if opts.metric in ("macs", "params") else "macs"

        def fraction(j: int) -> float:
            removed, _ = removal(self.an, self.scores, counts_at(order, j), self.protected)
            return self.cost.fraction(removed, metric)

        return counts_at(order, bisect(len(order), fraction, opts.target))

    def at(self, k: int) -> tuple[np.ndarray, list[GroupChoice]]:
        return removal(self.an, self.scores, counts_at(self.order, k), self.protected)

    def select(self, target: float | None = None) -> Selection:
        """The selection for `target` (default: the options'), or for the ratio."""
        opts = self.opts
        target = opts.target if target is None else target
        if opts.checks_fragile and self.fragile is None:
            self.check_fragile(target)
        if target is None and opts.allocation == "uniform":
            return self._kept(Selection(*removal(
                self.an, self.scores, uniform_counts(self.an, opts, self.protected | self.kept),
                self.protected)))
        if target is None:
            k = prefix_for_units(self.an, self.order, opts.ratio, self.free, opts.rounding)
        elif opts.metric == "latency":
            return self.latency_target(target)
        else:
            k = bisect(len(self.order),
                       lambda j: self.cost.fraction(self.at(j)[0], opts.metric), target)
            counts = self.fill(k, target)
            if counts is not None:
                removed, choices = removal(self.an, self.scores, counts, self.protected)
                return self._kept(Selection(removed, choices, {}, self.curves))
        removed, choices = self.at(k)
        return self._kept(Selection(removed, choices, {}, self.curves))

    # -- uniform allocation's fragile-group check -------------------------------------------
    @property
    def kept(self) -> set[int]:
        """Groups kept whole as fragile (passes/fragile.py)."""
        return set(self.fragile.fragile) if self.fragile is not None else set()

    def check_fragile(self, target: float | None) -> None:
        """Measure every group alone at the count uniform allocation gives it (at `target`);
        fragile groups leave the candidates, so the ratio or target is met without them."""
        self.fragile = fragile.Check()  # the selection below runs unchecked
        plain = self.select(target)
        counts = {gi: len(plain.choices[gi].removed) for gi in self.free}
        self.fragile = fragile.check(self.model, self.an, self.scores, counts,
                                     self.calibration, self.run)
        for line in self.fragile.notes(self.an):
            self.run.note(line)
        if self.fragile.fragile:
            self.free = [gi for gi in self.free if gi not in self.kept]
            self._order = None

    def _kept(self, sel: Selection) -> Selection:
        for gi in self.kept:
            sel.choices[gi].kept = "fragile: kept whole by uniform allocation's check"
        return sel

    def fill(self, k: int, target: float) -> dict[int, int] | None:
        """When step k overshoots the target by more than the tolerance (one step of a large
        group can), start from prefix k − 1 and take the following steps in order that keep
        the cost above target × (1 − tolerance), until at or under the target. Within a group
        steps stay in order: a group whose step was skipped takes no later one. When no such
        steps land in that band, the skipped trial closest under the target, if closer than
        step k (a residual block is one large step: the band may lie between two of its
        neighbours' steps)."""
        metric, low = self.opts.metric, target * (1 - TOLERANCE)
        frac = self.cost.fraction
        at_k = frac(self.at(k)[0], metric) if k else 1.0
        if k == 0 or at_k >= low:
            return None
        counts = counts_at(self.order, k - 1)
        skipped: set[int] = set()
        best: tuple[float, dict[int, int]] = (at_k, {})
        for gi, c in self.order[k - 1:k - 1 + FILL_STEPS]:
            if gi in skipped or c <= counts.get(gi, 0):
                continue
            trial = {**counts, gi: c}
            value = frac(removal(self.an, self.scores, trial)[0], metric)
            if value < low:
                skipped.add(gi)
                if value > best[0]:
                    best = (value, trial)
                continue
            counts = trial
            if value <= target:
                return counts
        return best[1] or None

    # -- latency --------------------------------------------------------------------------------
    def latency_target(self, target: float) -> Selection:
        """The prefix latency.search finds, with what it measured (notes say when the curve
        is flat, the target below the floor, or the latency mostly fixed overhead)."""
        found = latency.search(self.measure, len(self.order), target, TOLERANCE,
                               lambda done, total: self.run.count(
                                   "latency search", done, total, "measurements"))
        removed, choices = self.at(found.k)
        m = found.measured[found.k] if found.k else next(
            (v for k, v in found.measured.items() if k), found.measured[0])
        after = m.after if found.k else m.before
        info = {"measured_by": self.meter.name, "noise": round(found.noise, 4),
                "floor": round(found.floor, 4), "flat": found.flat,
                "reachable": found.reachable}
        self._latency_notes(found, target)
        return Selection(removed, choices, {"before": m.before, "after": after}, self.curves,
                         info)

    def measure(self, k: int) -> latency.Measured:
        """Latency of prefix k against the original (interleaved, by the meter)."""
        removed, _ = self.at(k)
        pruned = rewrite.prune_model(self.model, self.an, removed) if removed.any() \
            else self.model
        io = rewrite.removed_io(self.an, removed)  # allow_io_change: shrunk inputs
        shrunk = (validation.shrink_feeds(self.feeds, io),) if io else ()
        m = self.meter.compare(self.model, pruned, self.feeds, *shrunk)
        self.run.say(f"latency with {int(removed.sum())} units removed: {m.ratio:.3f} of "
                     f"the original (noise {m.noise:.3f})")
        return m

    def _latency_notes(self, found: latency.Search, target: float) -> None:
        run = self.run
        if found.flat:
            run.note(f"latency target: the latency does not follow pruning here: removing "
                     f"every unit the allocation may remove measures {found.floor:.3f} of "
                     f"the original (noise {found.noise:.3f}), so nothing was removed; "
                     "the time is fixed overhead at this batch size on this machine (try "
                     "--target-macs, --input-shape with the deployment's shapes, or "
                     "--latency-cmd to measure where the model runs)")
            return
        if not found.reachable:
            run.note(f"latency target: {target:.3f} is below the floor of "
                     f"{found.floor:.3f} (every unit the allocation may remove, noise "
                     f"{found.noise:.3f}); stopped at the smallest plan within twice the "
                     "noise of it, since removing more buys no measurable speed")
        points = [(self.cost.fraction(self.at(k)[0], "macs"), m.ratio)
                  for k, m in sorted(found.measured.items())]
        fixed = latency.overhead(points)
        if fixed is not None and fixed >= latency.OVERHEAD_NOTE:
            run.note(f"latency target: about {fixed:.0%} of the latency does not shrink "
                     "with MACs (a least-squares line through the measurements); pruning "
                     "cannot remove it (measure at the deployment's shapes, or with "
                     "--latency-cmd)")


# -- the selection pass ---------------------------------------------------------------------
def select(model: onnx.ModelProto, an: Analysis, scores: np.ndarray, opts: Options, *,
           calibration=None, run: RunContext | None = None,
           feeds: dict[str, np.ndarray] | None = None) -> Selection:
    """The selection for `opts` (`feeds`: inputs of the cost model and latency runs). For
    MAC/parameter targets where the cost model misses costs (MACs of activation × activation
    products), count the rewritten model and aim again at the target corrected by what the
    count strayed, up to CORRECTIONS times."""
    selector = Selector(model, an, scores, opts, calibration=calibration, run=run, feeds=feeds)
    picked = selector.select()
    if opts.metric not in METRICS or not selector.cost.approximate(opts.metric):
        return picked
    aim = opts.target
    for _ in range(CORRECTIONS):
        reached = real_fraction(model, an, picked.removed, opts.metric, selector.feeds)
        if abs(reached - opts.target) <= TOLERANCE * opts.target:
            break
        aim = min(1.0, max(1e-6, aim + (opts.target - reached)))
        picked = selector.select(aim)
    return picked


def real_fraction(model: onnx.ModelProto, an: Analysis, removed: np.ndarray, metric: str,
                  feeds: dict[str, np.ndarray]) -> float:
    """The fraction of `metric` the rewritten model keeps (counted, not estimated)."""
    if not removed.any():
        return 1.0
    pruned = rewrite.prune_model(model, an, removed)
    if metric == "macs":
        before = count_macs(model, feeds)
        after = count_macs(pruned, validation.shrink_feeds(feeds, rewrite.removed_io(an, removed)))
        return after / before if before else 1.0
    before = count_params(model)
    return count_params(pruned) / before if before else 1.0


def outcome(metric: str, value: float, reached: float) -> dict:
    """The report's `target`: asked, reached (4 digits), tolerance and whether it was met."""
    reached = round(reached, 4)
    return {"metric": metric, "value": value, "reached": reached, "tolerance": TOLERANCE,
            "met": abs(reached - value) <= TOLERANCE * value}
