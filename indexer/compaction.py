"""`embedkd index compact`, leaving the index to its writers while it rewrites.

Compaction rewrites shards (deleted vectors out, small neighbours merged), which on a large index takes minutes
(an HNSW shard is rebuilt). It holds the index's write lock only for moments: to read the generation and
freeze the files it rewrites (`frozen.py`), and to commit. Meanwhile writes go on: adds land in new shards
(never merged into frozen ones), deletes are listed with their shards; at the commit those deletes are listed
with the rewritten shards (`shards.rebase`) and every shard written meanwhile is kept. A write that rewrote a
frozen shard anyway (`delete --purge`, a backfill's switch) makes the compaction start again from the index as
it is then; after `TRIES` such restarts it compacts holding the lock throughout, as it once always did.
A compaction killed or failed midway leaves the shards it had made; the next one reuses those whose sources are
unchanged (`staging.py`), so an HNSW index's rebuilt shards are not rebuilt again.
A compaction with something to rewrite is a row of the jobs table (kind "compact"; `embedkd index jobs`, `GET
/jobs`): vectors rewritten so far against those to rewrite, its error when it failed (the next one resumes that
row), "interrupted" when its process was killed.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from . import frozen, jobs, locks, shards, store
from .build import COMMIT_WAIT_S, index_row, index_stem, load_current, switch_generation
from .context import Catalog
from .errors import NotFound, UserError
from .models import Index
from .staging import Leftovers, record, record_path, staging_prefix

__all__ = ["compact_index", "compaction_need", "compaction_status", "TRIES"]

log = logging.getLogger(__name__)

TRIES = 3  # compactions without the lock before one holding it


def compaction_need(index: shards.ShardedIndex, deleted_share: float = 0.05, folds: int = 12) -> str | None:
    """Why compacting `index` is worth its rewrite, or None: the deleted vectors still in its files are at least
    `deleted_share` of those stored (searches skip them, memory holds them), or compacting would merge away
    at least `folds` shards (IVF and HNSW search pays per shard). Reads only the manifest."""
    deleted = index.deleted_listed
    stored = index.ntotal + deleted  # ntotal leaves the deleted out
    if stored and deleted / stored >= deleted_share:
        return f"{deleted} of its {stored} stored vectors are deleted"
    merged = len(index.shards) - len(index.compaction_groups())
    if merged >= folds:
        return f"{merged} of its {len(index.shards)} shards would be merged away"
    return None


def compaction_status(catalog: Catalog, name: str, deleted_share: float = 0.05, folds: int = 12) -> dict[str, Any]:
    """What `index list` shows of an index's files: its shards, the deleted vectors still in them, why it needs
    compacting (`compaction_need`, None when it does not) and who compacts it now. Reads its manifest only."""
    for attempt in (1, 2):
        index = index_row(catalog, name)
        if not index.file:
            return {"shards": 0, "deleted_listed": 0, "compaction_need": None, "compacting": None}
        try:
            current = load_current(catalog, index)
            break
        except UserError:  # a write committed and removed that manifest since the row was read: read again
            if attempt == 2:
                raise
    return {"shards": len(current.shards), "deleted_listed": current.deleted_listed,
            "compaction_need": compaction_need(current, deleted_share, folds), "compacting": locks.compactor(catalog, name)}


class _JobRow:
    """The compaction's row in the jobs table, made when it first finds something to rewrite (a failed one's row,
    resumed), its lock held while it runs; progress in vectors rewritten (or reused) of those to rewrite."""

    def __init__(self, catalog: Catalog, name: str, stack: ExitStack) -> None:
        self.catalog, self.name, self.stack, self.id = catalog, name, stack, None
        self.progress, self.t0 = 0, time.perf_counter()

    def begin(self, total: int) -> None:
        if self.id is None:
            job = jobs.start_or_resume(self.catalog, "compact", self.name, {}, total)
            self.stack.enter_context(locks.job_lock(self.catalog, job.id, f"compaction of index {self.name!r}"))
            self.id = job.id
        self.progress = 0  # an attempt made again after a write starts over
        jobs.update_progress(self.catalog, self.id, 0, {}, time.perf_counter() - self.t0, total=total)

    def add(self, vectors: int) -> None:
        self.progress += vectors
        jobs.update_progress(self.catalog, self.id, self.progress, {}, time.perf_counter() - self.t0)

    def done(self, s) -> None:
        """Done in the transaction that commits the compaction: a failure after it leaves no failed row behind."""
        if self.id is not None:
            jobs.mark_done(s, self.id)

    def end(self, error: BaseException | None) -> None:
        if self.id is not None:
            if error is None:
                jobs.finish(self.catalog, self.id)
            else:
                jobs.fail(self.catalog, self.id, f"{type(error).__name__}: {error}")


def compact_index(catalog: Catalog, name: str, lock_wait_s: float = COMMIT_WAIT_S) -> dict[str, Any]:
    """Rewrite an index's shards without their listed deleted ids, neighbours merged up to the shard size: what
    many small writes and deletes leave (small shards, skipped vectors) folded away. A new generation; the items
    and their ids are unchanged. An index with nothing to fold is left as it is. Writes to the index go on while
    it rewrites (module docstring); it waits up to `lock_wait_s` for the index's lock, to start and to commit."""
    held = [0.0]

    @contextmanager
    def lock() -> Iterator[None]:
        with locks.target_lock(catalog, name, wait_s=lock_wait_s):
            start = time.perf_counter()
            try:
                yield
            finally:
                held[0] += time.perf_counter() - start

    with locks.compaction_lock(catalog, name), ExitStack() as stack:
        row = _JobRow(catalog, name, stack)
        try:
            for attempt in range(1, TRIES + 2):
                if attempt <= TRIES:
                    out = _compact(catalog, name, lock, row, freeze=True)
                else:  # the last resort: holding the lock throughout, nothing comes between
                    with lock():
                        out = _compact(catalog, name, nullcontext, row, freeze=False)
                if out is not None:
                    row.end(None)
                    return {**out, "attempts": attempt, "lock_held_s": round(held[0], 3)}
                log.warning("index %r: a write rewrote shards this compaction was rewriting; compacting again", name)
        except BaseException as err:
            row.end(err)
            raise
    raise AssertionError("unreachable: the last attempt holds the lock throughout")


def _compact(catalog: Catalog, name: str, lock: Callable[[], AbstractContextManager], row: _JobRow,
             freeze: bool) -> dict[str, Any] | None:
    """One compaction, taking `lock` to start and to commit; None when a write rewrote what it rewrote meanwhile."""
    with lock():
        index = index_row(catalog, name)
        base = load_current(catalog, index)
        before = {"shards_before": len(base.shards), "deleted_before": base.deleted_listed}
        inputs = base.compaction_inputs()
        folder = catalog.settings.index_dir / name
        left = Leftovers(folder, name)
        if not inputs:  # nothing to rewrite: nothing staged earlier is of use
            left.discard()
            return {"index": name, "count": index.count, "generation": index.generation, "shards": len(base.shards),
                    **before, "changed": False}
        if freeze:
            frozen.freeze(catalog, name, inputs)
        row.begin(sum(sh.count for sh in base.shards if sh.file in inputs))
    stem = f"{staging_prefix(name)}-{uuid.uuid4().hex[:6]}"  # an attempt's own: a rerun here may reuse the last's
    staged: list[str] = []
    resumed: list[int] = []

    def stage(position: int, shard: shards.Shard, source: list[shards.Shard]) -> None:  # written as soon as made
        file = f"{stem}.s{position}.faiss"
        shard.checksum, shard.file = store.write_index(shard.index, folder / file), file
        staged.append(file)
        shard.count, shard.index = int(shard.index.ntotal), None  # then out of memory
        record(folder / file, shard, source)
        row.add(sum(sh.count for sh in source))

    def reuse(position: int, source: list[shards.Shard]) -> shards.Shard | None:
        shard = left.take(source, folder / f"{stem}.s{position}.faiss")
        if shard is not None:
            staged.append(shard.file)
            resumed.append(position)
            row.add(sum(sh.count for sh in source))
        return shard

    # what becomes of the staged shards: deleted once committed (the others' sources are gone then) or once the
    # index is gone; kept for the next attempt to reuse where a write rewrote some of their sources, or on failure
    keep = True
    try:
        try:
            sources = base.compact(index.factory, index.metric, write=stage, reuse=reuse)
        except Exception:  # its files gone mid-rewrite: say why, if the index was dropped meanwhile
            _row_unless_dropped(catalog, name)
            raise
        with lock():
            now = _row_unless_dropped(catalog, name)
            if now.id != index.id:  # dropped and built again meanwhile
                keep = False
                return None
            final = base if now.generation == index.generation else shards.rebase(base, sources, load_current(catalog, now))
            if final is None:
                return None
            placed = _place(final, set(staged), folder, index_stem(name, now.generation + 1))
            out = switch_generation(catalog, now, final, lambda s, _gen: row.done(s))
        keep = False
        left.discard()
        return {**out, **before, "deleted_meanwhile": sum(len(final.shards[pos].deleted) for pos in placed),
                "resumed": len(resumed), "changed": True}
    except NotFound:
        keep = False
        raise
    except BaseException:
        if staged:
            log.warning("index %r: the compaction failed; its %d staged shard(s) kept for the next one to reuse "
                        "(`embedkd index gc` deletes them)", name, len(staged))
        raise
    finally:
        if freeze:
            frozen.thaw(catalog, name)
        for file in staged if not keep else []:  # the shards not committed (placed ones were renamed) and the records
            (folder / file).unlink(missing_ok=True)
            record_path(folder / file).unlink(missing_ok=True)


def _row_unless_dropped(catalog: Catalog, name: str) -> Index:
    """The index's row now; `NotFound` saying it was dropped while it was being compacted."""
    try:
        return index_row(catalog, name)
    except NotFound:
        raise NotFound(f"index {name!r} was dropped while it was being compacted; nothing to compact") from None


def _place(final: shards.ShardedIndex, staged: set[str], folder: Path, stem: str) -> list[int]:
    """Give the staged shards their generation's names (renames in one folder: moments, whatever their size);
    returns their positions."""
    placed = [pos for pos, shard in enumerate(final.shards) if shard.file in staged]
    for pos in placed:
        shard = final.shards[pos]
        file = f"{stem}.s{pos}.faiss"
        os.replace(folder / shard.file, folder / file)
        shard.file = file
    return placed
