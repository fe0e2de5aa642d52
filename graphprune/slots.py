"""Slots and spans: the vocabulary of the dependency analysis.

A *slot* is one removable unit id, an element of a union-find. A *span* labels one or more
axes of a tensor with a numpy array of slot ids, one per position (repeats allowed). Removing
a slot removes every position that carries it, in every tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Span:
    """Slot ids over `axes` (ascending) of one tensor; `ids.shape` matches those axes' sizes.

    An axis in `tiled` is a dynamic multiple of its ids' length, position p carrying
    ids[p % n]: heads folded into the batch (`[B·H, S, D]`, torch's MultiheadAttention). Only
    layout rules that understand tiling see such spans; for every other op the engine keeps
    the units whole along tiled axes first (an op's `tiled` trait, graphprune.ops)."""

    axes: tuple[int, ...]
    ids: np.ndarray
    tiled: frozenset[int] = frozenset()

    def shifted(self, delta: int) -> Span:
        return Span(tuple(a + delta for a in self.axes), self.ids,
                    frozenset(a + delta for a in self.tiled))

    def moved(self, mapping: dict[int, int]) -> Span:
        """Renumber axes; reorders the ids so their dimensions stay in ascending axis order."""
        new_axes = [mapping[a] for a in self.axes]
        order = sorted(range(len(new_axes)), key=new_axes.__getitem__)
        return Span(tuple(new_axes[i] for i in order), np.transpose(self.ids, order),
                    frozenset(mapping[a] for a in self.tiled))


class UnionFind:
    """Slots with union by size, path halving, and a frozen flag with reasons per root."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.reasons: dict[int, set[str]] = {}
        self.tags: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self.parent)

    def fresh(self, n: int, frozen: str | None = None) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.size.extend([1] * n)
        ids = np.arange(start, start + n, dtype=np.int64)
        if frozen:
            self.freeze(ids, frozen)
        return ids

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        for table in (self.reasons, self.tags):
            if rb in table:
                table.setdefault(ra, set()).update(table.pop(rb))
        return ra

    def unify(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unify two id arrays position by position (shapes must broadcast)."""
        a, b = np.broadcast_arrays(a, b)
        pairs = np.unique(np.stack([a.ravel(), b.ravel()], axis=1), axis=0)
        for x, y in pairs.tolist():
            if x != y:
                self.union(x, y)

    def unify_all(self, ids: np.ndarray) -> None:
        flat = np.unique(ids)
        for y in flat[1:].tolist():
            self.union(int(flat[0]), y)

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        for x in np.unique(ids).tolist():
            self.reasons.setdefault(self.find(x), set()).add(reason)

    def tag(self, ids: np.ndarray, tag: str) -> None:
        """Tags say what kind of unit a slot is (attention head, inexact…); they merge."""
        for x in np.unique(ids).tolist():
            self.tags.setdefault(self.find(x), set()).add(tag)

    def frozen(self, x: int) -> bool:
        return self.find(x) in self.reasons

    def roots(self) -> np.ndarray:
        """Root of every slot, as an array indexable by slot id."""
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def constant_along(ids: np.ndarray, keep_axis: int) -> bool:
    """True when `ids` varies only along `keep_axis` (the span is effectively one axis)."""
    first = ids[tuple(slice(None) if i == keep_axis else slice(0, 1) for i in range(ids.ndim))]
    return bool(np.all(ids == first))


def simplify(span: Span) -> Span:
    """Drop axes along which the raw ids never change: such an axis is never cut."""
    keep = [k for k in range(span.ids.ndim)
            if span.ids.shape[k] > 1 and not np.all(span.ids == np.take(span.ids, [0], axis=k))]
    if not keep or len(keep) == span.ids.ndim:
        return span
    index = tuple(slice(None) if k in keep else 0 for k in range(span.ids.ndim))
    axes = tuple(span.axes[k] for k in keep)
    return Span(axes, span.ids[index], span.tiled & frozenset(axes))
