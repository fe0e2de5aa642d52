"""Sparsity masks and the SparseGPT solver on arrays (passes/sparse_masks.py, sparsegpt.py):
exact counts per layer, row and N:M group along the input channels, checked against loops
written here; SparseGPT's reconstruction error against magnitude's and Wanda's on the same
weights and inputs."""

from __future__ import annotations

import numpy as np
import pytest
from graphprune.passes import sparsegpt
from graphprune.passes.sparse_masks import (
    Pattern,
    check_pattern,
    count,
    matrix_mask,
    parse_pattern,
    resolve_sparsity,
    row_counts,
    weight_mask,
)

from graphprune.errors import InputError


def test_patterns_parse_and_imply_their_sparsity() -> None:
    assert parse_pattern("unstructured") == Pattern()
    assert parse_pattern("2:4") == Pattern(2, 4)
    assert resolve_sparsity(Pattern(2, 4), None) == 0.5
    assert resolve_sparsity(Pattern(1, 4), 0.75) == 0.75
    assert resolve_sparsity(Pattern(), None) == 0.5
    for bad in ("4:2", "0:4", "2:2", "half", "2-4"):
        with pytest.raises(InputError):
            parse_pattern(bad)
    with pytest.raises(InputError, match="contradicts"):
        resolve_sparsity(Pattern(2, 4), 0.3)
    with pytest.raises(InputError, match="in \\(0, 1\\)"):
        resolve_sparsity(Pattern(), 1.0)


@pytest.mark.parametrize("sparsity", [0.1, 0.29, 0.5, 0.7, 0.93])
def test_unstructured_zeroes_exactly_floor_s_n_per_layer(sparsity: float) -> None:
    w = np.random.default_rng(1).standard_normal((37, 53))
    keep = weight_mask(np.abs(w), "unstructured", sparsity)
    want = int(np.floor(round(sparsity * w.size, 6)))
    assert (~keep).sum() == want == count(w.size, sparsity)
    # the pruned ones are the smallest: every pruned |w| is below every kept one
    assert np.abs(w)[~keep].max() < np.abs(w)[keep].min()


def test_per_row_counts_add_up_to_the_layer_total() -> None:
    w = np.random.default_rng(2).standard_normal((11, 13))
    keep = weight_mask(np.abs(w), "unstructured", 0.3, per_row=True)
    per_row = (~keep).sum(axis=1)
    assert per_row.sum() == count(w.size, 0.3) == 42
    assert per_row.max() - per_row.min() <= 1
    np.testing.assert_array_equal(per_row, row_counts(11, 13, 0.3))
    for r in range(11):  # within a row, the smallest go
        if per_row[r]:
            assert np.abs(w[r])[~keep[r]].max() < np.abs(w[r])[keep[r]].min()


def expected_nm(scores: np.ndarray, n: int, m: int, k_axis: int) -> np.ndarray:
    """Keep-mask by plain loops: along `k_axis`, each run of m consecutive entries at fixed
    other indices keeps its n largest."""
    keep = np.zeros(scores.shape, dtype=bool)
    moved = np.moveaxis(scores, k_axis, -1)
    out = np.moveaxis(keep, k_axis, -1)  # a view: writes land in `keep`
    for idx in np.ndindex(*moved.shape[:-1]):
        for start in range(0, moved.shape[-1], m):
            group = moved[idx][start:start + m]
            for j in np.argsort(-group, kind="stable")[:n]:
                out[idx + (start + j,)] = True
    return keep


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8), (4, 8), (3, 6)])
@pytest.mark.parametrize("shape,row_axis,k_axis", [
    ((24, 10), 1, 0),       # ONNX MatMul weight [K, N]
    ((10, 24), 0, 1),       # Gemm transB / torch Linear [N, K]
    ((6, 24, 3, 3), 0, 1),  # Conv [O, C, kh, kw]: groups along C at each tap
    ((5, 24, 2), 0, 1),     # Conv1d
])
def test_nm_groups_run_along_the_input_channels(n, m, shape, row_axis, k_axis) -> None:
    scores = np.abs(np.random.default_rng(3).standard_normal(shape))
    keep = weight_mask(scores, f"{n}:{m}", row_axis=row_axis, k_axis=k_axis)
    np.testing.assert_array_equal(keep, expected_nm(scores, n, m, k_axis))
    nonzero = np.moveaxis(keep, k_axis, -1)
    groups = nonzero.reshape(*nonzero.shape[:-1], -1, m).sum(axis=-1)
    assert (groups == n).all()
    w = np.where(keep, scores, 0.0)
    assert check_pattern(w, Pattern(n, m), 1 - n / m, row_axis=row_axis, k_axis=k_axis) is None


def test_pattern_check_catches_groups_along_the_wrong_axis() -> None:
    w = np.abs(np.random.default_rng(4).standard_normal((8, 8))) + 0.1
    along_rows = np.where(weight_mask(w, "2:4", row_axis=1, k_axis=0), w, 0.0)
    assert check_pattern(along_rows, Pattern(2, 4), 0.5, row_axis=1, k_axis=0) is None
    why = check_pattern(along_rows, Pattern(2, 4), 0.5, row_axis=0, k_axis=1)
    assert why is not None and "keep more than 2 non-zeros" in why
    one_more = along_rows.copy()
    one_more[np.argmin(one_more[:4, 0]), 0] = 1.0  # a zero of the first group made non-zero
    assert "1 of 16 groups" in check_pattern(one_more, Pattern(2, 4), 0.5, row_axis=1,
                                             k_axis=0)
    half = np.where(weight_mask(w, "unstructured", 0.5), w, 0.0)
    assert check_pattern(half, Pattern(), 0.5) is None
    half[np.nonzero(half == 0)[0][0], np.nonzero(half == 0)[1][0]] = 0.5
    assert check_pattern(half, Pattern(), 0.5) == "31 zeros, 32 wanted"


def test_nm_needs_whole_groups() -> None:
    with pytest.raises(ValueError, match="not groups of 4"):
        weight_mask(np.ones((4, 6)), "2:4")
    assert "not groups of 4" in check_pattern(np.zeros((4, 6)), Pattern(2, 4), 0.5)


# -- SparseGPT on arrays ------------------------------------------------------------------------
def correlated_inputs(d: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mix + 0.2 * rng.standard_normal((n, d))


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "1:4"])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(pattern: str) -> None:
    x = correlated_inputs(192, 3000, 5)
    h = x.T @ x / len(x)
    w = np.random.default_rng(6).standard_normal((48, 192))
    p = parse_pattern(pattern)
    s = resolve_sparsity(p, None)
    solved = sparsegpt.solve(w, h, p, count(w.size, s))
    mag = w * matrix_mask(np.abs(w), p, s)
    wanda = w * matrix_mask(np.abs(w) * np.sqrt(np.diag(h)), p, s, per_row=True)

    def err(new):  # measured on the inputs themselves, not through H
        return float(np.sum((x @ (new - w).T) ** 2) / np.sum((x @ w.T) ** 2))

    assert solved.error == pytest.approx(err(solved.weight), rel=1e-9)
    assert solved.error < 0.8 * err(mag)
    assert solved.error < err(wanda)
    assert check_pattern(solved.weight, p, s) is None
    if not p.structured:
        assert (solved.weight == 0).sum() == count(w.size, s)


def test_sparsegpt_on_an_uncorrelated_layer_keeps_the_largest_and_changes_nothing_else() -> None:
    """With H = I (white inputs, no dampening to speak of) OBS saliency is w² and the
    updates vanish: SparseGPT is magnitude pruning, block by block."""
    w = np.random.default_rng(7).standard_normal((16, 128))
    solved = sparsegpt.solve(w, np.eye(128), Pattern(2, 4), damp=0.0)
    np.testing.assert_allclose(solved.weight, w * matrix_mask(np.abs(w), Pattern(2, 4), 0.5),
                               atol=1e-12)


def test_sparsegpt_dead_inputs_are_zeroed_and_blocks_share_the_count() -> None:
    x = correlated_inputs(300, 2000, 8)
    x[:, [3, 150, 299]] = 0.0  # inputs that never fire
    h = x.T @ x / len(x)
    w = np.random.default_rng(9).standard_normal((10, 300))
    solved = sparsegpt.solve(w, h, Pattern(), count(w.size, 0.4))
    assert (solved.weight[:, [3, 150, 299]] == 0).all()
    assert (solved.weight == 0).sum() >= count(w.size, 0.4)
    assert np.isfinite(solved.weight).all()


def test_tap_major_permutation() -> None:
    """A conv weight [O, C, kh, kw] flattened channel-major, permuted, equals it flattened
    tap-major (what N:M groups along C need)."""
    w = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    perm = sparsegpt.tap_major(3, 4)
    np.testing.assert_array_equal(w.reshape(2, -1)[:, perm],
                                  w.transpose(0, 2, 3, 1).reshape(2, -1))
    assert sparsegpt.group_counts(3, 10, 0.45) == [4, 5, 4]
