"""`index compact` leaves the index to its writers (`indexer/compaction.py`): writes committed while it rewrites
are kept, the deletes among them stay deleted, a write that rewrites what it rewrites makes it start again,
and nothing it stages outlives it."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import frozen, locks, shards
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.cleanup import collect_garbage
from indexer.compaction import compact_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import Conflict
from indexer.search import Searcher
from indexer.verify import verify_index

from .helpers import load_index, read_manifest

QUERIES = ["statins and heart disease", "gene expression in mice", "vitamin D deficiency"]


def _hits(catalog, encoder, name: str, k: int) -> list[list[tuple[str, float]]]:
    rows = Searcher(catalog, lambda _s: encoder).search(name, QUERIES, k=k)
    return [[(h.id, round(h.score, 4)) for h in row] for row in rows]


def _fragmented(catalog, encoder, docs) -> None:
    """Index 'k': a full first shard with two listed deletes, then small shards from small adds."""
    build_index(catalog, "k", encoder, ListSource(docs[:30]), shard_size=40, progress=False)
    for start in range(30, 50, 4):
        add_documents(catalog, "k", encoder, ListSource(docs[start : start + 4]), progress=False)
    delete_items(catalog, "k", [docs[1].id, docs[2].id])


def _while_staged(monkeypatch, during) -> list:
    """Run `during()` once, in the middle of the next compaction: its shards rewritten and staged, not committed."""
    calls: list = []
    real = shards.ShardedIndex.compact

    def compact(self, *args, **kwargs):
        sources = real(self, *args, **kwargs)
        if not calls:
            calls.append(during())
        return sources

    monkeypatch.setattr(shards.ShardedIndex, "compact", compact)
    return calls


def test_writes_during_a_compaction_are_kept(catalog, minilm, beir_small, monkeypatch):
    """An add, an update and deletes (of a vector the compaction rewrites, of one it merges, of one it keeps) all
    commit while the compaction runs, none waiting for it; the compacted index then answers as an index built from
    scratch on the documents it should hold, and the deletes are listed with the shards made from theirs."""
    docs = list(read_corpus(beir_small))
    _fragmented(catalog, minilm, docs)
    changed = Doc(docs[33].id, docs[33].content + " Updated while compacting.")

    def writes() -> dict:
        assert locks.writer(catalog, "k") is None and locks.compactor(catalog, "k") is not None
        add_documents(catalog, "k", minilm, ListSource(docs[50:56]), progress=False, lock_wait_s=0.5)
        add_documents(catalog, "k", minilm, ListSource([changed]), progress=False, lock_wait_s=0.5)
        delete_items(catalog, "k", [docs[3].id, docs[41].id])
        return read_manifest(catalog, "k")

    during = _while_staged(monkeypatch, writes)
    out = compact_index(catalog, "k")
    meanwhile = during[0]["shards"]
    # the adds made new shards and merged none into the frozen ones; the deletes were listed, not rewritten
    assert [(m["count"], m.get("deleted")) for m in meanwhile] == [(30, [1, 2, 3]), (16, [33, 41]), (4, None), (6, None),
                                                                    (1, None)]
    assert (out["changed"], out["attempts"], out["deleted_meanwhile"]) == (True, 1, 3)  # docs 3, 41 and 33's old vector
    assert out["count"] == 50 - 4 + 6

    kept = [d for d in docs[:56] if d.id not in {docs[1].id, docs[2].id, docs[3].id, docs[41].id, docs[33].id}] + [changed]
    build_index(catalog, "ref", minilm, ListSource(kept), progress=False)
    assert _hits(catalog, minilm, "k", k=len(kept)) == _hits(catalog, minilm, "ref", k=len(kept))
    assert verify_index(catalog, "k")["ok"]
    after = read_manifest(catalog, "k")["shards"]
    assert after[0]["deleted"] == [3] and after[0]["count"] == 28  # purged of 1 and 2 by the compaction
    files = {p.name for p in (catalog.settings.index_dir / "k").iterdir()}
    assert not [f for f in files if ".compacting-" in f]
    assert not frozen.marker(catalog, "k").exists()

    # a second compaction folds what the writes left
    again = compact_index(catalog, "k")
    assert again["changed"] and again["deleted_before"] == 3
    assert _hits(catalog, minilm, "k", k=len(kept)) == _hits(catalog, minilm, "ref", k=len(kept))


def test_a_purge_of_a_rewritten_shard_makes_it_start_again(sqlite_catalog, minilm, beir_small, monkeypatch):
    """`delete --purge` rewrites a frozen shard: that compaction's work no longer fits the index, so it starts again
    from the index as it is; the purged document is in no file after."""
    docs = list(read_corpus(beir_small))
    _fragmented(sqlite_catalog, minilm, docs)
    _while_staged(monkeypatch, lambda: delete_items(sqlite_catalog, "k", [docs[5].id], purge=True))
    out = compact_index(sqlite_catalog, "k")
    assert (out["changed"], out["attempts"], out["count"]) == (True, 2, 47)
    assert [(s["count"], s.get("deleted")) for s in read_manifest(sqlite_catalog, "k")["shards"]] == [(27, None), (20, None)]
    stored = load_index(sqlite_catalog, "k").stored_ids()
    assert 5 not in stored.tolist() and len(stored) == 47
    assert verify_index(sqlite_catalog, "k")["ok"]
    assert not [p for p in (sqlite_catalog.settings.index_dir / "k").iterdir() if ".compacting-" in p.name]


def test_one_compaction_at_a_time_and_gc_keeps_its_staged_shards(sqlite_catalog, minilm, beir_small, monkeypatch):
    docs = list(read_corpus(beir_small))
    _fragmented(sqlite_catalog, minilm, docs)
    folder = sqlite_catalog.settings.index_dir / "k"

    def meanwhile() -> tuple:
        with pytest.raises(Conflict, match="index 'k' is being compacted by another process"):
            compact_index(sqlite_catalog, "k")
        staged = sorted(p.name for p in folder.iterdir() if ".compacting-" in p.name)
        gc = collect_garbage(sqlite_catalog)
        return staged, gc, sorted(p.name for p in folder.iterdir() if ".compacting-" in p.name)

    during = _while_staged(monkeypatch, meanwhile)
    assert compact_index(sqlite_catalog, "k")["changed"]
    staged, gc, left = during[0]
    assert staged and left == staged and not gc["removed"]


def test_a_killed_compaction_freezes_nothing_and_gc_removes_its_files(sqlite_catalog, minilm, beir_small):
    """What a compaction killed midway leaves (its list of frozen files, its staged shards) counts for nothing:
    writes merge as usual, and gc deletes the leftovers."""
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "k", minilm, ListSource(docs[:8]), shard_size=40, progress=False)
    first = read_manifest(sqlite_catalog, "k")["shards"][0]["file"]
    frozen.freeze(sqlite_catalog, "k", {first})  # as a compaction killed after freezing leaves it
    folder = sqlite_catalog.settings.index_dir / "k"
    (folder / "k.compacting-elsewhere-1.s0.faiss").write_bytes(b"partial")
    assert frozen.files(sqlite_catalog, "k") == set()
    add_documents(sqlite_catalog, "k", minilm, ListSource(docs[8:20]), progress=False)
    assert [s["count"] for s in read_manifest(sqlite_catalog, "k")["shards"]] == [20]  # merged into the first shard
    gc = collect_garbage(sqlite_catalog)
    removed = {r["path"] for r in gc["removed"]}
    assert str(folder / "k.compacting-elsewhere-1.s0.faiss") in removed
    assert str(frozen.marker(sqlite_catalog, "k")) in removed and not frozen.marker(sqlite_catalog, "k").exists()


def test_rebase_lists_the_deletes_made_meanwhile_and_keeps_new_shards():
    """`shards.rebase` on FAISS alone: a compaction of shards [0-9 with 2 deleted][10-12][13-14] meets the index
    after an add (ids 15-17, a new shard) and a delete of id 4 (listed with the frozen first shard)."""
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((18, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # each vector its own nearest under inner product
    template = faiss.index_factory(8, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    base = shards.ShardedIndex.empty(template, shard_size=20)
    for lo, hi in ((0, 10), (10, 13), (13, 15)):
        base.add_with_ids(x[lo:hi], np.arange(lo, hi))
        base.dirty = set()  # as if written: the next add starts a shard
    for pos, shard in enumerate(base.shards):
        shard.file, shard.checksum = f"g1.s{pos}", f"c{pos}"
    base.shards[0].deleted = np.array([2, 7])
    base.frozen = base.compaction_inputs()
    assert base.frozen == {"g1.s0", "g1.s1", "g1.s2"}

    now = shards.ShardedIndex([shards.Shard(s.first_id, faiss.clone_index(s.index), s.file, s.checksum, 0, s.deleted)
                               for s in base.shards], 20, frozen=set(base.frozen))
    now.add_with_ids(x[15:18], np.arange(15, 18))
    now.remove_ids(np.array([4]), "Flat", "ip")
    assert len(now.shards) == 4 and now.shards[0].deleted.tolist() == [2, 4, 7]  # nothing merged into frozen shards

    sources = base.compact("Flat", "ip")
    assert len(base.shards) == 1 and base.shards[0].index.ntotal == 13
    final = shards.rebase(base, sources, now)
    assert final is not None and [s.first_id for s in final.shards] == [0, 15]
    assert final.shards[0].deleted.tolist() == [4]
    assert sorted(final.stored_ids().tolist()) == sorted(set(range(18)) - {2, 4, 7})
    _, ids = final.search(x, 1)
    assert [i for i in range(18) if i not in (2, 4, 7)] == [int(ids[i, 0]) for i in range(18) if i not in (2, 4, 7)]

    now.shards[1].checksum = "rewritten"  # a purge rewrote a source shard meanwhile
    assert shards.rebase(base, sources, now) is None


def test_a_compaction_holds_one_shard_at_a_time(sqlite_catalog, minilm, beir_small, monkeypatch):
    """Each rewritten shard is written as soon as it is made and its vectors let go, so a compaction of an index of
    many shards holds one shard's vectors, not the index's (docs/index_benchmark.md measures the memory)."""
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "k", minilm, ListSource(docs[:40]), shard_size=10, progress=False)
    delete_items(sqlite_catalog, "k", [docs[i].id for i in (3, 13, 23, 33)])  # one listed in each shard
    loaded: list[int] = []
    real = shards.ShardedIndex.compact

    def compact(self, factory, metric, write=None, reuse=None):
        def watched(position, shard, source):
            loaded.append(sum(s.index is not None for s in self.shards))
            write(position, shard, source)
        return real(self, factory, metric, write=watched, reuse=reuse)

    monkeypatch.setattr(shards.ShardedIndex, "compact", compact)
    out = compact_index(sqlite_catalog, "k")
    assert (out["shards"], out["count"], out["deleted_before"]) == (4, 36, 4)
    assert loaded == [1, 1, 1, 1]
    assert [(s["count"], s.get("deleted")) for s in read_manifest(sqlite_catalog, "k")["shards"]] == [(9, None)] * 4
    assert verify_index(sqlite_catalog, "k")["ok"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_writes_during_compactions_leave_the_index_as_the_writes_say(sqlite_catalog, minilm, beir_small,
                                                                            monkeypatch, seed):
    """Random adds, updates, deletes and purges, committed while compactions of an index of many small shards
    run: after each, every item's stored vector is its document's, no deleted document is found, and the
    files verify; whatever the writes did to the shards the compaction was rewriting."""
    from .helpers import index_vectors

    docs = list(read_corpus(beir_small))
    rng = np.random.default_rng(seed)
    build_index(sqlite_catalog, "k", minilm, ListSource(docs[:12]), shard_size=40, progress=False)
    truth = {d.id: d.content for d in docs[:12]}
    for start in range(12, 30, 3):
        add_documents(sqlite_catalog, "k", minilm, ListSource(docs[start : start + 3]), progress=False)
        truth.update({d.id: d.content for d in docs[start : start + 3]})

    def writes() -> None:
        for _ in range(4):
            kind, present = rng.integers(4), sorted(truth)
            if kind == 0:  # new documents
                new = [d for d in docs if d.id not in truth][: int(rng.integers(1, 4))]
                add_documents(sqlite_catalog, "k", minilm, ListSource(new), progress=False, lock_wait_s=0.5)
                truth.update({d.id: d.content for d in new})
            elif kind == 1:  # changed texts
                changed = [Doc(i, truth[i] + f" v{rng.integers(1000)}") for i in rng.choice(present, 2, replace=False)]
                add_documents(sqlite_catalog, "k", minilm, ListSource(changed), progress=False, lock_wait_s=0.5)
                truth.update({d.id: d.content for d in changed})
            else:  # deletes, listed or (kind 3) purged
                gone = list(rng.choice(present, 2, replace=False))
                delete_items(sqlite_catalog, "k", gone, purge=kind == 3)
                for i in gone:
                    del truth[i]

    for round_ in range(3):
        first = _first_shard_ids(sqlite_catalog)  # at least 10 vectors: one delete is listed there, to compact
        gone = str(rng.choice(first))
        delete_items(sqlite_catalog, "k", [gone])
        del truth[gone]
        calls = _while_staged(monkeypatch, writes)
        out = compact_index(sqlite_catalog, "k")
        assert calls and out["changed"] and out["attempts"] <= 3
        ids, stored = index_vectors(sqlite_catalog, "k")
        assert ids == sorted(truth)
        np.testing.assert_allclose(stored, minilm([truth[i] for i in ids]), atol=1e-5)
        hits = Searcher(sqlite_catalog, lambda _s: minilm).search("k", [truth[i] for i in ids], k=1)
        assert [row[0].id for row in hits] == ids
        assert verify_index(sqlite_catalog, "k")["ok"]
        assert not [p for p in (sqlite_catalog.settings.index_dir / "k").iterdir() if ".compacting-" in p.name]


def _first_shard_ids(catalog) -> list[str]:
    from sqlalchemy import select

    from indexer.models import Item

    shards_ = read_manifest(catalog, "k")["shards"]
    end = shards_[1]["first_id"] if len(shards_) > 1 else 2**62
    with catalog.session() as s:
        index = get_index(s, "k")
        rows = s.execute(select(Item.external_id).where(Item.index_id == index.id, Item.faiss_id < end)).scalars().all()
    assert len(rows) >= 10, shards_
    return sorted(rows)


@pytest.mark.parametrize("when", ["staged", "rewriting"])
def test_an_index_dropped_during_its_compaction(sqlite_catalog, minilm, beir_small, monkeypatch, when):
    """Dropped while its shards were rewritten, or once they were staged: the compaction says so in one line and
    leaves nothing behind (no folder, no list of frozen files)."""
    from indexer.build import drop_index
    from indexer.errors import NotFound

    docs = list(read_corpus(beir_small))
    _fragmented(sqlite_catalog, minilm, docs)
    if when == "staged":
        _while_staged(monkeypatch, lambda: drop_index(sqlite_catalog, "k"))
    else:
        real = shards.ShardedIndex.compact

        def compact(self, *args, **kwargs):
            drop_index(sqlite_catalog, "k")  # its files gone before they are read
            return real(self, *args, **kwargs)

        monkeypatch.setattr(shards.ShardedIndex, "compact", compact)
    with pytest.raises(NotFound, match="index 'k' was dropped while it was being compacted"):
        compact_index(sqlite_catalog, "k")
    assert not (sqlite_catalog.settings.index_dir / "k").exists() and not frozen.marker(sqlite_catalog, "k").exists()
