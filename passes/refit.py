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
  where they were), and leaves the bias free; λ is a multiple of the mean input energy
  trace(G_zz)/k, chosen by two-fold cross-validation over the calibration samples among
  RIDGES (∞ included: when no refit generalises from the samples at hand, the kept weights
  stay and only the bias is refit), or RIDGE = 1e-2 of it when the samples cannot be split.
  With x̂ = x (the *independent* refit: every sink from the original's statistics)
  C and G are blocks of one matrix E[x̃ x̃ᵀ]; with x̂ from the model refit up to this sink
  (*sequential*) they come from the two models run in lockstep (`moments.collect(paired=)`).
  Solved in float64 in centred form through one eigendecomposition of the kept inputs'
  covariance (every λ then costs a product, and a singular covariance, an input that is
  zero on every sample, needs no special case: the ridge lifts it).
"""

from __future__ import annotations

import math

import numpy as np

RIDGE = 1e-2
"""λ as a fraction of the mean energy of the kept inputs (trace(G_zz) / k), when the ridge is
not chosen by cross-validation."""
RIDGES = (math.inf, 100.0, 10.0, 1.0, 1e-1, 1e-2, 1e-3)
"""Candidates for cross-validation, the same fractions; ∞ keeps the kept weights as they are
and refits the bias alone (bias compensation). Ties go to the earlier, larger λ."""


def bias_delta(w: np.ndarray, mean: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """W[:, P] · E[x_P] per group: the bias change that carries the removed inputs' mean.
    `w` [G, o, d] (weight rows), `mean` [G, d], `keep` [d] → [G, o]."""
    gone = ~keep
    return np.einsum("god,gd->go", w[:, :, gone], mean[:, gone])


Fold = tuple[np.ndarray, np.ndarray]
"""(cross, gram) of one fold: E[x̃ ẑᵀ] and E[ẑ ẑᵀ], each [G, d+1, d+1]."""


class Problem:
    """One group's refit: target rows W̃ = [W, b] and the moments, restricted to the kept
    inputs. `fit(λ)` solves the centred ridge problem (the intercept is free, so it drops
    out: V = (Σ_tz + λ W_K)(Σ_zz + λ I)⁻¹, c = E[t] − V E[z]) through one eigendecomposition
    of Σ_zz, so every λ costs a matrix product."""

    def __init__(self, target: np.ndarray, w_k: np.ndarray, cross: np.ndarray,
                 gram: np.ndarray, cols: np.ndarray) -> None:
        k = len(cols) - 1
        c, g = cross[:, cols], gram[np.ix_(cols, cols)]
        self.target, self.w_k, self.k = target, w_k, k
        self.mean_z = g[:k, k]
        self.mean_t = target @ c[:, k]
        s_zz = g[:k, :k] - np.outer(self.mean_z, self.mean_z)
        self.s_tz = target @ c[:, :k] - np.outer(self.mean_t, self.mean_z)
        self.energy = float(np.trace(g[:k, :k])) / max(k, 1)
        e, self.q = np.linalg.eigh((s_zz + s_zz.T) / 2)
        self.e = np.clip(e, 0.0, None)

    def fit(self, fraction: float) -> np.ndarray:
        """[V, c] ([o, k+1]) at λ = fraction × the mean input energy (∞: V = W_K)."""
        lam = fraction * self.energy
        if math.isinf(fraction) or self.energy <= 0.0:
            v = self.w_k
        else:
            a = self.s_tz + lam * self.w_k
            v = ((a @ self.q) / (self.e + lam)) @ self.q.T
        return np.concatenate([v, (self.mean_t - v @ self.mean_z)[:, None]], axis=1)


def score(target: np.ndarray, n: np.ndarray, cross: np.ndarray, gram: np.ndarray,
          cols: np.ndarray) -> float:
    """E‖W̃x̃ − N ẑ‖² up to its constant E‖W̃x̃‖², under the moments of one fold."""
    c, g = cross[:, cols], gram[np.ix_(cols, cols)]
    return float(np.einsum("ok,kl,ol->", n, g, n) - 2 * np.einsum("od,dk,ok->", target, c, n))


def refit(w: np.ndarray, b: np.ndarray, cross: np.ndarray, gram: np.ndarray,
          keep: np.ndarray, folds: tuple[Fold, Fold] | None = None,
          ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The refit kept weights and biases of one sink (see the module docstring).

    `w` [G, o, d] weight rows, `b` [G, o] biases, `cross` = E[x̃ ẑᵀ] [G, d+1, d+1] (x̃ the
    original's augmented input, ẑ the pruned model's), `gram` = E[ẑ ẑᵀ], `keep` [d]. With
    `folds` (the same moments over two halves of the samples) λ is chosen among RIDGES by
    two-fold cross-validation (fit on one half, error on the other, both ways), else it is
    `ridge`. Returns (new weight rows [G, o, d] — removed positions keep their old values,
    which the rewrite drops —, new biases [G, o], the λ fraction chosen per group)."""
    d = w.shape[2]
    cols = np.append(np.flatnonzero(keep), d)  # the kept inputs and the constant 1
    new_w, new_b = np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)
    chosen = []
    for g in range(w.shape[0]):
        target = np.concatenate([w[g], b[g][:, None]], axis=1)  # W̃ [o, d+1]
        w_k = w[g][:, keep]
        fraction = ridge
        if folds is not None:
            (ca, ga), (cb, gb) = folds
            pa = Problem(target, w_k, ca[g], ga[g], cols)
            pb = Problem(target, w_k, cb[g], gb[g], cols)
            errors = [score(target, pa.fit(f), cb[g], gb[g], cols)
                      + score(target, pb.fit(f), ca[g], ga[g], cols) for f in RIDGES]
            fraction = RIDGES[int(np.argmin(errors))]
        solved = Problem(target, w_k, cross[g], gram[g], cols).fit(fraction)
        new_w[g][:, keep] = solved[:, :-1]
        new_b[g] = solved[:, -1]
        chosen.append(fraction)
    return new_w, new_b, chosen


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
