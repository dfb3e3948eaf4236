"""BEIR-format folders: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from indexer.corpus import JsonlCorpus
from indexer.errors import UserError
from indexer.textfile import text_lines

__all__ = ["BeirData", "check_judged_documents", "load_beir", "load_labelled_queries", "load_qrels", "load_queries",
           "relevant_documents", "write_qrels", "write_queries"]

log = logging.getLogger(__name__)


@dataclass
class BeirData:
    root: Path
    corpus: JsonlCorpus
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    reader = csv.reader((line for _, line in text_lines(path)), delimiter="\t")
    for lineno, row in enumerate(reader, 1):
        if not row or (lineno == 1 and row[0] in ("query-id", "query_id", "qid")):
            continue
        if len(row) < 3:
            trec = len(row) == 1 and len(row[0].split()) == 4  # `qid 0 docid grade`, the TREC qrels layout
            raise UserError(f"{path} line {lineno} is not 'query-id<TAB>corpus-id<TAB>score'" + (
                "; it looks like TREC qrels (qid 0 docid grade): convert with "
                "awk 'BEGIN{OFS=\"\\t\"} {print $1, $3, $4}'" if trec else ""))
        try:
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
        except ValueError:
            raise UserError(f"{path} line {lineno}: score {row[2]!r} is not a number") from None
    return qrels


def load_queries(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row.get("_id", row.get("id")))] = str(row["text"])
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise UserError(f"{path} line {lineno} is not a JSON object with \"_id\" and \"text\"") from None
    return out


def write_queries(path: Path, queries: Iterable[tuple[str, str]]) -> None:
    """queries.jsonl from (query id, text) pairs, in the order given."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in queries)


def write_qrels(path: Path, rows: Iterable[tuple[str, str, int]]) -> None:
    """qrels/<split>.tsv (with BEIR's header line) from (query id, corpus id, grade) rows."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{qid}\t{doc}\t{grade}\n" for qid, doc, grade in rows)


def load_labelled_queries(root: str | os.PathLike, split: str = "test",
                          split_option: str = "--split") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged queries of a BEIR folder's split (in qrels order) and their qrels. Reads queries.jsonl and
    qrels/<split>.tsv only: labelled queries for an index whose documents are elsewhere. `split_option` is
    the command-line option that picks the split, for the error when it is missing."""
    root = Path(root)
    if not (root / "queries.jsonl").is_file():
        raise UserError(f"{root} has no queries.jsonl; labelled queries need a BEIR folder with queries.jsonl "
                        "and qrels/<split>.tsv")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise UserError(f"{root} has no qrels for split {split!r} (has: {', '.join(have) or 'none'}); "
                        f"pick one with {split_option}")
    qrels = load_qrels(qrels_path)
    all_queries = load_queries(root / "queries.jsonl")
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    if not queries:
        raise UserError(f"no query of {qrels_path} is in queries.jsonl; check that the ids match")
    return queries, {q: qrels[q] for q in queries}


def load_beir(root: str | os.PathLike, split: str = "test", check_corpus: bool = True) -> BeirData:
    """A BEIR folder's corpus (read lazily), the judged queries of `split` and their qrels. `check_corpus=False`
    skips the one pass over corpus.jsonl that checks the judged documents are in it, for callers that
    need only the qrels (comparing two runs of a corpus of millions)."""
    root = Path(root)
    missing = [n for n in ("corpus.jsonl", "queries.jsonl") if not (root / n).is_file()]
    if not root.is_dir() or missing:
        raise UserError(
            f"{root} is not a BEIR folder (missing {', '.join(missing) or 'the folder'}); it needs corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        )
    queries, qrels = load_labelled_queries(root, split)
    corpus = JsonlCorpus(root)
    if check_corpus:
        check_judged_documents(root / "qrels" / f"{split}.tsv", qrels, {doc.id for doc in corpus})
    return BeirData(root=root, corpus=corpus, queries=queries, qrels=qrels)


def relevant_documents(qrels: dict[str, dict[str, int]]) -> set[str]:
    """Every document judged relevant (grade > 0) to some query."""
    return {d for docs in qrels.values() for d, grade in docs.items() if grade > 0}


def check_judged_documents(qrels_path: Path, qrels: dict[str, dict[str, int]], corpus_ids: set[str],
                           corpus: str = "corpus.jsonl") -> None:
    """Relevant documents absent from the corpus count as misses in every metric: none present means the
    qrels belong to another corpus (an error, or every figure would be a silent 0); some, a warning."""
    relevant = relevant_documents(qrels)
    missing = relevant - corpus_ids
    if relevant and missing == relevant:
        raise UserError(f"none of the {len(relevant)} documents judged relevant in {qrels_path} is in {corpus}; "
                        "check that the qrels belong to this corpus (the ids must match)")
    if missing:
        log.warning("%d of %d documents judged relevant in %s are not in %s; "
                    "they count as misses", len(missing), len(relevant), qrels_path, corpus)
