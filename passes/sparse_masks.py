"""Sparsity patterns and masks of one weight array, and the check that a weight has one.

A weight is seen as a matrix [rows, columns]: a row per output feature (`row_axis`), the
columns its reduction, ordered with the input channels (`k_axis`) fastest and any other axes
(a convolution's kernel taps) slowest. An N:M group is then M consecutive columns: M
consecutive input channels at one tap, the layout NVIDIA's sparse tensor cores (and
TensorRT) require. The reduction axis of ONNX weights depends on the op: a MatMul's x·W
contracts W's first axis, a Gemm with transB its last, a Conv its axis 1 (`sparse_layers`).

Patterns:
- `unstructured`: a fraction `sparsity` of the layer's weights are zeroed; exactly
  ⌊sparsity·n⌋ of its n weights. Compared over the whole layer (magnitude) or per row
  (Wanda); per-row counts are spread so that they add up to the same layer total.
- `N:M`: at most N of every M consecutive weights along the reduction axis are non-zero
  (NVIDIA's notation: 2:4 keeps 2 of 4, sparsity 50%; 1:4 keeps 1, 75%). Only for weights
  whose input-channel count is a multiple of M.

Ties between equal scores are broken by position (stable sorts), so the same weights give
the same mask in every process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from graphprune.errors import InputError


@dataclass(frozen=True)
class Pattern:
    """`unstructured` (n = m = 0) or N:M (n kept of every m)."""

    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}" if self.structured else "unstructured"

    @property
    def fraction(self) -> float | None:
        """The sparsity an N:M pattern implies (None when unstructured)."""
        return (self.m - self.n) / self.m if self.structured else None


UNSTRUCTURED = Pattern()


def parse_pattern(text: str | Pattern) -> Pattern:
    """'unstructured', '2:4', 'N:M' (0 < N < M) → Pattern; InputError otherwise."""
    if isinstance(text, Pattern):
        return text
    t = str(text).strip().lower()
    if t == "unstructured":
        return UNSTRUCTURED
    hit = re.fullmatch(r"(\d+):(\d+)", t)
    if hit is None:
        raise InputError(f"unknown sparsity pattern '{text}' (unstructured, 2:4 or N:M)")
    n, m = int(hit.group(1)), int(hit.group(2))
    if not 0 < n < m:
        raise InputError(f"pattern {text}: N:M keeps N of every M weights, 0 < N < M")
    return Pattern(n, m)


def resolve_sparsity(pattern: Pattern, sparsity: float | None) -> float:
    """The fraction to zero: given (unstructured; default 0.5) or implied by N:M (a given
    value must agree with it)."""
    if pattern.structured:
        implied = pattern.fraction
        if sparsity is not None and not math.isclose(sparsity, implied, abs_tol=1e-9):
            raise InputError(f"pattern {pattern.name} zeroes {implied:g} of the weights; "
                             f"--sparsity {sparsity:g} contradicts it (leave it out)")
        return implied
    s = 0.5 if sparsity is None else float(sparsity)
    if not 0.0 < s < 1.0:
        raise InputError(f"sparsity must be in (0, 1), got {s:g}")
    return s


def count(n: float, sparsity: float) -> int:
    """⌊sparsity·n⌋, immune to the float rounding of the product (0.29·100 = 28.999…)."""
    return int(math.floor(round(sparsity * n, 6)))


def row_counts(rows: int, cols: int, sparsity: float) -> np.ndarray:
    """Weights to zero per row: ⌊s·cols·(r+1)⌋ − ⌊s·cols·r⌋, which differ by at most one and
    add up to the layer's ⌊s·rows·cols⌋."""
    edges = np.array([count(cols * r, sparsity) for r in range(rows + 1)], dtype=np.int64)
    return np.diff(edges)


# -- the matrix view --------------------------------------------------------------------------
def matrix_order(ndim: int, row_axis: int, k_axis: int) -> tuple[int, ...]:
    """Axis order of the matrix view: the row axis, the other axes, the reduction axis."""
    row_axis, k_axis = row_axis % ndim, k_axis % ndim
    return (row_axis, *(a for a in range(ndim) if a not in (row_axis, k_axis)), k_axis)


def as_matrix(w: np.ndarray, row_axis: int = 0, k_axis: int = 1) -> np.ndarray:
    """`w` as [rows, columns] (columns: the reduction axis fastest, see the module doc)."""
    order = matrix_order(w.ndim, row_axis, k_axis)
    return np.transpose(w, order).reshape(w.shape[order[0]], -1)


def from_matrix(mat: np.ndarray, shape: tuple[int, ...], row_axis: int = 0,
                k_axis: int = 1) -> np.ndarray:
    """The inverse of `as_matrix` for a weight of `shape`."""
    order = matrix_order(len(shape), row_axis, k_axis)
    return np.transpose(mat.reshape([shape[a] for a in order]), np.argsort(order))


def channels(shape: tuple[int, ...], k_axis: int) -> int:
    """The reduction axis' length: N:M groups run along it."""
    return shape[k_axis % len(shape)]


def fits(shape: tuple[int, ...], k_axis: int, pattern: Pattern) -> bool:
    """Whether N:M groups tile the reduction axis (always, when unstructured)."""
    return not pattern.structured or channels(shape, k_axis) % pattern.m == 0


# -- masks ------------------------------------------------------------------------------------
def matrix_mask(scores: np.ndarray, pattern: Pattern, sparsity: float, *,
                per_row: bool = False) -> np.ndarray:
    """Keep-mask (True = kept) of a [rows, columns] score matrix: lowest scores zeroed.

    N:M: the M−N lowest of every M consecutive columns of a row. Unstructured: the
    ⌊sparsity·n⌋ lowest of the layer, or (`per_row`) of each row, per `row_counts`."""
    rows, cols = scores.shape
    if pattern.structured:
        if cols % pattern.m:
            raise ValueError(f"{cols} columns are not groups of {pattern.m}")
        groups = scores.reshape(rows, cols // pattern.m, pattern.m)
        rank = _ranks(groups, axis=-1)
        return (rank >= pattern.m - pattern.n).reshape(rows, cols)
    if per_row:
        return _ranks(scores, axis=-1) >= row_counts(rows, cols, sparsity)[:, None]
    flat = scores.reshape(-1)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:count(flat.size, sparsity)]] = False
    return keep.reshape(rows, cols)


def _ranks(a: np.ndarray, axis: int) -> np.ndarray:
    """Rank of every entry along `axis` (0 = lowest; ties by position): the inverse of the
    sorting permutation."""
    return np.argsort(np.argsort(a, axis=axis, kind="stable"), axis=axis, kind="stable")


def weight_mask(scores: np.ndarray, pattern: Pattern | str = UNSTRUCTURED,
                sparsity: float | None = None, *, row_axis: int = 0, k_axis: int = 1,
                per_row: bool = False) -> np.ndarray:
    """Keep-mask (bool, True = kept) of one weight array from its importance `scores` (same
    shape; |w| for magnitude pruning): the lowest are zeroed.

    `row_axis` holds the output features, `k_axis` the input channels, along which N:M
    groups run: a torch Linear [out, in] or Conv [out, in/groups, kh, kw] weight takes the
    defaults (0, 1); an ONNX MatMul weight [K, N] takes row_axis=1, k_axis=0. `sparsity`
    (unstructured; default 0.5) zeroes ⌊sparsity·n⌋ of the n weights, over the whole array
    or (`per_row`) spread over the rows; an N:M pattern implies its own."""
    pattern = parse_pattern(pattern)
    s = resolve_sparsity(pattern, sparsity)
    scores = np.asarray(scores)
    if scores.ndim < 2 or row_axis % scores.ndim == k_axis % scores.ndim:
        raise ValueError("a weight mask needs distinct row and reduction axes")
    if not fits(scores.shape, k_axis, pattern):
        raise ValueError(f"{channels(scores.shape, k_axis)} input channels are not groups of "
                         f"{pattern.m}")
    keep = matrix_mask(as_matrix(scores, row_axis, k_axis), pattern, s, per_row=per_row)
    return from_matrix(keep, scores.shape, row_axis, k_axis)


# -- checking a pattern -----------------------------------------------------------------------
def check_pattern(w: np.ndarray, pattern: Pattern, sparsity: float, *, row_axis: int = 0,
                  k_axis: int = 1) -> str | None:
    """Why `w` lacks the pattern, or None when it has it: N:M, at most N non-zeros in every
    group of M consecutive input channels; unstructured, at least ⌊sparsity·n⌋ zeros."""
    mat = as_matrix(np.asarray(w), row_axis, k_axis)
    rows, cols = mat.shape
    if pattern.structured:
        if cols % pattern.m:
            return f"{channels(w.shape, k_axis)} input channels are not groups of {pattern.m}"
        nonzero = (mat.reshape(rows, cols // pattern.m, pattern.m) != 0).sum(axis=-1)
        bad = int((nonzero > pattern.n).sum())
        return (f"{bad} of {nonzero.size} groups of {pattern.m} keep more than {pattern.n} "
                "non-zeros") if bad else None
    want, zeros = count(mat.size, sparsity), int((mat == 0).sum())
    return f"{zeros} zeros, {want} wanted" if zeros < want else None
