"""An index as shards: contiguous ranges of FAISS ids, each in its own FAISS file, named by a manifest.

Ids are handed out in ascending order and never reused, so new vectors always go after the last shard,
and a shard holds at most `shard_size` vectors. A write rewrites only the shards it changed, and an add
does not rewrite a shard already on disk to append to it: it starts a new shard, and merges the
newest shards while the older of the last two holds no more vectors than the newer (Bentley and Saxe's
logarithmic method, as in an LSM tree). So adding 10 documents to an index costs a write of about 10
vectors, not of its last shard (up to `shard_size`); each vector is rewritten about log2(shard_size /
write size) times over its life, and an index has at most that many shards beyond its full ones
(docs/index_benchmark.md, *Small writes to a large index*). The manifest lists every shard's file and
sha256, and the catalog holds the manifest's sha256, so a load verifies every byte it reads, as with a
single file.

A delete does not rewrite its shard either while the shard's deleted ids are few (at most a tenth of it and
`MAX_DELETED`): the manifest lists them with the shard, and searches skip them (a FAISS `IDSelector`, or
for index types without one, a top k + deleted that drops them). Past that bound the shard is rewritten
without them, as it is when a delete is asked to `purge`; until then a deleted vector stays in its file.

An add that opens a shard needs an empty copy of the index's trained template (IVF centroids, PQ codebooks):
the build writes it beside the shards (`{stem}.template.faiss`, named in the manifest), so that no add reads
a large shard to copy it. Indexes written before that get one at their first add.

A search asks each shard for its top k and merges them with FAISS's `ResultHeap`. Every shard starts
as a copy of one trained, empty index (IVF centroids and PQ codebooks are shared), so Flat, IVF and PQ
shards return what one index would; HNSW builds a graph per shard, one graph search per shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from . import filtered, store
from .errors import UserError
from .hashing import sha256_file

__all__ = ["DEFAULT_SHARD_SIZE", "MANIFEST_SUFFIX", "MAX_DELETED", "Shard", "ShardedIndex", "check_shard_size", "link", "load",
           "manifest_files", "manifest_shards", "rebase", "replacing", "shard_size", "write"]

# At 384-d float32 a full shard is 1.5 GB: large enough that Flat/IVF searches stay one pass over few
# files, small enough that a delete (which rewrites its shard) in a 10M-vector index rewrites a tenth of it.
DEFAULT_SHARD_SIZE = 1_000_000
# Deleted ids a shard keeps listed before a delete rewrites it: a search builds a selector of them per shard.
MAX_DELETED = 10_000
MANIFEST_SUFFIX = ".shards.json"
FORMAT = "embedkd-shards/1"


@dataclass
class Shard:
    first_id: int  # the shard holds FAISS ids >= first_id and < the next shard's first_id
    index: Any | None  # a faiss.Index (or a search-only GPU copy); None until a write needs it
    file: str | None = None  # None until written
    checksum: str | None = None
    count: int = 0  # vectors in its file, as the manifest says (while `index` is not read)
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # in the file, but deleted; ascending


@dataclass
class ShardedIndex:
    shards: list[Shard]
    shard_size: int
    folder: Path | None = None  # where unread shards are read from
    dirty: set[int] = field(default_factory=set)  # positions of shards changed since loading
    template: Shard | None = None  # an empty, trained copy of the shards' index (its file, once written)
    # files a running compaction is rewriting (`compaction.py`): no write rewrites or merges them meanwhile
    frozen: set[str] = field(default_factory=set)

    @classmethod
    def empty(cls, template: faiss.Index, shard_size: int = DEFAULT_SHARD_SIZE, first_id: int = 0) -> ShardedIndex:
        """A new index whose shards are copies of `template` (empty, trained where it needs training)."""
        check_shard_size(shard_size)
        return cls([Shard(first_id, template)], shard_size, dirty={0}, template=Shard(0, faiss.clone_index(template)))

    def shard(self, pos: int) -> Any:
        """Shard `pos`'s index, read (and verified) on first use."""
        shard = self.shards[pos]
        if shard.index is None:
            assert self.folder is not None and shard.file is not None
            shard.index = store.read_index(self.folder / shard.file, shard.checksum)
        return shard.index

    @property
    def ntotal(self) -> int:
        return sum(self._count(pos) for pos in range(len(self.shards)))

    @property
    def deleted_listed(self) -> int:
        """Deleted vectors still in the shards' files, skipped by searches until a rewrite takes them out."""
        return sum(len(shard.deleted) for shard in self.shards)

    @property
    def d(self) -> int:
        return int(self.shard(len(self.shards) - 1).d)

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k of every shard, merged; `allowed` (ascending ids): a filter, and shards it leaves empty are skipped."""
        if len(self.shards) == 1:
            return self._search_shard(0, q, k, allowed)
        if allowed is not None:  # ascending ids, contiguous shards: each shard's part is one slice
            cuts = np.searchsorted(allowed, [s.first_id for s in self.shards[1:]]).tolist()
            parts = np.split(allowed, cuts)
        heap = faiss.ResultHeap(len(q), k, keep_max=_keeps_max(self.shard(0)))
        for pos in range(len(self.shards)):
            subset = parts[pos] if allowed is not None else None
            if subset is not None and not len(subset):
                continue
            if self._count(pos):
                scores, ids = self._search_shard(pos, q, min(k, self._count(pos)), subset)
                heap.add_result(np.ascontiguousarray(scores, np.float32), np.ascontiguousarray(ids, np.int64))
        heap.finalize()
        return heap.D, heap.I

    def _search_shard(self, pos: int, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        deleted = self.shards[pos].deleted
        if allowed is not None and len(deleted):
            allowed = allowed[~np.isin(allowed, deleted)]
        return filtered.search(self.shard(pos), q, k, allowed, excluded=deleted if len(deleted) else None)

    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append vectors whose ids are ascending and above every stored id. They fill the last shard if
        this write already changes it (or it is empty), else a new one; the newest shards are then merged
        while the older of the last two is no larger than the newer (module docstring)."""
        ids = np.asarray(ids, dtype=np.int64)
        start = 0
        while start < len(ids):
            last = len(self.shards) - 1
            room = self.shard_size - self._stored(last)
            if room <= 0 or (last not in self.dirty and self._count(last)) or self._is_frozen(last):
                self.shards.append(Shard(int(ids[start]), self._empty_copy()))
                self.dirty.add(last + 1)
                continue
            end = min(len(ids), start + room)
            self.shard(last).add_with_ids(np.ascontiguousarray(vectors[start:end], np.float32), ids[start:end])
            self.dirty.add(last)
            start = end
        self._merge_newest()

    def _merge_newest(self) -> None:
        while len(self.shards) > 1:
            older, newer = len(self.shards) - 2, len(self.shards) - 1
            if (self._count(older) > self._count(newer) or self._stored(older) + self._stored(newer) > self.shard_size
                    or self._is_frozen(older)):
                return
            # into the older shard, so a shard's ids stay ascending (filtered.search relies on it to skip a sort)
            self.shards[older].index = store.merge(self.shard(older), self.shard(newer))
            self.shards[older].deleted = np.union1d(self.shards[older].deleted, self.shards[newer].deleted)
            self.shards.pop()
            self.dirty.discard(newer)
            self.dirty.add(older)

    def _is_frozen(self, pos: int) -> bool:
        return self.shards[pos].file in self.frozen

    def _count(self, pos: int) -> int:
        """Shard `pos`'s vectors, deleted ones left out."""
        return self._stored(pos) - len(self.shards[pos].deleted)

    def _stored(self, pos: int) -> int:
        """Shard `pos`'s vectors in its file."""
        shard = self.shards[pos]
        return int(shard.index.ntotal) if shard.index is not None else shard.count

    def _empty_copy(self) -> Any:
        """A trained, empty shard: a copy of the template; for an index written without one, of the shard cheapest
        to copy (its vectors are copied too: a shard not yet read costs about twice its size, read then
        checksummed), which becomes the template written with this write."""
        if self.template is not None:
            if self.template.index is None:
                assert self.folder is not None and self.template.file is not None
                self.template.index = store.read_index(self.folder / self.template.file, self.template.checksum)
            return faiss.clone_index(self.template.index)
        cost = {pos: self._count(pos) * (1 if s.index is not None else 2) for pos, s in enumerate(self.shards)}
        fresh = faiss.clone_index(self.shard(min(cost, key=cost.__getitem__)))
        fresh.reset()
        self.template = Shard(0, faiss.clone_index(fresh))
        return fresh

    def remove_ids(self, ids: np.ndarray, factory: str, metric: str, purge: bool = False) -> None:
        """Delete ids: listed as deleted with their shards, or removed from the shards' files (rewriting them) where
        a shard's list would pass its bound, or with `purge` (HNSW shards are rebuilt, one shard at a time). A frozen
        shard's list passes its bound: the compaction rewriting it takes the list over."""
        ids = np.asarray(ids, dtype=np.int64)
        owner = self._owners(ids)
        for pos in np.unique(owner).tolist():
            shard = self.shards[pos]
            gone = np.union1d(shard.deleted, ids[owner == pos])
            if purge or (len(gone) > min(MAX_DELETED, self._stored(pos) // 10) and not self._is_frozen(pos)):
                shard.index = store.remove_ids(self.shard(pos), gone, factory, metric)
                shard.deleted = gone[:0]
                self.dirty.add(pos)
            else:
                shard.deleted = gone

    def compaction_groups(self) -> list[list[int]]:
        """The shards `compact` makes, as runs of positions of the current ones: neighbours merged while the merged
        one fits `shard_size` (deleted vectors not counted, as `compact` removes them). Reads no shard."""
        groups: list[list[int]] = []
        for pos in range(len(self.shards)):
            if groups and sum(self._count(p) for p in groups[-1]) + self._count(pos) <= self.shard_size:
                groups[-1].append(pos)
            else:
                groups.append([pos])
        return groups

    def _rewrites(self, group: list[int]) -> bool:
        return len(group) > 1 or len(self.shards[group[0]].deleted) > 0 or group[0] in self.dirty

    def compaction_inputs(self) -> set[str]:
        """The files `compact` would rewrite (it keeps the others as they are)."""
        return {self.shards[p].file for g in self.compaction_groups() if self._rewrites(g) for p in g
                if self.shards[p].file is not None}

    def compact(self, factory: str, metric: str, write: Callable[[int, Shard, list[Shard]], None] | None = None,
                reuse: Callable[[int, list[Shard]], Shard | None] | None = None) -> list[list[Shard] | None]:
        """Rewrite every shard that lists deleted ids without them, and merge neighbouring shards while the merged
        one fits `shard_size` (`embedkd index compact`: after many small writes, fewer shards to search).
        Returns, per shard of the result, None where it was kept as it was, else the shards it was made of as
        they were (file, checksum, the deleted ids it listed and no longer holds), which `rebase` needs.
        `write(position, shard, source)`: called with each rewritten shard as soon as it is made; it writes it (its
        `file` and `checksum` set) and may let its vectors go (`index` None, `count` set), so that the
        compaction holds one shard's worth of vectors at a time, not the index's. Without it the rewritten
        shards stay in memory, dirty. `reuse(position, source)`: a shard already made from `source` (written, with
        the ids deleted since listed), or None to make it: a killed compaction's work, not done again."""
        assert reuse is None or write is not None, "reused shards are written ones"
        groups = self.compaction_groups()
        sources = [[Shard(s.first_id, None, s.file, s.checksum, s.count, s.deleted) for s in map(self.shards.__getitem__, g)]
                   if self._rewrites(g) else None for g in groups]
        made: list[Shard] = []
        for group, source in zip(groups, sources):
            first = self.shards[group[0]]
            done = reuse(len(made), source) if source is not None and reuse is not None else None
            if done is not None:
                made.append(done)
                continue
            if source is not None:
                for pos in group:
                    if len(self.shards[pos].deleted):
                        self.shards[pos].index = store.remove_ids(self.shard(pos), self.shards[pos].deleted, factory, metric)
                        self.shards[pos].deleted = self.shards[pos].deleted[:0]
                for pos in group[1:]:
                    first.index = store.merge(self.shard(group[0]), self.shard(pos))
                    self.shards[pos].index = None  # its vectors are in `first` now
            made.append(first)
            if source is not None and write is not None:
                write(len(made) - 1, first, source)
        self.shards = made
        self.dirty = {j for j, source in enumerate(sources) if source is not None} if write is None else set()
        return sources

    def stored_ids(self) -> np.ndarray:
        """Every id the index holds (deleted ones left out), shard by shard."""
        out = []
        for pos, shard in enumerate(self.shards):
            ids = store.stored_ids(self.shard(pos))
            out.append(ids[~np.isin(ids, shard.deleted)] if len(shard.deleted) else ids)
        return np.concatenate(out)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors by id, in the order asked (`store.reconstruct` per shard)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.d), np.float32)
        owner = self._owners(ids)
        for pos in np.unique(owner).tolist():
            out[owner == pos] = store.reconstruct(self.shard(pos), ids[owner == pos])
        return out

    def _owners(self, ids: np.ndarray) -> np.ndarray:
        firsts = np.array([s.first_id for s in self.shards], dtype=np.int64)
        return np.clip(np.searchsorted(firsts, ids, side="right") - 1, 0, None)


def rebase(compacted: ShardedIndex, sources: list[list[Shard] | None], now: ShardedIndex) -> ShardedIndex | None:
    """What `compacted` (`compact` of an earlier generation, `sources` its return) is on `now`, the index as
    writes committed since left it; None when one of them rewrote a shard the compaction rewrote (a purge).
    Writes leave frozen shards in their files, so `now` holds each source file as it was but for ids deleted
    since: those are listed as deleted on the shard made from it. Every other shard of `now` (added, or changed
    by writes, since) is kept as it is, in its place."""
    at = {(s.file, s.checksum): s for s in now.shards}
    made_from: dict[str | None, int] = {}
    for j, source in enumerate(sources):
        if source is None:
            continue
        if any((s.file, s.checksum) not in at for s in source):
            return None
        since = [np.setdiff1d(at[s.file, s.checksum].deleted, s.deleted) for s in source]
        compacted.shards[j].deleted = np.unique(np.concatenate([compacted.shards[j].deleted, *since])).astype(np.int64)
        made_from.update({s.file: j for s in source})
    out: list[Shard] = []
    for shard in now.shards:
        j = made_from.get(shard.file)
        if j is None:
            out.append(shard)
        elif not out or out[-1] is not compacted.shards[j]:
            out.append(compacted.shards[j])
    return ShardedIndex(out, now.shard_size, now.folder, template=now.template, frozen=now.frozen)


def _keeps_max(index: Any) -> bool:
    return getattr(index, "metric_type", faiss.METRIC_INNER_PRODUCT) == faiss.METRIC_INNER_PRODUCT


def check_shard_size(shard_size: int) -> int:
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise UserError(f"shard size must be a positive number of vectors, got {shard_size!r}")
    return shard_size


def write(index: ShardedIndex, folder: Path, stem: str) -> tuple[Path, str]:
    """Write the changed shards as `{stem}.s{position}.faiss` and the manifest `{stem}.shards.json`;
    returns (manifest path, its sha256). Unchanged shards keep their files."""
    for pos in sorted(index.dirty):
        shard = index.shards[pos]
        path = folder / f"{stem}.s{pos}.faiss"
        shard.checksum = store.write_index(shard.index, path)
        shard.file = path.name
    index.dirty.clear()
    template = index.template
    if template is not None and template.file is None:
        path = folder / f"{stem}.template.faiss"
        template.checksum, template.file = store.write_index(template.index, path), path.name
    return _write_manifest(folder, stem, index.shard_size, [_entry(s) for s in index.shards],
                           {"file": template.file, "checksum": template.checksum} if template is not None else None)


def _entry(shard: Shard) -> dict:
    entry = {"file": shard.file, "checksum": shard.checksum, "first_id": shard.first_id,
             "count": int(shard.index.ntotal) if shard.index is not None else shard.count}
    if len(shard.deleted):
        entry["deleted"] = shard.deleted.tolist()
    return entry


def link(path: Path, checksum: str | None, folder: Path, stem: str) -> tuple[Path, str]:
    """The index of `path` under `folder`/`stem`, its shard files hard-linked, not copied (a backfill's
    staging index becoming the served one). Returns (manifest path, its sha256)."""
    entries, size, template = _entries(path, checksum)
    folder.mkdir(parents=True, exist_ok=True)
    linked: list[dict] = []
    try:
        names = [f"{stem}.s{pos}.faiss" for pos in range(len(entries))]
        for entry, name in zip([*entries, template], [*names, f"{stem}.template.faiss"]):
            if entry is not None:
                (folder / name).unlink(missing_ok=True)
                os.link(path.parent / entry["file"], folder / name)
                linked.append({**entry, "file": name})
        return _write_manifest(folder, stem, size, linked[: len(entries)], linked[-1] if template else None)
    except BaseException:
        for entry in linked:
            (folder / entry["file"]).unlink(missing_ok=True)
        raise


def shard_size(path: Path, checksum: str | None) -> int:
    """The shard size an index's manifest sets (indexes written before shards: the default)."""
    return _entries(path, checksum)[1]


def _write_manifest(folder: Path, stem: str, size: int, entries: list[dict], template: dict | None) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "shard_size": size, "shards": entries}
    if template is not None:
        manifest["template"] = template
    path = folder / f"{stem}{MANIFEST_SUFFIX}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return path, digest


def _entries(path: Path, checksum: str | None) -> tuple[list[dict], int, dict | None]:
    """(the shard entries, the shard size, the template's entry or None) of a manifest; an index written before
    shards is one FAISS file: one shard, whose checksum is the catalog's."""
    if not path.name.endswith(MANIFEST_SUFFIX):
        return [{"file": path.name, "checksum": checksum, "first_id": 0}], DEFAULT_SHARD_SIZE, None
    manifest = _manifest(path, checksum)
    return manifest["shards"], int(manifest["shard_size"]), manifest.get("template")


def _manifest(path: Path, checksum: str | None) -> dict:
    if not path.is_file():
        raise UserError(f"index file {path} is missing; rebuild the index with `embedkd index build`")
    if checksum is not None and sha256_file(path) != checksum:
        raise UserError(f"index file {path} does not match its catalog checksum: it is corrupt or was changed "
                        "outside embedkd; restore it or rebuild the index")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not an embedkd shard manifest ({FORMAT}); restore it or rebuild the index")
    return manifest


def load(path: Path, checksum: str | None, reuse: dict[tuple[str, str], Any] | None = None,
         prepare: Callable[[faiss.Index], Any] | None = None, lazy: bool = False) -> ShardedIndex:
    """The index whose manifest (or, for indexes written before shards, single FAISS file) is `path`, every
    file verified against its checksum. `reuse`: shards already in memory by (file, checksum), not read again;
    `prepare` is applied to each shard read (search parameters, a GPU copy). `lazy`: shards are read when first
    used (a write reads only those it changes)."""
    entries, size, template = _entries(path, checksum)
    out = []
    for entry in entries:
        index = (reuse or {}).get((entry["file"], entry["checksum"]))
        if index is None and (not lazy or "count" not in entry):  # a single file's count is known once read
            index = store.read_index(path.parent / entry["file"], entry["checksum"])
            index = prepare(index) if prepare is not None else index
        out.append(Shard(int(entry["first_id"]), index, entry["file"], entry["checksum"], int(entry.get("count", 0)),
                         np.array(entry.get("deleted", []), np.int64)))
    return ShardedIndex(out, size, path.parent,
                        template=Shard(0, None, template["file"], template["checksum"]) if template else None)


@contextmanager
def replacing(folder: Path, old: str | None, new: Path) -> Iterator[None]:
    """Around the catalog commit that makes manifest `new` replace manifest `old` (None: a new index): if the
    commit fails, the files only `new` names go; once it succeeds, the files only `old` named go."""
    old_files = set(manifest_files(folder / old)) if old else set()
    new_files = set(manifest_files(new))
    try:
        yield
    except BaseException:
        _remove(folder, new_files - old_files)
        raise
    _remove(folder, old_files - new_files)


def _remove(folder: Path, names: set[str]) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)


def manifest_shards(path: Path) -> set[tuple[str, str]]:
    """(file, checksum) of each shard an index's manifest names; none when it is gone or is a single file."""
    if not path.name.endswith(MANIFEST_SUFFIX) or not path.is_file():
        return set()
    return {(e["file"], e["checksum"]) for e in json.loads(path.read_text())["shards"]}


def manifest_files(path: Path) -> list[str]:
    """The files an index's manifest (or single file) names, itself included; [] when it is gone."""
    if not path.name.endswith(MANIFEST_SUFFIX):
        return [path.name]
    if not path.is_file():
        return []
    manifest = json.loads(path.read_text())
    return [path.name] + [e["file"] for e in manifest["shards"]] + ([manifest["template"]["file"]] if "template" in manifest
                                                                   else [])
