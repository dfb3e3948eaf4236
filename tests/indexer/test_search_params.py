"""IVF nprobe / HNSW efSearch at search time: defaults that keep approximate search near exact, and overrides."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer import store
from indexer.build import build_index
from indexer.corpus import Doc, ListSource
from indexer.encoder import ModelRecord
from indexer.errors import UserError
from indexer.search import Searcher


class TableEncoder:
    """Looks each text up in a table of fixed vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        dim = len(next(iter(table.values())))
        self.record = ModelRecord(name="table", source="table", dimension=dim, fingerprint="t" * 64)

    def __call__(self, texts):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall_at_10(searcher: Searcher, queries: np.ndarray, docs: np.ndarray) -> float:
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    hits = searcher.search_vectors("ivf", queries, k=10)
    found = [{int(h.id[1:]) for h in row} for row in hits]
    return float(np.mean([len(f & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)]))


def test_ivf_default_nprobe_keeps_recall_and_can_be_overridden(sqlite_catalog):
    rng = np.random.default_rng(0)
    docs = _unit(rng.normal(size=(4000, 16)))
    table = {f"text {i}": v for i, v in enumerate(docs)}
    build_index(sqlite_catalog, "ivf", TableEncoder(table),
                ListSource([Doc(f"d{i}", f"text {i}") for i in range(len(docs))]), factory="IVF64,Flat", progress=False)
    queries = _unit(rng.normal(size=(100, 16)))  # off the data: their neighbours spread over several lists
    default = _recall_at_10(Searcher(sqlite_catalog), queries, docs)
    one_list = _recall_at_10(Searcher(sqlite_catalog, nprobe=1), queries, docs)
    every_list = _recall_at_10(Searcher(sqlite_catalog, nprobe=64), queries, docs)
    assert every_list == 1.0  # visiting all lists is exact search
    assert default >= 0.9 > one_list  # FAISS's own nprobe = 1 loses neighbours in the other lists


def test_search_params_on_each_index_type():
    x = _unit(np.random.default_rng(1).normal(size=(600, 8)))
    ivf = store.make_index(8, "IVF32,Flat")
    store.train_index(ivf, x, "IVF32,Flat")
    store.set_search_params(ivf)
    assert faiss.extract_index_ivf(store._inner(ivf)).nprobe == 16  # at least 16, at most nlist
    store.set_search_params(ivf, nprobe=500)
    assert faiss.extract_index_ivf(store._inner(ivf)).nprobe == 32
    hnsw = store.make_index(8, "HNSW8")
    store.set_search_params(hnsw, ef_search=40)
    assert store._inner(hnsw).hnsw.efSearch == 40
    assert store.default_nprobe(4096) == 256 and store.default_nprobe(100) == 16
    with pytest.raises(UserError, match="nprobe must be at least 1"):
        store.set_search_params(ivf, nprobe=0)


def test_mean_query_is_the_unit_mean_of_unit_vectors():
    from indexer.search import mean_query

    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(mean_query(q), [[0.5**0.5, 0.5**0.5]], atol=1e-6)  # mean (0.5, 0.5), made unit
    np.testing.assert_allclose(mean_query(q[:1]), q[:1])  # one vector is itself
    raw = np.array([[2.0, 0.0], [0.0, 4.0]], dtype=np.float32)  # not unit (an L2 index of raw vectors): plain mean
    np.testing.assert_allclose(mean_query(raw), [[1.0, 2.0]])
    assert mean_query(q).shape == (1, 2) and mean_query(q).dtype == np.float32
