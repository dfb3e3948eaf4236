"""Documents to index: BEIR `corpus.jsonl` (`_id`, `title`, `text`) or any JSONL with `id` and `text`.

A DocSource is re-iterable (a resumed build reads it again) and has a fingerprint, so a rerun of a
build resumes only if the corpus is the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import UserError
from .hashing import sha256_file
from .textfile import text_lines

__all__ = ["Doc", "DocSource", "JsonlCorpus", "ListSource", "parse_record", "read_corpus"]


@dataclass(frozen=True)
class Doc:
    id: str
    content: Any  # text for text models; a path or image for image models
    info: dict[str, Any] | None = None


class DocSource(Protocol):
    fingerprint: str

    def __iter__(self) -> Iterator[Doc]: ...


class JsonlCorpus:
    """Streams a JSONL corpus; each malformed line raises a UserError naming the line.

    A document with neither title nor text is skipped, its id kept in `empty_ids` after a pass:
    real corpora have them (BEIR's FiQA has a few), and refusing a 57k-document corpus for five empty
    rows would help nobody; there is nothing in them to embed or to find.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / "corpus.jsonl"
        if not p.is_file():
            raise UserError(f"corpus not found: {path}; give a BEIR folder or a .jsonl file with id and text")
        self.path = p
        self.fingerprint = sha256_file(p)
        self.empty_ids: list[str] = []

    def __iter__(self) -> Iterator[Doc]:
        empty: list[str] = []
        for lineno, line in text_lines(self.path):
            if not line.strip():
                continue
            doc = _parse_line(line, lineno, self.path)
            if doc.content:
                yield doc
            else:
                empty.append(doc.id)
        self.empty_ids = empty


def _parse_line(line: str, lineno: int, path: Path) -> Doc:
    """One document; its content is "" when it has neither title nor text (the caller skips it)."""
    where = f"{path.name} line {lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON ({err.msg}); fix or remove that line") from None
    return parse_record(row, where)


def parse_record(row: Any, where: str) -> Doc:
    """A document from one corpus record (a JSONL line, an HTTP upload); `where` names it in errors."""
    if not isinstance(row, dict):
        raise UserError(f"{where} is not a JSON object; each line must be like {{\"_id\": ..., \"text\": ...}}")
    doc_id = row.get("_id", row.get("id"))
    if doc_id is None or str(doc_id).strip() == "":
        raise UserError(f"{where} has no id; each line needs an \"_id\" (BEIR) or \"id\" field")
    title = str(row.get("title") or "").strip()
    body = row.get("text")
    body = "" if body is None else str(body).strip()
    text = f"{title} {body}".strip()
    info: dict[str, Any] = {}
    if title:
        info["title"] = title
    if isinstance(row.get("metadata"), dict) and row["metadata"]:
        info["metadata"] = row["metadata"]
    return Doc(id=str(doc_id), content=text, info=info or None)


class ListSource:
    """An in-memory DocSource (tests, HTTP uploads, galleries built from a list)."""

    def __init__(self, docs: list[Doc], fingerprint: str | None = None) -> None:
        self.docs = list(docs)
        if fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            for d in self.docs:
                h.update(f"{d.id}\x00{d.content}\x01".encode())
            fingerprint = h.hexdigest()
        self.fingerprint = fingerprint

    def __iter__(self) -> Iterator[Doc]:
        return iter(self.docs)


def read_corpus(path: str | os.PathLike) -> JsonlCorpus:
    return JsonlCorpus(path)
