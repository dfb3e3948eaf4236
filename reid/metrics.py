"""Market-1501 evaluation as pure numpy functions: CMC + mAP on a distance matrix, and k-reciprocal
re-ranking (Zhong et al., CVPR 2017)."""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate_rank", "first_match_ranks", "paired_rank1_difference", "re_ranking", "cosine_distance"]


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity between rows of a (m, d) and b (n, d) -> (m, n) float32."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (1.0 - a @ b.T).astype(np.float32)


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 10,
) -> tuple[np.ndarray, float]:
    """CMC curve (length max_rank, fraction of queries matched within rank r) and mAP.

    Market-1501 protocol: for each query, gallery items of the same person *and* the same camera
    are removed; queries with no remaining true match are left out of both averages. Ties are
    broken by gallery order (stable sort).

    Raises ValueError when shapes disagree or no query has a valid match.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    nq, ng = distmat.shape
    if (q_pids.shape, q_camids.shape) != ((nq,), (nq,)) or (g_pids.shape, g_camids.shape) != ((ng,), (ng,)):
        raise ValueError(
            f"distmat is {nq}x{ng}; q_pids/q_camids need {nq} entries and g_pids/g_camids {ng}"
        )
    cmc_all, aps = [], []
    for hits in _ranked_hits(distmat, q_pids, g_pids, q_camids, g_camids):
        if not hits.any():
            continue
        cmc = hits.cumsum()
        cmc[cmc > 1] = 1
        cmc_all.append(cmc[:max_rank] if len(cmc) >= max_rank else np.pad(cmc, (0, max_rank - len(cmc)), mode="edge"))
        positions = np.flatnonzero(hits)
        precision = np.arange(1, len(positions) + 1) / (positions + 1)
        aps.append(float(precision.mean()))
    if not aps:
        raise ValueError("no query has a gallery match from another camera; check the query/gallery split")
    return np.asarray(cmc_all, dtype=np.float32).mean(axis=0), float(np.mean(aps))


def first_match_ranks(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> np.ndarray:
    """Per query, the 0-based rank of its first true match under the Market protocol (same person and
    camera removed), or -1 when it has none: the per-query view behind CMC, for paired comparisons of
    two models on the same queries (rank-1 hit = rank 0)."""
    out = np.full(np.shape(distmat)[0], -1, dtype=np.int64)
    for i, hits in enumerate(_ranked_hits(distmat, q_pids, g_pids, q_camids, g_camids)):
        if hits.any():
            out[i] = int(np.argmax(hits))
    return out


def paired_rank1_difference(ranks_a: np.ndarray, ranks_b: np.ndarray, resamples: int = 10000,
                            seed: int = 0) -> dict[str, object]:
    """Rank-1 of model A minus model B on the same queries, with a paired bootstrap 95% CI.

    `ranks_a` / `ranks_b`: first-match ranks (`first_match_ranks`) of the same queries, shape (q,) for
    one model or (runs, q) for several training runs of it (seeds): a query's rank-1 hit is then the
    share of runs that rank its match first, so seed noise averages out while the queries stay paired.
    Queries are resampled together (the difficulty both models share cancels); queries without a
    valid match (rank -1) are left out."""
    ra, rb = np.atleast_2d(np.asarray(ranks_a)), np.atleast_2d(np.asarray(ranks_b))
    if ra.shape[1] != rb.shape[1]:
        raise ValueError(f"the two models were evaluated on different query sets ({ra.shape[1]} vs {rb.shape[1]})")
    valid = (ra >= 0).all(0) & (rb >= 0).all(0)
    ha, hb = (ra[:, valid] == 0).mean(0), (rb[:, valid] == 0).mean(0)
    diff = ha - hb
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    return {"n": int(valid.sum()), "runs": [len(ra), len(rb)], "diff": float(diff.mean()),
            "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "a_better": int((diff > 0).sum()), "b_better": int((diff < 0).sum())}


def _ranked_hits(distmat, q_pids, g_pids, q_camids, g_camids):
    """Per query, the gallery sorted by distance (stable: ties by gallery order) as a boolean
    true-match array, with the query's own camera's crops of the same person removed."""
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    order = np.argsort(distmat, axis=1, kind="stable")
    for i in range(distmat.shape[0]):
        same_person = g_pids[order[i]] == q_pids[i]
        yield same_person[~(same_person & (g_camids[order[i]] == q_camids[i]))]


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking: a Jaccard distance over k-reciprocal neighbour sets blended with the
    original distance. Returns the new (nq, ng) query-gallery distance."""
    nq = q_g_dist.shape[0]
    original = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(original / np.max(original, axis=0))
    total = original.shape[0]
    V = np.zeros_like(original, dtype=np.float32)
    initial_rank = np.argsort(original, axis=1).astype(np.int32)
    half = int(np.around(k1 / 2.0))
    for i in range(total):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_recip = forward[np.where(backward == i)[0]]
        expansion = k_recip
        for candidate in k_recip:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_recip = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_recip, k_recip)) > 2.0 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    original = original[:nq]
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(total)]).astype(np.float32)
    inv_index = [np.where(V[:, j] != 0)[0] for j in range(total)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(nq):
        temp_min = np.zeros(total, dtype=np.float32)
        nonzero = np.where(V[i] != 0)[0]
        for j in nonzero:
            rows = inv_index[j]
            temp_min[rows] += np.minimum(V[i, j], V[rows, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, nq:]
