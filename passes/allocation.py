"""Allocation: how many units each group loses, as an ordered list of removal steps.

Every allocation is a *removal order*: a list of steps "group g now loses its c lowest-scored
units", sorted by a key. Taking a prefix of the order gives a plan; targets are met by
bisection on the prefix length against the cost model (or measured latency), so all
allocations share one search and land on a unit (or `round_to` chunk) of granularity.

- `uniform`: key = c / n. A prefix holds every group near the same ratio; without a target
  the plain per-group ratio of `selection.select_uniform` is used (the default behaviour).
- `global`: key = the (group-normalised) score of the last unit the step removes: one ranking
  across all groups (Torch-Pruning's global pruning).
- `sensitivity`: key = slope of the lower convex hull of the group's measured error curve
  against the cost it saves (`sensitivity.py`): least output error per removed MAC/param first.

Every group keeps at least one unit and at most `max_group_ratio` of its units are removed
(uniform too, under a target), so no layer is wiped out; protected groups take no steps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphprune.analysis import Analysis, Group

from .selection import GroupChoice, keep_one_per_axis

ALLOCATIONS = ("uniform", "global", "sensitivity")
Step = tuple[int, int]
"""(group index in an.groups, number of units that group has lost after this step)."""


@dataclass
class Options:
    round_to: int = 1
    protect: str | None = None
    max_group_ratio: float = 0.9


def candidates(an: Analysis, protect: str | None) -> tuple[list[int], set[int]]:
    """Indices of groups that may lose units, and of protected groups."""
    pattern = re.compile(protect) if protect else None
    free, protected = [], set()
    for gi, g in enumerate(an.groups):
        if pattern and any(pattern.search(an.graph.node_name(m.node)) for m in g.members):
            protected.add(gi)
        elif g.prunable and len(g.units) > 1:
            free.append(gi)
    return free, protected


def allowed_counts(g: Group, opts: Options) -> list[int]:
    """Removal counts a group may take: 0, then those within the ceiling whose kept count is
    a multiple of round_to (when the group has at least round_to units)."""
    n = len(g.units)
    ceiling = min(len(g.prunable), n - 1, math.floor(opts.max_group_ratio * n + 1e-9))
    r = opts.round_to
    if r > 1 and n >= r:
        return [0] + [c for c in range(1, ceiling + 1) if (n - c) % r == 0 and n - c >= r]
    return list(range(ceiling + 1))


def ranked(g: Group, scores: np.ndarray) -> list[int]:
    """Prunable units, lowest score first (stable: ties keep unit order)."""
    return sorted(g.prunable, key=lambda u: scores[u])


def make_order(keys: dict[int, list[tuple[int, float]]]) -> list[Step]:
    """Merge per-group steps [(count, key)] into one order by key (ties: graph order)."""
    steps = [(key, gi, c) for gi, ks in keys.items() for c, key in ks]
    steps.sort(key=lambda s: (s[0], s[1], s[2]))
    return [(gi, c) for _, gi, c in steps]


def uniform_order(an: Analysis, groups: list[int], opts: Options) -> list[Step]:
    return make_order({gi: [(c, c / len(an.groups[gi].units))
                            for c in allowed_counts(an.groups[gi], opts)[1:]] for gi in groups})


def global_order(an: Analysis, scores: np.ndarray, groups: list[int],
                 opts: Options) -> list[Step]:
    keys = {}
    for gi in groups:
        order = ranked(an.groups[gi], scores)
        keys[gi] = [(c, float(scores[order[c - 1]]))
                    for c in allowed_counts(an.groups[gi], opts)[1:]]
    return make_order(keys)


def counts_at(order: list[Step], k: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for gi, c in order[:k]:
        counts[gi] = max(c, counts.get(gi, 0))
    return counts


def removal(an: Analysis, scores: np.ndarray, counts: dict[int, int],
            protected: set[int] = frozenset()) -> tuple[np.ndarray, list[GroupChoice]]:
    """The removed-units array for per-group counts (lowest scores go), and the choices."""
    removed = np.zeros(len(an.roots), dtype=bool)
    choices = []
    for gi, g in enumerate(an.groups):
        gone = ranked(g, scores)[:counts.get(gi, 0)]
        removed[gone] = True
        choices.append(GroupChoice(g, gone, protected=gi in protected))
    keep_one_per_axis(an, scores, removed, choices)
    return removed, choices


def prefix_for_units(an: Analysis, order: list[Step], fraction: float,
                     groups: list[int]) -> int:
    """Longest prefix removing at most `fraction` of the candidate groups' units."""
    budget = fraction * sum(len(an.groups[gi].units) for gi in groups) + 1e-9
    best, k = 0, 0
    counts: dict[int, int] = {}
    total = 0
    for k, (gi, c) in enumerate(order, start=1):
        total += c - counts.get(gi, 0)
        counts[gi] = c
        if total > budget:
            break
        best = k
    return best


def bisect(n: int, value: Callable[[int], float], target: float) -> int:
    """Smallest k in [0, n] with value(k) <= target, for value non-increasing in k
    (n when even value(n) exceeds the target)."""
    lo, hi = 0, n
    if value(hi) > target:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if value(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
