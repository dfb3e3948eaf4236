"""Nearest neighbours among an allowed set of ids (a metadata filter), in one FAISS index.

FAISS skips ids outside an `IDSelector`, but an IVF search still visits only nprobe lists and HNSW
keeps only efSearch candidates, so a filter that allows a share s of the vectors meets s times fewer
allowed candidates: on 200k clustered vectors IVF1024 (nprobe 64) found 0.60 of the true filtered top 10
at s = 0.001, HNSW32 (ef 128) 0.24 at s = 0.01 and 0.03 at s = 0.001. So IVF visits nprobe / s lists
(at most all), meeting as many allowed candidates as an unfiltered search. HNSW keeps efSearch / s
candidates; that walk grows as 1/s (1.8 s a query at s = 0.001 on 100k), so an allowed set smaller than the
distances the walk would compute (and at most `EXACT_MAX`) is scored exactly instead. Flat and SQ scan
everything and only skip. Index types that take no selector (PQ without IVF, RQ, NSG, refine) score
allowed sets up to `EXACT_MAX` exactly from their stored codes, as their own search does, and refuse
larger ones. Figures: docs/index_benchmark.md (*Filtered search*).
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from . import store
from .errors import UserError

__all__ = ["EXACT_MAX", "plan", "search"]

EXACT_MAX = 20_000  # the most allowed vectors scored exactly (HNSW, or no selector): 30 MB at 384-d


def search(index: Any, q: np.ndarray, k: int, allowed: np.ndarray | None = None,
           excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top k of `index` for queries `q`, among the ids in `allowed` (ascending int64; None: every id) or, with
    no `allowed`, among all ids but `excluded` (deleted ones still in the file: a few, `shards.MAX_DELETED`).
    Rows have -1 ids past the number of allowed vectors found."""
    if allowed is None and excluded is not None and len(excluded):
        return _without(index, q, k, excluded)
    if allowed is None:
        return index.search(q, k)
    if not isinstance(index, faiss.Index):  # a search-only GPU copy (gpu.TorchExactIndex) filters itself
        return index.search(q, k, allowed)
    if not len(allowed):
        return _nothing(index, len(q), k)
    how, setting = plan(index, len(allowed), k)
    if how == "exact":
        return _exact(index, q, k, allowed)
    params = _params(faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed)), how, setting)
    try:
        return index.search(q, k, params=params)
    except RuntimeError as err:  # PQ, RQ, NSG and refine indexes take no selector ("... params ...")
        if "params" not in str(err):
            raise
        if len(allowed) <= EXACT_MAX:
            return _exact(index, q, k, allowed)
        inner = store._inner(index)
        raise UserError(
            f"a FAISS {type(inner).__name__} index cannot filter a search ({str(err).strip().splitlines()[-1]}) and "
            f"the filter allows {len(allowed)} items, more than the {EXACT_MAX} scored one by one; narrow the filter, "
            "or build the index with a factory that filters (Flat, SQ8, HNSW32, IVF…)"
        ) from None


def _without(index: Any, q: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top k but the excluded ids: skipped by a selector at the index's own nprobe / efSearch; index types that
    take none (and GPU copies) search k + len(excluded) and drop them."""
    if isinstance(index, faiss.Index):
        inner = store._inner(index)
        ivf = faiss.try_extract_index_ivf(inner)
        how, setting = (("ivf", ivf.nprobe) if ivf is not None else
                        ("hnsw", inner.hnsw.efSearch) if isinstance(inner, faiss.IndexHNSW) else ("selector", None))
        batch = faiss.IDSelectorBatch(len(excluded), faiss.swig_ptr(excluded))  # kept alive: the Not holds a pointer
        try:
            return index.search(q, k, params=_params(faiss.IDSelectorNot(batch), how, setting))
        except RuntimeError as err:  # PQ, RQ, NSG and refine indexes take no selector
            if "params" not in str(err):
                raise
    scores, ids = index.search(q, min(k + len(excluded), int(index.ntotal)))
    out_scores, out_ids = _nothing(index, len(q), k)
    for row in range(len(q)):
        keep = (ids[row] >= 0) & ~np.isin(ids[row], excluded)
        n = min(k, int(keep.sum()))
        out_scores[row, :n], out_ids[row, :n] = scores[row][keep][:n], ids[row][keep][:n]
    return out_scores, out_ids


def _params(sel: faiss.IDSelector, how: str, setting: int | None) -> faiss.SearchParameters:
    """Search parameters applying `sel` at `plan`'s nprobe ("ivf") or efSearch ("hnsw"), or as a plain scan."""
    if how == "ivf":
        return faiss.SearchParametersIVF(sel=sel, nprobe=setting)
    if how == "hnsw":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=setting)
    return faiss.SearchParameters(sel=sel)


def plan(index: faiss.Index, n_allowed: int, k: int = 10) -> tuple[str, int | None]:
    """How a search of `index` filtered to `n_allowed` ids runs: ("ivf", nprobe), ("hnsw", efSearch),
    ("exact", None: the allowed vectors scored one by one) or ("selector", None: a full scan that skips)."""
    inner = store._inner(index)
    share = n_allowed / max(int(index.ntotal), 1)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        return "ivf", min(int(ivf.nlist), math.ceil(ivf.nprobe / share))
    if isinstance(inner, faiss.IndexHNSW):
        ef = max(inner.hnsw.efSearch, k, min(math.ceil(inner.hnsw.efSearch / share), int(index.ntotal)))
        # the walk computes up to ef x (level-0 neighbours) distances: score the allowed set when that is fewer
        if n_allowed <= min(EXACT_MAX, ef * 2 * inner.hnsw.nb_neighbors(1)):
            return "exact", None
        return "hnsw", ef
    return "selector", None


def _exact(index: faiss.Index, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, vectors = _allowed_vectors(index, allowed)
    out_scores, out_ids = _nothing(index, len(q), k)
    n = min(k, len(ids))
    if n:
        # FAISS's own brute force, not numpy: a numpy matmul right after FAISS's OpenMP work ran 5x slower here
        scores, pos = faiss.knn(np.ascontiguousarray(q, np.float32), vectors, n, metric=index.metric_type)
        out_scores[:, :n], out_ids[:, :n] = scores, ids[pos]
    return out_scores, out_ids


def _nothing(index: faiss.Index, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of no result, as FAISS pads them: id -1 and the worst score."""
    worst = np.inf if index.metric_type == faiss.METRIC_L2 else -np.inf
    return np.full((n, k), worst, np.float32), np.full((n, k), -1, np.int64)


def _allowed_vectors(index: faiss.Index, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The allowed ids this index holds (a filter may name others) and their stored vectors."""
    stored = store.stored_ids(index)
    if not np.all(stored[1:] >= stored[:-1]):  # ids go in ascending; sort only if some write did otherwise
        stored = np.sort(stored)
    pos = np.minimum(np.searchsorted(stored, allowed), max(len(stored) - 1, 0))  # not intersect1d: 20x slower
    ids = allowed[stored[pos] == allowed] if len(stored) else allowed[:0]
    return ids, index.reconstruct_batch(ids) if len(ids) else np.zeros((0, index.d), np.float32)
