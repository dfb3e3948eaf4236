"""Index writes: build, add, delete. Resumable, and the catalog is committed last.

A build encodes the corpus in chunks; each chunk's vectors go to the job's folder and the job row
records the checkpoint, so a killed build rerun with the same arguments resumes after the last
finished chunk. The FAISS files (the shards a write changed, and a manifest naming all of them:
`shards.py`) are written to temp paths, checksummed and renamed into a new generation; the catalog
switches to it in one transaction. Until that commit the catalog and the old
files are untouched, so a failed job changes nothing. An add encodes without its index's write lock and
takes it to commit (`add_documents`), so a long add leaves the index to other writes until then.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update
from tqdm.auto import tqdm

from . import backfill_texts, carried, frozen, jobs, locks, purges, shards, store, text_log
from .catalog import (
    KIND_COMMANDS,
    delete_items_by_faiss_ids,
    ensure_model,
    get_index,
    insert_items,
    items_by_external_ids,
    update_item_infos,
)
from .context import Catalog
from .corpus import Doc, DocSource
from .encoder import Encoder, check_embeddings
from .errors import Conflict, UserError
from .hashing import content_key
from .models import Index, Item, Job, item_removals

__all__ = ["build_index", "add_documents", "delete_items", "drop_index", "index_row", "load_current", "load_latest",
           "switch_generation",
           "index_stem", "check_encoder_fits", "check_index_name"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_CHUNK = 4096
# how long an add that has encoded its documents waits for its index's write lock to commit them (another
# add's commit, a compaction); refused after that, its chunks kept for a rerun
COMMIT_WAIT_S = 600.0


@dataclass
class _Scan:
    """What a job keeps of each document from reading the corpus to writing the index: its id, content
    hash and info. Not its content: that is read again chunk by chunk while encoding, since a corpus's
    text is most of its size (docs/index_benchmark.md)."""

    ids: list[str]
    keys: list[str]
    infos: list[dict[str, Any] | None]
    contents: list[Any] | None = None  # kept only for a source that cannot be read twice (a generator)

    @cached_property
    def id_set(self) -> set[str]:
        return set(self.ids)


@dataclass
class _Plan:
    positions: list[int]  # the documents this job encodes, as positions in the corpus, ascending
    skipped: int  # unchanged documents already in the index (adds only)
    replaced_faiss_ids: list[int]  # old vectors of changed documents (adds only)
    retagged: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # same content, new info: FAISS id -> info
    missing_faiss_ids: list[int] = field(default_factory=list)  # items the corpus lacks (a sync deletes them)


def check_index_name(name: str) -> str:
    """`name` if an index may have it, else a one-line error."""
    if not _NAME.match(name):
        raise UserError(f"index name {name!r} is not allowed; use letters, digits, '.', '_' or '-' (at most 128)")
    return name


def index_stem(name: str, generation: int) -> str:
    """What a generation's files are named by: `{stem}.shards.json` and its shards `{stem}.s{N}.faiss`."""
    return f"{name}.g{generation}"


def _scan(docs: Iterable[Doc]) -> _Scan:
    """Read and validate every document before anything is written."""
    seen: dict[str, int] = {}
    out = _Scan([], [], [], [] if iter(docs) is iter(docs) else None)
    for pos, doc in enumerate(docs):
        if doc.id in seen:
            raise UserError(
                f"document id {doc.id!r} appears twice (documents {seen[doc.id] + 1} and {pos + 1}); ids must be unique"
            )
        seen[doc.id] = pos
        out.ids.append(doc.id)
        out.keys.append(content_key(doc.content))
        out.infos.append(doc.info)
        if out.contents is not None:
            out.contents.append(doc.content)
    if not out.ids:
        empty = len(getattr(docs, "empty_ids", []))
        why = f" (its {empty} lines have neither title nor text)" if empty else ""
        raise UserError(f"the corpus has no documents{why}; give a file with at least one {{\"_id\", \"text\"}} line")
    return out


def _record_path(params: dict[str, Any], docs: DocSource) -> None:
    """[upgrade, issue 4] Where the documents of a build or an add live: `embedkd upgrade fit` samples the index's
    own documents from these files, and a backfill re-embeds them (embedkd.upgrade.run.index_corpora)."""
    if getattr(docs, "path", None):
        params["corpus_path"] = str(Path(docs.path).resolve())
    elif getattr(docs, "paths", None):  # a backfill's: a rerun reads the same files (`backfill.backfill_corpora`)
        params["corpus_paths"] = [str(Path(p).resolve()) for p in docs.paths]


def _skipped(docs: DocSource) -> dict[str, int]:
    """How many documents the source skipped for having no text (reported, so nothing vanishes silently)."""
    n = len(getattr(docs, "empty_ids", []))
    return {"skipped_empty": n} if n else {}


def check_encoder_fits(index: Index, encoder: Encoder) -> None:
    rec = encoder.record
    if rec.dimension != index.dimension:
        raise Conflict(
            f"model {rec.name!r} makes {rec.dimension}-d vectors but index {index.name!r} holds {index.dimension}-d "
            f"vectors of model {index.model.name!r}; use that model, or fit an adapter with `embedkd upgrade fit`"
        )
    if rec.fingerprint != index.model.fingerprint:
        raise Conflict(
            f"model {rec.name!r} is not the model index {index.name!r} was built with ({index.model.name!r}); "
            "vectors of different models must not mix: use that model, or fit an adapter with `embedkd upgrade fit`"
        )


def _contents(docs: DocSource, scan: _Scan, positions: Sequence[int]) -> Iterator[Any]:
    """The contents of the documents at `positions` (ascending), read again from the source. A document
    that is not the one the scan read (same position, id and content hash) means the corpus changed."""
    if scan.contents is not None:
        yield from (scan.contents[p] for p in positions)
        return
    targets = iter(positions)
    want = next(targets, None)
    for pos, doc in enumerate(docs):
        if want is None:
            return
        if pos == want:
            if doc.id != scan.ids[pos] or content_key(doc.content) != scan.keys[pos]:
                raise UserError(f"the corpus changed while this job read it (document {pos + 1}, id {doc.id!r}); "
                                "nothing was written: run the command again once the file is complete")
            yield doc.content
            want = next(targets, None)
    if want is not None:
        raise UserError(f"the corpus changed while this job read it (it now ends before document {want + 1}); "
                        "nothing was written: run the command again once the file is complete")


def _chunks(contents: Iterator[Any], total: int, size: int, start: int) -> Iterator[tuple[int, list[Any]]]:
    """Yield (chunk number, contents) from chunk `start`, read one chunk ahead in a thread."""
    q: queue.Queue = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for k in range(start, (total + size - 1) // size):
                q.put((k, list(islice(contents, size))))
            q.put(None)
        except BaseException as err:  # noqa: BLE001 - raised again in the consumer
            q.put(err)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def _encode_sorted(encoder: Encoder, contents: list[Any], bar, step: int = 512) -> np.ndarray:
    """Encode in length order (batches pad little) in steps that move the progress bar; input order out.
    An encoder that spreads calls over workers (indexer.distributed) asks for larger steps."""
    step = max(step, int(getattr(encoder, "preferred_call_size", 0)))
    order = np.argsort([len(c) if isinstance(c, str) else 0 for c in contents], kind="stable")
    out = np.empty((len(contents), encoder.record.dimension), np.float32)
    for start in range(0, len(order), step):
        idx = order[start : start + step]
        out[idx] = check_embeddings(encoder([contents[i] for i in idx]), len(idx), encoder.record)
        bar.update(len(idx))
    return out


class ChunkVectors:
    """A job's encoded chunks in its folder, in corpus order. Writers add them to FAISS one chunk at a
    time, so a build never holds the corpus's vectors in memory twice (docs/index_benchmark.md)."""

    def __init__(self, paths: list[Path], dimension: int) -> None:
        self.paths, self.dimension = paths, dimension
        self.sizes = [int(np.load(p, mmap_mode="r").shape[0]) for p in paths]

    def __len__(self) -> int:
        return sum(self.sizes)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(position of the chunk's first vector, its vectors), one chunk in memory at a time."""
        start = 0
        for path, size in zip(self.paths, self.sizes):
            yield start, np.load(path)
            start += size

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """Rows by position (a training sample), read through memory maps."""
        rows = np.asarray(rows)
        bounds = np.cumsum([0, *self.sizes])
        out = np.empty((len(rows), self.dimension), np.float32)
        for k, path in enumerate(self.paths):
            inside = (rows >= bounds[k]) & (rows < bounds[k + 1])
            if inside.any():
                out[inside] = np.load(path, mmap_mode="r")[rows[inside] - bounds[k]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All of them at once (training on a corpus smaller than the sample cap)."""
        arrays = [v for _, v in self.chunks()]
        out = np.concatenate(arrays) if arrays else np.zeros((0, self.dimension), np.float32)
        return out if dtype is None else out.astype(dtype, copy=False)


def _encode_job(catalog: Catalog, job: Job, encoder: Encoder, docs: DocSource, scan: _Scan, positions: Sequence[int],
                chunk: int, progress: bool) -> ChunkVectors:
    """Encode all chunks not yet checkpointed; return every chunk's vectors (on disk) in order."""
    folder = jobs.job_dir(catalog, job.id)
    # Resume after the last chunk whose file is still there (the checkpoint may be ahead of a lost file).
    recorded = int(job.checkpoint.get("chunks_done", 0))
    done = next((k for k in range(recorded) if not (folder / f"part-{k:06d}.npy").is_file()), recorded)
    started = time.perf_counter() - float(job.seconds or 0.0)
    total = len(positions)
    bar = tqdm(total=total, initial=min(done * chunk, total), unit="doc", disable=not progress,
               desc=f"encode {job.target}", leave=False)
    try:
        for k, part in _chunks(_contents(docs, scan, positions[done * chunk :]), total, chunk, done):
            vectors = _encode_sorted(encoder, part, bar)
            tmp = folder / f"part-{k:06d}.tmp.npy"
            np.save(tmp, vectors)
            tmp.replace(folder / f"part-{k:06d}.npy")
            jobs.update_progress(catalog, job.id, min((k + 1) * chunk, total), {"chunks_done": k + 1},
                                 time.perf_counter() - started)
    finally:
        bar.close()
    n_chunks = (total + chunk - 1) // chunk
    return ChunkVectors([folder / f"part-{k:06d}.npy" for k in range(n_chunks)], encoder.record.dimension)


def _run_job(catalog: Catalog, kind: str, target: str, params: dict[str, Any], encoder: Encoder, docs: DocSource,
             scan: _Scan, positions: Sequence[int], chunk: int, progress: bool, finalize,
             keep_failed: bool = True) -> dict[str, Any]:
    """Encode the documents at `positions` (at least one) in chunks (resuming a failed or killed run of the same parameters),
    then `finalize(job, vectors, positions)`. A resumed job encodes the positions its first run planned (kept
    in its folder), which `finalize` may plan again. The job's lock is held throughout; a failed job keeps its
    chunks for a rerun unless `keep_failed` is False."""
    job = jobs.start_or_resume(catalog, kind, target, params, total=len(positions))
    with locks.job_lock(catalog, job.id, f"{kind} of index {target!r}"):
        resumed_from = int(job.progress or 0)
        t0 = time.perf_counter()
        try:
            positions = _job_positions(catalog, job, positions)
            vectors = _encode_job(catalog, job, encoder, docs, scan, positions, chunk, progress)
            result = finalize(job, vectors, positions)
        except BaseException as err:
            # Encoded chunks stay in the job folder: a rerun resumes from them.
            jobs.fail(catalog, job.id, f"{type(err).__name__}: {err}", keep=keep_failed)
            raise
        jobs.finish(catalog, job.id)
    result.update(job_id=job.id, resumed_from=resumed_from, seconds=round(time.perf_counter() - t0, 3))
    return result


def _job_positions(catalog: Catalog, job: Job, positions: Sequence[int]) -> Sequence[int]:
    """The positions a job encodes: those its first run planned. An add's plan depends on the index, which
    other writes may have changed before a rerun, and its chunks are of that first plan."""
    if isinstance(positions, range):  # a build's: all of the corpus, fixed by its parameters
        return positions
    path = jobs.job_dir(catalog, job.id) / "positions.npy"
    if path.is_file():
        return np.load(path).tolist()
    tmp = path.with_name("positions.tmp.npy")
    np.save(tmp, np.asarray(positions, dtype=np.int64))
    tmp.replace(path)
    return positions


def build_index(catalog: Catalog, name: str, encoder: Encoder, docs: DocSource, factory: str = "Flat",
                metric: str = "ip", chunk_size: int = DEFAULT_CHUNK, progress: bool = True,
                shard_size: int = shards.DEFAULT_SHARD_SIZE) -> dict[str, Any]:
    """Embed every document and write a new index `name`, in shards of `shard_size` vectors (`shards.py`).
    Rerun after a crash to resume."""
    check_index_name(name)
    if metric not in ("ip", "l2"):
        raise UserError(f"metric {metric!r} is not supported; use 'ip' (cosine on normalized vectors) or 'l2'")
    with catalog.session() as s:
        existing = s.query(Index).filter(Index.name == name).first()
        if existing is not None:
            group = KIND_COMMANDS.get(existing.model.kind, "embedkd index")
            raise Conflict(f"index {name!r} already exists ({existing.model.kind} embeddings); add to it with "
                           f"`{group} add`, or remove it first with `{group} drop`")
    store.make_index(encoder.record.dimension, factory, metric)  # reject a bad factory before any work
    shards.check_shard_size(shard_size)
    scan = _scan(docs)
    params = {"corpus": docs.fingerprint, "model": encoder.record.fingerprint, "factory": factory,
              "metric": metric, "chunk": chunk_size, "shard_size": shard_size}
    _record_path(params, docs)

    def finalize(job: Job, vectors: ChunkVectors, _positions) -> dict[str, Any]:
        faiss_ids = np.arange(len(scan.ids), dtype=np.int64)
        template = store.make_index(encoder.record.dimension, factory, metric)
        if store.needs_training(template):
            store.train_index(template, vectors, factory)
        index = shards.ShardedIndex.empty(template, shard_size)
        for start, part in vectors.chunks():
            index.add_with_ids(part, faiss_ids[start : start + len(part)])
        folder = catalog.settings.index_dir / name
        path, checksum = shards.write(index, folder, index_stem(name, 1))
        with shards.replacing(folder, None, path), catalog.session() as s:
            model = ensure_model(s, encoder.record)
            row = Index(name=name, model_id=model.id, factory=factory, metric=metric,
                        dimension=encoder.record.dimension, count=len(scan.ids), file=path.name,
                        checksum=checksum, generation=1, next_id=len(scan.ids), state="ready")
            s.add(row)
            s.flush()
            insert_items(s, row.id, scan.ids, faiss_ids, scan.keys, scan.infos, generation=1)
            jobs.mark_done(s, job.id)
        return {"index": name, "model": encoder.record.name, "factory": factory, "count": len(scan.ids),
                "shards": len(index.shards), "file": str(path), "checksum": checksum}

    with locks.target_lock(catalog, name):
        out = _run_job(catalog, "build", name, params, encoder, docs, scan, range(len(scan.ids)), chunk_size, progress,
                       finalize)
    return {**out, **_skipped(docs)}


@dataclass
class _Seen:
    """What an add read of its index at `generation`: the items of the corpus's ids (id -> FAISS id, content
    hash, info) and, for a sync (`--delete-missing`), the FAISS ids of the items the corpus lacks."""

    generation: int
    items: dict[str, tuple[int, str, Any]]
    others: set[int] | None


def _read_seen(catalog: Catalog, index: Index, scan: _Scan, delete_missing: bool) -> _Seen:
    """Read what `index` holds of the corpus (`index` read before this, so its generation is no later than
    what this reads: `_since` may then apply a change twice, which changes nothing)."""
    with catalog.session() as s:
        existing = items_by_external_ids(s, index.id, scan.ids)
        others = ({f for e, f in s.execute(select(Item.external_id, Item.faiss_id).where(Item.index_id == index.id))
                   if e not in scan.id_set} if delete_missing else None)
    return _Seen(index.generation, {e: (r.faiss_id, r.content_hash, r.info) for e, r in existing.items()}, others)


def _since(catalog: Catalog, index: Index, scan: _Scan, seen: _Seen) -> _Seen | None:
    """`seen` brought up to `index`'s generation from the item rows written and the FAISS ids removed since
    (`models.item_removals`), instead of reading every item of the corpus again: at a commit, what other writes
    did while the add encoded (as `fields.refresh_column` brings a service's filter fields up to date). None when
    the index's history does not reach back to `seen` (read it afresh)."""
    if index.history_from > seen.generation:
        return None
    with catalog.session() as s:
        rows = s.execute(select(Item.external_id, Item.faiss_id, Item.content_hash, Item.info)
                         .where(Item.index_id == index.id, Item.generation > seen.generation)).all()
        removed = set(s.scalars(select(item_removals.c.faiss_id).where(item_removals.c.index_id == index.id,
                                                                        item_removals.c.generation > seen.generation)))
    items = {e: v for e, v in seen.items.items() if v[0] not in removed}  # FAISS ids are never reused
    others = {f for f in seen.others if f not in removed} if seen.others is not None else None
    for e, f, h, info in rows:
        if e in scan.id_set:
            items[e] = (f, h, info)
        elif others is not None:
            others.add(f)
    return _Seen(index.generation, items, others)


def _plan(index: Index, scan: _Scan, seen: _Seen, max_delete: float) -> _Plan:
    """What the add writes, from what it read of the index."""
    todo, replaced, skipped, retagged = [], [], 0, {}
    for pos, (doc_id, key) in enumerate(zip(scan.ids, scan.keys)):
        old = seen.items.get(doc_id)
        if old is not None and old[1] == key:
            if (old[2] or None) != (scan.infos[pos] or None):
                retagged[old[0]] = scan.infos[pos]  # its metadata changed: filters must see the new one
            else:
                skipped += 1
            continue
        if old is not None:
            replaced.append(old[0])
        todo.append(pos)
    missing = sorted(seen.others or ())
    if len(missing) > max_delete * max(index.count, 1):  # a truncated snapshot would otherwise empty the index
        raise UserError(
            f"the corpus lacks {len(missing)} of index {index.name!r}'s {index.count} items "
            f"({len(missing) / max(index.count, 1):.0%}); --delete-missing deletes at most {max_delete:.0%} "
            "(--max-delete): check that the corpus is complete, or raise --max-delete; nothing was changed")
    return _Plan(positions=todo, skipped=skipped, replaced_faiss_ids=replaced, retagged=retagged,
                 missing_faiss_ids=missing)


def _retag_only(catalog: Catalog, index: Index, infos: dict[int, dict[str, Any] | None]) -> int:
    """New metadata for unchanged documents: rows only, no vector moves. The generation still steps (its files
    stay), so a searcher's filters, kept per generation, see the change on its next query."""
    with catalog.session() as s:
        update_item_infos(s, index.id, infos, generation=index.generation + 1)
        _step_generation(s, index)
    return index.generation + 1


def _step_generation(s, index: Index, **values: Any) -> None:
    """Move the index's row to generation+1 (with `values`), unless another write moved it since `index` was read
    or this process lost the index's write lock."""
    locks.check_held(s, index.name)
    res = s.execute(update(Index).where(Index.id == index.id, Index.generation == index.generation)
                    .values(generation=index.generation + 1, **values))
    if res.rowcount != 1:
        raise Conflict(f"index {index.name!r} changed while this job ran; run the command again")


def load_current(catalog: Catalog, index: Index) -> shards.ShardedIndex:
    """The index's current generation to write to (call holding its write lock): shards read when used, and those
    a running compaction rewrites frozen."""
    current = shards.load(catalog.settings.index_dir / index.name / index.file, index.checksum, lazy=True)
    current.frozen = frozen.files(catalog, index.name)
    return current


def load_latest(catalog: Catalog, name: str, attempts: int = 3) -> tuple[Index, shards.ShardedIndex]:
    """Index `name`'s row and files as they are now, read without its write lock: a write that commits meanwhile
    deletes files of the generation being read, which is then read again at its successor."""
    for _ in range(attempts):
        index = index_row(catalog, name)
        try:
            return index, shards.load(catalog.settings.index_dir / name / index.file, index.checksum)
        except UserError:
            if index_row(catalog, name).generation == index.generation:  # not a write: the files are damaged
                raise
    raise Conflict(f"index {name!r} changed {attempts} times while it was read; try again")


def switch_generation(catalog: Catalog, index: Index, new: shards.ShardedIndex, apply_rows) -> dict[str, Any]:
    """Write generation+1 (the changed shards and a manifest), then in one transaction update the rows
    (`apply_rows(session, generation)`) if the index did not change meanwhile. Files of the old generation
    that the new one does not share go after."""
    gen = index.generation + 1
    folder = catalog.settings.index_dir / index.name
    path, checksum = shards.write(new, folder, index_stem(index.name, gen))
    with shards.replacing(folder, index.file, path), catalog.session() as s:
        apply_rows(s, gen)
        _step_generation(s, index, file=path.name, checksum=checksum, count=int(new.ntotal))
    return {"index": index.name, "count": int(new.ntotal), "generation": gen, "shards": len(new.shards),
            "checksum": checksum}


def index_row(catalog: Catalog, name: str) -> Index:
    with catalog.session() as s:
        index = get_index(s, name)
        _ = index.model
        s.expunge(index)
    return index


def add_documents(catalog: Catalog, name: str, encoder: Encoder, docs: DocSource, chunk_size: int = DEFAULT_CHUNK,
                  progress: bool = True, delete_missing: bool = False, max_delete: float = 0.1,
                  lock_wait_s: float = COMMIT_WAIT_S, keep_failed: bool = True,
                  before_commit: Callable[[Iterator[Doc]], None] | None = None) -> dict[str, Any]:
    """Add new documents; a known id with changed content is re-embedded, an unchanged one skipped. With
    `delete_missing` the corpus is a full snapshot: items it lacks are deleted in the same new generation
    (refused when they are more than `max_delete` of the index). `before_commit` gets the documents to add or
    change, holding the index's write lock, just before they commit; if it raises, nothing is committed (the
    service keeps their texts then: kept before the commit, a write is never in the index with its text lost).

    The documents are encoded without the index's write lock, so that a long add leaves the index to other
    writes; the add takes the lock to commit (waiting up to `lock_wait_s` for it), and if another write
    committed meanwhile, plans again against the index as it is then: documents that became unchanged are
    skipped, and those another write deleted or changed are encoded then. A failed add keeps its encoded chunks
    for a rerun of the same command (`keep_failed`), even across other writes."""
    if not 0 <= max_delete <= 1:
        raise UserError(f"--max-delete is a share of the index between 0 and 1, got {max_delete}")
    scan = _scan(docs)
    index = index_row(catalog, name)
    check_encoder_fits(index, encoder)
    seen = _read_seen(catalog, index, scan, delete_missing)
    plan = _plan(index, scan, seen, max_delete)
    kept = backfill_texts.in_progress(catalog, name)
    if kept:  # its catch-up embeds these with the new model
        backfill_texts.keep(catalog, name, _docs_again(docs, scan))
    params = {"corpus": docs.fingerprint, "model": encoder.record.fingerprint, "chunk": chunk_size}
    _record_path(params, docs)
    if delete_missing:
        params["delete_missing"] = max_delete

    def commit(encoded: Sequence[int], vectors: ChunkVectors, job_id: int | None = None) -> dict[str, Any]:
        with locks.target_lock(catalog, name, wait_s=lock_wait_s):
            now = index_row(catalog, name)
            check_encoder_fits(now, encoder)  # an upgrade may have switched the index to another model meanwhile
            if now.generation == seen.generation:
                final = plan
            else:  # other writes committed while this add encoded: only what they changed is read
                final = _plan(now, scan, _since(catalog, now, scan, seen) or _read_seen(catalog, now, scan,
                                                                                         delete_missing), max_delete)
            if final.positions and not kept and backfill_texts.in_progress(catalog, name):  # began while this encoded
                backfill_texts.keep(catalog, name, _docs_again(docs, scan, final.positions))
            if not final.positions and not final.missing_faiss_ids:
                gen = _retag_only(catalog, now, final.retagged) if final.retagged else now.generation
                return {"index": name, "count": now.count, "generation": gen, "added": 0, "updated": 0,
                        "unchanged": final.skipped, "metadata_updated": len(final.retagged), "deleted": 0}
            if before_commit is not None:
                before_commit(_docs_again(docs, scan, final.positions))
            return _commit_add(catalog, now, scan, final, _vectors_for(final.positions, encoded, vectors, encoder,
                                                                       docs, scan), job_id)

    if not plan.positions:
        return {**commit([], ChunkVectors([], encoder.record.dimension)), **_skipped(docs)}
    out = _run_job(catalog, "add", name, params, encoder, docs, scan, plan.positions, chunk_size, progress,
                   lambda job, vectors, positions: commit(positions, vectors, job.id), keep_failed)
    return {**out, **_skipped(docs)}


def _docs_again(docs: DocSource, scan: _Scan, positions: Sequence[int] | None = None) -> Iterator[Doc]:
    """The documents at `positions` (default: every one) read again, as the scan read them (`_contents`)."""
    positions = range(len(scan.ids)) if positions is None else positions
    return (Doc(scan.ids[p], c, scan.infos[p]) for p, c in zip(positions, _contents(docs, scan, positions)))


def _commit_add(catalog: Catalog, index: Index, scan: _Scan, plan: _Plan, vectors, job_id: int | None) -> dict[str, Any]:
    """Write the plan as the index's next generation (call holding its write lock): old vectors of changed and
    missing documents out, `vectors` (of `plan.positions`, in order) in under new FAISS ids; job `job_id` done
    with it."""
    removed = plan.replaced_faiss_ids + plan.missing_faiss_ids
    current = load_current(catalog, index)
    if removed:
        current.remove_ids(np.array(removed), index.factory, index.metric)
    new_ids = np.arange(index.next_id, index.next_id + len(plan.positions), dtype=np.int64)
    for start, part in vectors.chunks():
        current.add_with_ids(part, new_ids[start : start + len(part)])

    def rows(s, gen: int) -> None:
        update_item_infos(s, index.id, plan.retagged, gen)
        delete_items_by_faiss_ids(s, index.id, removed, gen)
        s.flush()
        insert_items(s, index.id, [scan.ids[p] for p in plan.positions], new_ids,
                     [scan.keys[p] for p in plan.positions], [scan.infos[p] for p in plan.positions], gen)
        s.execute(update(Index).where(Index.id == index.id).values(next_id=index.next_id + len(new_ids)))
        if job_id is not None:
            jobs.mark_done(s, job_id)

    out = switch_generation(catalog, index, current, rows)
    out.update(added=len(plan.positions) - len(plan.replaced_faiss_ids), updated=len(plan.replaced_faiss_ids),
               unchanged=plan.skipped, metadata_updated=len(plan.retagged), deleted=len(plan.missing_faiss_ids))
    return out


class _Picked:
    """The vectors of `wanted` positions, in order: rows of a job's chunks (encoded for `encoded` positions)
    and of `extra` (encoded for `extra_positions`), read a block at a time."""

    def __init__(self, wanted: list[int], encoded: Sequence[int], vectors: ChunkVectors, extra_positions: list[int],
                 extra: np.ndarray) -> None:
        self.wanted, self.vectors, self.extra = wanted, vectors, extra
        self.row = {p: r for r, p in enumerate(encoded)}
        self.extra_row = {p: r for r, p in enumerate(extra_positions)}

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.wanted), DEFAULT_CHUNK):
            block = self.wanted[start : start + DEFAULT_CHUNK]
            out = np.empty((len(block), self.vectors.dimension), np.float32)
            rows = [self.row.get(p) for p in block]
            mine = np.array([r is not None for r in rows], dtype=bool)
            if mine.any():
                out[mine] = self.vectors[np.array([r for r in rows if r is not None])]
            if not mine.all():
                out[~mine] = self.extra[[self.extra_row[p] for p, r in zip(block, rows) if r is None]]
            yield start, out


def _vectors_for(wanted: list[int], encoded: Sequence[int], vectors: ChunkVectors, encoder: Encoder, docs: DocSource,
                 scan: _Scan):
    """The vectors of the `wanted` positions from a job that encoded `encoded`: the job's own when the two are
    the same; else its rows that are still wanted, and the rest encoded now."""
    if list(wanted) == list(encoded):
        return vectors
    have = set(encoded)
    extra_positions = [p for p in wanted if p not in have]
    log.info("the index changed while this add encoded: %d more documents to encode, %d encoded ones not needed",
             len(extra_positions), len(have.difference(wanted)))
    extra = (_encode_sorted(encoder, list(_contents(docs, scan, extra_positions)), tqdm(disable=True))
             if extra_positions else np.zeros((0, encoder.record.dimension), np.float32))
    return _Picked(list(wanted), encoded, vectors, extra_positions, extra)


def delete_items(catalog: Catalog, name: str, external_ids: list[str], purge: bool = False,
                 files: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Delete items by their external ids; unknown ids are an error and nothing is deleted. Their vectors stay
    in their shards' files, skipped, until a shard holds too many (`shards.py`); `purge` removes them now, and
    their texts from every file embedkd keeps, and deletes `files` (a gallery's uploaded crops of them), all owed
    until done however the process ends (`purges.py`)."""
    owned = [str(f) for f in files]
    if not external_ids:
        raise UserError("no ids to delete; pass one or more item ids")
    with locks.target_lock(catalog, name):
        with catalog.session() as s:
            index = get_index(s, name)
            found = items_by_external_ids(s, index.id, external_ids)
            s.expunge(index)
        unfinished = purges.pending(catalog, name) if purge else {}
        purging = {i for params in unfinished.values() for i in params["ids"]}
        missing = [e for e in dict.fromkeys(external_ids) if e not in found and e not in purging]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise UserError(f"index {name!r} has no item with id {shown}; nothing was deleted")
        if unfinished:  # a failed purge, of some of these ids perhaps: its files rewritten now
            purges.finish(catalog, name)
        present = [e for e in dict.fromkeys(external_ids) if e in found]
        if not present:
            return {"index": name, "count": index.count, "generation": index.generation, "deleted": 0}
        faiss_ids = [found[e].faiss_id for e in present]
        current = load_current(catalog, index)
        current.remove_ids(np.array(faiss_ids), index.factory, index.metric, purge=purge)
        job_id: list[int] = []

        def rows(s, gen: int) -> None:
            delete_items_by_faiss_ids(s, index.id, faiss_ids, gen)
            if purge:  # committed with the deletion: the texts' removal is then owed until done (`purges`)
                job_id.append(purges.record(s, name, present, owned))

        out = switch_generation(catalog, index, current, rows)
        if purge:  # out of every file now: the texts kept for a running backfill, of HTTP writes, and carried, too
            purges.run(catalog, name, job_id[0], {"ids": present, "files": owned})
        out["deleted"] = len(faiss_ids)
        return out


def drop_index(catalog: Catalog, name: str) -> dict[str, Any]:
    with locks.target_lock(catalog, name):
        with catalog.session() as s:
            index = get_index(s, name)
            s.delete(index)
        shutil.rmtree(catalog.settings.index_dir / name, ignore_errors=True)
        jobs.supersede(catalog, name)  # unfinished adds to it can never resume
        # texts kept for a backfill of it, or of the index it was staging a backfill for
        backfill_texts.forget(catalog, name.removesuffix(backfill_texts.staging_name("")))
        text_log.forget(catalog, name)
        carried.forget(catalog, name)
    return {"index": name, "dropped": True}
