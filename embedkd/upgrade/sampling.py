"""Query-like pieces of an index's own content: titles, sentences and short word spans.

Queries are short; documents are not. An adapter fitted on whole documents learns the documents'
region of the space and, with ~1,000 documents for a 768 x 384 map, overfits. Cutting each sampled
document into several query-sized pieces gives many more pairs, in the region queries fall in, with
no labels needed. Each piece keeps the position of its document, so held-out checks can split by
document and use "does a piece find its own document" as a label-free retrieval task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Piece", "query_like_pieces", "sample_indices", "split_sentences", "word_spans"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Piece:
    text: str
    doc: int  # position of the source document in the sampled list; -1 for a logged query
    kind: str  # "title" | "sentence" | "span" | "query"


def split_sentences(text: str, min_words: int = 4, max_words: int = 48) -> list[str]:
    """Sentences of `text` with min_words..max_words words (longer ones are cut at max_words)."""
    out = []
    for sentence in _SENTENCE_END.split(text.strip()):
        words = sentence.split()
        if len(words) >= min_words:
            out.append(" ".join(words[:max_words]))
    return out


def word_spans(text: str, rng: np.random.Generator, count: int, min_words: int = 6,
               max_words: int = 16) -> list[str]:
    """`count` random spans of min_words..max_words consecutive words."""
    words = text.split()
    if len(words) < min_words:
        return []
    out = []
    for _ in range(count):
        length = int(rng.integers(min_words, min(max_words, len(words)) + 1))
        start = int(rng.integers(0, len(words) - length + 1))
        out.append(" ".join(words[start : start + length]))
    return out


def sample_indices(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A seeded sorted sample of min(size, n) positions out of n."""
    rng = np.random.default_rng(seed)
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size, replace=False))


def query_like_pieces(texts: Sequence[str], titles: Sequence[str | None] | None = None, *,
                      sentences_per_doc: int = 3, spans_per_doc: int = 2, seed: int = 0) -> list[Piece]:
    """Cut documents into query-sized pieces: the title (where given), up to `sentences_per_doc`
    sentences chosen at random, and `spans_per_doc` random word spans of the body."""
    rng = np.random.default_rng(seed)
    pieces: list[Piece] = []
    for i, text in enumerate(texts):
        title = (titles[i] if titles is not None else None) or ""
        body = text[len(title):].strip() if title and text.startswith(title) else text
        if title.strip() and len(title.split()) >= 3:
            pieces.append(Piece(title.strip(), i, "title"))
        sentences = split_sentences(body)
        if len(sentences) > sentences_per_doc:
            pick = np.sort(rng.choice(len(sentences), sentences_per_doc, replace=False))
            sentences = [sentences[j] for j in pick]
        pieces.extend(Piece(s, i, "sentence") for s in sentences)
        pieces.extend(Piece(s, i, "span") for s in word_spans(body, rng, spans_per_doc))
    return pieces
