"""BM25 fused into a bi-encoder teacher (`--lexical`): normalisation, lookups, the fused run and score."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.bm25 import bm25_run
from embedkd.distill.data import load_beir
from embedkd.distill.lexical import LexicalScorer, fused_run, fused_scores
from embedkd.distill.teachers import load_teacher
from tests.conftest import SCIFACT, minilm_path


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    data = load_beir(SCIFACT)
    return list(data.corpus.values())[:200]


@pytest.fixture(scope="module")
def scorer(corpus) -> LexicalScorer:
    return LexicalScorer(corpus)


def test_scores_are_normalised_by_the_querys_best_match(scorer, corpus):
    query = corpus[7].split(".")[0]  # a sentence of document 7: BM25 finds it
    scores = scorer.corpus_scores(query)
    assert scores.shape == (len(corpus),) and scores.dtype == np.float32
    assert scores.max() == pytest.approx(1.0) and scores.min() >= 0
    assert int(np.argmax(scores)) == 7
    # stemming: an inflected form of a word matches the document that has it
    assert scorer.corpus_scores("proteins")[corpus.index(next(d for d in corpus if " protein " in d))] > 0


def test_queries_without_known_words_score_zero_everywhere(scorer):
    assert not scorer.corpus_scores("zzqxj wvvkk").any()
    assert not scorer.corpus_scores("the of and").any()  # stop words only


def test_score_and_matrix_address_documents_by_text(scorer, corpus):
    query = "vitamin D deficiency and bone density"
    full = scorer.corpus_scores(query)
    np.testing.assert_array_equal(scorer.score(query, [corpus[3], corpus[0]]), full[[3, 0]])
    m = scorer.matrix([query, "cancer"], [corpus[1], corpus[2], corpus[1]])
    assert m.shape == (2, 3)
    np.testing.assert_array_equal(m[0], full[[1, 2, 1]])
    with pytest.raises(ValueError, match="only for documents of the corpus"):
        scorer.score(query, ["a document that is not in the corpus"])


def test_fused_run_is_the_exact_top_k_of_cosine_plus_weighted_bm25(scorer, corpus):
    rng = np.random.default_rng(0)
    doc_vecs = rng.normal(size=(len(corpus), 8)).astype(np.float32)
    queries = ["gene expression in tumours", "insulin resistance", "vaccine efficacy in children"]
    qvecs = rng.normal(size=(3, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(len(corpus))]
    run = fused_run(["a", "b", "c"], queries, qvecs, ids, doc_vecs, scorer, 0.7, k=5, chunk=2)
    for row, qid in enumerate("abc"):
        full = fused_scores(qvecs[row] @ doc_vecs.T, scorer.corpus_scores(queries[row]), 0.7)
        best = np.argsort(-full)[:5]
        assert set(run[qid]) == {ids[j] for j in best}
        assert run[qid][ids[best[0]]] == pytest.approx(float(full[best[0]]))


def test_fused_teacher_scores_cosine_plus_weighted_bm25(scorer, corpus, tmp_path):
    teacher = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path)
    query, docs = "vitamin D and bone health", corpus[:4]
    cosine = teacher.score(query, docs)
    teacher.fuse_lexical(scorer, 0.5)
    np.testing.assert_allclose(teacher.score(query, docs), cosine + 0.5 * scorer.score(query, docs), atol=1e-6)
    np.testing.assert_allclose(teacher.lexical_matrix([query], docs)[0], 0.5 * scorer.score(query, docs))
    teacher.fuse_lexical(scorer, 0.0)  # weight 0: the plain teacher again
    np.testing.assert_allclose(teacher.score(query, docs), cosine, atol=1e-6)
    assert teacher.lexical_matrix([query], docs) is None


def test_fused_run_leaves_out_a_querys_own_id_as_exact_run_does(scorer, corpus):
    """BEIR's rule (ArguAna, Quora store each query in the corpus under its own id): the document with
    the query's id is dropped unless the qrels judge it relevant; the run still has k documents."""
    rng = np.random.default_rng(1)
    doc_vecs = rng.normal(size=(len(corpus), 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(len(corpus))]
    query = corpus[7].split(".")[0]  # BM25 puts document 7 first
    run = fused_run(["d7"], [query], np.zeros((1, 8), np.float32), ids, doc_vecs, scorer, 1.0, k=5)
    assert "d7" not in run["d7"] and len(run["d7"]) == 5
    kept = fused_run(["d7"], [query], np.zeros((1, 8), np.float32), ids, doc_vecs, scorer, 1.0, k=5,
                     qrels={"d7": {"d7": 1}})
    assert max(kept["d7"], key=kept["d7"].get) == "d7" and len(kept["d7"]) == 5


def test_bm25_run_is_each_querys_top_k_by_bm25_without_its_own_id(scorer, corpus):
    ids = [f"d{i}" for i in range(len(corpus))]
    queries = {"q1": corpus[5].split(".")[0], "d3": corpus[3].split(".")[0], "q0": "zzqxj"}
    run = bm25_run(list(queries), list(queries.values()), ids, scorer, k=5)
    for qid, text in queries.items():
        scores = scorer.corpus_scores(text)
        expected = [ids[j] for j in np.argsort(-scores, kind="stable") if scores[j] > 0 and ids[j] != qid][:5]
        assert list(run[qid]) == expected
    assert run["q1"] and next(iter(run["q1"])) == "d5" and run["q0"] == {}  # no shared term: nothing ranked
    kept = bm25_run(["d3"], [queries["d3"]], ids, scorer, k=5, drop_identical=False)
    assert next(iter(kept["d3"])) == "d3"  # its own sentence: its own document first, when kept
    with pytest.raises(ValueError, match="document ids"):
        bm25_run(["q"], ["x"], ids[:3], scorer)


def test_languages_other_than_english_stem_with_their_own_rules_and_bad_ones_are_refused():
    from indexer.errors import UserError

    french = LexicalScorer(["les chats noirs dorment", "un chien court"], language="french")
    assert french.corpus_scores("chat")[0] == pytest.approx(1.0)  # chats -> chat
    assert not french.corpus_scores("les un").any()  # French stop words
    with pytest.raises(UserError, match="no Snowball stemmer for language 'klingon'.*english"):
        LexicalScorer(["x"], language="klingon")


def test_hybrid_mining_appends_the_bm25_documents_the_dense_miner_missed(tmp_path):
    from embedkd.bm25 import LexicalScorer as Scorer
    from embedkd.distill.pipeline import add_lexical_candidates

    data = load_beir(SCIFACT)
    qids = sorted(data.qrels["train"])[:5]
    scorer = Scorer(list(data.corpus.values()))
    doc_ids = list(data.corpus)
    dense = {q: doc_ids[i * 3 : i * 3 + 4] for i, q in enumerate(qids)}
    dense["other"] = ["x"]
    merged, added = add_lexical_candidates(dense, data, qids, scorer, per_query=6)
    assert merged["other"] == ["x"]  # queries not asked about keep their candidates
    total = 0
    for q in qids:
        bm25_top = list(bm25_run([q], [data.queries[q]], doc_ids, scorer, k=6, drop_identical=False)[q])
        assert merged[q][:4] == dense[q]  # the dense order first
        assert merged[q][4:] == [d for d in bm25_top if d not in dense[q]]
        assert len(set(merged[q])) == len(merged[q])
        total += len(merged[q]) - 4
    assert added == total > 0
