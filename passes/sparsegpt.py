"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning of a layer by approximate OBS
reconstruction, written here from the paper's Algorithm 1.

A layer's output on calibration inputs X (one column per output position) is W X. Zeroing
weights of a row changes it by ΔW X, whose squared norm has Hessian H = 2·X Xᵀ/n (the same
for every row). Optimal Brain Surgeon removes weight q of a row and compensates in the row's
other weights with δ = −(w_q / [H⁻¹]_qq)·H⁻¹_{:,q}; SparseGPT makes that affordable for every
row at once by visiting the columns in a fixed order (left to right) and only updating the
columns to the right, whose inverse Hessians are the successive Schur complements of H⁻¹:
row j of the upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U) is the scaled j-th column of the
inverse Hessian of the columns j… . Per column j: every row's weight is kept or zeroed
(q), the error err = (w − q)/U_jj is spread over the columns to its right as err ⊗ U_{j,j:}.

Columns come in blocks of 128 (lazy batch updates: the block is updated column by column,
the rest of the matrix once per block, err_block · U_block,rest). The mask is chosen as the
columns are reached, by the OBS saliency w²/U_jj²:

- unstructured: per block, the lowest-saliency weights of the block (all rows together) —
  the paper's adaptive mask selection; a block's count is its share of the layer's ⌊s·n⌋
  (cumulative rounding, so the layer total is exact);
- N:M: when a group of M columns starts, in every row the M−N of the group with the lowest
  saliency (the block size is a multiple of M).

Dampening: λ = 1% of the mean diagonal is added to H (the reference's percdamp), and inputs
that are always zero (H_jj = 0) get H_jj = 1 and their weights are zeroed (they never act).
All in float64. Cost per layer: O(d³) for the inverse and O(rows·d²) for the updates; memory:
H and U (d² each) plus the weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sparse_masks import Pattern, count

BLOCK = 128
DAMP = 0.01


@dataclass
class Solved:
    """The sparsified rows, and ‖ΔW X‖² and ‖W X‖² per calibration input (from the undamped
    H, `squared_error`): their ratio is the relative reconstruction error."""

    weight: np.ndarray
    delta: float
    output: float

    @property
    def error(self) -> float:
        return self.delta / self.output if self.output > 0 else 0.0


def upper_inverse_factor(h: np.ndarray) -> np.ndarray:
    """U upper triangular with UᵀU = H⁻¹ (H symmetric positive definite)."""
    lower = np.linalg.cholesky(h)  # H = L Lᵀ
    inv_lower = np.linalg.inv(lower)  # triangular: L⁻¹
    h_inv = inv_lower.T @ inv_lower  # H⁻¹ = L⁻ᵀ L⁻¹
    h_inv = (h_inv + h_inv.T) / 2
    return np.linalg.cholesky(h_inv).T


def prepare(w: np.ndarray, h: np.ndarray, damp: float = DAMP) -> tuple[np.ndarray, np.ndarray]:
    """(rows with dead inputs zeroed, U of the dampened H) for `solve`."""
    w = np.array(w, dtype=np.float64)
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    return w, upper_inverse_factor(h)


def solve(w: np.ndarray, h: np.ndarray, pattern: Pattern, prune: int = 0, *,
          block: int = BLOCK, damp: float = DAMP) -> Solved:
    """Sparsify rows `w` [rows, d] whose inputs have second moment `h` [d, d] (E[x xᵀ]; any
    positive multiple gives the same result): N:M per `pattern` along the columns, or
    (unstructured) exactly `prune` weights zeroed in all."""
    rows, d = w.shape
    original = np.asarray(w, dtype=np.float64)
    w, u = prepare(w, h, damp)
    if pattern.structured:
        block = max(pattern.m, block - block % pattern.m)
    mask = np.zeros((rows, d), dtype=bool)
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        w1, u1 = w[:, i1:i2].copy(), u[i1:i2, i1:i2]
        diag = np.diag(u1)
        m1 = np.zeros_like(w1, dtype=bool)
        if not pattern.structured:
            k = prune * i2 // d - prune * i1 // d
            flat = (w1 ** 2 / diag[None, :] ** 2).reshape(-1)
            m1.reshape(-1)[np.argsort(flat, kind="stable")[:k]] = True
        errs = np.zeros_like(w1)
        for j in range(i2 - i1):
            if pattern.structured and j % pattern.m == 0:
                g = slice(j, j + pattern.m)
                sal = w1[:, g] ** 2 / diag[None, g] ** 2
                low = np.argsort(sal, axis=1, kind="stable")[:, :pattern.m - pattern.n]
                np.put_along_axis(m1[:, g], low, True, axis=1)
            col = w1[:, j]
            q = np.where(m1[:, j], 0.0, col)
            err = (col - q) / u1[j, j]
            w1[:, j:] -= np.outer(err, u1[j, j:])
            w1[:, j] = q
            errs[:, j] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= errs @ u[i1:i2, i2:]
        mask[:, i1:i2] = m1
    w[mask] = 0.0
    return Solved(w, squared_output(w - original, h), squared_output(original, h))


def squared_output(w: np.ndarray, h: np.ndarray) -> float:
    """E‖W x‖² = tr(W H Wᵀ) for inputs with second moment H = E[x xᵀ]."""
    w = np.asarray(w, np.float64)
    return float(np.einsum("ij,ij->", w @ h, w))


def relative_error(w: np.ndarray, new: np.ndarray, h: np.ndarray) -> float:
    """‖(W − Ŵ) X‖² / ‖W X‖² from the inputs' second moment H = E[x xᵀ]."""
    den = squared_output(w, h)
    return squared_output(np.asarray(new, np.float64) - w, h) / den if den > 0 else 0.0


def group_counts(groups: int, size: int, sparsity: float) -> list[int]:
    """Weights to zero in each of `groups` equal parts of `size` weights: shares of the
    whole's ⌊s·groups·size⌋ (cumulative rounding)."""
    return [count(size * (g + 1), sparsity) - count(size * g, sparsity) for g in range(groups)]


def tap_major(channels: int, taps: int) -> np.ndarray:
    """Column permutation from channel-major (c·taps + t, a weight's own flattening and the
    moments' order) to tap-major (t·channels + c, the matrix view along which N:M groups run):
    column j of the tap-major order is column perm[j] of the channel-major one."""
    t, c = np.meshgrid(np.arange(taps), np.arange(channels), indexing="ij")
    return (c * taps + t).reshape(-1)
