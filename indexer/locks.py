"""One writer per index, one process per job: locks that are released when their holder dies.

An index's write lock is held to write its files and rows (a build, a commit, a delete); a job's lock is held
by the process running the job, from its first encoded chunk to its end, which is how `index jobs` tells a
running job from an interrupted one. An add encodes holding only its job's lock, so that a long add leaves
its index free for other writes until it commits. An index's compaction lock lets one compaction of it run at
a time; the compaction takes the write lock only to start and to commit (`compaction.py`).

On an embedded (SQLite) catalog the lock is a file in EMBEDKD_HOME, locked with flock: the OS releases
it when the process dies. A PostgreSQL catalog is shared by processes on several machines (over a
shared EMBEDKD_HOME), where a file lock on one machine is invisible to the others: there the lock is a
PostgreSQL session-level advisory lock, which the server releases when the holder's connection ends,
killed process included. Both wait up to a second before refusing, since listing jobs and gc hold a
lock for moments.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from .context import Catalog
from .errors import Conflict

__all__ = ["target_lock", "job_lock", "compaction_lock", "is_writing", "writer", "job_writer", "compactor", "check_held",
           "lock_key", "job_lock_path"]

log = logging.getLogger(__name__)

_TRY_EVERY_S = 0.05


def _me() -> str:
    """Who holds a lock, as `index jobs` shows it: on several machines, which one and which process."""
    return f"embedkd {socket.gethostname()} pid {os.getpid()}"


def _shared(catalog: Catalog) -> bool:
    return catalog.engine.dialect.name == "postgresql"


def lock_key(target: str, what: str = "index") -> int:
    """The advisory lock key of an index (or of a job, `what="job"`): a signed 64-bit hash of its name
    (collisions ~2^-64 a pair)."""
    return int.from_bytes(hashlib.sha256(f"embedkd:{what}:{target}".encode()).digest()[:8], "big", signed=True)


def _lock_path(catalog: Catalog, target: str) -> Path:
    return catalog.settings.home / "locks" / f"{target}.lock"


def job_lock_path(catalog: Catalog, job_id: int) -> Path:
    """A job's lock file (SQLite catalogs), deleted with the job's chunks when it ends."""
    return catalog.settings.home / "locks" / "jobs" / f"{job_id}.lock"


def _acquire(try_once: Callable[[], bool], refusal: Callable[[], str], wait_s: float = 1.0) -> None:
    tries = max(1, round(wait_s / _TRY_EVERY_S))
    for attempt in range(tries):
        if try_once():
            return
        if attempt == 20:  # a long wait (an add's commit): say why the command seems stuck
            log.warning("%s: waiting up to %.0f s", refusal().split(";")[0], wait_s)
        if attempt < tries - 1:
            time.sleep(_TRY_EVERY_S)
    raise Conflict(refusal())


def _try_advisory(conn: Connection, key: int) -> bool:
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())


# (catalog URL, index) -> server pid of the connection holding its advisory lock, for this process's writes
_HELD: dict[tuple[str, str], int] = {}


@contextmanager
def _advisory_lock(catalog: Catalog, key: int, refusal: Callable[[], str], held: tuple[str, str] | None,
                   wait_s: float = 1.0) -> Iterator[None]:
    """Hold advisory lock `key`; `held` names it in `_HELD` for `check_held` (index locks)."""
    # its own connection, outside any transaction, kept for the whole write: the lock lives as long as it
    conn = catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.execute(text("SELECT set_config('application_name', :me, false)"), {"me": _me()})  # `writer` reads it
        _acquire(lambda: _try_advisory(conn, key), refusal, wait_s)
        if held:
            _HELD[held] = int(conn.execute(text("SELECT pg_backend_pid()")).scalar())
        try:
            yield
        finally:
            if held:
                _HELD.pop(held, None)
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except Exception:  # noqa: BLE001 - the connection is gone, and the lock with it
                pass
    finally:
        conn.close()


def check_held(session: Session, target: str) -> None:
    """Call in a write's commit transaction: on PostgreSQL, refuse (`Conflict`) when this process no longer
    holds `target`'s lock because its connection dropped (a server restart, a network cut), since another
    writer may have started on the same generation's files. The file lock of SQLite cannot be lost."""
    bind = session.get_bind()
    pid = _HELD.get((str(bind.url), target))
    if bind.dialect.name != "postgresql" or pid is None:
        return
    if pid not in {row.pid for row in _holders(session, lock_key(target))}:
        raise Conflict(f"this job lost the write lock of index {target!r} (its database connection dropped); "
                       "nothing was committed; run the command again")


def _halves(key: int) -> tuple[int, int]:
    """A lock key as pg_locks shows a bigint key: high half in classid, low half in objid (unsigned)."""
    return divmod(key & 0xFFFFFFFFFFFFFFFF, 1 << 32)


def _holders(conn: Connection | Session, key: int) -> list:
    """The sessions holding advisory lock `key` in this database (at most one): server pid and
    application_name. Read from pg_locks, not by trying the lock: a look must never make a writer wait."""
    hi, lo = _halves(key)
    return conn.execute(text(
        "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"), {"hi": hi, "lo": lo}).all()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def _file_lock(path: Path, refusal: Callable[[], str], wait_s: float = 1.0) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _acquire(lambda: _try_flock(fd), refusal, wait_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _me().encode(), 0)  # `writer` reads it
        yield
    finally:
        os.close(fd)


@contextmanager
def target_lock(catalog: Catalog, target: str, wait_s: float = 1.0) -> Iterator[None]:
    """Hold index `target`'s write lock (`Conflict` when another process keeps it for over `wait_s`)."""
    def refusal() -> str:
        return f"another job is writing index {target!r} right now; wait for it to finish"

    with _lock(catalog, lock_key(target), _lock_path(catalog, target), refusal, wait_s,
               held=(str(catalog.engine.url), target)):
        yield


@contextmanager
def job_lock(catalog: Catalog, job_id: int, what: str, wait_s: float = 1.0) -> Iterator[None]:
    """Hold job `job_id`'s lock while running it (`Conflict` when another process runs it: the same command
    started twice). `what` names the job in that message ("add to index 'x'")."""
    def refusal() -> str:
        return (f"job {job_id} ({what}) is already running in another process ({job_writer(catalog, job_id)}); "
                "wait for it to finish")

    with _lock(catalog, lock_key(str(job_id), "job"), job_lock_path(catalog, job_id), refusal, wait_s):
        yield


@contextmanager
def compaction_lock(catalog: Catalog, target: str) -> Iterator[None]:
    """Hold index `target`'s compaction lock while compacting it (`Conflict` when another process compacts it)."""
    def refusal() -> str:
        return (f"index {target!r} is being compacted by another process ({compactor(catalog, target)}); "
                "wait for it to finish")

    with _lock(catalog, lock_key(target, "compact"), _compaction_lock_path(catalog, target), refusal, 1.0):
        yield


@contextmanager
def text_log_lock(catalog: Catalog, target: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold index `target`'s text-log lock while merging or purging its kept texts (`text_log.py`)."""
    def refusal() -> str:
        return f"the kept texts of index {target!r} are being merged by another process"

    path = catalog.settings.home / "locks" / "texts" / f"{target}.lock"
    with _lock(catalog, lock_key(target, "texts"), path, refusal, wait_s):
        yield


def _compaction_lock_path(catalog: Catalog, target: str) -> Path:
    return catalog.settings.home / "locks" / "compact" / f"{target}.lock"  # a folder: index names may end in ".compact"


def _lock(catalog: Catalog, key: int, path: Path, refusal: Callable[[], str], wait_s: float,
          held: tuple[str, str] | None = None):
    """The advisory lock `key` on a PostgreSQL catalog, else the file lock at `path`."""
    if _shared(catalog):
        return _advisory_lock(catalog, key, refusal, held, wait_s)
    return _file_lock(path, refusal, wait_s)


def is_writing(catalog: Catalog, target: str) -> bool:
    """Whether a process holds `target`'s write lock: on any machine sharing a PostgreSQL catalog, on
    this one for SQLite."""
    return writer(catalog, target) is not None


def writer(catalog: Catalog, target: str) -> str | None:
    """Who holds `target`'s write lock ("embedkd HOST pid N"), or None when nobody does."""
    return _holder(catalog, lock_key(target), _lock_path(catalog, target))


def job_writer(catalog: Catalog, job_id: int) -> str | None:
    """Who runs job `job_id` ("embedkd HOST pid N"), or None when nobody does (it ended, or was killed)."""
    return _holder(catalog, lock_key(str(job_id), "job"), job_lock_path(catalog, job_id))


def compactor(catalog: Catalog, target: str) -> str | None:
    """Who compacts index `target` ("embedkd HOST pid N"), or None when nobody does."""
    return _holder(catalog, lock_key(target, "compact"), _compaction_lock_path(catalog, target))


def _holder(catalog: Catalog, key: int, path: Path) -> str | None:
    if _shared(catalog):
        with catalog.engine.connect() as conn:
            rows = _holders(conn, key)
        return (rows[0].application_name or "a process") if rows else None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # never taken, or a job's, deleted when it ended
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared and released at once: a writer holds it exclusively
        return None
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
    finally:
        os.close(fd)
