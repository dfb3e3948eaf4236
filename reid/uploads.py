"""Where a gallery's crops uploaded over HTTP are kept: EMBEDKD_HOME/galleries/NAME (the index keeps their paths).
Crops indexed from the user's own folders stay there; these are the catalog's to remove with the gallery and to
move with it (`embedkd index export` / `import`)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from indexer.cleanup import remove
from indexer.context import Catalog
from indexer.models import EmbeddingModel, Index, Item

__all__ = ["collect_uploads", "upload_dir", "safe_name"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """`name` as a file name: anything but letters, digits, '.', '_' and '-' becomes '_'."""
    return _SAFE.sub("_", name)


def _root(catalog: Catalog) -> Path:
    return catalog.settings.home / "galleries"


def upload_dir(catalog: Catalog, gallery: str) -> Path:
    """Where crops uploaded over HTTP to `gallery` are stored."""
    return _root(catalog) / safe_name(gallery)


def collect_uploads(catalog: Catalog, dry_run: bool = False, age_s: float = 3600.0) -> list[dict[str, Any]]:
    """Delete (with `dry_run`, only list) uploaded crops that no gallery item points to, older than `age_s` (an
    upload writes its files before it indexes them): an upload killed midway, a crop uploaded again under another
    extension, a gallery dropped by a process killed before it removed its folder. They are images of people;
    `embedkd index gc` and the server's collector run this (`indexer.cleanup.collect_garbage`'s `also`)."""
    root = _root(catalog)
    if not root.is_dir():
        return []
    with catalog.session() as s:
        galleries = {safe_name(name): index_id for name, index_id in s.execute(
            select(Index.name, Index.id).join(EmbeddingModel).where(EmbeddingModel.kind == "image"))}
    found, now = [], time.time()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        index_id = galleries.get(folder.name)
        held: set[str] = set()
        if index_id is not None:
            with catalog.session() as s:
                held = {str((info or {}).get("path")) for info in s.scalars(select(Item.info).where(Item.index_id == index_id))}
        why = (f"an uploaded crop that no item of gallery folder {folder.name!r} points to" if index_id is not None
               else "an uploaded crop of no gallery")
        found += [remove(p, why, dry_run) for p in sorted(folder.iterdir())
                  if p.is_file() and str(p.resolve()) not in held and now - p.stat().st_mtime > age_s]
        if index_id is None and not dry_run and not any(folder.iterdir()):
            folder.rmdir()
    return found
