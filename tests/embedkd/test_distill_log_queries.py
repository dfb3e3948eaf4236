"""Unlabelled logged queries for distillation: reading the log and the teacher's positives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkd.distill.log_queries import read_log_queries, teacher_positives
from indexer.errors import UserError


def test_reads_text_and_beir_jsonl_logs(tmp_path):
    txt = tmp_path / "log.txt"
    txt.write_text("how do I sort a list?\n\n  how do I sort a list?  \nwhat is a tuple?\nwhat  is a\ttuple?\n")
    assert read_log_queries(txt) == ["how do I sort a list?", "what is a tuple?"]  # blank and repeated (up to spacing) dropped
    jl = tmp_path / "queries.jsonl"
    jl.write_text("\n".join(json.dumps({"_id": str(i), "text": t}) for i, t in enumerate(["a  b", "c"])) + "\n")
    assert read_log_queries(jl) == ["a b", "c"]


@pytest.mark.parametrize("content, message", [
    ("\n\n", "holds no query"),
    ('{"_id": "1"}\n', "line 1: a .jsonl query log needs"),
    ("not json\n", "line 1: a .jsonl query log needs"),
])
def test_bad_logs_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / ("log.jsonl" if "json" in message else "log.txt")
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_log_queries(path)
    with pytest.raises(UserError, match="no such file"):
        read_log_queries(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="is a folder"):
        read_log_queries(tmp_path)


def test_positive_is_the_teacher_top_among_the_first_candidates():
    corpus = {"d1": "one", "d2": "two two", "d3": "three three three", "d4": "four four four four"}
    queries = {"log:0": "q", "log:1": "r"}
    # the teacher scores a document by its word count: d4 > d3 > d2 > d1, whatever the miner's order
    score = lambda _q, docs: np.array([len(d.split()) for d in docs], dtype=float)  # noqa: E731
    candidates = {"log:0": ["d1", "d3", "d2", "d4"], "log:1": []}
    assert teacher_positives(["log:0", "log:1"], queries, candidates, corpus, score) == {"log:0": {"d4": 1}}
    # only the first `top` candidates are scored (a cross-encoder pays per pair)
    assert teacher_positives(["log:0"], queries, candidates, corpus, score, top=2) == {"log:0": {"d3": 1}}
