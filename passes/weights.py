"""Criteria over weights alone: no data, no onnxruntime.

- `l1` — Σ|w| of the unit's slices of every source (its filters) and sink (the next layer's
  input slice) member (Han et al. 2015; Li et al. 2017, filter pruning).
- `l2` — √(Σw²) over the same slices.
- `bn-scale` — |γ| of the BatchNormalization scale that carries the unit (Liu et al. 2017,
  network slimming). Both torch exporters fold a BatchNorm that follows a conv into the conv's
  weights, so BatchNorm survives only where it precedes a conv or cannot be folded; groups
  without one are scored by `l1` instead and the report says how many.
- `fpgm` — distance of the unit's filters (source members) to the group's geometric median,
  measured as the sum of Euclidean distances to every other filter of the group (He et al.
  2019): a filter close to the others is replaceable by them. A duplicate filter scores low.
- `lamp` — LAMP (Lee et al. 2021) over unit energies m = Σw² (source and sink members): with
  a group's units sorted by m ascending, score(u) = m_u / Σ_{v ⪰ u} m_v. Already normalised
  (the largest unit of every group scores 1), so its default normalisation is `none`.
- `random` — seeded uniform scores (a baseline).
"""

from __future__ import annotations

import numpy as np

from graphprune.analysis import Analysis, Member

from .criteria import MemberScore, ScoreContext, criterion, per_unit


def weight_members(an: Analysis, roles=("source", "sink")) -> list[Member]:
    return [m for m in an.members if m.role in roles]


def _power_scores(ctx: ScoreContext, power: int, roles=("source", "sink")) -> list[MemberScore]:
    out = []
    graph = ctx.an.graph
    for m in weight_members(ctx.an, roles):
        w = np.asarray(graph.const(graph.nodes[m.node].input[m.index]))
        out.append(per_unit(ctx.an, m.span.ids, power_sums(w, power, m.span.axes)))
    return out


CHUNK_ELEMENTS = 1 << 22
"""Float64 working copies are made this many elements at a time (a 1B model's LM head would
otherwise need 1 GB of temporaries)."""


def power_sums(w: np.ndarray, power: int, keep: tuple[int, ...]) -> np.ndarray:
    """Σ|w|^power over every axis not in `keep`, in float64, chunked along axis 0.

    float32 weights, powers 1 and 2: |x| (exact) or x² (rounded once, to float32's 24 bits)
    summed in float64 without a float64 copy of the chunk."""
    other = tuple(a for a in range(w.ndim) if a not in keep)

    def part(x: np.ndarray) -> np.ndarray:
        if x.dtype == np.float32 and power in (1, 2):
            x = np.abs(x) if power == 1 else np.square(x)
            return x.sum(axis=other, dtype=np.float64) if other else x.astype(np.float64)
        x = np.abs(x.astype(np.float64)) ** power
        return x.sum(axis=other) if other else x

    if w.ndim == 0 or w.size <= CHUNK_ELEMENTS:
        return part(w)
    rows = max(1, CHUNK_ELEMENTS // max(1, w.size // w.shape[0]))
    pieces = [part(w[i:i + rows]) for i in range(0, w.shape[0], rows)]
    return np.concatenate(pieces, axis=0) if 0 in keep else np.sum(pieces, axis=0)


@criterion("l1")
def l1(ctx: ScoreContext) -> np.ndarray:
    return ctx.combine(_power_scores(ctx, 1))


@criterion("l2")
def l2(ctx: ScoreContext) -> np.ndarray:
    return np.sqrt(ctx.combine(_power_scores(ctx, 2)))


@criterion("random", normalize="none")
def random(ctx: ScoreContext) -> np.ndarray:
    return np.random.default_rng(ctx.seed).random(len(ctx.an.roots))


def _is_bn_scale(an: Analysis, m: Member) -> bool:
    return (m.role == "param" and m.index == 1
            and an.graph.nodes[m.node].op_type == "BatchNormalization")


@criterion("bn-scale")
def bn_scale(ctx: ScoreContext) -> np.ndarray:
    an = ctx.an
    scores = ctx.combine([per_unit(an, m.span.ids, np.abs(ctx.weight(m)))
                          for m in an.members if _is_bn_scale(an, m)])
    without = [g for g in an.groups if g.prunable and not any(_is_bn_scale(an, m)
                                                              for m in g.members)]
    if without:
        fallback = l1(ctx)
        for g in without:
            scores[g.units] = fallback[g.units]
        ctx.run.note(f"bn-scale: {len(without)} of {sum(1 for g in an.groups if g.prunable)}"
                         " prunable groups have no BatchNormalization; scored by l1")
    return scores


@criterion("lamp", normalize="none")
def lamp(ctx: ScoreContext) -> np.ndarray:
    energy = ctx.combine(_power_scores(ctx, 2))
    out = np.zeros_like(energy)
    for g in ctx.an.groups:
        out[g.units] = lamp_transform(energy[g.units])
    return out


def lamp_transform(m: np.ndarray) -> np.ndarray:
    """score_i = m_i / Σ_{j: m_j >= m_i} m_j (equal values share the larger denominator)."""
    m = np.asarray(m, dtype=np.float64)
    order = np.argsort(m, kind="stable")
    sorted_m = m[order]
    suffix = np.cumsum(sorted_m[::-1])[::-1]
    first = np.searchsorted(sorted_m, sorted_m, side="left")  # ties: from the first equal
    denom = suffix[first]
    out = np.empty_like(m)
    out[order] = np.divide(sorted_m, denom, out=np.zeros_like(sorted_m), where=denom > 0)
    return out


@criterion("fpgm")
def fpgm(ctx: ScoreContext) -> np.ndarray:
    an = ctx.an
    scores = []
    for g in an.groups:
        members = [m for m in g.members if m.role == "source"] or [
            m for m in g.members if m.role == "sink"]
        for m in members:
            units, vectors = unit_vectors(an, m, ctx.weight(m))
            scores.append((units, distance_sums(vectors)))
    return ctx.combine(scores)


def unit_vectors(an: Analysis, m: Member, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The member's values per unit, one row per unit (zero-padded when units differ in how
    many positions they hold)."""
    axes = list(m.span.axes)
    moved = np.moveaxis(w, axes, list(range(len(axes))))
    rows = moved.reshape(m.span.ids.size, -1)
    roots = an.roots[m.span.ids.ravel()]
    units = np.unique(roots)
    parts = [rows[roots == u].ravel() for u in units]
    width = max(len(p) for p in parts)
    out = np.zeros((len(units), width))
    for k, p in enumerate(parts):
        out[k, :len(p)] = p
    return units, out


def distance_sums(x: np.ndarray) -> np.ndarray:
    """Σ_j ‖x_i − x_j‖ for every row i."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2).sum(axis=1)
