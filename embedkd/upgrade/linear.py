"""Closed-form v2 -> v1 adapters fitted on paired vectors: x (n, d_src) from v2, y (n, d_tgt) from v1.

* mean shift (QDC): y = x - mean(x) + mean(y); same dimension only.
* orthogonal Procrustes: y = s (x - mean(x)) W + mean(y), W with orthonormal rows or columns. When the
  dimensions differ, W is the closed-form solution over *semi*-orthogonal matrices (the Stiefel
  manifold): SVD of the cross-covariance X^T Y = U S V^T gives W = U V^T (d_src x d_tgt). That equals
  padding the smaller space with zero coordinates, solving the square problem, and dropping the padded
  coordinates, without building the padded arrays; for 768 -> 384 it is "project onto the 384
  directions of v2 that best explain v1, then rotate". The scale s = trace(S) / ||X W||^2 is the
  least-squares scale.
* ridge affine: y = (x - mean(x)) (W + D) + mean(y), with D a ridge regression of the Procrustes
  residual: the map shrinks toward the orthogonal one, not toward zero, so a small sample cannot pull
  it far from a rotation. The ridge strength is picked on validation pairs.
* low-rank affine: the same with D of rank r (reduced-rank ridge regression: the ridge solution
  projected on the top-r directions of its fitted values), stored as two factors (d_src x r, r x d_tgt).
* score map: the maps above send a v2 query to where v1 would have put it, so they recover v2's
  query-side gain only. Where v2's gain is in how it embeds *documents*, regress the other way:
  fit v1 -> v2 on the same content, d2 ~ (d1 - m1) M + m2 (Procrustes + ridge residual, as affine),
  and send the query to q M^T. Then q M^T . d1 = q . (d1 M) ~ q . d2 - q . (m2 - m1 M), whose last
  term is the same for every document: ranking v1's stored vectors with the mapped query
  approximates ranking v2's reindexed documents with the v2 query (FCT's document transformation,
  moved to the query side by associativity, so the index is never touched). No centering or bias:
  they would add a document-dependent term. New documents take the inverse map (`doc_center` = c,
  `Adapter.for_documents`).

All fits are numpy float64 internally and return float32 `indexer.adapters.Adapter`s whose
fingerprints the caller fills in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.adapters import Adapter
from indexer.errors import UserError

__all__ = [
    "RANK_GRID",
    "RIDGE_GRID",
    "fit_affine",
    "fit_identity",
    "fit_low_rank",
    "fit_mean_shift",
    "fit_procrustes",
    "fit_score_map",
    "mean_cosine",
    "procrustes_matrix",
    "ridge_path",
]

RIDGE_GRID = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)  # times the mean eigenvalue of X^T X
RANK_GRID = (8, 16, 32, 64, 128)


def _check(x: np.ndarray, y: np.ndarray, min_pairs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise UserError(f"paired vectors must be (n, d) arrays of equal n; got {x.shape} and {y.shape}")
    if len(x) < min_pairs:
        raise UserError(f"an adapter needs at least {min_pairs} paired vectors, got {len(x)}; sample more content")
    return x, y


def _adapter(kind: str, ds: int, dt: int, **parts) -> Adapter:
    return Adapter(kind=kind, source_fingerprint="", target_fingerprint="", source_dim=ds, target_dim=dt, **parts)


def mean_cosine(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean cosine similarity between rows of `pred` and `target`."""
    p = pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    t = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(p * t, axis=1)))


def fit_identity(x: np.ndarray, y: np.ndarray) -> Adapter:
    """Raw v2 vectors searched against v1 (same dimension only): the no-adapter baseline."""
    ds, dt = np.shape(x)[1], np.shape(y)[1]
    if ds != dt:
        raise UserError(f"raw v2 queries cannot search a {dt}-d index with {ds}-d vectors; fit an adapter")
    return _adapter("identity", ds, dt)


def fit_mean_shift(x: np.ndarray, y: np.ndarray) -> Adapter:
    """QDC's mean drift compensation: subtract the mean drift mean(x) - mean(y)."""
    x, y = _check(x, y, 1)
    if x.shape[1] != y.shape[1]:
        raise UserError(
            f"mean-shift needs models of the same dimension (got {x.shape[1]} -> {y.shape[1]}); "
            "use --kind procrustes, affine or mlp"
        )
    return _adapter("mean-shift", x.shape[1], y.shape[1], bias=y.mean(0) - x.mean(0))


def procrustes_matrix(xc: np.ndarray, yc: np.ndarray, scale: bool = True) -> np.ndarray:
    """argmin ||xc W - yc|| over W (d_src x d_tgt) with orthonormal columns (d_src >= d_tgt) or rows,
    times the least-squares scale when `scale`."""
    u, s, vt = np.linalg.svd(xc.T @ yc, full_matrices=False)
    w = u @ vt
    if scale:  # least-squares scale: trace(S) / ||xc W||^2 (= ||xc||^2 when W is square)
        proj = xc @ w
        w *= s.sum() / max(float(np.sum(proj * proj)), 1e-12)
    return w


def fit_procrustes(x: np.ndarray, y: np.ndarray) -> Adapter:
    x, y = _check(x, y)
    mx, my = x.mean(0), y.mean(0)
    w = procrustes_matrix(x - mx, y - my)
    return _adapter("procrustes", x.shape[1], y.shape[1], center=mx, linear=w, bias=my)


def ridge_path(xc: np.ndarray, r: np.ndarray, lambdas: Sequence[float]) -> list[np.ndarray]:
    """Ridge solutions argmin ||xc D - r||^2 + lam ||D||^2 for each lam, from one SVD of xc."""
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    ur = u.T @ r
    return [vt.T @ ((s / (s * s + lam))[:, None] * ur) for lam in lambdas]


def _lambda_scale(xc: np.ndarray) -> float:
    """Mean eigenvalue of xc^T xc: ridge strengths are given relative to it."""
    return max(float(np.sum(xc * xc)) / xc.shape[1], 1e-12)


def _prepare(x, y, x_val, y_val):
    x, y = _check(x, y)
    if x_val is None or y_val is None or len(x_val) == 0:  # hold out every 5th pair for the choice
        keep = np.arange(len(x)) % 5 != 4
        if keep.all() or not keep.any():
            raise UserError(f"an affine adapter needs at least 5 paired vectors, got {len(x)}")
        x, x_val, y, y_val = x[keep], x[~keep], y[keep], y[~keep]
    x_val, y_val = np.asarray(x_val, np.float64), np.asarray(y_val, np.float64)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    w = procrustes_matrix(xc, yc)
    lambdas = [g * _lambda_scale(xc) for g in RIDGE_GRID]
    return x, y, x_val, y_val, mx, my, xc, yc, w, lambdas


def _ridge_toward_procrustes(x, y, x_val, y_val, refit: bool):
    """y ~ (x - mx) M + my with M = Procrustes + ridge residual, the strength picked on (x_val, y_val).

    Returns (mx, my, M, info); with `refit`, M is refitted on train + validation pairs.
    """
    x, y, x_val, y_val, mx, my, xc, yc, w, lambdas = _prepare(x, y, x_val, y_val)
    ds_path = ridge_path(xc, yc - xc @ w, lambdas)
    scores = [mean_cosine((x_val - mx) @ (w + d) + my, y_val) for d in ds_path]
    best = int(np.argmax(scores))
    info = {"lambda": RIDGE_GRID[best], "val_cosine": scores[best]}
    if refit:
        x, xc, mx, my, w, d = _refit(x, y, x_val, y_val, RIDGE_GRID[best])
    else:
        d = ds_path[best]
    return mx, my, w + d, info


def fit_affine(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
               refit: bool = True) -> Adapter:
    """Ridge affine map shrunk toward Procrustes; the ridge strength is picked on (x_val, y_val).

    With `refit`, the chosen strength is refitted on train + validation pairs.
    """
    mx, my, m, info = _ridge_toward_procrustes(x, y, x_val, y_val, refit)
    return _adapter("affine", m.shape[0], m.shape[1], center=mx, linear=m, bias=my, info=info)


def _refit(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, grid_lambda: float):
    """Refit Procrustes + ridge residual on train and validation pairs with the chosen strength."""
    x, y = np.vstack([x, x_val]), np.vstack([y, y_val])
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    w = procrustes_matrix(xc, yc)
    d = ridge_path(xc, yc - xc @ w, [grid_lambda * _lambda_scale(xc)])[0]
    return x, xc, mx, my, w, d


def _fitted_directions(gram: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Right singular vectors of xc @ d, largest first, from gram = xc^T xc: (d_tgt, d_tgt)."""
    vals, vecs = np.linalg.eigh(d.T @ gram @ d)
    return vecs[:, np.argsort(vals)[::-1]]


def _low_rank_factors(d: np.ndarray, directions: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduced-rank projection of the ridge map d onto its top-`rank` fitted directions."""
    vr = directions[:, :rank]
    return d @ vr, vr.T


def fit_low_rank(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                 ranks: Sequence[int] = RANK_GRID, refit: bool = True) -> Adapter:
    """Procrustes plus a rank-r ridge correction; rank and ridge strength picked on validation pairs."""
    x, y, x_val, y_val, mx, my, xc, yc, w, lambdas = _prepare(x, y, x_val, y_val)
    max_rank = min(x.shape[1], y.shape[1], len(x))
    ranks = sorted({min(r, max_rank) for r in ranks})
    best = (-np.inf, 0, 0)
    gram = xc.T @ xc
    for li, d in enumerate(ridge_path(xc, yc - xc @ w, lambdas)):
        directions = _fitted_directions(gram, d)
        for rank in ranks:
            a, b = _low_rank_factors(d, directions, rank)
            score = mean_cosine((x_val - mx) @ w + ((x_val - mx) @ a) @ b + my, y_val)
            if score > best[0]:
                best = (score, li, rank)
    score, li, rank = best
    info = {"lambda": RIDGE_GRID[li], "rank": rank, "val_cosine": score}
    if refit:
        x, xc, mx, my, w, d = _refit(x, y, x_val, y_val, RIDGE_GRID[li])
    else:
        d = ridge_path(xc, yc - xc @ w, [lambdas[li]])[0]
    a, b = _low_rank_factors(d, _fitted_directions(xc.T @ xc, d), rank)
    return _adapter("low-rank", x.shape[1], y.shape[1], center=mx, linear=w, low_a=a, low_b=b, bias=my, info=info)


def fit_score_map(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                  refit: bool = True) -> Adapter:
    """Query map q -> q M^T with M the ridge v1 -> v2 regression (shrunk toward Procrustes) of the content.

    x: v2 vectors, y: v1 vectors (as every fit here); the ridge strength is picked by how well d1 M
    predicts d2 on (x_val, y_val).
    """
    my, mx, m, info = _ridge_toward_procrustes(y, x, y_val, x_val, refit)  # m: (d_tgt, d_src), v1 -> v2
    return _adapter("score-map", m.shape[1], m.shape[0], linear=m.T, doc_center=mx - my @ m, info=info)
