"""Per-query metrics, TREC runs and the paired comparison, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from embedkd.evaluation import paired_comparison, per_query_metrics, read_trec_run, retrieval_metrics, write_trec_run
from indexer.errors import UserError


def test_paired_comparison_by_hand():
    a = np.array([0.5, 0.2, 0.9, 0.4])
    b = np.array([0.6, 0.4, 0.9, 0.3])
    # differences 0.1, 0.2, 0.0, -0.1: mean 0.05; sample sd = sqrt(((.05)^2+(.15)^2+(.05)^2+(.15)^2)/3)
    sd = math.sqrt((0.0025 + 0.0225 + 0.0025 + 0.0225) / 3)
    se = sd / 2
    r = paired_comparison(a, b)
    assert r["diff"] == pytest.approx(0.05)
    assert r["se"] == pytest.approx(se)
    t975 = 3.182446305284263  # Student t, 3 degrees of freedom, 97.5th percentile
    assert r["ci_low"] == pytest.approx(0.05 - t975 * se)
    assert r["ci_high"] == pytest.approx(0.05 + t975 * se)
    assert r["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert (r["b_better"], r["a_better"], r["ties"]) == (2, 1, 1)


def test_paired_comparison_sees_what_unpaired_means_hide():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 1, 300)  # queries vary far more than the systems do
    a = difficulty
    b = difficulty + 0.01 + rng.normal(0, 0.005, 300)
    r = paired_comparison(a, b)
    assert r["ci_low"] > 0 and r["p_value"] < 1e-6
    assert stats.ttest_ind(b, a).pvalue > 0.5  # the unpaired test cannot tell them apart


def test_paired_comparison_rejects_unpaired_input():
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison(np.zeros(3), np.zeros(4))


def test_per_query_metrics_average_to_retrieval_metrics():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {}}
    run = {"q1": {"d9": 0.9, "d1": 0.5}, "q2": {"d2": 0.8}}
    per = per_query_metrics(run, qrels)
    assert set(per) == {"q1", "q2"}  # unjudged q3 is not a query of the evaluation
    assert per["q1"]["mrr@10"] == pytest.approx(0.5)
    assert per["q1"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert per["q2"]["recall@100"] == pytest.approx(0.5)
    assert per["q2"]["ndcg@10"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    mean = retrieval_metrics(run, qrels)
    assert mean["ndcg@10"] == pytest.approx((per["q1"]["ndcg@10"] + per["q2"]["ndcg@10"]) / 2)


def test_trec_run_round_trip_and_bad_lines(tmp_path):
    run = {"q1": {"d1": 0.25, "d2": 0.75}, "q2": {"d3": 1.0}}
    path = write_trec_run(run, tmp_path / "r.trec", tag="t")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 0.750000 t" and lines[1] == "q1 Q0 d1 2 0.250000 t"
    assert read_trec_run(path) == run
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5\n")
    with pytest.raises(UserError, match="line 1 is not a TREC run line"):
        read_trec_run(bad)
    with pytest.raises(UserError, match="does not exist"):
        read_trec_run(tmp_path / "missing.trec")
