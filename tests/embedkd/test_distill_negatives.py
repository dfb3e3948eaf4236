"""Hard-negative selection and false-negative filtering (pure functions), and mining from an index."""

from __future__ import annotations

import numpy as np

from embedkd.distill.data import load_beir, split_dev
from embedkd.distill.negatives import (
    VectorLookupEncoder,
    ensure_mining_index,
    filter_false_negatives,
    sample_negatives_lazily,
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


def test_lazy_sampling_scores_few_and_never_keeps_a_false_negative():
    cands = [f"d{i}" for i in range(40)]
    truth = {c: (0.95 if i % 4 == 0 else 0.1 * (i % 7)) for i, c in enumerate(cands)}  # every 4th: a false negative
    calls: list[list[str]] = []

    def score(ds):
        calls.append(list(ds))
        return np.array([truth[d] for d in ds])

    rng = np.random.default_rng(0)
    cache: dict[str, float] = {}
    negs, dropped = sample_negatives_lazily(cands, score, positive_score=0.9, count=3, rng=rng, scored=cache)
    assert len(negs) == 3 and all(truth[d] < 0.9 for d in negs)
    assert negs == sorted(negs, key=cands.index)  # kept in rank order
    assert sum(len(c) for c in calls) < len(cands) // 2  # scored only a few of the 40
    assert dropped == sum(1 for d in cache if truth[d] >= 0.9)
    n_calls, known = len(calls), set(cache)
    sample_negatives_lazily(cands[:8], score, 0.9, count=3, rng=rng, scored=cache)
    assert not {d for c in calls[n_calls:] for d in c} & known  # cached scores are not recomputed
    # too few pass: returns what there is, having scored everything once
    few, _ = sample_negatives_lazily(["d0", "d4", "d1"], score, 0.9, count=3, rng=rng)
    assert few == ["d1"]


def test_lazy_sampling_is_uniform_over_the_kept_pool():
    cands = ["a", "fn", "b", "c", "d"]
    scores = {"a": 0.1, "fn": 0.99, "b": 0.2, "c": 0.3, "d": 0.4}
    rng = np.random.default_rng(1)
    counts = dict.fromkeys("abcd", 0)
    for _ in range(2000):
        negs, _ = sample_negatives_lazily(cands, lambda ds: np.array([scores[d] for d in ds]), 0.9, 2, rng)
        for d in negs:
            counts[d] += 1
    assert "fn" not in counts or counts.get("fn", 0) == 0
    assert all(abs(c / 2000 - 0.5) < 0.05 for c in counts.values())  # each of 4 kept picked half the time


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
