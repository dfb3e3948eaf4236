"""Backfill: re-embed an index with the new model in the background, then switch to it atomically.

1. Build a staging index `NAME.backfill` with v2 through `indexer.build.build_index`: chunked,
   checkpointed, resumable (a killed backfill rerun with the same arguments resumes), and invisible to
   searches of NAME, which keep answering from v1 vectors (through the adapter for v2 queries).
2. Switch in one catalog transaction: NAME's row takes the staging file (hard-linked as NAME's next
   generation), model, dimension and items; NAME's adapters are deactivated (queries by v2 now need
   none); the staging row goes. Searchers see the new generation on their next query.

Documents added to, changed in or deleted from NAME while the backfill ran would be lost by the switch, so
before it the staging index catches up: the documents NAME holds that it lacks are read from the backfill's
corpus (where the corpus has them as NAME does) and added with v2, and the ones NAME no longer holds are
deleted. That happens once without NAME's write lock (the bulk), then again holding it with the switch (only
what was written meanwhile), so a live index, written to throughout, still switches. Documents written while
the backfill runs that its corpus lacks (over HTTP, or from another file) are read from the texts every add
keeps meanwhile (`indexer.backfill_texts`), and those written over HTTP after its files were listed and before it
began keeping texts, from the texts the server keeps of them now (it keeps them before it lets the index go).
The corpus is every file the index's build and adds read and the texts the server kept of its HTTP writes
(`embedkd.upgrade.run.index_corpora`), or those the user names.
A document that NAME holds and none of them has (from a file since moved or changed, or written over HTTP to a
server that kept no texts) cannot be embedded with v2 here: the backfill is refused before it encodes
anything, saying how many and how to give them (`coverage`; `--dry-run` reports it).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from indexer import backfill_texts, jobs, locks, shards, text_log
from indexer.backfill_texts import staging_name
from indexer.build import COMMIT_WAIT_S, add_documents, build_index, delete_items, index_stem
from indexer.catalog import get_index, items_by_external_ids, update_item_infos
from indexer.context import Catalog
from indexer.corpus import Corpora, Doc, DocSource, ListSource, every_version, read_corpus
from indexer.errors import Conflict, UserError
from indexer.hashing import content_key
from indexer.jobs import UNFINISHED
from indexer.models import Adapter as AdapterRow
from indexer.models import Index, Item, Job, item_removals

from .run import index_corpora

__all__ = ["backfill", "backfill_corpora", "catch_up", "check_covered", "coverage", "not_covered", "staging_name",
           "switch_to_staging"]

log = logging.getLogger(__name__)


def _items(session, index_id: int) -> dict[str, str]:
    return dict(session.execute(select(Item.external_id, Item.content_hash).where(Item.index_id == index_id)).all())


def _keep_metadata(session, index_id: int, staging_id: int, generation: int) -> None:
    """The staged items take the index's own metadata: the backfill's corpus may predate an `index add` that
    changed a document's metadata alone (the item sets are equal; only `info` may differ)."""
    ours = dict(session.execute(select(Item.external_id, Item.info).where(Item.index_id == index_id)).all())
    staged = session.execute(select(Item.external_id, Item.faiss_id, Item.info).where(Item.index_id == staging_id))
    update_item_infos(session, staging_id, {fid: ours[e] for e, fid, info in staged if ours.get(e) != info}, generation)


def backfill(catalog: Catalog, name: str, encoder: Any, docs: DocSource, chunk_size: int = 4096,
             progress: bool = False, checked: bool = False) -> dict[str, Any]:
    """Re-embed index `name` with `encoder` (v2) from `docs` and switch to it when complete. `checked`: the caller
    ran `check_covered` on `docs` (the CLI does, before loading the model), so they are not read for it again."""
    stage = staging_name(name)
    # held for a moment: a write committing meanwhile deletes the generation whose manifest this reads
    with locks.target_lock(catalog, name, wait_s=COMMIT_WAIT_S), catalog.session() as s:
        index = get_index(s, name)
        if index.model.fingerprint == encoder.record.fingerprint:
            raise Conflict(f"index {name!r} already holds vectors of this model; there is nothing to backfill")
        factory, metric = index.factory, index.metric
        shard_size = shards.shard_size(catalog.settings.index_dir / name / index.file, index.checksum)
        staged = s.scalar(select(Index).where(Index.name == stage))
        staged_fp = staged.model.fingerprint if staged is not None else None
    if not checked:
        check_covered(catalog, name, docs)  # before hours of encoding, not at the switch
    built: dict[str, Any] = {}
    if staged_fp is None:
        built = build_index(catalog, stage, encoder, docs, factory=factory, metric=metric,
                            chunk_size=chunk_size, progress=progress, shard_size=shard_size)
    elif staged_fp != encoder.record.fingerprint:
        raise Conflict(
            f"a backfill of {name!r} with another model is in progress as index {stage!r}; "
            f"finish it with that model or drop it with `embedkd index drop --index {stage}`"
        )
    caught = catch_up(catalog, name, encoder, docs)  # the bulk of what was written meanwhile, NAME left free
    out = switch_to_staging(catalog, name, encoder, docs)
    out["built"] = built
    last = out.pop("caught_up")
    out["caught_up"] = {"added": caught["added"] + last["added"], "deleted": caught["deleted"] + last["deleted"]}
    return out


@contextmanager
def backfill_corpora(catalog: Catalog, name: str, given: Sequence[str] | None = None) -> Iterator[Corpora]:
    """The files a backfill of index `name` reads, while it reads them: `given`, else those an unfinished backfill
    build began with (so a rerun resumes it even if files were added to the index since: their texts are kept
    meanwhile, `indexer.backfill_texts`), else every file the index's documents came from (`index_corpora`),
    the kept HTTP texts pinned in the backfill's own folder so that a rerun finds the same files."""
    if not given:
        with catalog.session() as s:
            job = s.scalar(select(Job).where(Job.target == staging_name(name), Job.kind == "build",
                                             Job.state.in_(UNFINISHED)).order_by(Job.id.desc()).limit(1))
            pinned = (job.params or {}).get("corpus_paths") if job is not None else None
        if pinned and all(Path(p).exists() for p in pinned):
            yield Corpora(pinned)
            return
    pins = backfill_texts.pin_folder(catalog, name)
    try:
        with index_corpora(catalog, name, given, pin_into=pins) as corpora:
            yield corpora
    finally:
        if not backfill_texts.in_progress(catalog, name):  # none began (a dry run, a refusal), or it switched
            shutil.rmtree(pins, ignore_errors=True)


def coverage(catalog: Catalog, name: str, docs: DocSource) -> dict[str, Any]:
    """What a backfill of index `name` from `docs` could embed, read without encoding: the index's documents,
    those already in a staging index, those found in `docs` (or in the texts kept while a backfill runs) as the
    index holds them, and the ids of those missing (`missing_ids`, sorted)."""
    with catalog.session() as s:
        wanted = _items(s, get_index(s, name).id)
        stage = s.scalar(select(Index.id).where(Index.name == staging_name(name)))
        staged = _items(s, stage) if stage is not None else {}  # embedded with the new model already
    total = len(wanted)
    wanted = {k: h for k, h in wanted.items() if staged.get(k) != h}
    missing = set(wanted).difference(d.id for d in _found(catalog, name, docs, wanted, held=False))
    missing = set(_holds(catalog, name, missing)) if missing else missing  # not those deleted since
    return {"index": name, "documents": total, "staged": total - len(wanted), "found": len(wanted) - len(missing),
            "missing": len(missing), "missing_ids": sorted(missing), "files": [str(p) for p in getattr(docs, "paths", [])]}


def _found(catalog: Catalog, name: str, docs: DocSource, wanted: dict[str, str], held: bool) -> Iterator[Doc]:
    """Each document of `wanted` (id -> content hash) that can be read as index `name` holds it, once: from every
    version in `docs` (the one the index holds may be in any file), then from the texts kept while a backfill of
    it runs (`indexer.backfill_texts`), then from the texts of HTTP writes kept now (`indexer.text_log`): those
    committed after `docs` pinned them and before the backfill kept texts itself. `held`: the caller holds the
    index's write lock; else those still missing are taken as the index holds them now (written again, or gone),
    and the writes committed by then are waited out (an HTTP write keeps its texts before it lets the lock go)."""
    seen: set[str] = set()

    def matching(found: Iterable[Doc], hashes: dict[str, str]) -> Iterator[Doc]:
        for d in found:
            if d.id not in seen and hashes.get(d.id) == content_key(d.content):
                seen.add(d.id)
                yield d

    if not wanted:
        return
    yield from matching(chain(every_version(docs), backfill_texts.read(catalog, name)), wanted)
    rest = {k: h for k, h in wanted.items() if k not in seen}
    if not rest:
        return
    if not held:
        rest = _holds(catalog, name, rest)
        with locks.target_lock(catalog, name, wait_s=COMMIT_WAIT_S):
            pass
    with text_log.pinned(catalog, name) as paths:
        yield from matching(chain.from_iterable(read_corpus(p) for p in paths), rest)


def _holds(catalog: Catalog, name: str, ids: Iterable[str]) -> dict[str, str]:
    """Which of `ids` index `name` holds now, with their content hashes."""
    with catalog.session() as s:
        return {k: it.content_hash for k, it in items_by_external_ids(s, get_index(s, name).id, ids).items()}


def check_covered(catalog: Catalog, name: str, docs: DocSource) -> dict[str, Any]:
    """`coverage`, refused when documents are missing: nothing could embed those with the new model, so a
    backfill's switch would be refused after the whole build. Call it before any encoding."""
    found = coverage(catalog, name, docs)
    if found["missing"]:
        raise not_covered(found, docs)
    return found


def not_covered(found: dict[str, Any], docs: DocSource) -> UserError:
    """The one-line refusal for a `coverage` with documents missing."""
    n, some = found["missing"], ", ".join(repr(i) for i in found["missing_ids"][:3])
    return UserError(
        f"index {found['index']!r} holds {n} document{'s' * (n != 1)} ({some}{', ...' * (n > 3)}) that none of its "
        f"files ({docs}) has as the index does (from a file since moved or changed, or written over HTTP to a server "
        "run with --no-keep-texts), so the new model cannot embed them; give every file of the index's documents "
        "with --corpus (repeatable); nothing was changed"
    )


def catch_up(catalog: Catalog, name: str, encoder: Any, docs: DocSource, held: bool = False) -> dict[str, int]:
    """Bring the staging index to index `name`'s documents: add (with `encoder`, v2) those `name` holds and
    the staging index lacks or holds otherwise, where `docs` has them as `name` does; delete those `name` no
    longer holds. Counts of added, deleted, and of documents `docs` lacks (left out). Texts written to `name`
    since the backfill began (`indexer.backfill_texts`: over HTTP, or from another file) are read after `docs`."""
    stage = staging_name(name)
    with catalog.session() as s:
        ours, staged = _items(s, get_index(s, name).id), _items(s, get_index(s, stage).id)
    wanted = {k: h for k, h in ours.items() if staged.get(k) != h}
    gone = [k for k in staged if k not in ours]
    found = list(_found(catalog, name, docs, wanted, held))
    if found:
        add_documents(catalog, stage, encoder, ListSource(found), progress=False)
    if gone:
        delete_items(catalog, stage, gone, purge=True)  # the staging index becomes NAME's files: nothing listed
    if found or gone:
        log.info("backfill of %s caught up: %d documents added, %d deleted, %d not in the corpus", name, len(found),
                 len(gone), len(wanted) - len(found))
    return {"added": len(found), "deleted": len(gone), "not_in_corpus": len(wanted) - len(found)}


def switch_to_staging(catalog: Catalog, name: str, encoder: Any = None, docs: DocSource | None = None) -> dict[str, Any]:
    """Atomically make index `name` serve the staging index's vectors, model and items; with `encoder` and
    `docs`, first catch up (`catch_up`) with what was written to `name` since, holding its write lock."""
    stage = staging_name(name)
    with locks.target_lock(catalog, name):
        caught = (catch_up(catalog, name, encoder, docs, held=True) if encoder is not None and docs is not None
                  else {"added": 0, "deleted": 0, "not_in_corpus": 0})
        out = _switch_locked(catalog, name, stage)
    shutil.rmtree(catalog.settings.index_dir / stage, ignore_errors=True)
    backfill_texts.forget(catalog, name)
    jobs.supersede(catalog, stage)  # the staging index is gone: a job of it left unfinished (killed) never resumes
    return {**out, "caught_up": caught}


def _switch_locked(catalog: Catalog, name: str, stage: str) -> dict[str, Any]:
    with locks.target_lock(catalog, stage):
        with catalog.session() as s:
            orig, new = get_index(s, name), get_index(s, stage)
            if _items(s, orig.id) != _items(s, new.id):
                a, b = _items(s, orig.id), _items(s, new.id)
                missing = sum(1 for k, v in a.items() if b.get(k) != v)
                raise Conflict(
                    f"index {name!r} holds {missing} documents that neither the backfill's corpus nor the texts "
                    "written while it ran have as the index does (added from elsewhere before it began), so they "
                    f"cannot be embedded with the new model; add them to {stage!r} with `embedkd index add --index "
                    f"{stage} --model MODEL --corpus PATH`, or give the backfill a corpus that has them (--corpus), "
                    "then rerun it to switch"
                )
            gen, old_file = orig.generation, orig.file
            src = catalog.settings.index_dir / stage / new.file
            snapshot = (new.id, new.model_id, new.dimension, new.factory, new.metric, new.count, new.next_id,
                        new.checksum)
        if not src.is_file():
            raise UserError(f"the staging file {src} is missing; drop index {stage!r} and run the backfill again")
        folder = catalog.settings.index_dir / name
        new_id, model_id, dim, factory, metric, count, next_id, staged_checksum = snapshot
        dst, checksum = shards.link(src, staged_checksum, folder, index_stem(name, gen + 1))
        with shards.replacing(folder, old_file or None, dst), catalog.session() as s:
            orig = get_index(s, name)
            _keep_metadata(s, orig.id, new_id, gen + 1)
            s.execute(delete(Item).where(Item.index_id == orig.id))
            s.execute(delete(item_removals).where(item_removals.c.index_id.in_([orig.id, new_id])))
            s.execute(update(Item).where(Item.index_id == new_id).values(index_id=orig.id))
            s.execute(update(AdapterRow).where(AdapterRow.index_id == orig.id).values(active=False))
            res = s.execute(
                update(Index)
                .where(Index.id == orig.id, Index.generation == gen)
                .values(model_id=model_id, dimension=dim, factory=factory, metric=metric, file=dst.name,
                        checksum=checksum, generation=gen + 1, count=count, next_id=next_id, state="ready",
                        history_from=gen + 1)  # every item replaced: services read their filter fields afresh
            )
            if res.rowcount != 1:
                raise Conflict(f"index {name!r} changed while switching; rerun the backfill")
            s.execute(delete(Index).where(Index.id == new_id))
    return {"index": name, "generation": gen + 1, "count": count, "dimension": dim, "switched": True}
