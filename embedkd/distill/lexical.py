"""BM25 over the training corpus, fused into a bi-encoder teacher's scores (`--lexical W`).

A dense teacher and BM25 miss different documents: on SciFact, all-MiniLM-L6-v2 scores nDCG@10
0.645, BM25 0.686, and cosine + 0.5 x normalised BM25 0.736, with no labels at all. The fused
teacher is what the student learns from (mining filter, Margin-MSE / KL targets, in-batch KL); the
student stays a plain dense model, so search and indexes are unchanged.

A query's BM25 scores are divided by its best score over the corpus, so they lie in [0, 1] whatever
the query's length and sit on the cosine's scale; `weight` is how many cosine units a perfect
lexical match is worth. bm25s does the scoring (English stop words, Snowball stemming).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = ["LexicalScorer", "fused_run", "fused_scores"]


class LexicalScorer:
    """Normalised BM25 of a query against corpus documents, addressed by their text."""

    def __init__(self, corpus_texts: Sequence[str], language: str = "english", memo_floats: int = 2**25) -> None:
        import bm25s
        import Stemmer

        self.texts = list(corpus_texts)
        self.rows: dict[str, int] = {}
        for i, t in enumerate(self.texts):
            self.rows.setdefault(t, i)
        self._stemmer = Stemmer.Stemmer(language)
        self._stopwords = "en" if language == "english" else None
        self._bm25 = bm25s.BM25()
        self._bm25.index(self._tokenize(self.texts), show_progress=False)
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        # recent queries' corpus scores, ~128 MB at most: a training batch asks about 16 queries at once
        self._memo_size = max(32, memo_floats // max(len(self.texts), 1))

    def _tokenize(self, texts: list[str], ids: bool = True):
        import bm25s

        return bm25s.tokenize(texts, stopwords=self._stopwords, stemmer=self._stemmer, show_progress=False,
                              return_ids=ids)

    def corpus_scores(self, query: str) -> np.ndarray:
        """(N,) float32 BM25 scores over the corpus, divided by the best (0 when no term matches)."""
        hit = self._memo.get(query)
        if hit is not None:
            self._memo.move_to_end(query)
            return hit
        # words the corpus never has match nothing; dropping them keeps bm25s from looking them up
        known = [w for w in self._tokenize([query], ids=False)[0] if w in self._bm25.vocab_dict]
        scores = (np.asarray(self._bm25.get_scores(known), dtype=np.float32) if known
                  else np.zeros(len(self.texts), np.float32))
        top = float(scores.max()) if scores.size else 0.0
        scores = scores / top if top > 0 else scores
        self._memo[query] = scores
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return scores

    def rows_of(self, documents: Sequence[str]) -> np.ndarray:
        try:
            return np.asarray([self.rows[d] for d in documents], dtype=np.int64)
        except KeyError as e:
            raise ValueError("lexical scores exist only for documents of the corpus they were built on") from e

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self.corpus_scores(query)[self.rows_of(documents)]

    def matrix(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """(len(queries), len(documents)) normalised BM25, for in-batch targets."""
        rows = self.rows_of(documents)
        return np.stack([self.corpus_scores(q)[rows] for q in queries]).astype(np.float32)


def fused_scores(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """The fused teacher's score: cosine + weight x normalised BM25."""
    return (dense + weight * lexical).astype(np.float32, copy=False)


def fused_run(query_ids: Sequence[str], query_texts: Sequence[str], query_vecs: np.ndarray, doc_ids: Sequence[str],
              doc_vecs: np.ndarray, lexical: LexicalScorer, weight: float, k: int = 100,
              qrels: dict[str, dict[str, int]] | None = None, chunk: int = 64) -> dict[str, dict[str, float]]:
    """Exact top-k of the fused score over the whole corpus, per query (a TREC-style run), with a query's
    own id left out as in `exact_run` (BEIR's rule), so fused and dense figures are computed alike."""
    from embedkd.evaluation.retrieval import drop_identical_ids

    run: dict[str, dict[str, float]] = {}
    depth = min(k + 1, len(doc_ids))  # one spare for the dropped identical id
    for start in range(0, len(query_ids), chunk):
        end = min(start + chunk, len(query_ids))
        lex = np.stack([lexical.corpus_scores(q) for q in query_texts[start:end]])
        scores = fused_scores(query_vecs[start:end] @ doc_vecs.T, lex, weight)
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        for row, qid in enumerate(query_ids[start:end]):
            best = top[row][np.argsort(-scores[row, top[row]], kind="stable")]  # drop_identical_ids keeps the first k
            run[qid] = {doc_ids[j]: float(scores[row, j]) for j in best}
    return drop_identical_ids(run, k, qrels)
