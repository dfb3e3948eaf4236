"""Job rows. A job is resumed when a rerun has the same parameters.

A job's encoded chunks stay in its folder until it finishes, so that a rerun resumes from them. The process
running a job holds the job's lock (`locks.job_lock`): a job stored as running whose lock nobody holds was
killed ("interrupted"). A job that can no longer resume (a build once its index exists, any job of a dropped
index) is marked superseded and its chunks deleted, unless a process runs it; a failed add can always resume,
as its commit plans again. An operator lists jobs with `list_jobs` and drops one's chunks with `cancel`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from .context import Catalog
from .errors import Conflict, NotFound, UserError
from .locks import job_lock, job_lock_path, job_writer
from .models import Job

__all__ = ["params_hash", "start_or_resume", "update_progress", "finish", "fail", "job_dir",
           "supersede", "list_jobs", "count_by_state", "cancel", "disk_bytes", "sources", "sources_job", "STATES",
           "UNFINISHED"]

# as stored, plus "interrupted": stored as running, but no process holds its index's write lock (killed; `locks`)
STATES = ("running", "interrupted", "failed", "done", "superseded", "cancelled")
UNFINISHED = ("running", "failed")
FINISHED_KEPT = 100  # ended jobs (done, superseded, cancelled) kept per index


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def job_dir_path(catalog: Catalog, job_id: int) -> Path:
    return catalog.settings.job_dir / str(job_id)


def job_dir(catalog: Catalog, job_id: int) -> Path:
    path = job_dir_path(catalog, job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_or_resume(catalog: Catalog, kind: str, target: str, params: dict[str, Any], total: int) -> Job:
    """The unfinished job of this kind, target and parameters, or a new one."""
    digest = params_hash(params)
    with catalog.session() as s:
        job = s.scalar(
            select(Job)
            .where(Job.kind == kind, Job.target == target, Job.params_hash == digest, Job.state.in_(["running", "failed"]))
            .order_by(Job.id.desc())
        )
        if job is None:
            job = Job(kind=kind, target=target, params_hash=digest, params=params, total=total, checkpoint={})
            s.add(job)
        job.state = "running"
        job.error = None
        s.flush()
        s.expunge(job)
    return job


def update_progress(catalog: Catalog, job_id: int, progress: int, checkpoint: dict[str, Any], seconds: float,
                    total: int | None = None) -> None:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        job.progress = progress
        if total is not None:  # a resumed job whose work changed since (a compaction's shards to rewrite)
            job.total = total
        job.checkpoint = checkpoint
        job.seconds = seconds


def mark_done(s: Session, job_id: int) -> None:
    """Mark the job done in the session that commits its work: the two commit together, so a job whose work
    committed is never left failed or running (a build's or add's row names the file its documents came from)."""
    job = s.get(Job, job_id)
    job.state, job.error = "done", None


def finish(catalog: Catalog, job_id: int) -> None:
    """Mark the job done, delete its chunks, and supersede the target's unfinished builds, which cannot resume
    now that the index exists (call holding the job's lock). Unfinished adds can: an add plans again at its
    commit against the index as it is then."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
        job.state = "done"
        target = job.target
    _forget(catalog, job_id)
    supersede(catalog, target, kind="build")
    _prune(catalog, target)


def _forget(catalog: Catalog, job_id: int) -> None:
    """Delete an ended job's chunks and lock file."""
    shutil.rmtree(job_dir_path(catalog, job_id), ignore_errors=True)
    job_lock_path(catalog, job_id).unlink(missing_ok=True)


def sources(catalog: Catalog, target: str) -> list[tuple[int, str]]:
    """Where index `target`'s documents came from, as the done jobs that wrote them recorded it: (when, in ns
    since the epoch; path) for each build or add from a file (`corpus_path`) and each path an import carried
    (`sources`), whether or not the file is still there."""
    with catalog.session() as s:
        done = s.scalars(select(Job).where(Job.target == target, _names_files())).all()
    out = [(_ns(j.updated_at), str(j.params["corpus_path"])) for j in done if j.params.get("corpus_path")]
    return out + [(int(at), str(path)) for j in done for at, path in (j.params or {}).get("sources", [])]


def sources_job(target: str, found: list[tuple[int, str]], origin: str) -> Job:
    """A done job of kind "import" recording that index `target`'s documents came from `found` ((ns, path), as
    `sources` gives them) too: an imported index keeps where its documents live. Added in the import's session."""
    params = {"from": origin, "sources": [[at, path] for at, path in found]}
    return Job(kind="import", target=target, state="done", params_hash=params_hash(params), params=params, checkpoint={})


def _ns(when: datetime) -> int:
    """A job's time in ns since the epoch (SQLite gives back UTC times without their zone)."""
    return int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp() * 1e9)


def _prune(catalog: Catalog, target: str) -> None:
    """Keep the newest `FINISHED_KEPT` ended jobs of a target (an index fed by HTTP writes ends a job per request),
    and every done job that recorded the file its documents came from: an upgrade reads the index's documents
    from those files (`embedkd.upgrade.run.index_corpora`)."""
    with catalog.session() as s:
        ended = select(Job.id).where(Job.target == target, Job.state.notin_(UNFINISHED)).order_by(Job.id.desc())
        # in the database: a write's commit loads none of the rows, however many files the index was fed from
        s.execute(delete(Job).where(Job.id.in_(ended.offset(FINISHED_KEPT)), ~_names_files()))


def _names_files() -> ColumnElement[bool]:
    """A done job that recorded where its index's documents came from (`sources`)."""
    return and_(Job.state == "done", or_(Job.params["corpus_path"].as_string().is_not(None),
                                         Job.params["sources"].as_string().is_not(None)))


def supersede(catalog: Catalog, target: str, kind: str | None = None) -> list[int]:
    """Mark the unfinished jobs of `target` (of `kind`, if given) that no process runs superseded and delete
    their chunks. Each is held by its lock meanwhile, so that a rerun cannot resume it while its chunks go; a
    running one (an add encoding in another process) is left alone, to fail at its commit."""
    query = select(Job.id).where(Job.target == target, Job.state.in_(UNFINISHED))
    with catalog.session() as s:
        ids = s.scalars(query if kind is None else query.where(Job.kind == kind)).all()
    done = []
    for job_id in ids:
        if job_writer(catalog, job_id) is not None:
            continue
        try:
            with job_lock(catalog, job_id, f"a job of index {target!r}", wait_s=0):
                with catalog.session() as s:
                    job = s.get(Job, job_id)
                    if job is None or job.state not in UNFINISHED:
                        continue
                    job.state = "superseded"
                _forget(catalog, job_id)
                done.append(job_id)
        except Conflict:  # a rerun took it just now: it is running
            continue
    return done


def fail(catalog: Catalog, job_id: int, error: str, keep: bool = True) -> None:
    """Record a job's failure; its chunks stay for a rerun to resume from, or with `keep=False` go at once
    (the job is then cancelled: an HTTP write's, whose client resends a request that may be merged otherwise)."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
        done = job.state == "done"  # its work committed: what failed after it (cleaning up) is not the job's failure
        if not done:
            job.state = "failed" if keep else "cancelled"
            job.error = error[:2000]
    if done or not keep:
        _forget(catalog, job_id)


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when it is gone)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.is_file() else 0


def _stored_bytes(catalog: Catalog, job_id: int) -> int:
    return disk_bytes(job_dir_path(catalog, job_id))


def _state(catalog: Catalog, job: Job) -> tuple[str, str | None]:
    """The job's state as shown, and who runs it when it runs ("interrupted": nobody, it was killed)."""
    if job.state != "running":
        return job.state, None
    holder = job_writer(catalog, job.id)
    return ("running" if holder else "interrupted"), holder


def list_jobs(catalog: Catalog, target: str | None = None, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest jobs first (of index `target`, in `state` when given), as plain rows."""
    if state is not None and state not in STATES:
        raise UserError(f"job state {state!r} is not one of {', '.join(STATES)}")
    if limit < 1:
        raise UserError(f"--limit must be a positive integer, got {limit}")
    query = select(Job).order_by(Job.id.desc())
    if target is not None:
        query = query.where(Job.target == target)
    if state is not None:
        stored = "running" if state == "interrupted" else state
        query = query.where(Job.state == stored)
    rows = []
    with catalog.session() as s:
        for job in s.scalars(query):
            shown, holder = _state(catalog, job)
            if state is not None and shown != state:
                continue
            seconds = float(job.seconds or 0.0)
            rate = job.progress / seconds if seconds > 0 and job.progress else None
            left = (job.total - job.progress) / rate if rate and shown == "running" and job.total else None
            rows.append({"id": job.id, "kind": job.kind, "index": job.target, "state": shown,
                         "progress": int(job.progress or 0), "total": job.total, "seconds": round(seconds, 3),
                         "docs_per_s": round(rate, 1) if rate else None,
                         "eta_s": round(left, 1) if left is not None else None,  # encoding left, at the rate so far
                         "stored_bytes": _stored_bytes(catalog, job.id), "error": job.error,
                         "writer": holder,  # "embedkd HOST pid N" of a running job: where to look, or to stop it
                         "created_at": job.created_at.isoformat(), "updated_at": job.updated_at.isoformat()})
            if len(rows) == limit:
                break
    return rows


def count_by_state(catalog: Catalog) -> dict[str, int]:
    """How many jobs are in each state (running ones split into running and interrupted): what to alert on."""
    with catalog.session() as s:
        counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        running = s.scalars(select(Job).where(Job.state == "running")).all()
        out = {state: int(counts.get(state, 0)) for state in STATES}
        out["interrupted"] = sum(_state(catalog, job)[0] == "interrupted" for job in running)
        out["running"] = len(running) - out["interrupted"]
    return out


def cancel(catalog: Catalog, job_id: int) -> dict[str, Any]:
    """Forget an unfinished job: its encoded chunks are deleted, so a rerun of its command starts over."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"there is no job {job_id}; list them with `embedkd index jobs`")
        target, stored = job.target, job.state
    if stored not in UNFINISHED:
        raise UserError(f"job {job_id} is {stored}; only a failed or interrupted job can be cancelled")
    # refused while it runs: a running job is stopped by stopping its process
    with job_lock(catalog, job_id, f"a job of index {target!r}"):
        with catalog.session() as s:
            job = s.get(Job, job_id)
            if job.state not in UNFINISHED:
                raise Conflict(f"job {job_id} became {job.state} meanwhile; nothing was cancelled")
            job.state = "cancelled"
        freed = _stored_bytes(catalog, job_id)
        _forget(catalog, job_id)
    return {"id": job_id, "index": target, "state": "cancelled", "freed_bytes": freed}
