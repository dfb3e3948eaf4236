"""Unlabelled queries (a search log) for distillation: the teacher labels them.

Users rarely have relevance labels for their own queries, but a search backend always has the
queries. Distillation needs no labels: each logged query becomes a training query whose positive is
the document the teacher ranks first among the miner's candidates, and the teacher's scores over
that positive, the mined negatives and the batch's other documents are what the KL and Margin-MSE
terms transfer (the embedding terms need only the texts). This is how a student learns the kind of
query it will serve: a 3-layer student distilled on SciFact's claims keeps 67% of its teacher on
question queries (docs/distill.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from indexer.errors import UserError
from indexer.textfile import text_lines

__all__ = ["PREFIX", "read_log_queries", "teacher_positives"]

PREFIX = "log:"  # query ids of logged queries: never collide with a dataset's own ids


def read_log_queries(path: str | os.PathLike) -> list[str]:
    """Distinct queries of `path`, in file order: a BEIR queries.jsonl (`text` of each line) or a
    text file with one query per line. Blank lines are skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "no such file"
        raise UserError(f"--queries {path}: {what}; give a text file with one query per line "
                        "or a BEIR queries.jsonl")
    texts: list[str] = []
    for n, line in text_lines(p):
        line = line.strip()
        if not line:
            continue
        if p.suffix == ".jsonl":
            try:
                row = json.loads(line)
                text = row["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path} line {n}: a .jsonl query log needs one JSON object with a "
                                "'text' field per line (BEIR queries.jsonl); use a .txt file for plain "
                                "lines") from None
            line = str(text)
        line = " ".join(line.split())  # as the evaluation queries are compared: spacing never hides a match
        if line:
            texts.append(line)
    queries = list(dict.fromkeys(texts))
    if not queries:
        raise UserError(f"--queries {path} holds no query; give one query per line")
    return queries


def teacher_positives(query_ids: Iterable[str], queries: dict[str, str], candidates: dict[str, list[str]],
                      corpus: dict[str, str], score: Callable[[str, list[str]], np.ndarray], top: int = 10
                      ) -> dict[str, dict[str, int]]:
    """query id -> {the document the teacher scores highest among the first `top` candidates: 1}.

    Only the miner's first `top` candidates are scored: a cross-encoder teacher pays a forward pass
    per pair, and the miner's top ten hold the teacher's choice for a bi-encoder teacher (its own
    miner) and nearly always for a reranker. Queries without candidates give nothing."""
    qrels: dict[str, dict[str, int]] = {}
    for qid in query_ids:
        cands = candidates.get(qid, [])[:top]
        if not cands:
            continue
        scores = np.asarray(score(queries[qid], [corpus[d] for d in cands]), dtype=np.float64)
        qrels[qid] = {cands[int(np.argmax(scores))]: 1}
    return qrels
