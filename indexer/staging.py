"""A compaction's staged shards, each written with what it was made from, so that one killed midway is resumed.

A compaction writes each shard it makes as soon as it is made (`compaction.py`), and beside it a record (same
name, `.json`) of the shards it merged: their files, checksums and the deleted ids it left out. The record is
written after the shard, so a record names a whole file. A compaction holds the index's compaction lock, so the
staged shards it finds are leftovers: of a process killed, of a failed attempt, or of an attempt that a purge made
start again. It reuses one where the shards it would merge are still those files. A write since that rewrote one
of them (an add merged into it once nothing froze it, a purge) changed its checksum, and that shard is made again.
Ids deleted since are listed with the reused shard, as ids deleted during a compaction are (`shards.rebase`). What
this saves is the HNSW rebuilds: an HNSW shard is rebuilt to merge or to drop deleted vectors, minutes for a full
shard.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .hashing import sha256_file
from .shards import Shard

__all__ = ["Leftovers", "record", "record_path", "reusable", "staging_prefix"]

log = logging.getLogger(__name__)


def staging_prefix(name: str, process: str | None = None) -> str:
    """How the shards a compaction has written but not committed are named, in the index's folder (`process`:
    which one's, by default this one; "" for any)."""
    return f"{name}.compacting-" + (f"{socket.gethostname()}-{os.getpid()}" if process is None else process)


def record_path(shard_file: Path) -> Path:
    return shard_file.with_suffix(".json")


def record(shard_file: Path, shard: Shard, source: list[Shard]) -> None:
    """Write what staged `shard` (in `shard_file`) was made from, once the shard is written."""
    made_from = [[s.file, s.checksum, s.deleted.tolist()] for s in source]
    body = {"checksum": shard.checksum, "count": shard.count, "sources": made_from}
    path = record_path(shard_file)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


class Leftovers:
    """The staged shards killed compactions of index `name` left in `folder`, by the shards they were made from.
    Make it holding the index's compaction lock (module docstring)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.found: dict[tuple[tuple[str, str], ...], tuple[Path, dict]] = {}
        for path, body in _records(folder, name):
            key = tuple((f, c) for f, c, _ in body["sources"])
            if key in self.found:  # the same shard made twice (two attempts killed): one is enough
                _delete(*self.found[key][:1])
            self.found[key] = (path, body)

    def take(self, source: list[Shard], into: Path) -> Shard | None:
        """The staged shard made from `source` (the shards as they are now), moved to `into` with its record; the
        ids deleted from `source` since it was made are listed with it. None when none is, or it cannot be used."""
        found = self.found.pop(tuple((s.file, s.checksum) for s in source), None)
        if found is None:
            return None
        path, body = found
        shard_file = path.with_suffix(".faiss")
        left_out = np.unique(np.concatenate([np.asarray(d, np.int64) for _, _, d in body["sources"]]))
        deleted = np.unique(np.concatenate([s.deleted for s in source])).astype(np.int64)
        # a shard's listed deletes only grow while its file stays; a file that is not whole is made again
        if not np.isin(left_out, deleted).all() or not shard_file.is_file() or sha256_file(shard_file) != body["checksum"]:
            log.warning("%s does not match what it was made from; making that shard again", shard_file.name)
            _delete(path)
            return None
        os.replace(shard_file, into)
        os.replace(path, record_path(into))
        return Shard(source[0].first_id, None, into.name, body["checksum"], int(body["count"]),
                     np.setdiff1d(deleted, left_out))

    def discard(self) -> int:
        """Delete the leftovers not taken (their sources are gone once the compaction commits); how many."""
        for path, _ in self.found.values():
            _delete(path)
        count, self.found = len(self.found), {}
        return count


def reusable(folder: Path, name: str, current: set[tuple[str, str]]) -> set[str]:
    """The names of the staged files (shards and their records) a next compaction of index `name` could reuse:
    those whose sources are all among `current`, the (file, checksum) of the index's shards now (`index gc` keeps
    them; the compaction checks the rest)."""
    out = set()
    for path, body in _records(folder, name):
        shard_file = path.with_suffix(".faiss")
        if shard_file.is_file() and all((f, c) in current for f, c, _ in body["sources"]):
            out |= {path.name, shard_file.name}
    return out


def _records(folder: Path, name: str) -> Iterator[tuple[Path, dict]]:
    """Each staged shard's record in `folder` that was written whole, read."""
    for path in sorted(folder.glob(f"{staging_prefix(name, '')}*.json")) if folder.is_dir() else []:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):  # not a record written whole: nothing to reuse
            continue
        sources = body.get("sources") if isinstance(body, dict) else None
        if isinstance(sources, list) and all(isinstance(s, list) and len(s) == 3 for s in sources):
            yield path, body


def _delete(record_file: Path) -> None:
    record_file.with_suffix(".faiss").unlink(missing_ok=True)
    record_file.unlink(missing_ok=True)
