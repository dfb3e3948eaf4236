from __future__ import annotations

import numpy as np
import pytest

from reid.metrics import cosine_distance, evaluate_rank, first_match_ranks, paired_rank1_difference, re_ranking


def _hand_case():
    # gallery: g0 p1 c1 | g1 p2 c2 | g2 p1 c2 | g3 p3 c1 | g4 p1 c3
    g_pids = np.array([1, 2, 1, 3, 1])
    g_cams = np.array([1, 2, 2, 1, 3])
    q_pids = np.array([1, 2, 4])
    q_cams = np.array([1, 1, 1])
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5],  # q0: g0 same person+camera -> removed; ranks: g1 x, g2 hit, g3 x, g4 hit
            [0.5, 0.1, 0.2, 0.3, 0.4],  # q1: g1 is its only match, at rank 1
            [0.1, 0.2, 0.3, 0.4, 0.5],  # q2: person 4 is not in the gallery -> left out
        ]
    )
    return dist, q_pids, g_pids, q_cams, g_cams


def test_hand_worked_values():
    cmc, mean_ap = evaluate_rank(*_hand_case(), max_rank=5)
    # q0: first hit at rank 2, AP = (1/2 + 2/4) / 2 = 0.5; q1: rank 1, AP = 1
    np.testing.assert_allclose(cmc, [0.5, 1.0, 1.0, 1.0, 1.0])
    assert mean_ap == pytest.approx(0.75)


def test_first_match_ranks_agree_with_cmc():
    ranks = first_match_ranks(*_hand_case())
    assert ranks.tolist() == [1, 0, -1]  # q0 first hit at rank 2 (0-based 1), q1 at rank 1, q2 has none
    rng = np.random.default_rng(0)
    dist = rng.random((30, 40))
    q_pids, g_pids = rng.integers(0, 6, 30), rng.integers(0, 6, 40)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 40)
    ranks = first_match_ranks(dist, q_pids, g_pids, q_cams, g_cams)
    cmc, _ = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    valid = ranks >= 0
    np.testing.assert_allclose(cmc, [(ranks[valid] <= r).mean() for r in range(5)], rtol=1e-6)


def test_paired_rank1_difference_hand_values():
    # query 3 has no valid match for A: left out; hits A [1, 1, 0, 1], B [1, 0, 1, 0]
    d = paired_rank1_difference(np.array([0, 0, 1, -1, 0]), np.array([0, 2, 0, 0, 1]), resamples=2000)
    assert d["n"] == 4 and d["diff"] == pytest.approx(0.25) and (d["a_better"], d["b_better"]) == (2, 1)
    assert -1.0 <= d["ci"][0] <= 0.25 <= d["ci"][1] <= 1.0
    # two runs of A (seeds): a query's hit is the share of runs that rank its match first
    two = paired_rank1_difference(np.array([[0, 1], [1, 1]]), np.array([1, 1]))
    assert two["runs"] == [2, 1] and two["diff"] == pytest.approx(0.25)
    same = paired_rank1_difference(np.array([0, 3, 0]), np.array([0, 3, 0]))
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="different query sets"):
        paired_rank1_difference(np.array([0, 1]), np.array([0, 1, 2]))


def test_same_camera_match_is_excluded():
    dist, q_pids, g_pids, q_cams, g_cams = _hand_case()
    cmc, _ = evaluate_rank(dist, q_pids, g_pids, q_cams, np.array([9, 2, 2, 1, 3]), max_rank=1)
    assert cmc[0] == pytest.approx(1.0)  # g0 now from another camera: q0 matches at rank 1


def test_cmc_is_padded_when_gallery_is_short():
    one = np.array([1])
    cmc, _ = evaluate_rank(np.array([[0.2, 0.1]]), one, np.array([1, 2]), one, np.array([2, 2]), max_rank=4)
    np.testing.assert_allclose(cmc, [0.0, 1.0, 1.0, 1.0])


def test_no_valid_query_and_bad_shapes():
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank(np.zeros((1, 2)), np.array([1]), np.array([1, 2]), np.array([1]), np.array([1, 3]))
    with pytest.raises(ValueError, match="entries"):
        evaluate_rank(np.zeros((2, 2)), np.array([1]), np.array([1, 2]), np.array([1]), np.array([1, 3]))


def _naive(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
    cmcs, aps = [], []
    for i in range(len(q_pids)):
        ranked = [j for j in sorted(range(len(g_pids)), key=lambda j: (dist[i, j], j))
                  if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        rel = [g_pids[j] == q_pids[i] for j in ranked]
        if not any(rel):
            continue
        first = rel.index(True)
        cmcs.append([1.0 if r >= first else 0.0 for r in range(max_rank)])
        hits, precisions = 0, []
        for r, is_rel in enumerate(rel):
            if is_rel:
                hits += 1
                precisions.append(hits / (r + 1))
        aps.append(sum(precisions) / len(precisions))
    return np.mean(cmcs, axis=0), float(np.mean(aps))


def test_matches_naive_reference_on_random_data():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 8, 30), rng.integers(0, 8, 120)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    dist = rng.random((30, 120))
    cmc, mean_ap = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    ref_cmc, ref_ap = _naive(dist, q_pids, g_pids, q_cams, g_cams, 10)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert mean_ap == pytest.approx(ref_ap)


def test_re_ranking_keeps_clear_clusters_and_shape():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 16)) * 5
    g_pids = np.repeat(np.arange(4), 6)
    q_pids = np.arange(4)
    gf = centers[g_pids] + rng.normal(size=(24, 16))
    qf = centers[q_pids] + rng.normal(size=(4, 16))
    qg = cosine_distance(qf, gf)
    new = re_ranking(qg, cosine_distance(qf, qf), cosine_distance(gf, gf), k1=5, k2=2)
    assert new.shape == (4, 24)
    cmc, mean_ap = evaluate_rank(new, q_pids, g_pids, np.zeros(4), np.ones(24), max_rank=1)
    assert cmc[0] == 1.0 and mean_ap > 0.95
    assert not np.allclose(new, qg)


def test_cosine_distance():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine_distance(a, a), [[0.0, 1.0], [1.0, 0.0]], atol=1e-6)


def test_tracklet_crops_and_their_fusion_by_hand():
    from reid.evaluation import fuse_tracklets, tracklet_crops

    q_pids, q_cams = np.array([1, 2]), np.array([1, 1])
    g_pids, g_cams = np.array([1, 1, 1, 2, 3]), np.array([1, 2, 1, 1, 1])
    # person 1 from camera 1: gallery crops 0 and 2 (crop 1 is another camera); person 2: crop 3
    assert [c.tolist() for c in tracklet_crops(q_pids, q_cams, g_pids, g_cams, 2)] == [[0, 2], [3]]
    assert [c.tolist() for c in tracklet_crops(q_pids, q_cams, g_pids, g_cams, 1)] == [[0], [3]]
    qf = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    feats = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    fused = fuse_tracklets(qf, feats, [np.array([0, 2]), np.array([], dtype=np.int64)])
    # (1,0) + (0,1) + (0,1) = (1,2), unit length; a query without crops stays itself
    np.testing.assert_allclose(fused, [[1 / 5**0.5, 2 / 5**0.5], [0.0, 1.0]], atol=1e-6)
