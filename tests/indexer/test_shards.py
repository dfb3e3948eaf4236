"""Indexes in shards (`indexer/shards.py`): the same neighbours and scores as one FAISS file, writes that
rewrite only the shards they touch, a search service that reloads only those, and indexes written
before shards (one FAISS file) still served and updated."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from indexer import shards, store
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import UserError
from indexer.search import Searcher

from .helpers import load_index, read_manifest, snapshot

QUERIES = ["statins and heart disease", "gene expression in mice", "vitamin D deficiency"]


def _hits(catalog, encoder, name: str, k: int = 20) -> list[list[tuple[str, float]]]:
    rows = Searcher(catalog, lambda _s: encoder).search(name, QUERIES, k=k)
    return [[(h.id, round(h.score, 5)) for h in row] for row in rows]


@pytest.mark.parametrize(("factory", "metric"), [("Flat", "ip"), ("Flat", "l2"), ("IVF4,PQ8x4", "ip")])
def test_shards_search_as_one_file(sqlite_catalog, minilm, beir_small, factory, metric):
    """Flat and IVF/PQ shards share one trained template: the merged top k is the one-file top k."""
    for name, size in (("one", 1000), ("sharded", 7)):
        out = build_index(sqlite_catalog, name, minilm, read_corpus(beir_small), factory=factory, metric=metric,
                          shard_size=size, progress=False)
        assert out["shards"] == (1 if size == 1000 else 9)  # 60 documents, 7 a shard
    manifest = read_manifest(sqlite_catalog, "sharded")
    assert [s["count"] for s in manifest["shards"]] == [7] * 8 + [4]
    assert [s["first_id"] for s in manifest["shards"]] == list(range(0, 60, 7))
    assert _hits(sqlite_catalog, minilm, "sharded") == _hits(sqlite_catalog, minilm, "one")
    one, sharded = load_index(sqlite_catalog, "one"), load_index(sqlite_catalog, "sharded")
    ids = np.array([0, 6, 7, 33, 59])
    np.testing.assert_array_equal(sharded.reconstruct(ids), one.reconstruct(ids))
    assert sorted(sharded.stored_ids().tolist()) == list(range(60))


def test_hnsw_shards_find_each_document(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "h", minilm, ListSource(docs), factory="HNSW16", shard_size=16, progress=False)
    hits = Searcher(sqlite_catalog, lambda _s: minilm).search("h", [d.content for d in docs], k=1)
    assert [row[0].id for row in hits] == [d.id for d in docs]


def test_add_and_delete_rewrite_only_the_shards_they_touch(sqlite_catalog, minilm, beir_small, monkeypatch):
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "a", minilm, ListSource(docs[:40]), shard_size=16, progress=False)
    before = {s["file"]: s["checksum"] for s in read_manifest(sqlite_catalog, "a")["shards"]}  # 16, 16, 8

    searcher = Searcher(sqlite_catalog, lambda _s: minilm)
    searcher.search("a", QUERIES[:1], k=3)
    loaded = {sh.file: sh.index for sh in searcher._indexes["a"].index.shards}

    read = []
    real_read = store.read_index
    monkeypatch.setattr(store, "read_index", lambda path, checksum: read.append(path.name) or real_read(path, checksum))
    changed = Doc(docs[3].id, docs[3].content + " Statins lower cholesterol.", docs[3].info)
    out = add_documents(sqlite_catalog, "a", minilm, ListSource([changed, *docs[40:52]]), progress=False)
    assert read == ["a.g1.template.faiss"]  # the build's empty template, copied for the new shard; no shard read
    assert (out["added"], out["updated"], out["shards"]) == (12, 1, 4)  # the 13 vectors in a new shard
    after = read_manifest(sqlite_catalog, "a")["shards"]
    assert [s["count"] for s in after] == [16, 16, 8, 13]  # 8 + 13 > 16: the new shard is not merged
    assert after[0]["deleted"] == [3] and all("deleted" not in s for s in after[1:])  # the replaced vector
    assert {s["file"]: s["checksum"] for s in after[:3]}.items() <= before.items()  # shards 0-2: not rewritten
    assert after[3]["file"] not in before

    searcher.search("a", QUERIES[:1], k=3)  # the service picks up the new generation, reading only the new shard
    reloaded = searcher._indexes["a"].index.shards
    assert all(reloaded[i].index is loaded[after[i]["file"]] for i in range(3))
    assert reloaded[0].deleted.tolist() == [3]

    delete_items(sqlite_catalog, "a", [docs[20].id])  # in shard 1 (ids 16-31): listed, the shard not rewritten
    final = read_manifest(sqlite_catalog, "a")["shards"]
    assert [s["count"] for s in final] == [16, 16, 8, 13] and final[1]["deleted"] == [20]
    assert [s["file"] for s in final] == [s["file"] for s in after]
    delete_items(sqlite_catalog, "a", [docs[21].id])  # a second deleted id in 16 passes a tenth: rewritten
    final = read_manifest(sqlite_catalog, "a")["shards"]
    assert [s["count"] for s in final] == [16, 14, 8, 13] and "deleted" not in final[1]
    assert final[1]["file"] != after[1]["file"]
    assert [final[i]["file"] for i in (0, 2, 3)] == [after[i]["file"] for i in (0, 2, 3)]
    files = {p.name for p in (sqlite_catalog.settings.index_dir / "a").iterdir()}
    with sqlite_catalog.session() as s:
        current = get_index(s, "a").file
    assert files == {current, "a.g1.template.faiss", *(s["file"] for s in final)}  # older generations' files are gone

    expected = {d.id: d for d in [changed, *docs[:40], *docs[40:52]] if d.id not in (docs[20].id, docs[21].id)}
    build_index(sqlite_catalog, "fresh", minilm, ListSource(list(expected.values())), progress=False)
    got, want = _hits(sqlite_catalog, minilm, "a", k=51), _hits(sqlite_catalog, minilm, "fresh", k=51)
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    np.testing.assert_allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in want], atol=1e-4)


def test_a_failed_write_leaves_every_shard_as_it_was(sqlite_catalog, minilm, beir_small, monkeypatch):
    import indexer.build as build_mod

    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "f", minilm, ListSource(docs[:30]), shard_size=8, progress=False)
    before = snapshot(sqlite_catalog)

    def fail(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_mod, "insert_items", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        add_documents(sqlite_catalog, "f", minilm, ListSource(docs[30:45]), progress=False)
    assert snapshot(sqlite_catalog)["files"] == before["files"]
    assert snapshot(sqlite_catalog)["indexes"] == before["indexes"]


def test_a_corrupt_shard_is_detected(sqlite_catalog, minilm, beir_small):
    build_index(sqlite_catalog, "c", minilm, read_corpus(beir_small), shard_size=20, progress=False)
    shard = sqlite_catalog.settings.index_dir / "c" / read_manifest(sqlite_catalog, "c")["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"\.s1\.faiss does not match its catalog checksum"):
        Searcher(sqlite_catalog, lambda _s: minilm).search("c", QUERIES[:1], k=3)


def test_an_index_written_as_one_file_is_served_and_updated(sqlite_catalog, minilm, beir_small):
    """Indexes written before shards have one FAISS file: read as one shard; the next write makes a manifest."""
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "old", minilm, ListSource(docs[:40]), progress=False)
    expected = _hits(sqlite_catalog, minilm, "old")
    folder = sqlite_catalog.settings.index_dir / "old"
    with sqlite_catalog.session() as s:  # as the previous version wrote it
        row = get_index(s, "old")
        single = shards.load(folder / row.file, row.checksum).shards[0].index
        for f in folder.iterdir():
            f.unlink()
        row.file, row.checksum = "old.g1.faiss", store.write_index(single, folder / "old.g1.faiss")
    assert _hits(sqlite_catalog, minilm, "old") == expected
    out = add_documents(sqlite_catalog, "old", minilm, ListSource(docs[40:]), progress=False)
    assert out["count"] == 60 and out["shards"] == 2  # the old file stays as shard 0, not rewritten
    assert sorted(p.name for p in folder.iterdir()) == ["old.g1.faiss", "old.g2.s1.faiss", "old.g2.shards.json",
                                                        "old.g2.template.faiss"]  # its first add made a template
    hits = Searcher(sqlite_catalog, lambda _s: minilm).search("old", [d.content for d in docs], k=1)
    assert [row[0].id for row in hits] == [d.id for d in docs]


def test_shard_size_must_be_positive(sqlite_catalog, minilm, beir_small, tmp_path):
    with pytest.raises(UserError, match="shard size must be a positive number"):
        build_index(sqlite_catalog, "z", minilm, read_corpus(beir_small), shard_size=0, progress=False)
    env = {**os.environ, "EMBEDKD_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "embedkd.cli.main", "index", "build", "--index", "z", "--model", "m",
                           "--corpus", str(beir_small), "--shard-size", "-5"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("--shard-size must be a positive integer, got -5")


def test_a_search_loading_while_a_write_commits_reads_the_new_generation(sqlite_catalog, minilm, beir_small,
                                                                        monkeypatch):
    """The write removes the files of the generation the search was about to read: it reads the next one."""
    import indexer.search as search_mod

    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "w", minilm, ListSource(docs[:30]), shard_size=8, progress=False)
    real_load, calls = shards.load, []

    def load_after_a_write(path, *args, **kwargs):
        if kwargs.get("lazy"):  # the delete's own reading
            return real_load(path, *args, **kwargs)
        calls.append(path.name)
        if len(calls) == 1:  # the catalog was read at generation 1; a delete commits generation 2 now
            delete_items(sqlite_catalog, "w", [docs[0].id])
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(search_mod.shards, "load", load_after_a_write)
    hits = Searcher(sqlite_catalog, lambda _s: minilm).search("w", [docs[0].content], k=30)[0]
    assert calls == ["w.g1.shards.json", "w.g2.shards.json"]
    assert len(hits) == 29 and docs[0].id not in {h.id for h in hits}


def _unit_vectors_and_template(seed: int, n: int, dim: int, factory: str) -> tuple[np.ndarray, faiss.Index]:
    """Seeded unit vectors, and an empty index of `factory` trained on them."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    template = store.make_index(dim, factory)
    if store.needs_training(template):
        store.train_index(template, x, factory)
    return x, template


@pytest.mark.parametrize("factory", ["Flat", "IVF8,PQ8x4", "HNSW16"])
def test_small_writes_rewrite_small_shards(tmp_path, factory):
    """Forty 3-vector writes into shards of 64: each write rewrites few vectors (not the growing tail), the shard
    count stays logarithmic, and the index answers as one FAISS index of the same vectors."""
    x, template = _unit_vectors_and_template(0, 400, 16, factory)
    index = shards.ShardedIndex.empty(faiss.clone_index(template), shard_size=64)
    index.add_with_ids(x[:100], np.arange(100))  # a build: fills shards in memory, 64 + 36
    shards.write(index, tmp_path, "g0")
    rewritten = []
    for n, start in enumerate(range(100, 220, 3), start=1):
        index = shards.load(tmp_path / f"g{n - 1}{shards.MANIFEST_SUFFIX}", None, lazy=True)
        index.add_with_ids(x[start : start + 3], np.arange(start, start + 3))
        rewritten.append(sum(index._count(pos) for pos in index.dirty))
        shards.write(index, tmp_path, f"g{n}")
        counts = [index._count(pos) for pos in range(len(index.shards))]
        assert all(c <= 64 for c in counts) and sum(counts) == start + 3
        assert len(counts) <= 2 + 1 + int(np.log2(n * 3 / 3)) + 1  # the build's two, then log2 of the writes
    # appending to the tail would have rewritten 36..64 vectors a write; merging costs log2(64/3) per vector
    assert max(rewritten) <= 64 and sum(rewritten) <= 120 * (1 + np.log2(64 / 3))
    assert np.median(rewritten) <= 12

    whole = faiss.clone_index(template)
    whole.add_with_ids(x[:220], np.arange(220))
    store.set_search_params(whole)
    index = shards.load(tmp_path / f"g40{shards.MANIFEST_SUFFIX}", None, prepare=store.set_search_params)
    assert index.stored_ids().tolist() == list(range(220))  # ascending within each shard, as written
    got_scores, got = index.search(x[:50], 5)
    want_scores, want = whole.search(x[:50], 5)
    if factory == "HNSW16":  # a graph per shard: approximate either way, each vector finds itself
        assert (got[:, 0] == np.arange(50)).all()
    else:
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(index.reconstruct(np.array([0, 150, 219])), x[[0, 150, 219]], atol=0.5)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW16", "PQ8x4"])  # PQ8x4: no selector, so k + deleted
def test_deleted_ids_are_skipped_until_the_shard_is_rewritten(tmp_path, factory):
    """A few deletes are listed with their shard (its file kept); searches, stored ids and the manifest leave them
    out; past a tenth of the shard, or with purge, the shard is rewritten without them."""
    x, template = _unit_vectors_and_template(1, 200, 16, factory)
    index = shards.ShardedIndex.empty(faiss.clone_index(template), shard_size=100)
    index.add_with_ids(x, np.arange(200))
    shards.write(index, tmp_path, "g1")
    index = shards.load(tmp_path / f"g1{shards.MANIFEST_SUFFIX}", None, lazy=True)
    gone = np.array([0, 1, 2, 5, 8, 13, 105, 150])  # the top hits of their own queries, in both shards
    index.remove_ids(gone, factory, "ip")
    assert not index.dirty and [s.deleted.tolist() for s in index.shards] == [[0, 1, 2, 5, 8, 13], [105, 150]]
    assert index.ntotal == 192 and len(index.stored_ids()) == 192 and not np.isin(gone, index.stored_ids()).any()
    shards.write(index, tmp_path, "g2")
    manifest = json.loads((tmp_path / f"g2{shards.MANIFEST_SUFFIX}").read_text())
    assert [e["file"] for e in manifest["shards"]] == ["g1.s0.faiss", "g1.s1.faiss"]  # no shard rewritten

    index = shards.load(tmp_path / f"g2{shards.MANIFEST_SUFFIX}", None, prepare=store.set_search_params)
    kept = np.setdiff1d(np.arange(200), gone)
    whole = faiss.clone_index(template)
    whole.add_with_ids(x[kept], kept)
    store.set_search_params(whole)
    got_scores, got = index.search(x[:20], 10)
    assert not np.isin(got, gone).any() and (got >= 0).all()
    if factory != "HNSW16":  # a graph per shard: approximate either way
        np.testing.assert_array_equal(got, whole.search(x[:20], 10)[1])
    filtered_ids = np.array([0, 3, 4, 105, 106])  # a filter naming deleted ids still leaves them out
    assert set(index.search(x[:3], 5, allowed=filtered_ids)[1].ravel().tolist()) <= {3, 4, 106, -1}

    index.remove_ids(np.array([20, 21, 22]), factory, "ip")  # shard 0 would list 9 of 100: still under a tenth
    assert not index.dirty
    index.remove_ids(np.array([23, 24]), factory, "ip")  # 11 of 100: the shard is rewritten without them
    assert index.dirty == {0} and not len(index.shards[0].deleted) and index.shards[0].index.ntotal == 89
    index.remove_ids(np.array([160]), factory, "ip", purge=True)  # purge: now, whatever the count
    assert index.dirty == {0, 1} and not len(index.shards[1].deleted) and index.shards[1].index.ntotal == 97
    assert index.ntotal == 186


def test_cli_delete_purge_rewrites_the_shard(tmp_path, monkeypatch, capsys, beir_small):
    """`index delete` lists a few deleted ids with their shard; `--purge` takes them (and the new ones) out of the
    file now, for data that must not stay on disk."""
    from embedkd.cli.main import main
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    from ..conftest import minilm_path

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    docs = list(read_corpus(beir_small))
    assert main(["index", "build", "--index", "p", "--model", minilm_path(), "--corpus", str(beir_small)]) == 0
    catalog = open_catalog(load_settings())
    assert main(["index", "delete", "--index", "p", docs[4].id, "--json"]) == 0
    first = read_manifest(catalog, "p")["shards"]
    assert [(s["count"], s.get("deleted")) for s in first] == [(60, [4])]
    assert main(["index", "delete", "--index", "p", docs[5].id, "--purge", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["count"] == 58
    purged = read_manifest(catalog, "p")["shards"]
    assert [(s["count"], s.get("deleted")) for s in purged] == [(58, None)] and purged[0]["file"] != first[0]["file"]
    ids = store.stored_ids(store.read_index(catalog.settings.index_dir / "p" / purged[0]["file"], None))
    assert not np.isin([4, 5], ids).any() and len(ids) == 58
    catalog.close()


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8", "IVF16,SQ8", "Flat", "PQ8", "HNSW16"])
def test_a_removal_keeps_every_other_id_on_its_vector(factory):
    """IDMap2's own removal misnumbered IVF lists (each vector after a removed one answered with the next id);
    `store.remove_ids` keeps ids and vectors together through removals, adds and a merge."""
    x, template = _unit_vectors_and_template(3, 3000, 32, factory)
    first = faiss.clone_index(template)
    first.add_with_ids(x[:2000], np.arange(2000))
    first = store.remove_ids(first, np.array([5, 100, 1999]), factory)
    first.add_with_ids(x[2000:2500], np.arange(2000, 2500))
    first = store.remove_ids(first, np.array([2001, 7]), factory)
    second = faiss.clone_index(template)
    second.add_with_ids(x[2500:], np.arange(2500, 3000))
    second = store.remove_ids(second, np.array([2600]), factory)
    merged = store.set_search_params(store.merge(first, second), nprobe=16)
    keep = np.setdiff1d(np.arange(3000), [5, 7, 100, 1999, 2001, 2600])
    assert merged.ntotal == len(keep) and store.stored_ids(merged).tolist() == keep.tolist()
    found = merged.search(x[keep], 1)[1][:, 0]
    assert (found == keep).mean() >= (0.99 if factory == "HNSW16" else 1.0)


def test_compact_folds_small_shards_and_listed_deletes(sqlite_catalog, minilm, beir_small, tmp_path, monkeypatch, capsys):
    """Small writes and deletes leave small shards and listed deletes; `index compact` folds them into shards of up to
    the shard size, purged, with the same answers; run again, it changes nothing."""
    from embedkd.cli.main import main

    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "k", minilm, ListSource(docs[:30]), shard_size=40, progress=False)
    for start in range(30, 50, 4):
        add_documents(sqlite_catalog, "k", minilm, ListSource(docs[start : start + 4]), progress=False)
    delete_items(sqlite_catalog, "k", [docs[1].id, docs[2].id])
    before = read_manifest(sqlite_catalog, "k")["shards"]
    assert len(before) > 2 and before[0]["deleted"] == [1, 2]
    want = _hits(sqlite_catalog, minilm, "k", k=48)

    monkeypatch.setenv("EMBEDKD_HOME", str(sqlite_catalog.settings.home))
    assert main(["index", "compact", "--index", "k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["shards_before"], out["deleted_before"], out["shards"], out["count"], out["changed"]) == (
        len(before), 2, 2, 48, True)
    after = read_manifest(sqlite_catalog, "k")["shards"]
    # shard 0 purged of the two (28), the small shards merged (20); 28 + 20 > 40, so two shards (none is split)
    assert [(s["count"], s.get("deleted")) for s in after] == [(28, None), (20, None)]
    assert _hits(sqlite_catalog, minilm, "k", k=48) == want
    with sqlite_catalog.session() as s:
        generation = get_index(s, "k").generation
    assert main(["index", "compact", "--index", "k", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["changed"] is False
    with sqlite_catalog.session() as s:
        assert get_index(s, "k").generation == generation
    from indexer.verify import verify_index

    assert verify_index(sqlite_catalog, "k")["ok"]
