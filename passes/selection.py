"""Selection: turn unit scores into the set of removed units.

Every allocation ends here: per-group removal counts become removed units by `removal` (each
group loses its lowest-scored prunable units), and afterwards every tensor axis keeps at least
one position (a Split piece or Concat input never becomes empty).

Uniform allocation (`select_uniform`): every prunable group loses `ratio` of its units,
keeping at least one, and optionally a multiple of `round_to`. `rounding` "down" never removes
more than asked (⌊R·n⌋); "up" removes at least that much (⌈R·n⌉, Torch-Pruning's
convention). Global and sensitivity allocation are in `allocation.py`, targets in
`targets.py`. `--protect` keeps every group whose name matches, or touching a matching node
(`protected_groups`).

Contract (`check_selection`, checked in every run): no frozen unit is removed, every group
keeps at least one unit, a protected group loses nothing, and the choices list exactly the
removed units.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from graphprune.analysis import Analysis, Group, blocks_group

from .options import Options


@dataclass
class GroupChoice:
    group: Group
    removed: list[int]
    protected: bool = False
    kept: str = ""
    """Why the selection kept the group whole although it could lose units (a fragile group
    under uniform allocation), for the report; empty otherwise."""


def keep_count(n: int, ratio: float, round_to: int = 1, rounding: str = "down") -> int:
    if rounding == "up":
        keep = math.floor((1.0 - ratio) * n + 1e-9)
    else:
        keep = n - math.floor(ratio * n + 1e-9)
    if round_to > 1 and n >= round_to and ratio > 0:  # ratio 0 removes nothing, rounded or not
        keep = min(n, max(round_to, round(keep / round_to) * round_to))
    return max(1, keep)


def protected_groups(an: Analysis, protect: str | None) -> set[int]:
    """Indices of the groups whose name (`layers.0.conv1`) matches `protect`, or with a
    member on a node whose name matches it."""
    if not protect:
        return set()
    pattern = re.compile(protect)
    return {gi for gi, g in enumerate(an.groups) if pattern.search(g.name)
            or any(pattern.search(an.graph.node_name(m.node)) for m in g.members)}


def ranked(g: Group, scores: np.ndarray) -> list[int]:
    """Prunable units, lowest score first (stable: ties keep unit order)."""
    return sorted(g.prunable, key=lambda u: scores[u])


def removal(an: Analysis, scores: np.ndarray, counts: dict[int, int],
            protected: set[int] | frozenset[int] = frozenset(),
            ) -> tuple[np.ndarray, list[GroupChoice]]:
    """The removed-units array for per-group counts (lowest scores go), and the choices."""
    removed = np.zeros(len(an.roots), dtype=bool)
    choices = []
    for gi, g in enumerate(an.groups):
        gone = ranked(g, scores)[:counts.get(gi, 0)]
        removed[gone] = True
        choices.append(GroupChoice(g, gone, protected=gi in protected))
    keep_one_per_axis(an, scores, removed, choices)
    drop_inner(an, removed, choices)
    return removed, choices


def drop_inner(an: Analysis, removed: np.ndarray, choices: list[GroupChoice] | None = None,
               ) -> None:
    """Units inside a removed block go with it (graphprune.blocks): they are not also
    removed as units of their own, so neither the cost model nor the report counts them
    twice and the rewrite slices nothing that is dropped anyway."""
    for b in an.blocks:
        if removed[b.unit] and b.inner:
            removed[b.inner] = False
    if choices is not None:
        for c in choices:
            c.removed = [u for u in c.removed if removed[u]]


def protect_blocks(an: Analysis, protect: str | None) -> None:
    """`--protect` keeps a block whose Add or any node that goes with it matches."""
    group = blocks_group(an)
    if not protect or group is None:
        return
    pattern = re.compile(protect)
    for b in an.blocks:
        if any(pattern.search(an.graph.node_name(n)) for n in (b.add, *b.nodes)):
            group.frozen.setdefault(b.unit, []).append("protected by --protect")


def uniform_counts(an: Analysis, opts: Options,
                   protected: set[int] | frozenset[int] = frozenset()) -> dict[int, int]:
    """Units each unprotected group loses under uniform allocation at `opts.ratio`."""
    counts = {}
    for gi, g in enumerate(an.groups):
        n = len(g.units)
        if gi not in protected:
            counts[gi] = min(n - keep_count(n, opts.ratio, opts.round_to, opts.rounding),
                             len(g.prunable))
    return counts


def select_uniform(an: Analysis, scores: np.ndarray,
                   opts: Options) -> tuple[np.ndarray, list[GroupChoice]]:
    protected = protected_groups(an, opts.protect)
    return removal(an, scores, uniform_counts(an, opts, protected), protected)


def keep_one_per_axis(an: Analysis, scores: np.ndarray, removed: np.ndarray,
                      choices: list[GroupChoice]) -> None:
    for spans in an.spans.values():
        for s in spans:
            roots = np.unique(an.roots[s.ids])
            if removed[roots].all():
                best = roots[np.argmax(scores[roots])]
                removed[best] = False
                for c in choices:
                    if best in c.removed:
                        c.removed.remove(best)


def check_selection(an: Analysis, removed: np.ndarray,
                    choices: list[GroupChoice]) -> str | None:
    """What breaks the selection contract (None: nothing)."""
    if removed.shape != (len(an.roots),) or removed.dtype != bool:
        return f"removed is {removed.dtype}{list(removed.shape)}, not bool[{len(an.roots)}]"
    if len(choices) != len(an.groups):
        return f"{len(choices)} choices for {len(an.groups)} groups"
    listed = 0
    for c in choices:
        g = c.group
        units = np.asarray(g.units, dtype=np.int64)
        gone = units[removed[units]].tolist()
        if any(u in g.frozen for u in gone):
            return f"group '{g.name}': a frozen unit was removed"
        if gone and len(gone) == len(g.units):
            return f"group '{g.name}': every unit was removed"
        if gone and c.protected:
            return f"group '{g.name}' is protected but lost {len(gone)} units"
        if sorted(gone) != sorted(c.removed):
            return f"group '{g.name}': choice lists {len(c.removed)} units, {len(gone)} removed"
        listed += len(gone)
    if listed != int(removed.sum()):
        return f"{int(removed.sum()) - listed} removed slots belong to no group"
    return None
