"""A purge's promise, kept through failures: a purged document's texts leave every file that keeps them.

A purge commits the deletion of its items (their vectors out of the new generation's shards), then rewrites the
files that keep their texts: those kept for a running backfill, of HTTP writes, and carried by an import. A failure
between the two (a full disk, a killed process) would leave texts that no rerun could reach, since the ids are no
longer in the index. So the deletion commits with a row of the jobs table (kind `purge`, the ids in its params,
and the files to delete with them: a gallery's uploaded crops), marked done once the files are rewritten:
`embedkd index jobs` shows an unfinished one, a rerun of the same purge finishes it, and so does `index gc` (and
the server's collector). Call holding the index's write lock."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import backfill_texts, carried, jobs, locks, text_log
from .catalog import get_index
from .context import Catalog
from .models import Item, Job

__all__ = ["drop_unheld", "finish", "pending", "record", "rewrite_files", "run"]


def record(s: Session, name: str, ids: list[str], files: list[str]) -> int:
    """A purge of `ids` from index `name` (and of `files`), in the session that commits their deletion; its job
    id."""
    params = {"ids": ids, "files": files}
    job = Job(kind="purge", target=name, state="running", params_hash=jobs.params_hash(params), params=params,
              total=len(ids), progress=0, checkpoint={})
    s.add(job)
    s.flush()
    return job.id


def rewrite_files(catalog: Catalog, name: str, ids: Iterable[str]) -> None:
    """The texts of `ids` out of every file that keeps them for index `name`."""
    ids = list(ids)
    backfill_texts.purge(catalog, name, ids)
    text_log.purge(catalog, name, ids)
    carried.purge(catalog, name, ids)


def run(catalog: Catalog, name: str, job_id: int, params: dict[str, Any]) -> None:
    """Rewrite the files of a recorded purge and delete its own, then mark it done; a failure is kept in its row,
    for a rerun."""
    with locks.job_lock(catalog, job_id, f"purge of index {name!r}"):
        try:
            rewrite_files(catalog, name, params["ids"])
            for path in params.get("files", []):
                Path(path).unlink(missing_ok=True)
        except BaseException as err:
            jobs.fail(catalog, job_id, f"{type(err).__name__}: {err}")
            raise
        jobs.finish(catalog, job_id)


def pending(catalog: Catalog, name: str) -> dict[int, dict[str, Any]]:
    """Index `name`'s recorded purges whose files are not yet rewritten (failed, or their process killed): job id
    -> its params (`ids`, `files`)."""
    with catalog.session() as s:
        rows = s.execute(select(Job.id, Job.params).where(Job.kind == "purge", Job.target == name,
                                                          Job.state.in_(jobs.UNFINISHED))).all()
    return dict(rows)


def finish(catalog: Catalog, name: str, dry_run: bool = False) -> list[dict[str, Any]]:
    """Finish index `name`'s unfinished purges (with `dry_run`, only list them)."""
    out = []
    for job_id, params in pending(catalog, name).items():
        if not dry_run:
            run(catalog, name, job_id, params)
        out.append({"path": f"job {job_id}", "bytes": 0,
                    "why": f"an unfinished purge of {len(params['ids'])} documents of index {name!r}: their kept "
                           "texts " + ("would be" if dry_run else "were") + " removed"})
    return out


def drop_unheld(catalog: Catalog, name: str, wait_s: float = 60.0) -> dict[str, int]:
    """The texts of documents index `name` no longer holds (deleted without `--purge`, or changed since) out of the
    files that keep them: the texts kept of HTTP writes, and the corpus copies an import carried. What a purge
    would have taken (`index compact --texts`). The carried copies are rewritten holding the index's write lock,
    as a purge rewrites them: writes to the index wait meanwhile."""
    texts = text_log.drop_unheld(catalog, name)
    with locks.target_lock(catalog, name, wait_s=wait_s):
        with catalog.session() as s:
            rows = s.execute(select(Item.external_id, Item.content_hash).where(Item.index_id == get_index(s, name).id))
            held = np.unique(np.array([carried.held_key(e, h) for e, h in rows], dtype=np.int64))
        lines = carried.drop_unheld(catalog, name, held)
    return {"kept_texts_removed": texts, "carried_lines_kept": lines}
