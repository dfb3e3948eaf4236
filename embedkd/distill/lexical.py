"""BM25 over the training corpus, fused into a bi-encoder teacher's scores (`--lexical W`).

A dense teacher and BM25 miss different documents: on SciFact, all-MiniLM-L6-v2 scores nDCG@10
0.645, BM25 0.686, and cosine + 0.5 x normalised BM25 0.736, with no labels at all. The fused
teacher is what the student learns from (mining filter, Margin-MSE / KL targets, in-batch KL); the
student stays a plain dense model, so search and indexes are unchanged.

A query's BM25 scores are divided by its best score over the corpus, so they lie in [0, 1] whatever
the query's length and sit on the cosine's scale; `weight` is how many cosine units a perfect
lexical match is worth. The scorer is `embedkd.bm25.LexicalScorer` (bm25s, stop words, Snowball
stemming).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedkd.bm25 import LexicalScorer

__all__ = ["LexicalScorer", "fused_run", "fused_scores"]


def fused_scores(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """The fused teacher's score: cosine + weight x normalised BM25."""
    return (dense + weight * lexical).astype(np.float32, copy=False)


def fused_run(query_ids: Sequence[str], query_texts: Sequence[str], query_vecs: np.ndarray, doc_ids: Sequence[str],
              doc_vecs: np.ndarray, lexical: LexicalScorer, weight: float, k: int = 100,
              qrels: dict[str, dict[str, int]] | None = None, chunk: int = 64) -> dict[str, dict[str, float]]:
    """Exact top-k of the fused score over the whole corpus, per query (a TREC-style run), with a query's
    own id left out as in `exact_run` (BEIR's rule), so fused and dense figures are computed alike."""
    from embedkd.evaluation.retrieval import drop_identical_ids, top_k_indices

    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), chunk):
        end = min(start + chunk, len(query_ids))
        lex = np.stack([lexical.corpus_scores(q) for q in query_texts[start:end]])
        scores = fused_scores(query_vecs[start:end] @ doc_vecs.T, lex, weight)
        # one spare for the dropped identical id; drop_identical_ids keeps the first k
        for row, (qid, best) in enumerate(zip(query_ids[start:end], top_k_indices(scores, k + 1))):
            run[qid] = {doc_ids[j]: float(scores[row, j]) for j in best}
    return drop_identical_ids(run, k, qrels)
