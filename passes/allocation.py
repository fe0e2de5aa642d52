"""Allocation: how many units each group loses, as an ordered list of removal steps.

Every allocation is a *removal order*: a list of steps "group g now loses its c lowest-scored
units", sorted by a key. Taking a prefix of the order gives a plan; targets are met by
bisection on the prefix length against the cost model (or measured latency), so all
allocations share one search and land on a unit (or `round_to` chunk) of granularity.

- `uniform`: key = the common ratio at which a group takes the step: c / n with `rounding`
  down (a group of n holds ⌊R·n⌋ removed units at ratio R), the previous allowed count / n
  with `rounding` up (⌈R·n⌉: every group loses a unit as soon as the ratio is above 0).
  A prefix holds every group near the same ratio; without a target the plain per-group ratio
  of `selection.select_uniform` is used (the default behaviour).
- `global`: key = the (group-normalised) score of the last unit the step removes: one ranking
  across all groups (Torch-Pruning's global pruning).
- `sensitivity`: key = slope of the lower convex hull of the group's measured error curve
  against the cost it saves (`sensitivity.py`): least output error per removed MAC/param first.

Without a target, global and sensitivity take the prefix that removes `ratio` of all candidate
units: at most ⌊R·N⌋ with `rounding` down, at least ⌈R·N⌉ with `rounding` up.
Every group keeps at least one unit and at most `max_group_ratio` of its units are removed
(uniform too, under a target), so no layer is wiped out; protected groups take no steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphprune.analysis import Analysis, Group

from .options import Options
from .selection import protected_groups, ranked

Step = tuple[int, int]
"""(group index in an.groups, number of units that group has lost after this step)."""


def candidates(an: Analysis, protect: str | None) -> tuple[list[int], set[int]]:
    """Indices of groups that may lose units, and of protected groups."""
    protected = protected_groups(an, protect)
    free = [gi for gi, g in enumerate(an.groups)
            if gi not in protected and g.prunable and len(g.units) > 1]
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


def make_order(keys: dict[int, list[tuple[int, float]]]) -> list[Step]:
    """Merge per-group steps [(count, key)] into one order by key (ties: graph order)."""
    steps = [(key, gi, c) for gi, ks in keys.items() for c, key in ks]
    steps.sort(key=lambda s: (s[0], s[1], s[2]))
    return [(gi, c) for _, gi, c in steps]


def uniform_order(an: Analysis, groups: list[int], opts: Options) -> list[Step]:
    keys = {}
    for gi in groups:
        n = len(an.groups[gi].units)
        counts = allowed_counts(an.groups[gi], opts)
        due = counts[:-1] if opts.rounding == "up" else counts[1:]  # the count to pass / reach
        keys[gi] = [(c, d / n) for c, d in zip(counts[1:], due, strict=True)]
    return make_order(keys)


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


def prefix_for_units(an: Analysis, order: list[Step], fraction: float, groups: list[int],
                     rounding: str = "down") -> int:
    """The prefix removing `fraction` of the candidate groups' units: the longest removing at
    most ⌊fraction·N⌋ (`rounding` down), the shortest removing at least ⌈fraction·N⌉ (up; the
    whole order when it removes fewer)."""
    n = fraction * sum(len(an.groups[gi].units) for gi in groups)
    up = rounding == "up"
    budget = math.ceil(n - 1e-9) if up else n + 1e-9
    if up and budget <= 0:
        return 0
    best, total = 0, 0
    counts: dict[int, int] = {}
    for k, (gi, c) in enumerate(order, start=1):
        total += c - counts.get(gi, 0)
        counts[gi] = c
        if up:
            best = k
            if total >= budget:
                break
        elif total > budget:
            break
        else:
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
