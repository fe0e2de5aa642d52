"""The scoring pass: every unit (slot root) gets a score; low scores are removed first.

A criterion (registered in `criteria.py`: over weights in `weights.py`, from calibration
data in `calibration.py`, by gate probes in `probe.py`) scores each member per unit; member
scores are aggregated into one unit score, then **normalised within the group** (`none`;
`mean`, `max`, `sum`: divide by that statistic of the group's scores; `standard`: subtract
the group mean, divide by the standard deviation). Normalisation does not change which units a
group loses under uniform allocation; it makes scores of different layers comparable for
global ranking.

Residual blocks (the `blocks` group) are scored by a block criterion instead
(`depth.py`: `influence` by default, or `sensitivity`), then normalised like any group.

Contract (checked by `check_scores` in every run): one score per slot, finite on every
prunable unit.
"""

from __future__ import annotations

import numpy as np

from graphprune.analysis import Analysis, blocks_group
from graphprune.context import RunContext

from . import calibration as _calibration  # noqa: F401 - each of these registers its criteria
from . import depth
from . import probe as _probe  # noqa: F401
from . import weights as _weights  # noqa: F401
from .criteria import AGGREGATES, CRITERIA, DEFAULT_NORMALIZE, NEEDS_DATA, ScoreContext

NORMALIZATIONS = ("none", "mean", "max", "sum", "standard")
__all__ = ["AGGREGATES", "CRITERIA", "DEFAULT_NORMALIZE", "NEEDS_DATA", "NORMALIZATIONS",
           "check_options", "check_scores", "normalize_groups", "score_units"]


def score_units(an: Analysis, name: str, seed: int = 0, *, aggregate: str = "sum",
                normalize: str | None = None, calibration=None,
                run: RunContext | None = None,
                block_criterion: str = depth.DEFAULT_BLOCK_CRITERION) -> np.ndarray:
    """Scores indexed by root id (entries of non-root slots are meaningless).

    `normalize=None` takes the criterion's default. Fallbacks a criterion had to use are
    noted on `run` (for the report). Blocks are scored by `block_criterion`."""
    check_options(name, aggregate, normalize)
    ctx = ScoreContext(an, seed, aggregate, calibration, run or RunContext())
    scores = CRITERIA[name](ctx)
    if blocks_group(an) is not None:
        depth.score_blocks(ctx, scores, block_criterion)
    return normalize_groups(an, scores, normalize or DEFAULT_NORMALIZE[name])


def check_options(name: str, aggregate: str = "sum", normalize: str | None = None) -> None:
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion '{name}' (choose from {', '.join(sorted(CRITERIA))})")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate '{aggregate}' (choose from {', '.join(AGGREGATES)})")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation '{normalize}' "
                         f"(choose from {', '.join(NORMALIZATIONS)})")


def check_scores(an: Analysis, scores: np.ndarray) -> str | None:
    """What is wrong with `scores` for `an` (None: one per slot, finite on prunable units)."""
    if np.shape(scores) != (len(an.roots),):
        return f"{np.shape(scores)} scores for {len(an.roots)} slots"
    units = [u for g in an.groups for u in g.prunable]
    bad = np.flatnonzero(~np.isfinite(scores[units])) if units else []
    if len(bad):
        u = units[int(bad[0])]
        g = next(g for g in an.groups if u in g.units)
        return f"{len(bad)} prunable units score non-finite ({scores[u]} in group '{g.name}')"
    return None


def normalize_groups(an: Analysis, scores: np.ndarray, how: str) -> np.ndarray:
    if how == "none":
        return scores
    out = np.array(scores, dtype=np.float64, copy=True)
    for g in an.groups:
        s = out[g.units]
        if how == "standard":
            out[g.units] = (s - s.mean()) / (s.std() or 1.0)
            continue
        ref = {"mean": np.mean, "max": np.max, "sum": np.sum}[how](np.abs(s))
        out[g.units] = s / ref if ref > 0 else s
    return out
