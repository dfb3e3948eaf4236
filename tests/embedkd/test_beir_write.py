"""The BEIR writer the benchmark builders share reads back through the project's own loaders."""

from __future__ import annotations

from embedkd.evaluation.beir import load_qrels, load_queries, write_qrels, write_queries


def test_queries_and_qrels_round_trip(tmp_path):
    write_queries(tmp_path / "queries.jsonl", [("q2", 'say "hi"\tthere'), ("q1", "é")])
    write_qrels(tmp_path / "test.tsv", [("q2", "d9", 1), ("q1", "d3", 2), ("q1", "d4", 0)])
    assert list(load_queries(tmp_path / "queries.jsonl").items()) == [("q2", 'say "hi"\tthere'), ("q1", "é")]
    assert load_qrels(tmp_path / "test.tsv") == {"q2": {"d9": 1}, "q1": {"d3": 2, "d4": 0}}
    assert (tmp_path / "test.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"
