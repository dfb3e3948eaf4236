"""BEIR data for distillation: corpus, queries, qrels per split, and a dev split cut from train."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from embedkd.evaluation.beir import load_qrels, load_queries
from indexer.corpus import read_corpus
from indexer.errors import UserError

__all__ = ["BeirData", "load_beir", "read_qrels", "split_dev"]

Qrels = dict[str, dict[str, int]]

log = logging.getLogger(__name__)


@dataclass
class BeirData:
    path: Path
    corpus: dict[str, str]  # doc id -> text ("title text", as the indexer reads it)
    queries: dict[str, str]
    qrels: dict[str, Qrels] = field(default_factory=dict)  # split -> query id -> doc id -> grade
    fingerprint: str = ""  # sha256 of corpus, queries and qrels files

    def require(self, split: str, purpose: str = "distillation", alternative: str = "") -> Qrels:
        """The split's qrels, or a one-line error naming `purpose` and, when there is one, `alternative`."""
        if split not in self.qrels or not self.qrels[split]:
            have = ", ".join(sorted(self.qrels)) or "none"
            raise UserError(
                f"{self.path} has no qrels/{split}.tsv (splits found: {have}); {purpose} needs "
                f"BEIR {split} qrels (query-id, corpus-id, score)" + (f"; {alternative}" if alternative else "")
            )
        return self.qrels[split]


def read_qrels(path: str | os.PathLike, corpus: dict[str, str] | None = None,
               queries: dict[str, str] | None = None) -> Qrels:
    """BEIR qrels TSV (`embedkd.evaluation`'s reader); rows naming unknown ids are dropped with a warning, and
    a file none of whose rows names a known query and document is an error (it belongs to another folder:
    dropping it silently would read as "no qrels")."""
    qrels: Qrels = {}
    raw = load_qrels(Path(path))
    for qid, rels in raw.items():
        if queries is not None and qid not in queries:
            continue
        kept = {did: grade for did, grade in rels.items() if corpus is None or did in corpus}
        if kept:
            qrels[qid] = kept
    rows, kept_rows = sum(map(len, raw.values())), sum(map(len, qrels.values()))
    if rows and not kept_rows:
        raise UserError(f"none of the {rows} rows of {path} names a query of queries.jsonl and a document of "
                        "corpus.jsonl; check that the qrels belong to this folder (the ids must match)")
    if kept_rows < rows:
        log.warning("%d of %d rows of %s name a query or document that is not in this folder; they are ignored",
                    rows - kept_rows, rows, path)
    return qrels


def load_beir(path: str | os.PathLike) -> BeirData:
    root = Path(path).expanduser()
    if not (root / "corpus.jsonl").is_file() or not (root / "queries.jsonl").is_file():
        raise UserError(f"{path} is not a BEIR folder; it needs corpus.jsonl, queries.jsonl and qrels/*.tsv")
    h = hashlib.sha256()
    source = read_corpus(root)
    h.update(source.fingerprint.encode())
    corpus = {d.id: str(d.content) for d in source}
    queries = load_queries(root / "queries.jsonl")
    h.update((root / "queries.jsonl").read_bytes())
    qrels = {}
    for tsv in sorted((root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []:
        qrels[tsv.stem] = read_qrels(tsv, corpus, queries)
        h.update(tsv.name.encode() + tsv.read_bytes())
    return BeirData(path=root, corpus=corpus, queries=queries, qrels=qrels, fingerprint=h.hexdigest())


def split_dev(qrels: Qrels, fraction: float = 0.1, seed: int = 0) -> tuple[Qrels, Qrels]:
    """Deterministically hold out `fraction` of the queries (by hashed id) as a dev split."""
    if not 0 <= fraction < 1:
        raise UserError(f"dev fraction must be in [0, 1), got {fraction}")

    def bucket(qid: str) -> float:
        return int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = {q: d for q, d in qrels.items() if bucket(q) >= fraction}
    dev = {q: d for q, d in qrels.items() if bucket(q) < fraction}
    return train, dev
