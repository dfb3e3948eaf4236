"""Texts written to an index while a backfill re-embeds it, kept for the backfill's catch-up.

Before it switches, a backfill embeds with the new model the documents written to the index meanwhile
(`embedkd.upgrade.backfill.catch_up`), reading their texts from its corpus. Documents written over HTTP, or
from another file, are not in that corpus, and the catalog keeps hashes, not texts. So while a backfill of an
index is in progress (its staging index is being built, or built and not yet switched), every add to the index
also writes its documents' texts to `EMBEDKD_HOME/backfill/NAME/`, where the catch-up reads them beside the
corpus; the switch, or dropping either index, deletes them. They are kept only while a backfill runs.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import select

from .context import Catalog
from .corpus import Doc
from .jobs import UNFINISHED
from .models import Index, Job

__all__ = ["staging_name", "pin_folder", "in_progress", "keep", "read", "purge", "forget", "leftovers"]


def staging_name(name: str) -> str:
    """The index a backfill of `name` builds before it switches."""
    return f"{name}.backfill"


def _folder(catalog: Catalog, name: str) -> Path:
    return catalog.settings.home / "backfill" / name


def pin_folder(catalog: Catalog, name: str) -> Path:
    """Where a backfill of `name` keeps its links to the index's kept HTTP texts (`text_log.pinned`): a rerun
    reads the same files; they go with the rest of this folder."""
    return _folder(catalog, name) / "pins"


def in_progress(catalog: Catalog, name: str) -> bool:
    """Whether a backfill of index `name` is being built, or is built and not yet switched."""
    stage = staging_name(name)
    with catalog.session() as s:
        return (s.scalar(select(Index.id).where(Index.name == stage)) is not None
                or s.scalar(select(Job.id).where(Job.target == stage, Job.kind == "build",
                                                  Job.state.in_(UNFINISHED))) is not None)


def keep(catalog: Catalog, name: str, docs: Iterable[Doc]) -> int:
    """Write the texts of `docs` (text contents only) for a backfill of `name`; how many. The folder deleted
    meanwhile (the backfill switched) is no error: the texts are not needed any more."""
    folder = _folder(catalog, name)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{uuid.uuid4().hex}.jsonl"
    try:
        return _write(part, (d for d in docs if isinstance(d.content, str)))
    except FileNotFoundError:
        return 0


def _write(part: Path, docs: Iterable[Doc]) -> int:
    tmp = part.with_suffix(".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps({"id": doc.id, "text": doc.content}) + "\n")
            n += 1
    tmp.replace(part)  # a reader sees a file whole or not at all
    return n


def purge(catalog: Catalog, name: str, ids: Iterable[str]) -> None:
    """Take the texts of `ids` out of those kept for a backfill of `name` (a purge: out of every file now)."""
    gone = set(ids)
    folder = _folder(catalog, name)
    for part in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        with open(part, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        if any(r["id"] in gone for r in rows):
            _write(part, (Doc(r["id"], r["text"]) for r in rows if r["id"] not in gone))


def read(catalog: Catalog, name: str) -> Iterator[Doc]:
    """The texts kept for a backfill of `name`, oldest file first (a document may appear more than once)."""
    folder = _folder(catalog, name)
    parts = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    for part in parts:
        with open(part, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                yield Doc(row["id"], row["text"])


def leftovers(catalog: Catalog) -> list[Path]:
    """Folders of texts kept for indexes with no backfill in progress (an add that wrote its texts as the
    backfill switched): `index gc` deletes them."""
    root = catalog.settings.home / "backfill"
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not in_progress(catalog, p.name)] if root.is_dir() else []


def forget(catalog: Catalog, name: str) -> None:
    """Delete the texts kept for a backfill of `name` (it switched, or one of the two indexes was dropped)."""
    shutil.rmtree(_folder(catalog, name), ignore_errors=True)
