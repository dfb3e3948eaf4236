"""Jobs an operator can see and clean up (`indexer/jobs.py`, `embedkd index jobs|cancel`, `GET /jobs`): a failed
job keeps its encoded chunks for a rerun, and loses them when it can no longer resume (a build once its index
exists, any job of a dropped index) or when cancelled; a running job cannot be cancelled."""

from __future__ import annotations

import json

import pytest

from indexer import jobs, locks
from indexer.build import add_documents, build_index, drop_index
from indexer.corpus import ListSource, read_corpus
from indexer.errors import Conflict, NotFound, UserError
from indexer.models import Job

from .helpers import Failing


def _failed_build(catalog, minilm, docs, name: str = "j", chunk: int = 8) -> dict:
    with pytest.raises(RuntimeError, match="worker lost"):
        build_index(catalog, name, Failing(minilm, 2), ListSource(docs), chunk_size=chunk, progress=False)
    (row,) = jobs.list_jobs(catalog, target=name, state="failed")
    return row


def test_a_failed_job_shows_its_progress_and_chunks_until_superseded(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:30]
    failed = _failed_build(sqlite_catalog, minilm, docs)
    assert (failed["kind"], failed["progress"], failed["total"]) == ("build", 16, 30)
    assert failed["stored_bytes"] >= 16 * 384 * 4 and "encoder worker lost" in failed["error"]
    assert jobs.job_dir_path(sqlite_catalog, failed["id"]).is_dir()
    # another build of the index (other chunks: another job) succeeds; the failed one can never resume now
    build_index(sqlite_catalog, "j", minilm, ListSource(docs), chunk_size=10, progress=False)
    rows = {r["id"]: r for r in jobs.list_jobs(sqlite_catalog, target="j")}
    assert rows[failed["id"]]["state"] == "superseded" and rows[failed["id"]]["stored_bytes"] == 0
    assert not jobs.job_dir_path(sqlite_catalog, failed["id"]).exists()
    (done,) = [r for r in rows.values() if r["state"] == "done"]
    assert done["progress"] == 30 and done["docs_per_s"] > 0 and list(rows) == sorted(rows, reverse=True)
    # a failed add, then the index dropped: its chunks go with it
    with pytest.raises(RuntimeError):
        add_documents(sqlite_catalog, "j", Failing(minilm, 0), ListSource(list(read_corpus(beir_small))[30:45]),
                      chunk_size=5, progress=False)
    (add,) = jobs.list_jobs(sqlite_catalog, target="j", state="failed")
    drop_index(sqlite_catalog, "j")
    assert [r["state"] for r in jobs.list_jobs(sqlite_catalog, target="j") if r["id"] == add["id"]] == ["superseded"]


def test_cancel_deletes_the_chunks_of_a_failed_job_only(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:30]
    failed = _failed_build(sqlite_catalog, minilm, docs)
    with locks.job_lock(sqlite_catalog, failed["id"], "build of index 'j'"), pytest.raises(Conflict, match="already running"):
        jobs.cancel(sqlite_catalog, failed["id"])  # a process runs it (a rerun): refused, chunks kept
    assert jobs.job_dir_path(sqlite_catalog, failed["id"]).is_dir()
    out = jobs.cancel(sqlite_catalog, failed["id"])
    assert out["state"] == "cancelled" and out["freed_bytes"] == failed["stored_bytes"]
    assert not jobs.job_dir_path(sqlite_catalog, failed["id"]).exists()
    with pytest.raises(UserError, match="is cancelled; only a failed or interrupted job"):
        jobs.cancel(sqlite_catalog, failed["id"])
    with pytest.raises(NotFound, match="there is no job 999"):
        jobs.cancel(sqlite_catalog, 999)
    # the same command again starts over
    out = build_index(sqlite_catalog, "j", minilm, ListSource(docs), chunk_size=8, progress=False)
    assert out["resumed_from"] == 0 and out["job_id"] != failed["id"]


def test_running_or_interrupted_is_told_by_the_job_lock(sqlite_catalog):
    with sqlite_catalog.session() as s:
        job = Job(kind="build", target="k", params_hash="x", params={}, progress=3, total=9, checkpoint={},
                  state="running")
        s.add(job)
        s.flush()
        job_id = job.id
    assert [r["state"] for r in jobs.list_jobs(sqlite_catalog)] == ["interrupted"]  # no process holds the lock
    assert jobs.count_by_state(sqlite_catalog) == {**dict.fromkeys(jobs.STATES, 0), "interrupted": 1}
    with locks.target_lock(sqlite_catalog, "k"):  # the index's lock says nothing of the job: an add encodes without it
        assert [r["state"] for r in jobs.list_jobs(sqlite_catalog)] == ["interrupted"]
    with locks.job_lock(sqlite_catalog, job_id, "build of index 'k'"):
        (row,) = jobs.list_jobs(sqlite_catalog, state="running")
        assert row["state"] == "running" and row["eta_s"] is None  # no time recorded yet: no rate
        with sqlite_catalog.session() as s:
            s.query(Job).filter(Job.target == "k").update({"seconds": 6.0})
        assert jobs.list_jobs(sqlite_catalog)[0]["eta_s"] == 12.0  # 6 of 9 left at 0.5 docs/s
        assert jobs.count_by_state(sqlite_catalog) == {**dict.fromkeys(jobs.STATES, 0), "running": 1}
        assert jobs.list_jobs(sqlite_catalog, state="interrupted") == []
    assert len(jobs.list_jobs(sqlite_catalog, state="interrupted")) == 1
    with pytest.raises(UserError, match="job state 'lost' is not one of"):
        jobs.list_jobs(sqlite_catalog, state="lost")


def test_cli_jobs_and_cancel(tmp_path, monkeypatch, capsys, minilm, beir_small):
    from embedkd.cli.main import main
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    catalog = open_catalog(load_settings())
    failed = _failed_build(catalog, minilm, list(read_corpus(beir_small))[:30])
    assert main(["index", "jobs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["jobs"]
    assert (row["id"], row["state"], row["progress"]) == (failed["id"], "failed", 16)
    assert main(["index", "jobs"]) == 0
    assert f"embedkd index cancel {failed['id']}" in capsys.readouterr().out
    assert main(["index", "cancel", str(failed["id"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["state"] == "cancelled"
    assert main(["index", "cancel", str(failed["id"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "only a failed or interrupted job" in err and "\n" not in err
    assert main(["index", "jobs", "--state", "lost"]) == 2


def test_only_the_newest_ended_jobs_of_an_index_are_kept(sqlite_catalog, minilm, beir_small, monkeypatch):
    """An index fed by HTTP writes ends a job per request: the table keeps the newest few per index."""
    monkeypatch.setattr(jobs, "FINISHED_KEPT", 2)
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "j", minilm, ListSource(docs[:5]), progress=False)
    failed = _failed_build(sqlite_catalog, minilm, docs[:30], name="other")
    for i in range(5, 9):
        add_documents(sqlite_catalog, "j", minilm, ListSource([docs[i]]), progress=False)
    rows = jobs.list_jobs(sqlite_catalog, target="j")
    assert [(r["kind"], r["state"]) for r in rows] == [("add", "done"), ("add", "done")]
    assert [r["id"] for r in jobs.list_jobs(sqlite_catalog, target="other")] == [failed["id"]]  # others untouched
