"""Selection: turn unit scores into the set of removed units.

Uniform allocation: every prunable group loses `ratio` of its units (the lowest scores),
keeping at least one, and optionally a multiple of `round_to`. `rounding` "down" never removes
more than asked (⌊R·n⌋); "up" removes at least that much (⌈R·n⌉, Torch-Pruning's
convention). Afterwards every tensor axis keeps at least one position (a Split piece or
Concat input never becomes empty).
Global and sensitivity allocation, and targets, are in `allocation.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from graphprune.analysis import Analysis, Group


@dataclass
class GroupChoice:
    group: Group
    removed: list[int]
    protected: bool = False


ROUNDINGS = ("down", "up")


def keep_count(n: int, ratio: float, round_to: int = 1, rounding: str = "down") -> int:
    if rounding == "up":
        keep = math.floor((1.0 - ratio) * n + 1e-9)
    else:
        keep = n - math.floor(ratio * n + 1e-9)
    if round_to > 1 and n >= round_to and ratio > 0:  # ratio 0 removes nothing, rounded or not
        keep = min(n, max(round_to, round(keep / round_to) * round_to))
    return max(1, keep)


def select_uniform(an: Analysis, scores: np.ndarray, ratio: float, round_to: int = 1,
                   protect: str | None = None,
                   rounding: str = "down") -> tuple[np.ndarray, list[GroupChoice]]:
    pattern = re.compile(protect) if protect else None
    removed = np.zeros(len(an.roots), dtype=bool)
    choices = []
    for group in an.groups:
        names = {an.graph.node_name(m.node) for m in group.members}
        if pattern and any(pattern.search(n) for n in names):
            choices.append(GroupChoice(group, [], protected=True))
            continue
        n = len(group.units)
        n_remove = min(n - keep_count(n, ratio, round_to, rounding), len(group.prunable))
        order = sorted(group.prunable, key=lambda u: scores[u])  # stable: ties keep unit order
        gone = order[:n_remove]
        removed[gone] = True
        choices.append(GroupChoice(group, gone))
    keep_one_per_axis(an, scores, removed, choices)
    return removed, choices


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


_keep_one_per_axis = keep_one_per_axis
