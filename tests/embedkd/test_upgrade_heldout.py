"""Held-out checks, the gate's decisions, query-like sampling, candidate selection."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.upgrade.gate import decide
from embedkd.upgrade.heldout import (
    adapter_figures,
    heldout_check,
    ndcg_single,
    neighbour_agreement,
    neighbour_overlap,
    self_retrieval,
    top_k,
)
from embedkd.upgrade.sampling import query_like_pieces, sample_indices, split_sentences
from embedkd.upgrade.select import fit_candidates, group_split, pick_best


def test_top_k_matches_argsort():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(9, 4)), rng.normal(size=(30, 4))
    naive = np.argsort(-(q @ c.T), axis=1)[:, :5]
    np.testing.assert_array_equal(top_k(q, c, 5, block=4), naive)


def test_agreement_and_ndcg_hand_values():
    assert neighbour_agreement(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5
    ndcg, rr = ndcg_single(np.array([[5, 1, 2], [1, 5, 2], [1, 2, 3]]), np.array([5, 5, 5]), k=3)
    np.testing.assert_allclose(ndcg, [1.0, 1 / np.log2(3), 0.0])
    np.testing.assert_allclose(rr, [1.0, 0.5, 0.0])
    docs = np.eye(3)
    assert self_retrieval(np.eye(3), docs, np.array([0, 1, 2]), k=2) == {"ndcg": 1.0, "mrr": 1.0}


def test_adapter_figures_perfect_adapter():
    rng = np.random.default_rng(1)
    d1 = rng.normal(size=(20, 4))
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    r, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    d2 = d1 @ r
    q1 = d1[:5] + 0.01
    f = adapter_figures(heldout_check(q1, q1 @ r, d1, d2, np.arange(5), k=3), q1)
    assert f["agree_adapted"] == pytest.approx(1.0) and f["agree_v1"] == pytest.approx(1.0)
    assert f["self_adapted"] == f["self_v1"] == f["self_v2"] == 1.0


def test_heldout_self_retrieval_among_distractors():
    # the adapted queries still find their documents among the sample (3 orthogonal documents), but an
    # index document outside the sample sits between each adapted query and its document
    docs = np.eye(4)[:3]
    q_adapted = np.array([[0.8, 0.0, 0.0, 0.6], [0.0, 0.8, 0.0, 0.6], [0.0, 0.0, 0.8, 0.6]])
    distractors = np.array([[0.6, 0.0, 0.0, 0.8], [0.0, 0.6, 0.0, 0.8], [0.0, 0.0, 0.6, 0.8]])
    plain = adapter_figures(heldout_check(docs, docs, docs, docs, np.arange(3), k=1), q_adapted)
    assert plain["self_adapted"] == plain["self_v1"] == 1.0 and "self_v1_index" not in plain
    index_v1 = np.vstack([docs, distractors])  # the sample as the index holds it, then the others
    f = adapter_figures(heldout_check(docs, docs, docs, docs, np.arange(3), k=1, index_v1=index_v1), q_adapted)
    assert f["self_v1_index"] == 1.0 and f["self_adapted_index"] == 0.0
    assert f["self_adapted"] == 1.0  # the sample-only figure is unchanged
    refused = decide({"agree_v1": 0.5, "agree_adapted": 0.6, **f})
    assert not refused.accepted and "among the index's documents" in refused.reason


def test_gate_decisions():
    ok = {"agree_v1": 0.5, "agree_adapted": 0.6, "self_v1": 0.8, "self_adapted": 0.8}
    assert decide(ok).accepted
    worse = decide({**ok, "agree_adapted": 0.4})
    assert not worse.accepted and "less than v1" in worse.reason and "backfill" in worse.reason
    assert "\n" not in worse.reason
    assert not decide({**ok, "self_adapted": 0.79}).accepted
    assert decide({**ok, "self_adapted": 0.796}).accepted  # within the 0.005 tolerance
    # among the index's documents, where the fit had them, instead of among the sample
    assert not decide({**ok, "self_v1_index": 0.7, "self_adapted_index": 0.69}).accepted
    assert decide({**ok, "self_adapted": 0.7, "self_v1_index": 0.7, "self_adapted_index": 0.698}).accepted
    assert not decide({**ok, "ndcg_v1": 0.6, "ndcg_adapted": 0.59}).accepted
    # labelled queries are the real measurement: the label-free stand-in no longer vetoes...
    assert decide({**ok, "self_adapted": 0.79, "ndcg_v1": 0.6, "ndcg_adapted": 0.62}).accepted
    # ...but rule 1 still does
    assert not decide({**ok, "agree_adapted": 0.4, "ndcg_v1": 0.6, "ndcg_adapted": 0.62}).accepted


def test_sentences_and_pieces():
    text = "Cells divide. The p53 gene stops tumours in mice. Results (n=5) were clear and strong here. Ok."
    assert split_sentences(text) == ["The p53 gene stops tumours in mice.", "Results (n=5) were clear and strong here."]
    docs = ["A title of words " + text, "short"]
    pieces = query_like_pieces(docs, ["A title of words", None], sentences_per_doc=1, spans_per_doc=2, seed=0)
    assert pieces[0].kind == "title" and pieces[0].text == "A title of words"
    assert [p.kind for p in pieces].count("sentence") == 1
    assert all(p.doc == 0 for p in pieces)  # "short" has no sentence or span of 6+ words
    spans = [p for p in pieces if p.kind == "span"]
    assert len(spans) == 2 and all(6 <= len(s.text.split()) <= 16 and s.text in text for s in spans)
    assert pieces == query_like_pieces(docs, ["A title of words", None], sentences_per_doc=1, spans_per_doc=2, seed=0)
    np.testing.assert_array_equal(sample_indices(5, 10), np.arange(5))
    assert len(set(sample_indices(100, 10).tolist())) == 10


def test_group_split_keeps_groups_whole():
    groups = np.repeat(np.arange(10), 3)
    mask = group_split(groups, 0.2)
    assert mask.sum() == 6
    for g in range(10):
        assert len(set(mask[groups == g].tolist())) == 1


def test_fit_candidates_and_pick_best():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    r, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    y = (x @ r + 0.2).astype(np.float32)
    cands = fit_candidates(x, y, np.arange(400) // 4, ["mean-shift", "procrustes", "affine", "low-rank"])
    assert [c.kind for c in cands] == ["mean-shift", "procrustes", "affine", "low-rank"]
    best = pick_best(cands, lambda c: -np.mean((c.adapter.apply(x) - y / np.linalg.norm(y, axis=1, keepdims=True)) ** 2))
    assert best.kind in ("procrustes", "affine", "low-rank")
    # mean-shift is skipped when the dimensions differ
    cands = fit_candidates(x, y[:, :3], np.arange(400) // 4, ["mean-shift", "procrustes"])
    assert [c.kind for c in cands] == ["procrustes"]


def test_agreement_gain_standard_error_and_the_blend_rule():
    reindex = np.array([[0, 1], [2, 3], [4, 5]])
    v1 = np.array([[0, 9], [9, 8], [4, 5]])  # overlaps 0.5, 0, 1
    np.testing.assert_allclose(neighbour_overlap(v1, reindex), [0.5, 0.0, 1.0])
    docs = np.eye(10, dtype=np.float32)
    check = heldout_check(docs[[0, 9, 4]], docs[[0, 2, 4]], docs, docs, np.array([0, 2, 4]), k=1)
    # v1 finds 0, 9, 4; the reindex 0, 2, 4: v1 agrees on 2 of 3. An adapter finding 0, 2, 4 gains (0, 1, 0)
    fig = adapter_figures(check, docs[[0, 2, 4]])
    assert fig["agree_v1"] == pytest.approx(2 / 3) and fig["agree_adapted"] == pytest.approx(1.0)
    assert fig["agree_gain_se"] == pytest.approx(np.std([0, 1, 0], ddof=1) / np.sqrt(3))
    # as a plain adapter it passes rule 1; as a blend the gain (1/3) is within 2 SE (0.67): refused
    assert decide(fig).accepted
    refused = decide({**fig, "blend": 0.5})
    assert not refused.accepted and "not clearly more than v1" in refused.reason
    assert decide({**fig, "blend": 0.5, "agree_gain_se": 0.1}).accepted
