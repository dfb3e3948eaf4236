"""Label-free held-out checks for an adapter, as pure functions on arrays.

`neighbour_agreement`: how many of the top-k documents that one (query, corpus) pair of spaces finds
are also found by another: used to compare "adapted v2 query among v1 vectors" and "v1 among v1"
with "v2 among v2" (what a full reindex would return).

`self_retrieval`: each held-out piece (a sentence, title or span of a document) should find its own
document; nDCG@k and MRR@k with that one relevant document. A retrieval task that needs no labels.
Among the sampled documents alone it is easy (a few hundred candidates): an adapted query that lands
near its document still finds it. With the index's other stored v1 vectors as distractors it asks
what search asks, and an imprecise adapter shows (measured: a static-embedding v1 and a transformer
v2, docs/upgrade.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HeldoutCheck", "adapter_figures", "heldout_check", "ndcg_single", "neighbour_agreement",
           "neighbour_overlap", "self_retrieval", "top_k"]


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Indices (n_queries, k) of the highest inner products, best first (exact, numpy), in blocks of
    queries so the score matrix stays small."""
    from embedkd.evaluation.retrieval import top_k_indices

    queries = np.asarray(queries, np.float32)
    corpus = np.asarray(corpus, np.float32)
    out = np.empty((len(queries), min(k, len(corpus))), dtype=np.int64)
    for start in range(0, len(queries), block):
        out[start : start + block] = top_k_indices(queries[start : start + block] @ corpus.T, k)
    return out


def neighbour_overlap(found: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row: the share of `reference`'s top-k ids that the same row of `found` contains."""
    found, reference = np.asarray(found), np.asarray(reference)
    k = reference.shape[1]
    return np.array([len(set(f.tolist()) & set(r.tolist())) / k for f, r in zip(found, reference, strict=True)])


def neighbour_agreement(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean share of each row of `reference` (top-k ids) that the same row of `found` contains."""
    return _mean_overlap(neighbour_overlap(found, reference))


def _mean_overlap(overlap: np.ndarray) -> float:
    return float(overlap.mean()) if len(overlap) else 0.0


def ndcg_single(ranked: np.ndarray, relevant: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-query nDCG@k and reciprocal rank@k when each query has exactly one relevant id."""
    ranked = np.asarray(ranked)[:, :k]
    match = ranked == np.asarray(relevant)[:, None]
    found = match.any(1)
    pos = np.where(found, match.argmax(1), k)  # k stands for "not in the top k"
    ndcg = np.where(found, 1.0 / np.log2(pos + 2.0), 0.0)
    rr = np.where(found, 1.0 / (pos + 1.0), 0.0)
    return np.stack([ndcg, rr])


def self_retrieval(queries: np.ndarray, corpus: np.ndarray, relevant: np.ndarray, k: int = 10) -> dict[str, float]:
    """nDCG@k and MRR@k of each query finding its one relevant corpus row."""
    ndcg, rr = ndcg_single(top_k(queries, corpus, k), relevant, k)
    return {"ndcg": float(ndcg.mean()), "mrr": float(rr.mean())}


@dataclass(frozen=True)
class HeldoutCheck:
    """What today's search (v1) and a reindex (v2) find for the held-out pieces, computed once and shared
    by every candidate adapter: `baseline` holds agree_v1, self_v1, self_v2 (and self_v1_index)."""

    reindex: np.ndarray  # top-k of v2 pieces among v2 documents
    v1_overlap: np.ndarray  # per piece: share of the reindex's top-k that v1's top-k holds
    docs_v1: np.ndarray
    index_v1: np.ndarray | None  # the sample's v1 vectors as the index holds them, then other documents
    relevant: np.ndarray
    k: int
    baseline: dict[str, float]


def heldout_check(q_v1: np.ndarray, q_v2: np.ndarray, docs_v1: np.ndarray, docs_v2: np.ndarray,
                  relevant: np.ndarray, k: int = 10, index_v1: np.ndarray | None = None) -> HeldoutCheck:
    """agree_v1: overlap@k of v1's top-k with the reindex's (v2 queries among v2 documents);
    self_v1 / self_v2: nDCG@k of pieces finding their own document among the sample;
    self_v1_index (with `index_v1`: the sample's v1 vectors as the index holds them, in sample order,
    then other index documents): the same among those. v2 has no vectors for the other documents, so
    there is no self_v2_index."""
    reindex = top_k(q_v2, docs_v2, k)
    v1 = top_k(q_v1, docs_v1, k)
    v1_overlap = neighbour_overlap(v1, reindex)
    baseline = {
        "agree_v1": _mean_overlap(v1_overlap),
        "self_v1": float(ndcg_single(v1, relevant, k)[0].mean()),
        "self_v2": float(ndcg_single(reindex, relevant, k)[0].mean()),
    }
    if index_v1 is not None:  # the sample comes first, so `relevant` indexes it as it does docs_v1
        baseline["self_v1_index"] = float(ndcg_single(top_k(q_v1, index_v1, k), relevant, k)[0].mean())
    return HeldoutCheck(reindex, v1_overlap, docs_v1, index_v1, relevant, k, baseline)


def adapter_figures(check: HeldoutCheck, q_adapted: np.ndarray) -> dict[str, float]:
    """The baseline figures plus the adapted queries': agree_adapted, self_adapted (and self_adapted_index),
    and agree_gain_se, the standard error of the per-piece gain in agreement over v1 (paired)."""
    from embedkd.evaluation.compare import standard_error

    adapted = top_k(q_adapted, check.docs_v1, check.k)
    overlap = neighbour_overlap(adapted, check.reindex)
    out = {**check.baseline,
           "agree_adapted": _mean_overlap(overlap),
           "agree_gain_se": standard_error(overlap - check.v1_overlap),
           "self_adapted": float(ndcg_single(adapted, check.relevant, check.k)[0].mean())}
    if check.index_v1 is not None:
        found = top_k(q_adapted, check.index_v1, check.k)
        out["self_adapted_index"] = float(ndcg_single(found, check.relevant, check.k)[0].mean())
    return out
