"""Texts of the documents written to an index over HTTP, kept so that an upgrade can read them.

The catalog keeps each document's content hash, not its text; documents added from a file are read again
from that file (`embedkd.upgrade.run.index_corpora`). Documents that came over HTTP exist nowhere else, so
without their texts a backfill could not embed them with a new model, nor `upgrade fit` sample them. The
service writes each write's texts to `EMBEDKD_HOME/texts/NAME/` as one small JSONL file.
Merged files are gzipped (level 1: about 2.4x smaller on SciFact's abstracts, at ~100 MB/s of one core), so
the texts take less disk than the vectors of a 384-d model; a write's own file is not, to keep its write short.

Like an LSM tree's levels: once `FANOUT` files of one level are there, they are merged into one file of the
next level, keeping each id's newest text, and only where the index still holds that text (an update's old
text and a deleted document's go). A log of n writes is O(log n) files and each text is rewritten O(log n)
times. The service keeps a write's texts just before it commits it, holding the index (`append(pending=True)`),
so no write is in the index without its texts: in a pending file, which readers read and merges do not, settled
among the others once the commit is done (or by the next write's keep, which holds the index and so knows that
no commit is under way). So a merge, which reads the index's items after listing its files, never drops a text
the index holds; texts of a write whose commit failed go at a merge, as the index does not hold them. Merges
run in the background of the process that appended (a level of a million texts takes a while, and writes go
on), one at a time per index under its text-log lock, which a purge takes too. None runs while a backfill of
the index does: it reads the files it started with. A reader (an upgrade, which may scan them for minutes) reads
hard links of the files it listed (`pinned`), so a merge that deletes them meanwhile takes nothing from it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from . import backfill_texts, locks, pins
from .catalog import get_index, items_by_external_ids
from .context import Catalog
from .corpus import Doc, read_corpus
from .errors import Conflict
from .hashing import sha256_text

__all__ = ["FANOUT", "append", "drop_unheld", "every_usage", "files", "forget", "idle", "log_folder", "merge",
           "merge_counts", "pinned", "purge", "stamp", "usage"]

log = logging.getLogger(__name__)

FANOUT = 8
_BATCH = 5000  # texts judged against the catalog at a time while merging
_GZIP_LEVEL = 1  # merged files: most of level 9's saving on prose, several times faster


def root(catalog: Catalog) -> Path:
    """Where every index's kept texts are, a folder each."""
    return catalog.settings.home / "texts"


def log_folder(catalog: Catalog, name: str) -> Path:
    """Where index `name`'s kept texts are."""
    return root(catalog) / name


def _parts(path: Path) -> tuple[int, int]:
    """(level, time in ns of the newest text in it) from a log file's name."""
    level, stamp, _ = path.name.split("-", 2)
    return int(level), int(stamp)


def _pending_folder(catalog: Catalog, name: str) -> Path:
    return log_folder(catalog, name) / "pending"


def files(catalog: Catalog, name: str) -> list[Path]:
    """The index's text files, pending ones too, newest first."""
    every = _log_files(log_folder(catalog, name)) + _log_files(_pending_folder(catalog, name))
    return sorted(every, key=stamp, reverse=True)


def _log_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*-*-*.jsonl*") if p.suffix in (".jsonl", ".gz")] if folder.is_dir() else []


@contextmanager
def pinned(catalog: Catalog, name: str, into: Path | None = None) -> Iterator[list[Path]]:
    """The index's text files as they are now (newest first), hard-linked into a folder of the reader's: a merge
    that deletes one while the reader reads (a backfill scans its corpora for minutes) leaves the reader its
    link. `into`: a folder the caller keeps (a backfill's, so that its rerun reads the same paths); by default a
    private one, removed when the reader is done (`index gc` removes those of processes gone)."""
    folder = into or pins.folder(catalog.settings.job_dir, "texts")
    try:
        with locks.text_log_lock(catalog, name, wait_s=600.0):  # no merge deletes a file between list and link
            current = files(catalog, name)
            if current:  # none: no folder made
                folder.mkdir(parents=True, exist_ok=True)
            for path in current:
                if not (folder / path.name).exists():  # a name is never reused: a kept link is this file
                    os.link(path, folder / path.name)
        yield [folder / p.name for p in current]
    finally:
        if into is None:
            shutil.rmtree(folder, ignore_errors=True)


def usage(catalog: Catalog, name: str) -> dict[str, int]:
    """What the index's kept texts take: files and bytes (`index list`, `GET /indexes`)."""
    sizes = []
    for path in files(catalog, name):
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:  # merged away since listed
            continue
    return {"files": len(sizes), "bytes": sum(sizes)}


def every_usage(catalog: Catalog) -> dict[str, dict[str, int]]:
    """`usage` of every index with kept texts (`/metrics`): a listing of their folders, no catalog read."""
    here = root(catalog)
    return {p.name: usage(catalog, p.name) for p in sorted(here.iterdir()) if p.is_dir()} if here.is_dir() else {}


def stamp(path: Path) -> int:
    """When the newest text in a log file was written (ns since the epoch): for ordering it among corpora."""
    return _parts(path)[1]


def append(catalog: Catalog, name: str, docs: Iterable[Doc], wait: bool = False, pending: bool = False) -> Path | None:
    """Keep the texts of `docs` (text contents only) as the index's newest log file, then merge full levels: in
    the background, or before returning with `wait`. With `pending` (call holding the index's write lock, just
    before the commit), the file is pending until `settle`: merges leave it alone."""
    rows = [_row(d) for d in docs if isinstance(d.content, str)]
    if not rows:
        return None
    if pending:
        _settle_pending(catalog, name)
        return _write(_pending_folder(catalog, name), 0, time.time_ns(), rows)
    path = _write(log_folder(catalog, name), 0, time.time_ns(), rows)
    _merge_if_full(catalog, name, wait)
    return path


def settle(catalog: Catalog, name: str, path: Path) -> None:
    """A pending file among the others, its write committed; then merge full levels in the background. A failure
    is only logged: the write is committed and its texts are kept (the next write's keep settles the file)."""
    try:
        _settle(path)
        _merge_if_full(catalog, name, wait=False)
    except OSError as err:
        log.warning("index %r: the texts of a write stay pending until the next write: %s", name, err)


def _settle_pending(catalog: Catalog, name: str) -> None:
    """Settle every pending file: call holding the index's write lock, so that no commit of theirs is under way
    (each committed or failed; a failed one's texts go at a merge)."""
    for path in _log_files(_pending_folder(catalog, name)):
        _settle(path)


def _settle(path: Path) -> None:
    try:
        path.rename(path.parent.parent / path.name)
    except FileNotFoundError:  # settled by the next write's keep meanwhile, or purged empty
        pass


def _merge_if_full(catalog: Catalog, name: str, wait: bool) -> None:
    if _full_level(catalog, name) is not None:  # one listing of the folder; most writes fill no level
        merge(catalog, name) if wait else _merge_in_background(catalog, name)


_running: set[tuple[int, str]] = set()
_guard = threading.Lock()
_outcomes: Counter[str] = Counter()  # background merges of this process: done, failed


def merge_counts() -> dict[str, int]:
    """This process's background merges by outcome (`/metrics`: a failed one is otherwise only in the log)."""
    with _guard:
        return dict(_outcomes)


def _merge_in_background(catalog: Catalog, name: str) -> None:
    key = (id(catalog), name)
    with _guard:
        if key in _running:  # it merges every full level before it ends; a level filled as it ended waits a write
            return
        _running.add(key)

    def run() -> None:
        outcome = "failed"
        try:
            merge(catalog, name)
            outcome = "done"
        except Exception:  # noqa: BLE001 - a background merge logs what it did not expect; the texts are all there
            log.exception("merging the kept texts of index %r failed", name)
        finally:
            with _guard:
                _outcomes[outcome] += 1
            with _guard:
                _running.discard(key)

    threading.Thread(target=run, name=f"embedkd-texts-{name}", daemon=True).start()


def idle(timeout_s: float = 60.0) -> bool:
    """Wait until no background merge of this process runs (tests, shutdown); whether none does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with _guard:
            if not _running:
                return True
        time.sleep(0.01)
    return False


def _row(doc: Doc) -> dict:
    meta = (doc.info or {}).get("metadata")
    return {"_id": doc.id, "text": doc.content, **({"metadata": meta} if meta else {})}


def _write(folder: Path, level: int, stamp_ns: int, rows: Iterable[dict], name: str | None = None) -> Path:
    """Write `rows` as the log file `name` (by default a new one of `level`: gzipped past level 0), whole or not at
    all: a temporary file, fsynced, renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{level}-{stamp_ns:020d}-{uuid.uuid4().hex[:8]}.jsonl" + (".gz" if level else ""))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) if path.suffix == ".gz" \
                else nullcontext(raw) as fh:
            for row in rows:
                fh.write((json.dumps(row) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    tmp.rename(path)
    return path


def merge(catalog: Catalog, name: str) -> int:
    """Merge every level holding `FANOUT` files or more into one file of the next level; files merged. Skipped
    (0) while another process merges or purges them, or a backfill of the index runs."""
    if backfill_texts.in_progress(catalog, name):
        return 0
    merged = 0
    try:
        with locks.text_log_lock(catalog, name):
            _remove_stale_tmp(log_folder(catalog, name))
            _remove_stale_tmp(_pending_folder(catalog, name))
            while (full := _full_level(catalog, name)) is not None:
                _merge_level(catalog, name, *full)
                merged += len(full[1])
            return merged
    except Conflict:  # another process merges them: the next append merges what is left
        return merged


def _full_level(catalog: Catalog, name: str) -> tuple[int, list[Path]] | None:
    """The lowest level holding `FANOUT` files or more, with its files (newest first); None when none does."""
    by_level: dict[int, list[Path]] = {}
    for p in sorted(_log_files(log_folder(catalog, name)), key=stamp, reverse=True):  # pending ones aside
        by_level.setdefault(_parts(p)[0], []).append(p)
    return next(((lv, by_level[lv]) for lv in sorted(by_level) if len(by_level[lv]) >= FANOUT), None)


def _remove_stale_tmp(folder: Path, age_s: float = 3600.0) -> None:
    """Half-written files of a killed process: an append writes its file in moments, and no merge runs but this."""
    for tmp in folder.glob("*.tmp") if folder.is_dir() else []:
        if time.time() - tmp.stat().st_mtime > age_s:
            tmp.unlink(missing_ok=True)


def _merge_level(catalog: Catalog, name: str, level: int, paths: list[Path]) -> None:
    """Merge `paths` (newest first) into one file of the next level, streamed: a batch of texts at a time is
    judged against the index and written, so a merge holds the ids it has seen, not a level's texts."""
    with catalog.session() as s:
        index_id = get_index(s, name).id
    seen: set[str] = set()
    written = [0]

    def latest() -> Iterator[dict]:
        for path in paths:  # newest first: an id's first text is its latest
            for doc in read_corpus(path):
                if doc.id not in seen:
                    seen.add(doc.id)
                    yield _row(doc)

    def held(rows: list[dict]) -> list[dict]:
        keep = _held(catalog, index_id, rows)
        written[0] += len(keep)
        return keep

    def kept() -> Iterator[dict]:
        batch: list[dict] = []
        for row in latest():
            batch.append(row)
            if len(batch) == _BATCH:
                yield from held(batch)
                batch = []
        yield from held(batch)

    out = _write(log_folder(catalog, name), level + 1, stamp(paths[0]), kept())
    if not written[0]:  # nothing of these texts is held any more
        out.unlink(missing_ok=True)
    for path in paths:
        path.unlink(missing_ok=True)


def _held(catalog: Catalog, index_id: int, rows: list[dict]) -> list[dict]:
    """The rows whose text the index holds now (its item's content hash)."""
    with catalog.session() as s:
        items = items_by_external_ids(s, index_id, [r["_id"] for r in rows])
    return [r for r in rows if r["_id"] in items and items[r["_id"]].content_hash == sha256_text(r["text"])]


def drop_unheld(catalog: Catalog, name: str, wait_s: float = 600.0) -> int:
    """Rewrite the index's settled text files without the texts it no longer holds (of documents deleted, or
    changed since): a plain delete's text goes now rather than at its level's next merge (`index compact
    --texts`). Pending files are left: their commits may be under way. Skipped (0) while a backfill of the index
    runs, which reads the files it started with. Texts removed."""
    if backfill_texts.in_progress(catalog, name):
        return 0
    removed = 0
    with locks.text_log_lock(catalog, name, wait_s=wait_s):
        with catalog.session() as s:
            index_id = get_index(s, name).id
        for path in _log_files(log_folder(catalog, name)):
            rows = [_row(d) for d in read_corpus(path)]
            keep = [r for start in range(0, len(rows), _BATCH) for r in _held(catalog, index_id, rows[start:start + _BATCH])]
            if len(keep) < len(rows):
                removed += len(rows) - len(keep)
                _write(path.parent, *_parts(path), keep, name=path.name) if keep else path.unlink()
    return removed


def purge(catalog: Catalog, name: str, ids: Iterable[str], wait_s: float = 600.0) -> None:
    """Take the texts of `ids` out of the index's log now (`index delete --purge`; call holding the index's write
    lock), waiting for a merge under way (which could carry them on). Each file holding one is written again
    without them, under its own name; so is a running backfill's link to it (`pinned`), which kept the old file."""
    gone = set(ids)
    with locks.text_log_lock(catalog, name, wait_s=wait_s):
        # settled first (the caller holds the index: no commit of theirs is under way), or the settling of one
        # after its write's commit could put back, under the settled name, the text this rewrites away
        _settle_pending(catalog, name)
        for path in files(catalog, name):
            _drop_from(path, gone)
        for path in _log_files(backfill_texts.pin_folder(catalog, name)):
            _drop_from(path, gone, keep_empty=True)  # the backfill reads every path it pinned


def _drop_from(path: Path, gone: set[str], keep_empty: bool = False) -> None:
    rows = [_row(d) for d in read_corpus(path)]
    if any(r["_id"] in gone for r in rows):
        kept = [r for r in rows if r["_id"] not in gone]
        if kept or keep_empty:
            _write(path.parent, *_parts(path), kept, name=path.name)
        else:
            path.unlink(missing_ok=True)


def forget(catalog: Catalog, name: str) -> None:
    """Delete an index's texts (it was dropped)."""
    shutil.rmtree(log_folder(catalog, name), ignore_errors=True)
