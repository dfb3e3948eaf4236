"""Pseudo-queries cut from the corpus for the teacher to label."""

from __future__ import annotations

from embedkd.distill.pseudo import PREFIX, pseudo_queries
from embedkd.upgrade.sampling import split_sentences

CORPUS = {
    "d1": "Statins lower cholesterol in adults. They also reduce the risk of stroke in trials.",
    "d2": "Too short.",
    "d3": "Aspirin thins the blood of most patients. Its daily use remains debated among doctors.",
    "d4": "Vitamin D levels vary with the seasons in northern countries.",
}


def test_each_pseudo_query_is_a_sentence_of_its_source_document():
    queries, qrels = pseudo_queries(CORPUS, 10, seed=0)
    assert set(queries) == set(qrels) == {f"{PREFIX}d1", f"{PREFIX}d3", f"{PREFIX}d4"}  # d2 has no sentence
    for qid, text in queries.items():
        (doc,) = qrels[qid]
        assert qid == PREFIX + doc and qrels[qid][doc] == 1
        assert text in split_sentences(CORPUS[doc])


def test_count_seed_and_exclusion():
    a, _ = pseudo_queries(CORPUS, 2, seed=3)
    b, _ = pseudo_queries(CORPUS, 2, seed=3)
    assert a == b and len(a) == 2
    kept, _ = pseudo_queries(CORPUS, 10, seed=0, exclude={"d1", "d4"})
    assert set(kept) == {f"{PREFIX}d3"}  # judged evaluation documents never give a query
    assert pseudo_queries(CORPUS, 0) == ({}, {})
