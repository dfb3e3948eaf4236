"""An add encodes without its index's write lock and commits under it (`indexer.build.add_documents`): other
writes go on meanwhile, and the commit plans again against the index they left. On SQLite and PostgreSQL (whose
index and job locks are advisory locks) where the locks are what is tested."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import jobs, locks
from indexer.build import add_documents, build_index, delete_items, drop_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import Conflict, NotFound

from .helpers import During, Failing, index_vectors, snapshot


def _check_vectors(catalog, name: str, minilm, docs) -> None:
    """Every item's stored vector is its own document's embedding (no vector under another's id)."""
    ids, stored = index_vectors(catalog, name)
    by_id = {d.id: d.content for d in docs}
    expected = minilm([by_id[i] for i in ids])
    assert np.all(np.sum(stored * expected, axis=1) > 0.999)


def test_other_writes_go_on_while_an_add_encodes_and_its_commit_plans_again(catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:14]
    build_index(catalog, "a", minilm, ListSource(docs[:10]), progress=False)
    seen = {}

    def meanwhile():
        seen["index_writer"] = locks.writer(catalog, "a")
        seen["jobs"] = [(r["kind"], r["state"], r["writer"] is not None) for r in jobs.list_jobs(catalog, "a")
                        if r["state"] == "running"]
        # two writes to the same index, committed while the add encodes (before: refused, the index was held)
        delete_items(catalog, "a", [docs[0].id])  # the add saw it unchanged: now it must put it back
        add_documents(catalog, "a", minilm, ListSource([docs[10]]), progress=False)  # now unchanged

    out = add_documents(catalog, "a", During(minilm, meanwhile), ListSource([docs[0], *docs[10:14]]),
                        chunk_size=2, progress=False)
    assert seen == {"index_writer": None, "jobs": [("add", "running", True)]}
    assert (out["added"], out["updated"], out["unchanged"]) == (4, 0, 1)  # docs 0, 11-13; doc 10 was added meanwhile
    assert out["count"] == 14 and out["generation"] == 4
    ids, _ = index_vectors(catalog, "a")
    assert ids == sorted(d.id for d in docs)
    _check_vectors(catalog, "a", minilm, docs)
    assert [r["state"] for r in jobs.list_jobs(catalog, "a") if r["id"] == out["job_id"]] == ["done"]


def test_the_same_add_started_twice_at_once_is_refused(catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:14]
    build_index(catalog, "a", minilm, ListSource(docs[:10]), progress=False)
    again = {}

    def second():
        with pytest.raises(Conflict, match=r"job \d+ \(add of index 'a'\) is already running") as err:
            add_documents(catalog, "a", minilm, ListSource(docs[10:]), progress=False)
        again["message"] = str(err.value)

    out = add_documents(catalog, "a", During(minilm, second), ListSource(docs[10:]), progress=False)
    assert "\n" not in again["message"] and out["added"] == 4 and out["count"] == 14
    _check_vectors(catalog, "a", minilm, docs)


def test_a_failed_add_resumes_after_other_writes(sqlite_catalog, minilm, beir_small):
    """Before, an add's job was keyed by the index's generation, and superseded when another add finished: any
    write in between made its rerun start over."""
    docs = list(read_corpus(beir_small))[:17]
    build_index(sqlite_catalog, "a", minilm, ListSource(docs[:10]), progress=False)
    batch = ListSource(docs[10:16])
    with pytest.raises(RuntimeError, match="worker lost"):
        add_documents(sqlite_catalog, "a", Failing(minilm, 1), batch, chunk_size=2, progress=False)
    delete_items(sqlite_catalog, "a", [docs[1].id])  # other writes: the index's generation moves on
    add_documents(sqlite_catalog, "a", minilm, ListSource(docs[16:]), progress=False)  # and another add's job ends
    out = add_documents(sqlite_catalog, "a", minilm, batch, chunk_size=2, progress=False)
    assert out["resumed_from"] == 2 and out["added"] == 6 and out["count"] == 16
    _check_vectors(sqlite_catalog, "a", minilm, docs)


def test_a_failed_add_can_drop_its_chunks_at_once(sqlite_catalog, minilm, beir_small):
    """The HTTP route's adds (`keep_failed=False`): a client resends its request, perhaps merged with others."""
    docs = list(read_corpus(beir_small))[:16]
    build_index(sqlite_catalog, "a", minilm, ListSource(docs[:10]), progress=False)
    with pytest.raises(RuntimeError, match="worker lost"):
        add_documents(sqlite_catalog, "a", Failing(minilm, 1), ListSource(docs[10:]), chunk_size=2, progress=False,
                      keep_failed=False)
    (job,) = jobs.list_jobs(sqlite_catalog, "a", state="cancelled")
    assert "worker lost" in job["error"] and job["stored_bytes"] == 0
    assert not jobs.job_dir_path(sqlite_catalog, job["id"]).exists()
    assert not locks.job_lock_path(sqlite_catalog, job["id"]).exists()


def test_an_index_dropped_while_an_add_encodes_is_not_recreated(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:14]
    build_index(sqlite_catalog, "a", minilm, ListSource(docs[:10]), progress=False)
    before = snapshot(sqlite_catalog)
    with pytest.raises(NotFound, match="'a'"):
        add_documents(sqlite_catalog, "a", During(minilm, lambda: drop_index(sqlite_catalog, "a")),
                      ListSource(docs[10:]), progress=False)
    after = snapshot(sqlite_catalog)
    assert after["indexes"] == [] and after["items"] == [] and before["indexes"]
    (job,) = jobs.list_jobs(sqlite_catalog, "a", state="failed")
    assert "NotFound" in job["error"]


@pytest.mark.parametrize("delete_missing", [False, True])
def test_the_commit_reads_only_what_other_writes_changed_and_plans_as_a_full_read_would(
        sqlite_catalog, minilm, beir_small, delete_missing):
    """`_since` (the rows written and the FAISS ids removed since the add read the index) gives the plan that
    reading every item again gives, after random adds, updates, metadata changes and deletes, of documents in
    the add's corpus and not."""
    from indexer.build import _plan, _read_seen, _scan, _since, index_row

    docs = list(read_corpus(beir_small))[:24]
    rng = np.random.default_rng(0)
    build_index(sqlite_catalog, "a", minilm, ListSource(docs[:16]), progress=False)
    corpus = [Doc(d.id, d.content + (" (new)" if i % 5 == 0 else ""), {"metadata": {"n": i % 3}})
              for i, d in enumerate(docs[4:20])]  # some changed, some retagged, some new; ids 0-3 not in it
    scan = _scan(ListSource(corpus))
    for round_ in range(4):
        index = index_row(sqlite_catalog, "a")
        seen = _read_seen(sqlite_catalog, index, scan, delete_missing)
        for _ in range(3):  # other writes meanwhile
            present, _ = index_vectors(sqlite_catalog, "a")
            kind = rng.integers(3)
            if kind == 0 and len(present) > 8:
                delete_items(sqlite_catalog, "a", list(rng.choice(present, 2, replace=False)))
            else:
                picked = [docs[i] for i in rng.choice(len(docs), 3, replace=False)]
                writes = [Doc(d.id, d.content + (" (v%d)" % round_ if kind == 1 else ""),
                              {"metadata": {"n": int(rng.integers(3))}}) for d in picked]
                add_documents(sqlite_catalog, "a", minilm, ListSource(writes), progress=False)
        now = index_row(sqlite_catalog, "a")
        assert now.generation > seen.generation
        incremental = _since(sqlite_catalog, now, scan, seen)
        assert incremental is not None
        assert _plan(now, scan, incremental, 1.0) == _plan(now, scan, _read_seen(sqlite_catalog, now, scan, delete_missing),
                                                           1.0)
