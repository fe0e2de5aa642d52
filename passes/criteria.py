"""The criterion registry and what a criterion reads, shared by every criterion module.

A criterion maps every unit (slot root) to a score, low scores removed first. It scores each
*member* (a weight tensor sliced with the unit) per unit (`per_unit`), and the member scores
are combined into one unit score by `aggregate` (`sum`, `mean` or `max` over the members that
carry the unit). Criteria register with `@criterion(name)`: over weights in `weights.py`,
from calibration data in `calibration.py`, by gate probes (`taylor`) in `probe.py`; the
scoring pass (`scoring.py`) imports all three, so its registry is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphprune.analysis import Analysis, Member
from graphprune.context import RunContext

AGGREGATES = ("sum", "mean", "max")

MemberScore = tuple[np.ndarray, np.ndarray]
"""(unit roots, one score per root) of one member."""


@dataclass
class ScoreContext:
    """What a criterion may read: the analysis, options, calibration data and shared caches;
    progress and notes (fallbacks it had to use) go to the run context."""

    an: Analysis
    seed: int = 0
    aggregate: str = "sum"
    calibration: Any = None  # calibration.Calibration, built on demand
    run: RunContext = field(default_factory=RunContext)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self):
        return self.an.graph.model

    def weight(self, m: Member) -> np.ndarray:
        return np.asarray(self.an.graph.const(self.an.graph.nodes[m.node].input[m.index]),
                          dtype=np.float64)

    def combine(self, scores: list[MemberScore]) -> np.ndarray:
        return aggregate(len(self.an.roots), scores, self.aggregate)


Criterion = Callable[[ScoreContext], np.ndarray]
CRITERIA: dict[str, Criterion] = {}
DEFAULT_NORMALIZE: dict[str, str] = {}
NEEDS_DATA: set[str] = set()


def criterion(name: str, *, normalize: str = "mean", data: bool = False):
    """Register a criterion; `normalize` is its default, `data` whether it runs the model."""

    def register(fn: Criterion) -> Criterion:
        if name in CRITERIA:
            raise ValueError(f"criterion '{name}' registered twice")
        CRITERIA[name] = fn
        DEFAULT_NORMALIZE[name] = normalize
        if data:
            NEEDS_DATA.add(name)
        return fn

    return register


def per_unit(an: Analysis, ids: np.ndarray, values: np.ndarray, how: str = "sum") -> MemberScore:
    """Reduce per-position `values` (shaped like `ids`) to one value per unit root."""
    roots = an.roots[np.asarray(ids).ravel()]
    units, inverse = np.unique(roots, return_inverse=True)
    out = np.zeros(len(units))
    if how == "max":
        out[:] = -np.inf
        np.maximum.at(out, inverse, np.ravel(values))
        return units, out
    np.add.at(out, inverse, np.ravel(values))
    if how == "mean":
        out /= np.bincount(inverse, minlength=len(units))
    return units, out


def aggregate(n: int, scores: list[MemberScore], how: str) -> np.ndarray:
    """One score per root from member scores: sum, mean (over the members carrying the
    unit) or max. Roots no member scored get 0."""
    total = np.zeros(n)
    if how == "max":
        total[:] = -np.inf
        for units, vals in scores:
            np.maximum.at(total, units, vals)
        total[np.isneginf(total)] = 0.0
        return total
    count = np.zeros(n)
    for units, vals in scores:
        np.add.at(total, units, vals)
        np.add.at(count, units, 1)
    if how == "mean":
        total = np.divide(total, count, out=np.zeros(n), where=count > 0)
    return total


def fallback(ctx: ScoreContext, out: np.ndarray, scored: set[int], name: str,
             fn: Criterion) -> None:
    """Groups none of whose units a criterion could score take `fn`'s scores (noted)."""
    groups = [g for g in ctx.an.groups if g.prunable and g.kind != "blocks"
              and not any(u in scored for u in g.units)]  # blocks: scored by passes/depth
    if not groups:
        return
    prunable = sum(1 for g in ctx.an.groups if g.prunable and g.kind != "blocks")
    ctx.run.note(f"{len(groups)} of {prunable} prunable groups could not be scored from "
                 f"calibration data; scored by {name}")
    # before `fn` runs: a fallback of its own reads after this one, as the chain it is
    ctx.run.detail("criterion", f"FELL BACK to {name} for {len(groups)} of {prunable} groups")
    alt = fn(ctx)
    for g in groups:
        out[g.units] = alt[g.units]
