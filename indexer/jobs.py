"""Job rows and per-target locks. A job is resumed when a rerun has the same parameters."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .context import Catalog
from .errors import Conflict
from .models import Job

__all__ = ["params_hash", "start_or_resume", "target_lock", "update_progress", "finish", "fail", "job_dir"]


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def job_dir(catalog: Catalog, job_id: int) -> Path:
    path = catalog.settings.job_dir / str(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def target_lock(catalog: Catalog, target: str) -> Iterator[None]:
    """One writer per index at a time; a lock held by a killed process is released by the OS."""
    lock_dir = catalog.settings.home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{target}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another job is writing index {target!r} right now; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


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


def update_progress(catalog: Catalog, job_id: int, progress: int, checkpoint: dict[str, Any], seconds: float) -> None:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        job.progress = progress
        job.checkpoint = checkpoint
        job.seconds = seconds


def finish(catalog: Catalog, job_id: int) -> None:
    with catalog.session() as s:
        s.get(Job, job_id).state = "done"


def fail(catalog: Catalog, job_id: int, error: str) -> None:
    with catalog.session() as s:
        job = s.get(Job, job_id)
        job.state = "failed"
        job.error = error[:2000]
