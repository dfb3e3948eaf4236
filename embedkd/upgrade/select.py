"""Fit the candidate adapter kinds on paired vectors and pick one by a held-out check (`auto`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.adapters import Adapter
from indexer.errors import UserError

from .linear import fit_affine, fit_identity, fit_low_rank, fit_mean_shift, fit_procrustes, fit_score_map

__all__ = ["CANDIDATES", "KINDS", "Candidate", "fit_candidates", "fit_kind", "group_split", "pick_best"]

KINDS = ("mean-shift", "procrustes", "affine", "low-rank", "mlp", "rank", "score-map")
# what `auto` tries (mean-shift only where the dimensions agree). Not the score map: on SciFact it
# agreed best with the reindex on held-out pieces yet ranked labelled queries worse than Procrustes
# (docs/upgrade.md), so the label-free check cannot be trusted to choose it; ask for it by name.
CANDIDATES = ("mean-shift", "procrustes", "affine", "low-rank", "mlp", "rank")


@dataclass
class Candidate:
    kind: str
    adapter: Adapter
    fit_seconds: float
    figures: dict[str, float] = field(default_factory=dict)


def group_split(groups: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask selecting about `fraction` of the distinct groups (documents), seeded."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(uniq, max(1, round(fraction * len(uniq))), replace=False) if len(uniq) > 1 else uniq[:0]
    return np.isin(groups, chosen)


def fit_kind(kind: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             docs: tuple[np.ndarray, np.ndarray] | None = None) -> Adapter:
    """Fit one adapter kind; x_val/y_val pick hyper-parameters (ridge strength, rank, early stopping).
    `docs` = (v2, v1) vectors of the fitting documents: the candidates the `rank` kind ranks."""
    if kind == "identity":
        return fit_identity(x, y)
    if kind == "mean-shift":
        return fit_mean_shift(np.vstack([x, x_val]), np.vstack([y, y_val]))
    if kind == "procrustes":
        return fit_procrustes(np.vstack([x, x_val]), np.vstack([y, y_val]))
    if kind == "affine":
        return fit_affine(x, y, x_val, y_val)
    if kind == "low-rank":
        return fit_low_rank(x, y, x_val, y_val)
    if kind == "score-map":
        return fit_score_map(x, y, x_val, y_val)
    if kind == "mlp":
        from .mlp import fit_mlp

        return fit_mlp(x, y, x_val, y_val)
    if kind == "rank":
        if docs is None or len(docs[0]) == 0:
            raise UserError("the rank adapter needs the sampled documents' v1 and v2 vectors")
        from .rank import fit_rank

        return fit_rank(x, y, x_val, y_val, docs[0], docs[1])
    raise UserError(f"unknown adapter kind {kind!r}; use one of auto, {', '.join(KINDS)}")


def fit_candidates(x: np.ndarray, y: np.ndarray, groups: np.ndarray, kinds: Sequence[str],
                   seed: int = 0, log: Callable[[str], None] | None = None,
                   docs: tuple[np.ndarray, np.ndarray] | None = None) -> list[Candidate]:
    """Fit each kind on (x, y); 20% of the groups (documents) are the inner validation pairs."""
    val = group_split(groups, 0.2, seed)
    if val.all() or not val.any():
        raise UserError("too few documents to fit an adapter; sample at least 10 documents")
    out = []
    for kind in kinds:
        if kind == "mean-shift" and x.shape[1] != y.shape[1]:
            continue
        if kind == "identity" and x.shape[1] != y.shape[1]:
            continue
        t0 = time.perf_counter()
        adapter = fit_kind(kind, x[~val], y[~val], x[val], y[val], docs)
        out.append(Candidate(kind, adapter, time.perf_counter() - t0))
        if log:
            log(f"fitted {kind} in {out[-1].fit_seconds:.2f}s")
    return out


def pick_best(candidates: Sequence[Candidate], score: Callable[[Candidate], float]) -> Candidate:
    """The candidate with the highest score (ties: the earlier, simpler kind)."""
    if not candidates:
        raise UserError("no adapter kind applies to these models")
    best = candidates[0]
    for c in candidates[1:]:
        if score(c) > score(best) + 1e-9:
            best = c
    return best
