"""The arithmetic of recovery: new kept weights and biases of a sink from input moments.

A sink computes y = W x + b (one output row per output position, in the row layout of
`moments`: W is [out, d], x a row of its input). Pruning removes the input positions P and
keeps K. Two repairs, both without labels or gradients:

- **Bias compensation** (FLAP, An et al. 2024): the removed inputs' mean contribution moves
  into the bias, b' = b + W[:, P] · E[x_P]. Exact when x_P is constant; for a convolution
  the means are per kernel tap of the padded input (the unfolded rows of `moments`), so
  zero padding counts as the zeros the conv reads.
- **Least-squares refit** (ThiNet, He et al. 2017; the structured OBS step of OBC/ZipLM): with
  x̃ = [x; 1] the original's input and ẑ = [x̂_K; 1] the pruned model's kept input,

      [W'_K, b'] = argmin E‖W̃ x̃ − [W'_K, b'] ẑ‖² + λ ‖W'_K − W_K‖²
                 = (W̃ C + λ [W_K, 0]) (G + λ Λ)⁻¹,   C = E[x̃ ẑᵀ], G = E[ẑ ẑᵀ],

  with W̃ = [W, b] and Λ = diag(1, …, 1, 0). The ridge pulls the refit toward the original
  kept weights, not toward zero (a small calibration set leaves directions it never saw
  where they were), and leaves the bias free; λ = RIDGE · trace(G_xx)/k, the mean input
  energy. With x̂ = x (the *independent* refit: every sink from the original's statistics)
  C and G are blocks of one matrix E[x̃ x̃ᵀ]; with x̂ from the model refit up to this sink
  (*sequential*) they come from the two models run in lockstep (`moments.collect(paired=)`).
  Solved in float64 by Cholesky, falling back to least squares when G is singular (an input
  that is zero on every sample).
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-2
"""λ as a fraction of the mean energy of the kept inputs (trace(G_xx) / k)."""


def bias_delta(w: np.ndarray, mean: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """W[:, P] · E[x_P] per group: the bias change that carries the removed inputs' mean.
    `w` [G, o, d] (weight rows), `mean` [G, d], `keep` [d] → [G, o]."""
    gone = ~keep
    return np.einsum("god,gd->go", w[:, :, gone], mean[:, gone])


def refit(w: np.ndarray, b: np.ndarray, cross: np.ndarray, gram: np.ndarray,
          keep: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """The refit kept weights and biases of one sink (see the module docstring).

    `w` [G, o, d] weight rows, `b` [G, o] biases, `cross` = E[x̃ ẑᵀ] over all positions,
    [G, d+1, d+1] (x̃ the original's augmented input, ẑ the pruned model's), `gram` = E[ẑ ẑᵀ]
    [G, d+1, d+1], `keep` [d]. Returns (new weight rows [G, o, d] — removed positions keep
    their old values, which the rewrite drops — and new biases [G, o])."""
    d = w.shape[2]
    cols = np.append(np.flatnonzero(keep), d)  # the kept inputs and the constant 1
    k = len(cols) - 1
    new_w, new_b = np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)
    for g in range(w.shape[0]):
        target = np.concatenate([w[g], b[g][:, None]], axis=1)  # W̃ [o, d+1]
        rhs = target @ cross[g][:, cols]  # W̃ C [o, k+1]
        lhs = np.array(gram[g][np.ix_(cols, cols)])  # G [k+1, k+1]
        lam = ridge * float(np.trace(lhs[:k, :k])) / max(k, 1)
        prior = np.concatenate([w[g][:, keep], np.zeros((w.shape[1], 1))], axis=1)
        rhs += lam * prior
        lhs[np.arange(k), np.arange(k)] += lam
        solved = solve_spd(lhs, rhs.T).T  # [o, k+1]
        new_w[g][:, keep] = solved[:, :k]
        new_b[g] = solved[:, k]
    return new_w, new_b


def solve_spd(a: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """a⁻¹ rhs for a symmetric positive semi-definite `a`: solved directly when Cholesky
    finds `a` positive definite (numpy has no triangular solve: one LU of the same matrix
    is cheaper than two general solves with the factor), by least squares when it is
    singular (an input that is zero on every sample, with no ridge to lift it)."""
    try:
        np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, rhs, rcond=None)[0]
    return np.linalg.solve(a, rhs)


def reconstruction_error(w: np.ndarray, b: np.ndarray, new_w: np.ndarray, new_b: np.ndarray,
                         keep: np.ndarray, xx: np.ndarray, xz: np.ndarray,
                         zz: np.ndarray) -> float:
    """E‖W̃ x̃ − [W'_K, b'] ẑ‖² summed over outputs and groups, from the moments:
    `xx` = E[x̃ x̃ᵀ], `xz` = E[x̃ ẑᵀ], `zz` = E[ẑ ẑᵀ] (each [G, d+1, d+1], over all positions)."""
    d = w.shape[2]
    cols = np.append(np.flatnonzero(keep), d)
    total = 0.0
    for g in range(w.shape[0]):
        t = np.concatenate([w[g], b[g][:, None]], axis=1)
        n = np.concatenate([new_w[g][:, keep], new_b[g][:, None]], axis=1)
        total += float(np.einsum("od,de,oe->", t, xx[g], t)
                       - 2 * np.einsum("od,de,oe->", t, xz[g][:, cols], n)
                       + np.einsum("od,de,oe->", n, zz[g][np.ix_(cols, cols)], n))
    return total
