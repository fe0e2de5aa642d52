"""Scoring passes: map every unit (slot root) to a score from its members' weights.

Magnitude criteria (Han et al. 2015; Li et al. 2017 for filters) read the weights that
produce a unit (source members) and the weights that consume it (sink members) and sum the
per-position magnitudes over all of them, as Torch-Pruning's group importance does. Per-unit
parameters such as biases and BatchNorm statistics are not weights and do not score.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphprune.analysis import Analysis

CRITERIA: dict[str, Callable[[Analysis, int], np.ndarray]] = {}


def criterion(name: str):
    def register(fn):
        CRITERIA[name] = fn
        return fn

    return register


def score_units(an: Analysis, name: str, seed: int = 0) -> np.ndarray:
    """Scores indexed by root id (entries of non-root slots are meaningless)."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion '{name}' (choose from {', '.join(sorted(CRITERIA))})")
    return CRITERIA[name](an, seed)


def _magnitude(an: Analysis, power: int) -> np.ndarray:
    scores = np.zeros(len(an.roots), dtype=np.float64)
    for m in an.members:
        if m.role == "param":
            continue
        w = an.graph.const(an.graph.nodes[m.node].input[m.index])
        w = np.abs(np.asarray(w, dtype=np.float64)) ** power
        other = tuple(a for a in range(w.ndim) if a not in m.span.axes)
        per_pos = w.sum(axis=other) if other else w
        np.add.at(scores, an.roots[m.span.ids.ravel()], per_pos.ravel())
    return scores


@criterion("l1")
def l1(an: Analysis, seed: int) -> np.ndarray:
    return _magnitude(an, 1)


@criterion("l2")
def l2(an: Analysis, seed: int) -> np.ndarray:
    return np.sqrt(_magnitude(an, 2))


@criterion("random")
def random(an: Analysis, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(len(an.roots))
