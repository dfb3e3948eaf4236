"""TREC run files (`qid Q0 docid rank score tag`), so any IR tool (trec_eval, ranx) can read our rankings."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.errors import UserError
from indexer.textfile import text_lines

__all__ = ["read_trec_run", "write_trec_run"]


def write_trec_run(run: dict[str, dict[str, float]], path: str | os.PathLike, tag: str = "embedkd") -> Path:
    """Write `run` ranked by descending score (ties by document id, as our metrics break them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (doc, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)  # a reader never sees half a run
    return path


def read_trec_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"run file {path} does not exist; write one with `embedkd eval retrieval ... --run {path}`")
    run: dict[str, dict[str, float]] = {}
    for lineno, line in text_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise UserError(f"{path} line {lineno} is not a TREC run line 'qid Q0 docid rank score tag'")
        try:
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
        except ValueError:
            raise UserError(f"{path} line {lineno}: score {parts[4]!r} is not a number") from None
    return run
