"""Closed-form adapters against hand-worked values and naive references."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.upgrade.linear import (
    RIDGE_GRID,
    fit_affine,
    fit_low_rank,
    fit_mean_shift,
    fit_procrustes,
    fit_score_map,
    mean_cosine,
    procrustes_matrix,
    ridge_path,
)
from indexer.errors import UserError


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_mean_shift_hand_values():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 2.0]])
    a = fit_mean_shift(x, y)
    np.testing.assert_allclose(a.bias, [0.5, 0.5])
    assert a.linear is None and a.center is None
    with pytest.raises(UserError, match="same dimension"):
        fit_mean_shift(np.zeros((3, 4)), np.zeros((3, 2)))


def test_procrustes_recovers_rotation_and_scale():
    x = np.random.default_rng(0).normal(size=(200, 6))
    r = _rotation(6, 1)
    w = procrustes_matrix(x - x.mean(0), 2.0 * (x - x.mean(0)) @ r)
    np.testing.assert_allclose(w, 2.0 * r, atol=1e-8)
    # 90-degree rotation in 2-d, worked by hand
    x2 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    rot = np.array([[0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(procrustes_matrix(x2, x2 @ rot), rot, atol=1e-12)


def test_procrustes_semi_orthogonal_when_dims_differ():
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(300, 5))
    x, _ = np.linalg.qr(raw - raw.mean(0))  # centred, orthonormal columns: X^T Y is exactly [I; 0]
    y = x[:, :3] + 1.0  # target keeps 3 of 5 coordinates, shifted
    a = fit_procrustes(x, y)
    np.testing.assert_allclose(a.linear, np.eye(5)[:, :3], atol=1e-5)
    np.testing.assert_allclose(a.bias, np.ones(3), atol=1e-6)
    assert mean_cosine(a.apply(x), y) > 0.9999
    # 3 -> 5: rows orthonormal
    b = fit_procrustes(y - 1.0, x)
    np.testing.assert_allclose((b.linear @ b.linear.T) / (b.linear @ b.linear.T)[0, 0], np.eye(3), atol=1e-5)


def test_ridge_path_matches_normal_equations():
    rng = np.random.default_rng(3)
    x, r = rng.normal(size=(40, 6)), rng.normal(size=(40, 4))
    for lam, d in zip((0.1, 5.0), ridge_path(x, r, (0.1, 5.0)), strict=True):
        naive = np.linalg.solve(x.T @ x + lam * np.eye(6), x.T @ r)
        np.testing.assert_allclose(d, naive, atol=1e-10)


def test_affine_fits_a_linear_map_with_noise():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 8))
    m = rng.normal(size=(8, 4))
    y = x @ m + 0.5 + 0.01 * rng.normal(size=(600, 4))
    a = fit_affine(x, y)
    assert mean_cosine(a.apply(x), y) > 0.999
    assert mean_cosine(a.apply(x), y) > mean_cosine(fit_procrustes(x, y).apply(x), y)
    assert "lambda" in a.info


def test_low_rank_full_rank_equals_affine_and_low_rank_is_exact_for_low_rank_drift():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 6))
    drift = rng.normal(size=(6, 1)) @ rng.normal(size=(1, 6))  # rank-1 drift on top of identity
    y = x @ (np.eye(6) + 0.5 * drift)
    lr = fit_low_rank(x, y, ranks=(1, 6))
    assert lr.low_a.shape[1] in (1, 6)
    assert mean_cosine(lr.apply(x), y) > 0.999
    full = fit_low_rank(x, y, ranks=(6,))
    aff = fit_affine(x, y)
    if full.info["lambda"] == aff.info["lambda"]:
        np.testing.assert_allclose(full.apply(x), aff.apply(x), atol=1e-4)


def test_too_few_pairs():
    with pytest.raises(UserError, match="at least"):
        fit_affine(np.zeros((3, 2)), np.zeros((3, 2)))


def test_score_map_ranks_v1_documents_as_v2_ranks_its_own():
    """v2 embeds documents as a linear function of v1 (d2 = d1 M + c); queries live in v2's own space.
    The score map must rank v1's stored vectors for a v2 query exactly as v2 ranks its reindexed ones,
    which no map toward v1's *query* vectors can do when M is not a rotation."""
    rng = np.random.default_rng(5)
    d1, d2 = 6, 9
    m = rng.normal(size=(d1, d2))
    c = rng.normal(size=d2)
    y = rng.normal(size=(400, d1))  # v1 content vectors
    x = y @ m + c  # v2 content vectors
    a = fit_score_map(x, y)
    assert (a.source_dim, a.target_dim) == (d2, d1) and a.center is None and a.bias is None
    docs1 = rng.normal(size=(50, d1))
    docs2 = docs1 @ m + c
    q2 = rng.normal(size=(20, d2))
    mapped = a.apply(q2.astype(np.float32)).astype(np.float64)
    # per query, scores on v1 vectors are v2's scores up to a per-query offset (q . c) and scale
    got, want = mapped @ docs1.T, q2 @ docs2.T
    corr = [np.corrcoef(g, w)[0, 1] for g, w in zip(got, want)]
    assert min(corr) > 0.999
    assert (got.argmax(1) == want.argmax(1)).all()
    # a map toward v1's own vectors (Procrustes) cannot: it keeps v1's view of the documents
    p = fit_procrustes(x, y).apply(q2.astype(np.float32)).astype(np.float64) @ docs1.T
    assert np.mean([np.corrcoef(g, w)[0, 1] for g, w in zip(p, want)]) < 0.9
    # new documents (v2 only) go in through the inverse map: old and new documents together rank as in v2
    new2 = rng.normal(size=(30, d1)) @ m + c
    mixed1 = np.vstack([docs1, a.for_documents().apply(new2.astype(np.float32))])
    got, want = mapped @ mixed1.T, q2 @ np.vstack([docs2, new2]).T
    assert min(np.corrcoef(g, w)[0, 1] for g, w in zip(got, want)) > 0.999
    assert a.for_documents() is not a and fit_procrustes(x, y).for_documents().kind == "procrustes"
    # noiseless pairs: validation picks the weakest ridge
    assert a.info["lambda"] == RIDGE_GRID[0] and a.info["val_cosine"] > 0.999
