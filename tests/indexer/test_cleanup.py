"""`embedkd index gc` (`indexer/cleanup.py`): files a killed process left behind are found and deleted; the
current generation's files, resumable jobs' chunks and an index being written are never touched."""

from __future__ import annotations

import json

import numpy as np

from indexer import jobs, locks, shards
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.cleanup import collect_garbage
from indexer.corpus import ListSource, read_corpus
from indexer.models import Job
from indexer.search import Searcher

from .test_jobs import _failed_build


def _files(catalog, name: str) -> set[str]:
    return {p.name for p in (catalog.settings.index_dir / name).iterdir()}


def test_leftovers_of_killed_processes_go_and_nothing_else(sqlite_catalog, minilm, beir_small, monkeypatch):
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "t", minilm, ListSource(docs[:30]), shard_size=10, progress=False)
    searcher = Searcher(sqlite_catalog)
    q = minilm(["statins and heart disease"])
    # a process killed right after its commit: the old generation's own files stay
    with monkeypatch.context() as m:
        m.setattr(shards, "_remove", lambda folder, names: None)
        add_documents(sqlite_catalog, "t", minilm, ListSource(docs[30:35]), progress=False)
        delete_items(sqlite_catalog, "t", [docs[12].id], purge=True)  # rewrites shard 1
    with sqlite_catalog.session() as s:
        current = set(shards.manifest_files(sqlite_catalog.settings.index_dir / "t" / get_index(s, "t").file))
    stale = _files(sqlite_catalog, "t") - current
    assert stale == {"t.g1.shards.json", "t.g2.shards.json", "t.g1.s1.faiss"}  # the add opened a fourth shard
    # a build killed before its commit; a job killed between its done commit and deleting its chunks
    ghost = sqlite_catalog.settings.index_dir / "ghost"
    ghost.mkdir()
    (ghost / "ghost.g1.s0.faiss").write_bytes(b"x" * 1000)
    failed = _failed_build(sqlite_catalog, minilm, docs[:30], name="f")
    with sqlite_catalog.session() as s:
        done = s.query(Job).filter(Job.target == "t", Job.state == "done").first().id
    (jobs.job_dir(sqlite_catalog, done) / "part-000000.npy").write_bytes(b"y" * 500)
    jobs.job_dir(sqlite_catalog, 999)  # a folder whose job row is gone
    before = searcher.search_vectors("t", q, k=10)[0]

    plan = collect_garbage(sqlite_catalog, dry_run=True)
    listed = {p["path"].split("/indexes/")[-1].split("/jobs/")[-1] for p in plan["would_remove"]}
    assert listed == {*(f"t/{n}" for n in stale), "ghost", str(done), "999"}
    assert ghost.is_dir() and _files(sqlite_catalog, "t") >= stale  # a dry run deletes nothing
    out = collect_garbage(sqlite_catalog)
    assert out["bytes"] == plan["bytes"] > 1500 and not ghost.exists()
    assert _files(sqlite_catalog, "t") == current
    assert jobs.job_dir_path(sqlite_catalog, failed["id"]).is_dir()  # resumable: kept
    assert not jobs.job_dir_path(sqlite_catalog, done).exists() and not jobs.job_dir_path(sqlite_catalog, 999).exists()
    after = Searcher(sqlite_catalog).search_vectors("t", q, k=10)[0]
    assert [h.id for h in after] == [h.id for h in before] and np.allclose([h.score for h in after], [h.score for h in before])
    assert collect_garbage(sqlite_catalog)["removed"] == []


def test_an_index_being_written_is_skipped(sqlite_catalog, minilm, beir_small):
    build_index(sqlite_catalog, "t", minilm, ListSource(list(read_corpus(beir_small))[:10]), progress=False)
    stray = sqlite_catalog.settings.index_dir / "t" / "t.g9.s0.faiss.tmp"  # a shard being written
    stray.write_bytes(b"z")
    with locks.target_lock(sqlite_catalog, "t"):
        out = collect_garbage(sqlite_catalog)
    assert out["skipped_being_written"] == ["t"] and out["removed"] == [] and stray.is_file()
    assert [f["why"] for f in collect_garbage(sqlite_catalog)["removed"]] == ["not named by the index's current generation"]


def test_cli_gc(tmp_path, monkeypatch, capsys):
    from embedkd.cli.main import main

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    assert main(["index", "gc", "--json"]) == 0  # a fresh home: nothing to do
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "removed": [], "bytes": 0, "skipped_being_written": []}
    ghost = tmp_path / "home" / "indexes" / "ghost"
    ghost.mkdir(parents=True)
    (ghost / "ghost.g1.s0.faiss").write_bytes(b"x" * 2048)
    assert main(["index", "gc", "--dry-run"]) == 0
    assert "would delete" in capsys.readouterr().out and ghost.is_dir()
    assert main(["index", "gc"]) == 0 and not ghost.exists()


def test_gc_removes_the_pinned_files_of_a_killed_export_only(sqlite_catalog):
    import subprocess
    import sys

    from indexer import pins

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    root = sqlite_catalog.settings.job_dir
    stale, running = root / f"{pins.prefix('export', pid=gone.pid)}aaaa", root / f"{pins.prefix('export')}bbbb"
    elsewhere = root / f"{pins.prefix('export', host='other-machine', pid=gone.pid)}cccc"  # its own machine cleans it
    for folder in (stale, running, elsewhere):
        folder.mkdir(parents=True)
        (folder / "x.s0.faiss").write_bytes(b"0" * 100)
    out = collect_garbage(sqlite_catalog)
    assert [r["path"] for r in out["removed"]] == [str(stale)] and out["bytes"] == 100
    assert f"an export (process {gone.pid})" in out["removed"][0]["why"]
    assert running.is_dir() and elsewhere.is_dir()
