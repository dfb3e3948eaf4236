"""Hard-negative selection and false-negative filtering (pure functions), and mining from an index."""

from __future__ import annotations

import numpy as np

from embedkd.distill.data import load_beir, split_dev
from embedkd.distill.negatives import (
    VectorLookupEncoder,
    ensure_mining_index,
    filter_false_negatives,
    search_candidates,
    select_negatives,
)
from indexer.encoder import ModelRecord


def test_filter_false_negatives_by_teacher_score():
    keep = filter_false_negatives(np.array([0.9, 0.5, 0.79, 0.2]), positive_score=0.8, margin=0.0)
    assert keep.tolist() == [False, True, True, True]
    keep = filter_false_negatives(np.array([0.9, 0.5, 0.79, 0.2]), positive_score=0.8, margin=0.1)
    assert keep.tolist() == [False, True, False, True]


def test_select_negatives_skips_positives_and_false_negatives():
    rng = np.random.default_rng(0)
    cands = ["p", "fn", "a", "b", "c"]
    scores = np.array([1.0, 0.95, 0.5, 0.4, 0.3])
    negs = select_negatives(cands, scores, positive_score=0.9, positives={"p"}, count=3, rng=rng)
    assert negs == ["a", "b", "c"]
    negs = select_negatives(cands, scores, 0.9, {"p"}, count=2, rng=rng)
    assert len(negs) == 2 and set(negs) <= {"a", "b", "c"}
    assert select_negatives(cands, scores, 0.9, {"p"}, count=2, rng=rng, skip_top=4) == ["c"]


def test_mining_from_an_indexer_index(sqlite_catalog):
    docs = {"d0": "alpha", "d1": "beta", "d2": "gamma"}
    vecs = np.eye(3, dtype=np.float32)
    record = ModelRecord(name="toy", source="toy", dimension=3, fingerprint="f" * 64)
    enc = VectorLookupEncoder(record, list(docs.values()), vecs, lambda t: np.zeros((len(t), 3), np.float32))
    name = ensure_mining_index(sqlite_catalog, "mine-toy", enc, docs, fingerprint="data")
    assert ensure_mining_index(sqlite_catalog, "mine-toy", enc, docs, fingerprint="data") == name  # reused
    hits = search_candidates(sqlite_catalog, name, np.array([[0.1, 0.9, 0.0]], np.float32), k=2)
    assert [d for d, _ in hits[0]] == ["d1", "d0"]


def test_split_dev_is_deterministic_and_disjoint(tmp_path):
    from tests.conftest import make_beir_slice

    beir = load_beir(make_beir_slice(tmp_path / "b", 30, split="train"))
    train, dev = split_dev(beir.qrels["train"], 0.3, seed=0)
    assert train and dev and not set(train) & set(dev)
    assert set(train) | set(dev) == set(beir.qrels["train"])
    assert split_dev(beir.qrels["train"], 0.3, seed=0) == (train, dev)
