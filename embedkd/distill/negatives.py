"""Hard negatives mined from a FAISS index of the training corpus (U-MARVEL), built by `indexer`.

The corpus is indexed once with the miner's embeddings (a bi-encoder teacher, or the student's base
model under a cross-encoder teacher); each training query's top-k neighbours minus its qrels
positives are candidates, and candidates the teacher scores at least as high as the query's
positive (minus a margin) are dropped as likely unlabeled positives (false negatives).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from indexer.corpus import ListSource
from indexer.encoder import ModelRecord
from indexer.errors import Conflict

__all__ = [
    "VectorLookupEncoder",
    "ensure_mining_index",
    "filter_false_negatives",
    "search_candidates",
    "sample_negatives_lazily",
    "select_negatives",
]

log = logging.getLogger(__name__)


class VectorLookupEncoder:
    """An `indexer` encoder serving precomputed vectors by text, falling back to `encode` for others."""

    def __init__(self, record: ModelRecord, texts: Sequence[str], vectors: np.ndarray,
                 encode: Callable[[list[str]], np.ndarray]) -> None:
        self.record = record
        self._rows = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors
        self._encode = encode

    def __call__(self, items: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(items), self.record.dimension), np.float32)
        missing = [i for i, t in enumerate(items) if t not in self._rows]
        for i, t in enumerate(items):
            if t in self._rows:
                out[i] = self._vectors[self._rows[t]]
        if missing:
            out[missing] = self._encode([items[i] for i in missing])
        return out


def ensure_mining_index(catalog, name: str, encoder: VectorLookupEncoder, corpus: dict[str, str],
                        fingerprint: str) -> str:
    """Build index `name` over `corpus` with `encoder` unless the catalog already has it."""
    from indexer.build import build_index
    from indexer.catalog import get_index
    from indexer.errors import NotFound

    with catalog.session() as s:
        try:
            row = get_index(s, name)
            if row.model.fingerprint == encoder.record.fingerprint and row.count == len(corpus):
                return name
            raise Conflict(f"index {name!r} exists with another model or corpus; drop it with `embedkd index drop`")
        except NotFound:
            pass
    from indexer.corpus import Doc

    docs = ListSource([Doc(id=i, content=t) for i, t in corpus.items()], fingerprint=fingerprint)
    build_index(catalog, name, encoder, docs, factory="Flat", progress=False)
    return name


def search_candidates(catalog, index: str, query_vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Top-k (doc id, score) per query vector from a catalog index."""
    from indexer.search import Searcher

    hits = Searcher(catalog).search_vectors(index, query_vectors, k=k)
    return [[(h.id, h.score) for h in row] for row in hits]


def filter_false_negatives(candidate_scores: np.ndarray, positive_score: float, margin: float = 0.0) -> np.ndarray:
    """Keep-mask: True where the teacher scores a candidate below `positive_score - margin`."""
    return np.asarray(candidate_scores) < positive_score - margin


def select_negatives(candidates: Sequence[str], teacher_scores: np.ndarray, positive_score: float,
                     positives: set[str], count: int, rng: np.random.Generator, margin: float = 0.0,
                     skip_top: int = 0) -> list[str]:
    """Pick `count` negatives among ranked candidates: drop positives, the first `skip_top` ranks and
    teacher-flagged false negatives, then sample without replacement (random fill if too few remain)."""
    keep = filter_false_negatives(teacher_scores, positive_score, margin)
    pool = [c for rank, (c, ok) in enumerate(zip(candidates, keep)) if ok and rank >= skip_top and c not in positives]
    if len(pool) <= count:
        return pool
    picked = rng.choice(len(pool), size=count, replace=False)
    return [pool[i] for i in sorted(picked)]


def sample_negatives_lazily(candidates: Sequence[str], score: Callable[[list[str]], np.ndarray],
                            positive_score: float, count: int, rng: np.random.Generator, margin: float = 0.0,
                            scored: dict[str, float] | None = None) -> tuple[list[str], int]:
    """Draw `count` negatives uniformly from the candidates the teacher keeps, scoring only as many as needed.

    Scanning a random permutation and taking the first `count` that pass the false-negative filter is the
    same draw as `select_negatives` (uniform without replacement over the kept pool), but a cross-encoder
    then scores ~`count` pairs per query instead of all top-k. `scored` caches scores across positives of
    one query. Returns the negatives and how many scored candidates were dropped as false negatives.
    """
    scored = {} if scored is None else scored
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    picked: list[str] = []
    dropped = 0
    pos = 0
    while len(picked) < count and pos < len(order):
        chunk = order[pos:pos + 2 * (count - len(picked))]
        pos += len(chunk)
        todo = [c for c in chunk if c not in scored]
        if todo:
            scored.update(zip(todo, (float(x) for x in score(todo))))
        for c in chunk:
            if len(picked) == count:
                break
            if filter_false_negatives(np.array([scored[c]]), positive_score, margin)[0]:
                picked.append(c)
            else:
                dropped += 1
    return sorted(picked, key=candidates.index), dropped
