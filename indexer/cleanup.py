"""Files no catalog row needs: what a killed process leaves behind, found and deleted.

Every write keeps the catalog safe by writing files first and committing last, and deletes the files the
old generation alone named after the commit. A process killed between those steps (or mid-write, or while
dropping an index) leaves files nothing names; on indexes of millions of vectors they are gigabytes. An
index folder is cleaned holding that index's write lock, so a write in progress is never touched (the
index is skipped and reported); a job's folder is kept while the job can resume (running or failed).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import backfill_texts, carried, frozen, jobs, locks, pins, purges, text_log
from .context import Catalog
from .errors import Conflict
from .models import Index, Job
from .shards import manifest_files, manifest_shards
from .staging import reusable, staging_prefix

__all__ = ["collect_garbage", "remove"]


def collect_garbage(catalog: Catalog, dry_run: bool = False,
                    also: Sequence[Callable[[Catalog, bool], list[dict[str, Any]]]] = ()) -> dict[str, Any]:
    """Delete (with `dry_run`, only list) the files and folders no catalog row needs; `also`: more collectors
    of the product's own folders (`reid.uploads.collect_uploads`), each `(catalog, dry_run) -> what it found`."""
    found: list[dict[str, Any]] = []
    busy: list[str] = []
    root = catalog.settings.index_dir
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            with locks.target_lock(catalog, folder.name):
                found += purges.finish(catalog, folder.name, dry_run)
                found += _index_leftovers(catalog, folder, dry_run)
        except Conflict:
            busy.append(folder.name)
    found += _job_leftovers(catalog, dry_run)
    found += [remove(p, f"texts kept for a backfill of {p.name!r}, which is not in progress", dry_run)
              for p in backfill_texts.leftovers(catalog)]
    found += [remove(p, "the frozen files of a compaction that is not running", dry_run) for p in frozen.leftovers(catalog)]
    for what, root in (("texts kept", text_log.root(catalog)), ("corpus files carried", carried.root(catalog))):
        found += [remove(p, f"{what} for index {p.name!r}, which is not in the catalog", dry_run)
                  for p in _of_no_index(catalog, root)]
    for collect in also:
        found += collect(catalog, dry_run)
    return {"removed" if not dry_run else "would_remove": found,
            "bytes": sum(f["bytes"] for f in found), "skipped_being_written": busy}


def _of_no_index(catalog: Catalog, root: Path) -> list[Path]:
    """The folders of `root` named for indexes the catalog does not have (a drop killed midway)."""
    if not root.is_dir():
        return []
    with catalog.session() as s:
        names = set(s.scalars(select(Index.name)))
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in names]


def _index_leftovers(catalog: Catalog, folder: Path, dry_run: bool) -> list[dict[str, Any]]:
    with catalog.session() as s:
        current = s.scalar(select(Index.file).where(Index.name == folder.name))
        exists = s.scalar(select(Index.id).where(Index.name == folder.name)) is not None
    if not exists:  # a dropped index whose files outlived it, or a build killed before its commit
        return [remove(folder, "no index of this name in the catalog", dry_run)]
    if not current:  # a row that names no file yet: nothing here can be told apart from its files
        return []
    keep = set(manifest_files(folder / current))
    # shards a running compaction has written and not yet committed; of one that stopped, those made from shards
    # the index still has, which the next compaction reuses (`staging.py`)
    staging = staging_prefix(folder.name, "")
    if locks.compactor(catalog, folder.name) is None:
        keep |= reusable(folder, folder.name, manifest_shards(folder / current))
    else:
        keep |= {p.name for p in folder.iterdir() if p.name.startswith(staging)}

    def why(p: Path) -> str:
        if p.name.startswith(staging):
            return "made by a compaction that stopped before its commit, from shards that have changed since"
        return "not named by the index's current generation"

    return [remove(p, why(p), dry_run) for p in sorted(folder.iterdir()) if p.name not in keep]


def _job_leftovers(catalog: Catalog, dry_run: bool) -> list[dict[str, Any]]:
    root = catalog.settings.job_dir
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()) if root.is_dir() else []
    # rows read after the folders were listed: a job's row is committed before its folder is made
    with catalog.session() as s:
        states = dict(s.execute(select(Job.id, Job.state).where(Job.id.in_([int(p.name) for p in folders]))).all())
    return [remove(p, f"job {p.name} is {states.get(int(p.name), 'not in the catalog')}", dry_run)
            for p in folders if states.get(int(p.name)) not in jobs.UNFINISHED] + _stale_pins(root, dry_run)


def _stale_pins(root: Path, dry_run: bool) -> list[dict[str, Any]]:
    """The pinned files of exports and kept-text readers killed on this machine (`pins.py`)."""
    return [remove(path, f"files pinned by {what} (process {pid}), which is gone", dry_run)
            for path, what, pid in pins.stale(root)]


def remove(path: Path, why: str, dry_run: bool) -> dict[str, Any]:
    """Delete a file or folder (with `dry_run`, only measure it); what gc reports of it."""
    size = jobs.disk_bytes(path)
    if not dry_run:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return {"path": str(path), "bytes": size, "why": why}
