"""The teacher check: a teacher that reranks dev candidates worse than the miner is refused."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.cli.main import main
from embedkd.distill.teacher_check import TeacherCheck, check_teacher, teacher_verdict
from tests.conftest import make_beir_slice, minilm_path

QUERIES = {"q1": "a", "q2": "b"}
CORPUS = {f"d{i}": f"doc {i}" for i in range(6)}
QRELS = {"q1": {"d2": 1}, "q2": {"d0": 1}}
# the miner ranks q1's relevant document 3rd and q2's 1st
CANDIDATES = {"q1": ["d0", "d1", "d2", "d3"], "q2": ["d0", "d4", "d5"]}


def _oracle(query: str, docs: list[str]) -> list[float]:
    qid = {v: k for k, v in QUERIES.items()}[query]
    rel = {CORPUS[d] for d in QRELS[qid]}
    return [1.0 if d in rel else 0.0 for d in docs]


def _anti_oracle(query: str, docs: list[str]) -> list[float]:
    return [-s for s in _oracle(query, docs)]


def test_check_scores_miner_order_and_teacher_rerank_by_hand():
    good = check_teacher(_oracle, QUERIES, CORPUS, CANDIDATES, QRELS, depth=4)
    # miner: q1 relevant at rank 3 -> 1/log2(4) = 0.5; q2 at rank 1 -> 1; mean 0.75
    assert good.miner_ndcg == pytest.approx(0.75)
    assert good.teacher_ndcg == pytest.approx(1.0) and good.queries == 2
    bad = check_teacher(_anti_oracle, QUERIES, CORPUS, CANDIDATES, QRELS, depth=4)
    # anti-oracle puts the relevant document last: q1 rank 4 -> 1/log2(5); q2 rank 3 -> 0.5
    assert bad.teacher_ndcg == pytest.approx((1 / 2.321928094887362 + 0.5) / 2)
    # paired per-query differences (0.4307 - 0.5, 0.5 - 1): two queries cannot show the teacher is worse
    assert bad.diff_se == pytest.approx(np.std([1 / 2.321928094887362 - 0.5, -0.5], ddof=1) / np.sqrt(2))
    assert teacher_verdict(bad) is None and teacher_verdict(good) is None


def test_verdict_refuses_only_a_clearly_worse_teacher():
    reason = teacher_verdict(TeacherCheck(0.34, 0.65, 64, 20, diff_se=0.04))
    assert reason and "worse than the first-stage miner" in reason and "--allow-weak-teacher" in reason
    assert teacher_verdict(TeacherCheck(0.695, 0.70, 64, 20, diff_se=0.001)) is None  # within 0.01
    assert teacher_verdict(TeacherCheck(0.68, 0.70, 64, 20, diff_se=0.001)) is not None
    assert teacher_verdict(TeacherCheck(0.62, 0.70, 64, 20, diff_se=0.05)) is None  # within dev-set noise


def test_check_needs_dev_queries():
    from indexer.errors import UserError

    with pytest.raises(UserError, match="no dev queries"):
        check_teacher(_oracle, QUERIES, CORPUS, {}, QRELS)


def test_distill_refuses_an_untrained_cross_encoder_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import torch
    from sentence_transformers import CrossEncoder

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)  # the classification head is freshly initialised: a teacher no better than chance
    CrossEncoder(minilm_path(), num_labels=1, max_length=32, device="cpu").save(str(tmp_path / "ce"))
    data = make_beir_slice(tmp_path / "b", 120, split="train")
    out = tmp_path / "o"
    rc = main(["distill", "--teacher", str(tmp_path / "ce"), "--student", f"prune:{minilm_path()}:1", "--data",
               str(data), "--out", str(out), "--loss", "margin-mse", "--max-length", "32"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "reranks" in err and "worse than the first-stage miner" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()
