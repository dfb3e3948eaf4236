"""Paired v1/v2 vectors for an index: sampled documents and their query-like pieces.

v1 document vectors are read back from the index where it stores them exactly (Flat, HNSW, IVF-Flat)
and re-encoded with v1 where it does not (PQ, SQ); pieces are not in the index and are encoded with
both models. v2 document vectors exist only for the sample: they stand in for a reindex in the gate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from indexer.corpus import Doc

from .sampling import Piece, query_like_pieces

__all__ = ["PairedVectors", "Sample", "encode_pairs", "reservoir_sample"]

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """Sampled documents of an index: their text, title and faiss id (-1 where unknown)."""

    ids: list[str]
    texts: list[str]
    titles: list[str | None]
    faiss_ids: np.ndarray


@dataclass
class PairedVectors:
    doc_v1: np.ndarray  # (n_docs, d1)
    doc_v2: np.ndarray  # (n_docs, d2)
    pieces: list[Piece]
    piece_v1: np.ndarray  # (n_pieces, d1)
    piece_v2: np.ndarray  # (n_pieces, d2)
    seconds: dict[str, float] = field(default_factory=dict)

    def subset(self, docs: np.ndarray) -> PairedVectors:
        """The pairs of the sampled documents at positions `docs` (sorted) and of their pieces, the pieces
        renumbered to their document's new position: the same fit on a smaller sample, without encoding."""
        position = np.full(len(self.doc_v1), -1)
        position[docs] = np.arange(len(docs))
        keep = [i for i, p in enumerate(self.pieces) if p.doc >= 0 and position[p.doc] >= 0]
        pieces = [Piece(self.pieces[i].text, int(position[self.pieces[i].doc]), self.pieces[i].kind) for i in keep]
        return PairedVectors(self.doc_v1[docs], self.doc_v2[docs], pieces, self.piece_v1[keep], self.piece_v2[keep])


def reservoir_sample(docs: Iterable[Doc], size: int, seed: int = 0,
                     keep: Callable[[Doc], bool] | None = None) -> list[Doc]:
    """A seeded uniform sample of `size` documents from a stream, in one pass and O(size) memory."""
    rng = np.random.default_rng(seed)
    out: list[Doc] = []
    seen = 0
    for doc in docs:
        if keep is not None and not keep(doc):
            continue
        if len(out) < size:
            out.append(doc)
        else:
            j = int(rng.integers(0, seen + 1))
            if j < size:
                out[j] = doc
        seen += 1
    return out


Encode = Callable[[list[str]], np.ndarray]


def encode_pairs(sample: Sample, v1: Encode, v2: Encode, stored_v1: np.ndarray | None, *,
                 v1_docs: Encode | None = None, v2_docs: Encode | None = None, sentences_per_doc: int = 3,
                 spans_per_doc: int = 2, seed: int = 0) -> PairedVectors:
    """Encode the sample's query-like pieces with both models (`v1`, `v2`: query encoders) and its
    documents with v2 (and with v1 where the index cannot give them back); `v1_docs` / `v2_docs` are
    the models' document encoders where they differ from the query encoders (query prompts)."""
    v1_docs, v2_docs = v1_docs or v1, v2_docs or v2
    seconds: dict[str, float] = {}
    pieces = query_like_pieces(sample.texts, sample.titles, sentences_per_doc=sentences_per_doc,
                               spans_per_doc=spans_per_doc, seed=seed)
    texts = [p.text for p in pieces]
    t0 = time.perf_counter()
    piece_v1 = v1(texts)
    seconds["encode_pieces_v1"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    piece_v2 = v2(texts)
    seconds["encode_pieces_v2"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc_v2 = v2_docs(sample.texts)
    seconds["encode_docs_v2"] = time.perf_counter() - t0
    if stored_v1 is None:
        t0 = time.perf_counter()
        doc_v1 = v1_docs(sample.texts)
        seconds["encode_docs_v1"] = time.perf_counter() - t0
    else:
        doc_v1 = stored_v1
    log.info("encoded %d documents and %d pieces", len(sample.texts), len(pieces))
    return PairedVectors(np.asarray(doc_v1, np.float32), np.asarray(doc_v2, np.float32), pieces,
                         np.asarray(piece_v1, np.float32), np.asarray(piece_v2, np.float32), seconds)
