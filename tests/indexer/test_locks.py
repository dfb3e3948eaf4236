"""Write locks: one writer per index, released when the holder dies; on PostgreSQL, across machines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from indexer import jobs, locks
from indexer.context import open_catalog
from indexer.errors import Conflict
from indexer.models import Job
from indexer.settings import load_settings

_HOLDER = """
import sys, time
from indexer.context import open_catalog
from indexer.locks import target_lock
with target_lock(open_catalog(), sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _wait_until(check, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_one_writer_per_index(catalog):
    assert not locks.is_writing(catalog, "a") and locks.writer(catalog, "a") is None
    with locks.target_lock(catalog, "a"):
        assert locks.is_writing(catalog, "a") and not locks.is_writing(catalog, "b")
        assert locks.writer(catalog, "a") == f"embedkd {socket.gethostname()} pid {os.getpid()}"
        with pytest.raises(Conflict, match="another job is writing index 'a' right now"):
            with locks.target_lock(catalog, "a"):
                pass
        with locks.target_lock(catalog, "b"):  # other indexes are not held up
            assert locks.is_writing(catalog, "b")
    assert not locks.is_writing(catalog, "a") and not locks.is_writing(catalog, "b")
    with locks.target_lock(catalog, "a"):  # released on exit, also after a refusal
        pass


def test_a_killed_writer_releases_its_lock(catalog):
    env = {**os.environ, "EMBEDKD_HOME": str(catalog.settings.home),
           "EMBEDKD_DATABASE_URL": catalog.settings.database_url}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, "w"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert locks.writer(catalog, "w") == f"embedkd {socket.gethostname()} pid {holder.pid}"  # which process
        with pytest.raises(Conflict):
            with locks.target_lock(catalog, "w"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the OS (file) or the server (advisory lock, when the connection drops) lets go
    assert _wait_until(lambda: not locks.is_writing(catalog, "w"))
    with locks.target_lock(catalog, "w"):
        pass


def test_postgres_locks_span_machines(pg_url, tmp_path):
    """Two processes with their own EMBEDKD_HOME (two machines) on one PostgreSQL catalog see each other's locks."""
    here = open_catalog(load_settings(home=tmp_path / "a", database_url=pg_url), migrate=True)
    there = open_catalog(load_settings(home=tmp_path / "b", database_url=pg_url))
    try:
        with here.session() as s:
            job = Job(kind="build", target="x", params_hash="h", params={}, progress=1, total=4, checkpoint={},
                      state="running")
            s.add(job)
            s.flush()
            job_id = job.id
        assert [r["state"] for r in jobs.list_jobs(there)] == ["interrupted"]
        with locks.job_lock(here, job_id, "build of index 'x'"):
            (row,) = jobs.list_jobs(there)
            assert row["state"] == "running"  # a file lock would say interrupted
            assert row["writer"] == f"embedkd {socket.gethostname()} pid {os.getpid()}"
            with pytest.raises(Conflict, match=f"job {job_id} .build of index 'x'. is already running in another "
                                               f"process .embedkd {socket.gethostname()} pid {os.getpid()}"):
                with locks.job_lock(there, job_id, "build of index 'x'"):
                    pass
        with locks.target_lock(here, "x"):
            with pytest.raises(Conflict, match="another job is writing index 'x'"):
                with locks.target_lock(there, "x"):
                    pass
        assert jobs.count_by_state(there)["interrupted"] == 1
    finally:
        here.close()
        there.close()


def test_lock_keys_are_signed_64_bit_and_differ_by_name():
    keys = {locks.lock_key(f"index-{i}") for i in range(1000)}
    assert len(keys) == 1000 and all(-(2**63) <= k < 2**63 for k in keys)
    assert locks.lock_key("papers") == locks.lock_key("papers")


def test_a_write_that_lost_its_postgres_lock_commits_nothing(pg_url, tmp_path, minilm, beir_small, monkeypatch):
    """The lock's connection dropped mid-write (a server restart, a network cut): the commit is refused."""
    from sqlalchemy import text

    from indexer import build
    from indexer.build import add_documents, build_index
    from indexer.corpus import ListSource, read_corpus

    from .helpers import snapshot

    catalog = open_catalog(load_settings(home=tmp_path / "h", database_url=pg_url), migrate=True)
    try:
        docs = list(read_corpus(beir_small))
        build_index(catalog, "p", minilm, ListSource(docs[:10]), progress=False)
        write = build.shards.write

        def cuts_the_lock(*args, **kwargs):  # while the add writes its files, the lock's connection is terminated
            with catalog.engine.connect() as conn:
                hi, lo = locks._halves(locks.lock_key("p"))
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                                  "AND classid::bigint = :hi AND objid::bigint = :lo"), {"hi": hi, "lo": lo})
                conn.commit()
            return write(*args, **kwargs)

        before = snapshot(catalog)
        monkeypatch.setattr(build.shards, "write", cuts_the_lock)
        with pytest.raises(Conflict, match="lost the write lock of index 'p'.*nothing was committed"):
            add_documents(catalog, "p", minilm, ListSource(docs[10:15]), progress=False)
        monkeypatch.setattr(build.shards, "write", write)
        assert snapshot(catalog) == before
        assert add_documents(catalog, "p", minilm, ListSource(docs[10:15]), progress=False)["added"] == 5  # rerun
    finally:
        catalog.close()
