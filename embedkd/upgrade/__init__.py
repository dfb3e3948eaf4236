"""Model upgrade without reindexing: fit a query-drift adapter v2 -> v1, gate it, register it.

Small modules, one concept each:

* `sampling`   query-like pieces of the index's own content (titles, sentences, short spans)
* `linear`     closed-form fits: QDC mean shift, orthogonal Procrustes, ridge and low-rank affine
* `mlp`        the residual MLP (Drift-Adapter), trained in torch, exported to numpy
* `heldout`    label-free held-out checks on arrays: agreement with a reindex, self-retrieval
* `select`     fit the candidates and keep the best by the held-out check (`auto`)
* `gate`       the safety gate's decision and its one-line reason
* `pairs`      paired v1/v2 vectors for an index (stored vectors or re-encoded)
* `fit`        the whole `embedkd upgrade fit` flow; `register` writes the file and catalog row
* `report`     the compatibility matrix (JSON + PNG); `continual` QDC's stability term for training
"""

from __future__ import annotations

from .gate import GateDecision, decide
from .heldout import neighbour_agreement, self_retrieval
from .linear import fit_affine, fit_low_rank, fit_mean_shift, fit_procrustes
from .sampling import Piece, query_like_pieces
from .select import CANDIDATES, Candidate, fit_candidates

__all__ = [
    "CANDIDATES",
    "Candidate",
    "GateDecision",
    "Piece",
    "decide",
    "fit_affine",
    "fit_candidates",
    "fit_low_rank",
    "fit_mean_shift",
    "fit_procrustes",
    "neighbour_agreement",
    "query_like_pieces",
    "self_retrieval",
]
