"""Selection under an allocation and an optional target (MACs, parameters or latency).

Without a target, `ratio` decides: uniform removes that fraction of every group (as
`selection.select_uniform` always has); global and sensitivity remove that fraction of all
candidate units, ordered by their removal order. With a target (a fraction of the original),
the prefix of the removal order is found by bisection: against the cost model for MACs and
parameters (exact for convolutional and linear layers), against onnxruntime measurements for
latency. The result is the smallest prefix at or under the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphprune.analysis import Analysis

from . import latency, rewrite, sensitivity, validation
from .allocation import (
    Options,
    Step,
    bisect,
    candidates,
    counts_at,
    global_order,
    prefix_for_units,
    removal,
    uniform_order,
)
from .cost import CostModel
from .selection import GroupChoice, select_uniform

TOLERANCE = 0.02
FILL_STEPS = 256
TARGETS = ("macs", "params", "latency")


@dataclass
class Request:
    ratio: float = 0.4
    allocation: str = "uniform"
    round_to: int = 1
    protect: str | None = None
    max_group_ratio: float = 0.9
    metric: str | None = None  # "macs" | "params" | "latency"
    target: float | None = None
    rounding: str = "down"


@dataclass
class Selection:
    removed: np.ndarray
    choices: list[GroupChoice]
    latency: dict[str, float] = field(default_factory=dict)
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)


class Selector:
    """Holds what repeated selections share: the cost model, the removal order, the scan."""

    def __init__(self, model: onnx.ModelProto, an: Analysis, scores: np.ndarray, req: Request,
                 *, calibration=None, sizes=None, feeds: dict[str, np.ndarray] | None = None,
                 progress: Callable[[str], None] = print,
                 notes: list[str] | None = None) -> None:
        self.model, self.an, self.scores, self.req = model, an, scores, req
        self.calibration, self.progress = calibration, progress
        self.notes = notes if notes is not None else []
        self.opts = Options(req.round_to, req.protect, req.max_group_ratio)
        self.free, self.protected = candidates(an, req.protect)
        self.sizes = sizes
        self._feeds: dict[str, np.ndarray] | None = feeds
        """Inputs of the cost model and latency runs (the exact check's first run's)."""
        self._cost: CostModel | None = None
        self._order: list[Step] | None = None
        self.curves: dict[int, list[tuple[int, float]]] = {}
        self._latency: dict[int, tuple[float, float]] = {}

    @property
    def feeds(self) -> dict[str, np.ndarray]:
        if self._feeds is None:
            self._feeds = validation.make_inputs(self.model, batch=1, sizes=self.sizes)
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
        an, kind = self.an, self.req.allocation
        if kind == "uniform":
            return uniform_order(an, self.free, self.opts)
        if kind == "global":
            return global_order(an, self.scores, self.free, self.opts)
        self.curves = sensitivity.scan(self.model, an, self.scores, self.free, self.opts,
                                       self.calibration, self.progress, self.notes)
        metric = self.req.metric if self.req.metric in ("macs", "params") else "macs"
        return sensitivity.order(an, self.curves, self.opts, self.cost, metric, self.scores)

    def at(self, k: int) -> tuple[np.ndarray, list[GroupChoice]]:
        return removal(self.an, self.scores, counts_at(self.order, k), self.protected)

    def select(self, target: float | None = None) -> Selection:
        """The selection for `target` (default: the request's), or for the ratio."""
        req = self.req
        target = req.target if target is None else target
        if target is None and req.allocation == "uniform":
            removed, choices = select_uniform(self.an, self.scores, req.ratio, req.round_to,
                                              req.protect, req.rounding)
            return Selection(removed, choices)
        if target is None:
            k = prefix_for_units(self.an, self.order, req.ratio, self.free)
        elif req.metric == "latency":
            bisect(len(self.order), self.latency_fraction, target)
            k = self.closest_measured(target)
        else:
            k = bisect(len(self.order),
                       lambda j: self.cost.fraction(self.at(j)[0], req.metric), target)
            counts = self.fill(k, target)
            if counts is not None:
                removed, choices = removal(self.an, self.scores, counts, self.protected)
                return Selection(removed, choices, {}, self.curves)
        removed, choices = self.at(k)
        lat = {}
        if req.metric == "latency":
            lat = dict(zip(("before", "after"), self.latency_of(k), strict=True))
        return Selection(removed, choices, lat, self.curves)

    def fill(self, k: int, target: float) -> dict[int, int] | None:
        """When step k overshoots the target by more than the tolerance (one step of a large
        group can), start from prefix k − 1 and take the following steps in order that keep
        the cost above target × (1 − tolerance), until at or under the target. Within a group
        steps stay in order: a group whose step was skipped takes no later one."""
        metric, low = self.req.metric, target * (1 - TOLERANCE)
        frac = self.cost.fraction
        if k == 0 or frac(self.at(k)[0], metric) >= low:
            return None
        counts = counts_at(self.order, k - 1)
        skipped: set[int] = set()
        for gi, c in self.order[k - 1:k - 1 + FILL_STEPS]:
            if gi in skipped or c <= counts.get(gi, 0):
                continue
            trial = {**counts, gi: c}
            value = frac(removal(self.an, self.scores, trial)[0], metric)
            if value < low:
                skipped.add(gi)
                continue
            counts = trial
            if value <= target:
                return counts
        return None

    # -- latency --------------------------------------------------------------------------------
    def latency_of(self, k: int) -> tuple[float, float]:
        """(original, pruned at prefix k) median latencies, measured interleaved."""
        if k not in self._latency:
            removed, _ = self.at(k)
            pruned = rewrite.prune_model(self.model, self.an, removed) if removed.any() \
                else self.model
            io = rewrite.removed_io(self.an, removed)  # allow_io_change: shrunk inputs
            shrunk = (validation.shrink_feeds(self.feeds, io),) if io else ()
            self._latency[k] = latency.compare(self.model, pruned, self.feeds, *shrunk)
            before, after = self._latency[k]
            self.progress(f"latency with {int(removed.sum())} units removed: "
                          f"{after / before:.3f} of the original")
        return self._latency[k]

    def closest_measured(self, target: float) -> int:
        """Measurements are noisy, so bisection's last step need not be its best: of the
        prefixes measured, the one closest to the target (not above it by more than the
        tolerance, when one is not)."""
        ok = [k for k in self._latency if self.latency_fraction(k) <= target * (1 + TOLERANCE)]
        pool = ok or list(self._latency)
        return min(pool, key=lambda k: (abs(self.latency_fraction(k) - target), k))

    def latency_fraction(self, k: int) -> float:
        before, after = self.latency_of(k)
        return after / before

