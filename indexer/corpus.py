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
from .hashing import sha256_file, sha256_text
from .textfile import text_lines

__all__ = ["Corpora", "Doc", "DocSource", "JsonlCorpus", "ListSource", "every_version", "parse_line", "parse_record",
           "read_corpus"]


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

    def __str__(self) -> str:
        return str(self.path)

    def __iter__(self) -> Iterator[Doc]:
        empty: list[str] = []
        for lineno, line in text_lines(self.path):
            if not line.strip():
                continue
            doc = parse_line(line, lineno, self.path)
            if doc.content:
                yield doc
            else:
                empty.append(doc.id)
        self.empty_ids = empty


def parse_line(line: str, lineno: int, path: Path) -> Doc:
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


class Corpora:
    """Several corpus files read as one: the documents an index was written from by its build and its adds.

    Give them newest first: a document id in more than one file is read from the first that has it, so each
    document comes as its latest write has it (what the index holds, as a rule; `every_version` where it must
    be found whichever file has it). Its ids are then unique, as a build needs; one file is read as it is.
    """

    def __init__(self, paths: list[str | os.PathLike]) -> None:
        if not paths:
            raise UserError("no corpus given; give a BEIR folder or a .jsonl file with id and text")
        self.sources = [JsonlCorpus(p) for p in paths]
        self.paths = [c.path for c in self.sources]
        self.fingerprint = (self.sources[0].fingerprint if len(self.sources) == 1 else
                            sha256_text("\n".join(c.fingerprint for c in self.sources)))

    @property
    def empty_ids(self) -> list[str]:
        return [i for c in self.sources for i in c.empty_ids]

    def every_version(self) -> Iterator[Doc]:
        """Every document of every file, an id as often as the files have it: where the one that matters is the
        one the index holds, whichever file that is."""
        for corpus in self.sources:
            yield from corpus

    def __iter__(self) -> Iterator[Doc]:
        if len(self.sources) == 1:
            yield from self.sources[0]
            return
        seen: set[str] = set()
        for corpus in self.sources:
            for doc in corpus:
                if doc.id not in seen:
                    seen.add(doc.id)
                    yield doc

    def __str__(self) -> str:
        return ", ".join(map(str, self.paths))


def every_version(docs: DocSource) -> Iterator[Doc]:
    """`Corpora.every_version` for several files; any other source as it is."""
    return docs.every_version() if isinstance(docs, Corpora) else iter(docs)


def read_corpus(path: str | os.PathLike) -> JsonlCorpus:
    return JsonlCorpus(path)
