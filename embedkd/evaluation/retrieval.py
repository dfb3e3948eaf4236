"""Evaluate a model (exact search over the corpus) or an index (through the search path) on BEIR data."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from indexer.encoder import Encoder
from indexer.search import Searcher

from .beir import BeirData
from .metrics import retrieval_metrics

__all__ = ["drop_identical_ids", "top_k_indices", "exact_run", "model_run", "index_run", "evaluate_model", "evaluate_index"]


def exact_run(doc_ids: list[str], doc_vectors: np.ndarray, query_ids: list[str], query_vectors: np.ndarray,
              k: int = 100, ignore_identical_ids: bool = True,
              qrels: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, float]]:
    """Top-k by inner product with an exact FAISS index: the reference every index is compared with.

    With `ignore_identical_ids` a document whose id is the query's own id is left out, as BEIR's
    evaluation does: ArguAna and Quora hold each query in the corpus under its own id, and finding
    the query itself is neither relevant nor informative. It stays where `qrels` judge it relevant
    (a set whose answers share their query's id), where dropping it would hide the answer.
    """
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(np.ascontiguousarray(doc_vectors, dtype=np.float32))
    depth = min(k + int(ignore_identical_ids), len(doc_ids))
    scores, ids = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), depth)
    run = {q: {doc_ids[i]: float(s) for s, i in zip(srow, irow) if i >= 0}
           for q, srow, irow in zip(query_ids, scores, ids)}
    return drop_identical_ids(run, k, qrels) if ignore_identical_ids else run


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """(queries, documents) scores -> each row's best min(k, documents) column indices, best first."""
    depth = min(k, scores.shape[1])
    if depth == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def drop_identical_ids(run: dict[str, dict[str, float]], k: int,
                       qrels: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, float]]:
    """Each query's ranking without the document that has the query's id (unless `qrels` judge that
    document relevant to it), cut to its best k."""
    qrels = qrels or {}

    def keep(q: str, d: str) -> bool:
        return d != q or qrels.get(q, {}).get(q, 0) > 0

    return {q: dict(list((d, s) for d, s in docs.items() if keep(q, d))[:k]) for q, docs in run.items()}


def model_run(encoder: Encoder, data: BeirData, k: int = 100,
              ignore_identical_ids: bool = True) -> dict[str, dict[str, float]]:
    """Each query's top-k over the whole corpus, encoded by `encoder`, by exact search."""
    docs = list(data.corpus)
    doc_vectors = encoder([d.content for d in docs])
    qids = list(data.queries)
    encode = getattr(encoder, "encode_queries", encoder)
    query_vectors = encode([data.queries[q] for q in qids])
    return exact_run([d.id for d in docs], doc_vectors, qids, query_vectors, k, ignore_identical_ids, data.qrels)


def index_run(searcher: Searcher, index: str, data: BeirData, query_model: str | None = None,
              k: int = 100, batch: int = 256, ignore_identical_ids: bool = True) -> dict[str, dict[str, float]]:
    """Each query's top-k from `index` through the search path (its adapter when `query_model` differs);
    `ignore_identical_ids` as in `exact_run`."""
    qids = list(data.queries)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(qids), batch):
        part = qids[start : start + batch]
        hits = searcher.search(index, [data.queries[q] for q in part], k=k + int(ignore_identical_ids),
                               query_model=query_model)
        for q, row in zip(part, hits):
            run[q] = {h.id: h.score for h in row}
    return drop_identical_ids(run, k, data.qrels) if ignore_identical_ids else run


def evaluate_model(encoder: Encoder, data: BeirData, k: int = 100) -> dict[str, Any]:
    return retrieval_metrics(model_run(encoder, data, k), data.qrels)


def evaluate_index(searcher: Searcher, index: str, data: BeirData, query_model: str | None = None,
                   k: int = 100, batch: int = 256) -> dict[str, Any]:
    return retrieval_metrics(index_run(searcher, index, data, query_model, k, batch), data.qrels)
