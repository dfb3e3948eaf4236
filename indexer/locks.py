"""One writer per index: a lock that is released when its holder dies.

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

__all__ = ["target_lock", "is_writing", "writer", "check_held", "lock_key"]

_LOCK_TRIES = 20  # one second


def _me() -> str:
    """Who holds a lock, as `index jobs` shows it: on several machines, which one and which process."""
    return f"embedkd {socket.gethostname()} pid {os.getpid()}"


def _shared(catalog: Catalog) -> bool:
    return catalog.engine.dialect.name == "postgresql"


def lock_key(target: str) -> int:
    """The advisory lock key of an index: a signed 64-bit hash of its name (collisions ~2^-64 a pair)."""
    return int.from_bytes(hashlib.sha256(f"embedkd:index:{target}".encode()).digest()[:8], "big", signed=True)


def _lock_path(catalog: Catalog, target: str) -> Path:
    return catalog.settings.home / "locks" / f"{target}.lock"


def _acquire(try_once: Callable[[], bool], target: str) -> None:
    for attempt in range(_LOCK_TRIES):
        if try_once():
            return
        if attempt < _LOCK_TRIES - 1:
            time.sleep(0.05)
    raise Conflict(f"another job is writing index {target!r} right now; wait for it to finish")


def _try_advisory(conn: Connection, key: int) -> bool:
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())


# (catalog URL, index) -> server pid of the connection holding its advisory lock, for this process's writes
_HELD: dict[tuple[str, str], int] = {}


@contextmanager
def _advisory_lock(catalog: Catalog, target: str) -> Iterator[None]:
    key = lock_key(target)
    # its own connection, outside any transaction, kept for the whole write: the lock lives as long as it
    conn = catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    held = (str(catalog.engine.url), target)
    try:
        conn.execute(text("SELECT set_config('application_name', :me, false)"), {"me": _me()})  # `writer` reads it
        _acquire(lambda: _try_advisory(conn, key), target)
        _HELD[held] = int(conn.execute(text("SELECT pg_backend_pid()")).scalar())
        try:
            yield
        finally:
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
    if pid not in {row.pid for row in _holders(session, target)}:
        raise Conflict(f"this job lost the write lock of index {target!r} (its database connection dropped); "
                       "nothing was committed; run the command again")


def _halves(target: str) -> tuple[int, int]:
    """The lock key as pg_locks shows a bigint key: high half in classid, low half in objid (unsigned)."""
    return divmod(lock_key(target) & 0xFFFFFFFFFFFFFFFF, 1 << 32)


def _holders(conn: Connection | Session, target: str) -> list:
    """The sessions holding `target`'s advisory lock in this database (at most one): server pid and
    application_name. Read from pg_locks, not by trying the lock: a look must never make a writer wait."""
    hi, lo = _halves(target)
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
def _file_lock(catalog: Catalog, target: str) -> Iterator[None]:
    path = _lock_path(catalog, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _acquire(lambda: _try_flock(fd), target)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _me().encode(), 0)  # `writer` reads it
        yield
    finally:
        os.close(fd)


@contextmanager
def target_lock(catalog: Catalog, target: str) -> Iterator[None]:
    """Hold index `target`'s write lock (`Conflict` when another process keeps it for over a second)."""
    with (_advisory_lock if _shared(catalog) else _file_lock)(catalog, target):
        yield


def is_writing(catalog: Catalog, target: str) -> bool:
    """Whether a process holds `target`'s write lock: on any machine sharing a PostgreSQL catalog, on
    this one for SQLite. A job stored as running whose lock nobody holds was killed."""
    return writer(catalog, target) is not None


def writer(catalog: Catalog, target: str) -> str | None:
    """Who holds `target`'s write lock ("embedkd HOST pid N"), or None when nobody does."""
    if _shared(catalog):
        with catalog.engine.connect() as conn:
            rows = _holders(conn, target)
        return (rows[0].application_name or "a process") if rows else None
    path = _lock_path(catalog, target)
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared and released at once: a writer holds it exclusively
        return None
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
    finally:
        os.close(fd)
