"""A compaction killed (SIGKILL) or failed midway is resumed by the next one: the shards it had made are reused
where their sources are unchanged, made again where a write rewrote one, and the result is the index the writes
say (`indexer/staging.py`)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer import frozen, store
from indexer.build import add_documents, build_index, delete_items
from indexer.cleanup import collect_garbage
from indexer.compaction import compact_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.jobs import list_jobs
from indexer.search import Searcher
from indexer.verify import verify_index

from .helpers import load_index, read_manifest

DELETED = (3, 23, 43)
QUERIES = ["statins and heart disease", "gene expression in mice", "vitamin D deficiency"]

# compacts index "k" of the catalog at argv[1], killed by SIGKILL as it begins to write its third shard
_KILLED = """
import os, signal, sys
from indexer import store
from indexer.compaction import compact_index
from indexer.context import open_catalog
from indexer.settings import load_settings

real, written = store.write_index, []
def write_index(index, path):
    if ".compacting-" in path.name:
        written.append(path.name)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(index, path)
store.write_index = write_index
compact_index(open_catalog(load_settings(home=sys.argv[1])), "k")
"""


def _three_shards(catalog, encoder, docs, factory: str = "Flat") -> None:
    """Index 'k': 60 documents in 3 shards of 20, one listed delete in each, so a compaction rewrites all three."""
    build_index(catalog, "k", encoder, ListSource(docs[:60]), factory=factory, shard_size=20, progress=False)
    delete_items(catalog, "k", [docs[i].id for i in DELETED])


def _hits(catalog, encoder) -> list[list[str]]:
    return [[h.id for h in row] for row in Searcher(catalog, lambda _s: encoder).search("k", QUERIES, k=10)]


def _compactions(catalog) -> list[dict]:
    return [j for j in list_jobs(catalog, target="k") if j["kind"] == "compact"]


def _staged(catalog) -> list[str]:
    return sorted(p.name for p in (catalog.settings.index_dir / "k").iterdir() if ".compacting-" in p.name)


@pytest.mark.parametrize("after_kill, resumed", [("nothing", 2), ("delete", 2), ("purge", 1)])
def test_a_killed_compaction_is_resumed(sqlite_catalog, minilm, beir_small, after_kill, resumed):
    """Killed with two shards staged; then, while nothing compacts: no write, a delete in a staged shard's source
    (listed with the reused shard), or a purge that rewrites the second one's source (made again, or here, no
    longer needing a rewrite). The rerun reuses what is valid, and the index answers as the writes say."""
    docs = list(read_corpus(beir_small))
    _three_shards(sqlite_catalog, minilm, docs)
    home = sqlite_catalog.settings.home
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(home)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    staged = _staged(sqlite_catalog)
    assert len([s for s in staged if s.endswith(".faiss")]) == 2 and len([s for s in staged if s.endswith(".json")]) == 2
    assert frozen.files(sqlite_catalog, "k") == set()  # the killed one froze nothing
    killed = _compactions(sqlite_catalog)  # `index jobs` shows it killed, two shards of its three rewritten
    assert [(j["state"], j["progress"], j["total"]) for j in killed] == [("interrupted", 40, 60)]

    if after_kill == "delete":
        delete_items(sqlite_catalog, "k", [docs[5].id])
    elif after_kill == "purge":
        delete_items(sqlite_catalog, "k", [docs[25].id], purge=True)
    gc = [r for r in collect_garbage(sqlite_catalog, dry_run=True)["would_remove"]  # it leaves what can be reused
          if ".compacting-" in Path(r["path"]).name]
    stale = [s for s in staged if ".s1." in s] if after_kill == "purge" else []  # the second shard's source changed
    assert sorted(Path(r["path"]).name for r in gc) == stale
    assert all("from shards that have changed since" in r["why"] for r in gc)
    expected = _hits(sqlite_catalog, minilm)
    gone = set(DELETED) | ({5} if after_kill == "delete" else {25} if after_kill == "purge" else set())

    out = compact_index(sqlite_catalog, "k")
    assert (out["changed"], out["resumed"], out["count"]) == (True, resumed, 60 - len(gone))
    assert _hits(sqlite_catalog, minilm) == expected
    stored = load_index(sqlite_catalog, "k").stored_ids()
    assert sorted(stored.tolist()) == sorted(set(range(60)) - gone)
    listed = [s.get("deleted") for s in read_manifest(sqlite_catalog, "k")["shards"]]
    assert listed == ([[5]] if after_kill == "delete" else [None]) + [None] * 2  # a delete since: listed, not lost
    assert verify_index(sqlite_catalog, "k")["ok"]
    assert _staged(sqlite_catalog) == []  # reused ones committed, the stale one deleted
    rows = _compactions(sqlite_catalog)  # the killed one's row, resumed and done
    assert [(j["id"], j["state"], j["error"]) for j in rows] == [(killed[0]["id"], "done", None)]
    assert rows[0]["progress"] == rows[0]["total"]


def test_a_failed_compaction_keeps_its_shards_for_the_next(sqlite_catalog, minilm, beir_small, monkeypatch, caplog):
    """HNSW, whose shards a compaction rebuilds: one that fails on its third shard keeps the two it made (said in
    the log, and by gc as a compaction's leftovers); the next rebuilds only the third."""
    docs = list(read_corpus(beir_small))
    _three_shards(sqlite_catalog, minilm, docs, factory="HNSW16")
    real, rebuilt = store.remove_ids, []

    def remove_ids(*args, **kwargs):
        rebuilt.append(1)
        if len(rebuilt) == 3:
            raise MemoryError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "remove_ids", remove_ids)
    with caplog.at_level(logging.WARNING, logger="indexer.compaction"), pytest.raises(MemoryError):
        compact_index(sqlite_catalog, "k")
    assert "its 2 staged shard(s) kept for the next one to reuse" in caplog.text
    [failed] = _compactions(sqlite_catalog)
    assert (failed["state"], failed["error"], failed["progress"]) == ("failed", "MemoryError: out of memory (simulated)", 40)
    assert len(_staged(sqlite_catalog)) == 4  # two shards, two records
    assert collect_garbage(sqlite_catalog)["removed"] == []  # what the next compaction reuses is not garbage

    rebuilt.clear()
    out = compact_index(sqlite_catalog, "k")
    assert (out["resumed"], len(rebuilt), out["count"]) == (2, 1, 57)
    index = load_index(sqlite_catalog, "k")
    ids = np.array(sorted(set(range(60)) - set(DELETED)))
    _, found = index.search(index.reconstruct(ids), 1)
    assert found[:, 0].tolist() == ids.tolist()  # each stored vector finds itself in the rebuilt graphs
    assert verify_index(sqlite_catalog, "k")["ok"] and _staged(sqlite_catalog) == []
    assert [(j["id"], j["state"], j["error"], j["progress"]) for j in _compactions(sqlite_catalog)] == [
        (failed["id"], "done", None, 60)]
    assert not compact_index(sqlite_catalog, "k")["changed"] and len(_compactions(sqlite_catalog)) == 1  # no row


def test_a_staged_shard_that_is_not_whole_is_made_again(sqlite_catalog, minilm, beir_small):
    """A staged file that does not match its record (cut short, changed) is not reused; the compaction makes that
    shard again and deletes the file."""
    docs = list(read_corpus(beir_small))
    _three_shards(sqlite_catalog, minilm, docs)
    home = sqlite_catalog.settings.home
    assert subprocess.run([sys.executable, "-c", _KILLED, str(home)], timeout=300).returncode == -signal.SIGKILL
    first = next(p for p in (sqlite_catalog.settings.index_dir / "k").glob("k.compacting-*.s0.faiss"))
    first.write_bytes(first.read_bytes()[:100])
    out = compact_index(sqlite_catalog, "k")
    assert (out["resumed"], out["count"]) == (1, 57)
    assert verify_index(sqlite_catalog, "k")["ok"] and _staged(sqlite_catalog) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_writes_between_a_failed_compaction_and_the_next(sqlite_catalog, minilm, beir_small, monkeypatch, seed):
    """A compaction fails as it stages its second shard; random adds, updates, deletes and purges commit; the next
    compaction reuses what is still valid. After each: every item's stored vector is its document's, each document
    finds itself, the files verify and nothing staged is left."""
    from .helpers import index_vectors

    docs = list(read_corpus(beir_small))
    rng = np.random.default_rng(seed)
    build_index(sqlite_catalog, "k", minilm, ListSource(docs[:20]), shard_size=20, progress=False)
    truth = {d.id: d.content for d in docs[:20]}
    real_write, failed = store.write_index, []

    def failing_write(index, path):
        if ".compacting-" in path.name and len(list(path.parent.glob("k.compacting-*.faiss"))) >= 1:
            raise OSError("no space left on device (simulated)")
        return real_write(index, path)

    def add(new) -> None:
        add_documents(sqlite_catalog, "k", minilm, ListSource(new), progress=False)
        truth.update({d.id: d.content for d in new})

    for _ in range(3):
        for _ in range(4):  # small shards behind the first, for the compaction to merge
            add([d for d in docs if d.id not in truth][:3])
        newest = [d.id for d in docs if d.id in truth][-1]  # a listed delete in the first shard and in the newest
        gone = [str(rng.choice([d.id for d in docs[:20] if d.id in truth])), newest]
        delete_items(sqlite_catalog, "k", gone)
        for i in gone:
            del truth[i]
        monkeypatch.setattr(store, "write_index", failing_write)
        try:
            compact_index(sqlite_catalog, "k")
        except OSError:
            failed.append(_staged(sqlite_catalog))
        monkeypatch.setattr(store, "write_index", real_write)
        for _ in range(3):
            kind, present = rng.integers(4), sorted(truth)
            if kind == 0:
                add([d for d in docs if d.id not in truth][: int(rng.integers(1, 4))])
            elif kind == 1:
                add([Doc(i, truth[i] + f" v{rng.integers(1000)}") for i in rng.choice(present, 2, replace=False)])
            else:
                ids = [str(i) for i in rng.choice(present, 1 + int(kind == 3), replace=False)]
                delete_items(sqlite_catalog, "k", ids, purge=kind == 3)
                for i in ids:
                    del truth[i]
        compact_index(sqlite_catalog, "k")
        ids, stored = index_vectors(sqlite_catalog, "k")
        assert ids == sorted(truth)
        np.testing.assert_allclose(stored, minilm([truth[i] for i in ids]), atol=1e-5)
        hits = Searcher(sqlite_catalog, lambda _s: minilm).search("k", [truth[i] for i in ids], k=1)
        assert [row[0].id for row in hits] == ids
        assert verify_index(sqlite_catalog, "k")["ok"] and _staged(sqlite_catalog) == []
    assert failed and all(len(staged) == 2 for staged in failed)  # each failure left a shard and its record
