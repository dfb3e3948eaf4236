"""BM25 over a corpus (bm25s): a first-stage baseline (`embedkd eval retrieval --bm25`) and the lexical
half of a fused distillation teacher (`embedkd distill --lexical`, `embedkd.distill.lexical`).

Tokens: bm25s's tokenizer, the language's stop words where bm25s has a list, Snowball stemming
(PyStemmer). Scores of one query are divided by its best score over the corpus, so they lie in
[0, 1] whatever the query's length; ranking by them is ranking by BM25.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from indexer.errors import UserError

__all__ = ["LexicalScorer", "STOPWORD_LANGUAGES", "bm25_run", "check_language", "languages"]

# languages with both a Snowball stemmer and a bm25s stop-word list; the others are stemmed only
STOPWORD_LANGUAGES = frozenset({"danish", "dutch", "english", "french", "german", "italian", "norwegian",
                                "portuguese", "russian", "spanish", "swedish", "turkish"})


def languages() -> list[str]:
    """The Snowball stemmers PyStemmer has (the languages BM25 here can read)."""
    import Stemmer

    return sorted(Stemmer.algorithms())


def check_language(language: str) -> str:
    if language not in languages():
        raise UserError(f"no Snowball stemmer for language {language!r}; choose one of: {', '.join(languages())}")
    return language


def _stemmer(language: str):
    import Stemmer

    return Stemmer.Stemmer(language)


class LexicalScorer:
    """Normalised BM25 of a query against corpus documents, addressed by their text."""

    def __init__(self, corpus_texts: Sequence[str], language: str = "english", memo_floats: int = 2**25) -> None:
        import logging

        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG itself, which reached the CLI's stderr
        self.language = check_language(language)
        self.texts = list(corpus_texts)
        self.rows: dict[str, int] = {}
        for i, t in enumerate(self.texts):
            self.rows.setdefault(t, i)
        self._stemmer = _stemmer(language)
        self._stopwords = language if language in STOPWORD_LANGUAGES else None
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


def bm25_run(query_ids: Sequence[str], query_texts: Sequence[str], doc_ids: Sequence[str], scorer: LexicalScorer,
             k: int = 100, qrels: dict[str, dict[str, int]] | None = None,
             drop_identical: bool = True) -> dict[str, dict[str, float]]:
    """Each query's top-k documents by BM25 (a TREC-style run), with a query's own id left out as in
    `exact_run` (BEIR's rule) unless not `drop_identical`. Documents that share no term with the query
    are not ranked."""
    from embedkd.evaluation.retrieval import drop_identical_ids, top_k_indices

    if len(doc_ids) != len(scorer.texts):
        raise ValueError(f"{len(doc_ids)} document ids for a scorer over {len(scorer.texts)} documents")
    run: dict[str, dict[str, float]] = {}
    depth = k + int(drop_identical)  # one spare for the dropped identical id
    for qid, text in zip(query_ids, query_texts):
        scores = scorer.corpus_scores(text)
        run[qid] = {doc_ids[j]: float(scores[j]) for j in top_k_indices(scores[None], depth)[0] if scores[j] > 0}
    return drop_identical_ids(run, k, qrels) if drop_identical else run
