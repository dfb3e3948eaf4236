"""Fit an upgrade adapter from paired vectors: candidates, held-out check, choice, gate.

`fit_from_pairs` works on arrays alone (tested without models); `embedkd.upgrade.run.fit_upgrade`
gets the arrays from an index and two encoders and registers the result.

Split: documents are split 80/20 into fit and held-out documents. Fitting pairs are the fit
documents' query-like pieces plus the fit documents themselves (v1 vector from the index, v2 encoded).
The held-out check searches the held-out documents' pieces over *all* sampled documents, and for
self-retrieval also over the index's own view of the sample and of other documents where the caller
passes it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.errors import UserError

from .gate import TOLERANCE, GateDecision, decide
from .heldout import HeldoutCheck, adapter_figures, heldout_check
from .pairs import PairedVectors
from .select import CANDIDATES, Candidate, fit_candidates, group_split

__all__ = ["BLENDS", "MIN_DOCS", "FitOutcome", "blend_candidates", "choose_by_labels", "fit_from_pairs",
           "selection_score"]

log = logging.getLogger(__name__)
MIN_DOCS = 50
BLENDS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)  # weight of the mapped v2 query in a blend


@dataclass
class FitOutcome:
    chosen: Candidate
    candidates: list[Candidate]
    decision: GateDecision
    baseline: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    fit_seconds: float = 0.0
    check: HeldoutCheck | None = None  # the held-out check and its pieces' v1 / v2 vectors, for blends
    heldout_queries: tuple[np.ndarray, np.ndarray] | None = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """The fits multiply small matrices: one BLAS thread is as fast, and far faster on a busy machine
    (measured here: ridge fit 93 s with 2 OpenBLAS threads under load, 5 s with 1)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own thread count
        yield
        return
    with threadpool_limits(1):
        yield


def selection_score(figures: dict[str, float]) -> float:
    """Held-out score used by `auto`: agreement with the reindex plus self-retrieval nDCG@10."""
    return figures["agree_adapted"] + figures["self_adapted"]


def choose_by_labels(candidates: Sequence[Candidate], ndcg: dict[str, float], tolerance: float = TOLERANCE,
                     gain_se: dict[str, float] | None = None) -> tuple[Candidate, GateDecision]:
    """With labelled queries (`ndcg`: nDCG@10 of "v1" and of each kind), the gated candidate with the best
    labelled nDCG@10, else the best refused one with its refusal. Adds `ndcg_v1` / `ndcg_adapted` (and
    `ndcg_gain_se`, the standard error of the paired per-query gain, from `gain_se`) to each candidate's
    figures, so the gate checks them."""
    for c in candidates:
        c.figures.update(ndcg_v1=ndcg["v1"], ndcg_adapted=ndcg[c.kind])
        if gain_se is not None:
            c.figures["ndcg_gain_se"] = gain_se[c.kind]
    best = max(candidates, key=lambda c: (decide(c.figures, tolerance).accepted, c.figures["ndcg_adapted"]))
    return best, decide(best.figures, tolerance)


def blend_candidates(base: Candidate, check: HeldoutCheck, q_v1: np.ndarray, q_v2: np.ndarray) -> list[Candidate]:
    """`base` blended with the index model's query at every weight in BLENDS, with held-out figures.

    Why: between unrelated models (all-MiniLM-L6-v2 and all-mpnet-base-v2, a static model and a
    transformer) every map from pieces falls below v1 on real queries, yet v1's query plus a share of the
    mapped v2 query can beat v1 (docs/upgrade.md, "Blending with v1's query"): the two queries err differently.
    It can as well lose to v1 while every label-free figure looks fine (measured: a worse v2, blended,
    passed them and cost 1.9 points), so blends are offered to a labelled check only, which must find them
    clearly better than v1 (`gate.decide`). A blend costs one v1 encoding per query.
    """
    out = []
    for weight in BLENDS:
        adapter = base.adapter.with_blend(weight)
        blended = Candidate(adapter.kind, adapter, base.fit_seconds)
        blended.figures = {**adapter_figures(check, adapter.apply(q_v2, q_v1)), "blend": weight}
        out.append(blended)
    return out


def fit_from_pairs(pairs: PairedVectors, kinds: Sequence[str] = CANDIDATES, *, holdout: float = 0.2,
                   seed: int = 0, tolerance: float = TOLERANCE, k: int = 10,
                   extra_pairs: tuple[np.ndarray, np.ndarray] | None = None, doc_pairs: bool = True,
                   index_v1: np.ndarray | None = None) -> FitOutcome:
    """Fit each kind, measure it on held-out documents' pieces, keep the best that passes the gate.

    `extra_pairs` (v2, v1) are added to the fitting pairs only (e.g. the user's logged queries);
    `doc_pairs` False fits on the pieces alone (documents then serve only the held-out check);
    `index_v1`: v1 vectors as the index holds them, the sampled documents first (in sample order), then
    other index documents: for the gate's self-retrieval among the index (`heldout.heldout_check`).
    Never chooses a blend (`blend_candidates`): only labelled queries can tell one that helps from one
    that hurts.
    """
    n_docs = len(pairs.doc_v1)
    if n_docs < MIN_DOCS:
        raise UserError(
            f"only {n_docs} documents could be sampled from the index; an adapter needs at least {MIN_DOCS} "
            "(index more documents first, or keep querying with the index's own model)"
        )
    if pairs.doc_v1.shape[1] == pairs.doc_v2.shape[1] and np.allclose(pairs.doc_v1, pairs.doc_v2, atol=1e-6):
        raise UserError("the new model embeds exactly like the index's model; there is nothing to adapt")
    piece_doc = np.array([p.doc for p in pairs.pieces], dtype=np.int64)
    held_docs = group_split(np.arange(n_docs), holdout, seed)
    held_piece = held_docs[piece_doc] if len(piece_doc) else np.zeros(0, bool)
    if not held_piece.any():
        raise UserError("the sampled documents gave no query-like pieces to check an adapter on; sample more")

    fit_docs = ~held_docs if doc_pairs else np.zeros(n_docs, bool)
    x = np.vstack([pairs.piece_v2[~held_piece], pairs.doc_v2[fit_docs]])
    y = np.vstack([pairs.piece_v1[~held_piece], pairs.doc_v1[fit_docs]])
    groups = np.concatenate([piece_doc[~held_piece], np.flatnonzero(fit_docs)])
    if extra_pairs is not None and len(extra_pairs[0]):
        x = np.vstack([x, extra_pairs[0]])
        y = np.vstack([y, extra_pairs[1]])
        groups = np.concatenate([groups, n_docs + np.arange(len(extra_pairs[0]))])

    with single_threaded_blas():
        t0 = time.perf_counter()
        candidates = fit_candidates(x, y, groups, kinds, seed=seed, log=log.info,
                                    docs=(pairs.doc_v2[~held_docs], pairs.doc_v1[~held_docs]))
        fit_seconds = time.perf_counter() - t0

        q1, q2 = pairs.piece_v1[held_piece], pairs.piece_v2[held_piece]
        relevant = piece_doc[held_piece]
        check = heldout_check(q1, q2, pairs.doc_v1, pairs.doc_v2, relevant, k, index_v1)
        baseline = dict(check.baseline)
        for c in candidates:
            c.figures = adapter_figures(check, c.adapter.apply(q2))
            log.info("%s: %s", c.kind, {k_: round(v, 4) for k_, v in c.figures.items()})
        chosen, decision = _choose(candidates, tolerance)
    counts = {"documents": n_docs, "heldout_documents": int(held_docs.sum()), "pieces": len(pairs.pieces),
              "heldout_pieces": int(held_piece.sum()), "fit_pairs": len(x),
              "distractors": 0 if index_v1 is None else len(index_v1) - n_docs}
    return FitOutcome(chosen, candidates, decision, baseline, counts, fit_seconds, check, (q1, q2))


def _choose(candidates: Sequence[Candidate], tolerance: float) -> tuple[Candidate, GateDecision]:
    """The best candidate by `selection_score` that the gate accepts, else the best one with its refusal."""
    ranked = sorted(candidates, key=lambda c: selection_score(c.figures), reverse=True)
    decisions = [(c, decide(c.figures, tolerance)) for c in ranked]
    passing = [(c, d) for c, d in decisions if d.accepted]
    return passing[0] if passing else decisions[0]
