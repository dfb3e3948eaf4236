"""The ranking adapter: trained to rank v1's stored vectors as the reindex ranks v2's."""

from __future__ import annotations

import numpy as np

from embedkd.upgrade.heldout import neighbour_agreement, top_k
from embedkd.upgrade.linear import fit_procrustes
from embedkd.upgrade.rank import fit_rank
from indexer.adapters import load_adapter, save_adapter


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _world(seed: int = 0):
    """v2 re-embeds documents by a non-orthogonal map of v1's space: a query moved to where v1 would put
    it (what regression learns) ranks v1's vectors unlike the reindex does."""
    rng = np.random.default_rng(seed)
    d = 16
    docs_v1 = _unit(rng.normal(size=(300, d)))
    a = np.eye(d) + 0.9 * rng.normal(size=(d, d)) / np.sqrt(d)
    docs_v2 = _unit(docs_v1 @ a)
    owner = rng.integers(0, len(docs_v1), 1500)
    noise = rng.normal(size=(len(owner), d))
    q_v1 = _unit(docs_v1[owner] + 0.6 * noise)
    q_v2 = _unit((docs_v1[owner] + 0.6 * noise) @ a)
    return docs_v1, docs_v2, q_v1, q_v2


def test_rank_adapter_agrees_with_the_reindex_better_than_procrustes(tmp_path):
    docs_v1, docs_v2, q_v1, q_v2 = _world()
    fit, val, held = slice(0, 1000), slice(1000, 1200), slice(1200, 1500)
    rank = fit_rank(q_v2[fit], q_v1[fit], q_v2[val], q_v1[val], docs_v2, docs_v1, hidden=64, epochs=30, lr=3e-3,
                    patience=5)
    pro = fit_procrustes(np.vstack([q_v2[fit], q_v2[val]]), np.vstack([q_v1[fit], q_v1[val]]))
    reindex = top_k(q_v2[held], docs_v2, 10)
    agree_rank = neighbour_agreement(top_k(rank.apply(q_v2[held]), docs_v1, 10), reindex)
    agree_pro = neighbour_agreement(top_k(pro.apply(q_v2[held]), docs_v1, 10), reindex)
    assert rank.info["mlp_used"] and rank.info["val_kl"] < rank.info["val_kl_procrustes"]
    assert agree_rank > agree_pro + 0.02, (agree_rank, agree_pro)  # seen: 0.788 vs 0.755
    # documents take the Procrustes part only (the MLP is a query-side ranking correction)
    docs = rank.for_documents()
    assert docs.w1 is None and docs.kind == "rank/documents"
    np.testing.assert_allclose(docs.apply(q_v2[held]), pro.apply(q_v2[held]), atol=1e-5)
    # the file round trip keeps it exactly
    path = tmp_path / "rank.npz"
    checksum = save_adapter(rank, path)
    again = load_adapter(path, checksum=checksum)
    np.testing.assert_array_equal(again.apply(q_v2[held]), rank.apply(q_v2[held]))
