"""Backfill: resumable re-embedding into a staging index, then one atomic switch (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.upgrade.backfill import backfill, backfill_corpora, coverage, staging_name, switch_to_staging
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import Conflict, UserError
from indexer.models import Index, Job
from indexer.search import Searcher
from tests.indexer.helpers import During

from .test_upgrade_fit import HashEncoder, _corpus


def _backfill_found(catalog, name, encoder, given=None, **kwargs):
    """A backfill reading the files `backfill_corpora` finds (or `given`), as `embedkd upgrade backfill` does."""
    with backfill_corpora(catalog, name, given) as docs:
        return backfill(catalog, name, encoder, docs, **kwargs)


def _found(catalog, name) -> list[str]:
    with backfill_corpora(catalog, name) as docs:
        return [p.name for p in docs.paths]


class Flaky:
    """Wraps an encoder and fails on its n-th call (a killed job)."""

    def __init__(self, inner, fail_at: int) -> None:
        self.inner, self.record, self.calls, self.fail_at = inner, inner.record, 0, fail_at

    def __call__(self, texts):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("killed")
        return self.inner(texts)


def test_backfill_resumes_and_switches(catalog, tmp_path):
    path = _corpus(tmp_path, 40)
    v1 = HashEncoder(32, 1)
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    v2 = HashEncoder(32, 5, drift=np.eye(32, 48))
    with pytest.raises(RuntimeError):
        backfill(catalog, "idx", Flaky(v2, 3), read_corpus(path), chunk_size=10)
    with catalog.session() as s:  # searches still see v1 while the backfill is unfinished
        assert get_index(s, "idx").dimension == 32
    out = backfill(catalog, "idx", v2, read_corpus(path), chunk_size=10)
    assert out["switched"] and out["built"]["resumed_from"] == 20
    with catalog.session() as s:
        row = get_index(s, "idx")
        assert (row.dimension, row.model.fingerprint, row.count) == (48, v2.record.fingerprint, 40)
        assert s.query(type(row)).filter_by(name=staging_name("idx")).count() == 0
    text = "w3 w4 w5 w6"
    hits = Searcher(catalog).search_vectors("idx", v2([text]), k=3, source_fingerprint=v2.record.fingerprint)
    assert len(hits[0]) == 3
    with pytest.raises(Conflict, match="already holds"):
        backfill(catalog, "idx", v2, read_corpus(path))


def test_backfill_keeps_the_shards(sqlite_catalog, tmp_path):
    """The re-embedded index has the old one's shard size; the switch links the staging shards in place and the
    old generation's files go."""
    import json

    path = _corpus(tmp_path, 40)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(sqlite_catalog, "idx", v1, read_corpus(path), shard_size=15, progress=False)
    backfill(sqlite_catalog, "idx", v2, read_corpus(path), chunk_size=10)
    folder = sqlite_catalog.settings.index_dir / "idx"
    with sqlite_catalog.session() as s:
        manifest = json.loads((folder / get_index(s, "idx").file).read_text())
    assert manifest["shard_size"] == 15 and [e["count"] for e in manifest["shards"]] == [15, 15, 10]
    assert manifest["template"]["file"] == "idx.g2.template.faiss"  # linked with the shards
    assert sorted(p.name for p in folder.iterdir()) == sorted(["idx.g2.shards.json", manifest["template"]["file"],
                                                               *(e["file"] for e in manifest["shards"])])
    text = "w3 w4 w5 w6"
    hits = Searcher(sqlite_catalog).search_vectors("idx", v2([text]), k=40, source_fingerprint=v2.record.fingerprint)
    assert len(hits[0]) == 40


def test_a_document_no_file_has_refuses_the_backfill_before_it_encodes(catalog, tmp_path):
    """Added over HTTP before the backfill began: neither the index's files nor the texts kept while a backfill
    runs have it, so nothing could embed it with v2. The backfill says so before encoding anything, and runs once
    given a file that has it; the switch itself refuses too, should it get that far."""
    path = _corpus(tmp_path, 20)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    add_documents(catalog, "idx", v1, ListSource([Doc("late", "w1 w2 w3")]), progress=False)  # as the HTTP route does
    counted = Flaky(v2, fail_at=-1)
    with pytest.raises(UserError, match=r"'idx' holds 1 document \('late'\) that none of its files \(.*corpus.jsonl\) "
                                        r"has .*--corpus \(repeatable\); nothing was changed"):
        _backfill_found(catalog, "idx", counted)
    assert counted.calls == 0
    with catalog.session() as s:
        assert get_index(s, "idx").model.fingerprint == v1.record.fingerprint
        assert s.query(Index).filter_by(name=staging_name("idx")).count() == 0

    build_index(catalog, staging_name("idx"), v2, read_corpus(path), progress=False)  # as if the check were passed
    with pytest.raises(Conflict, match=r"'idx' holds 1 documents that neither the backfill's corpus nor the texts "
                                       r"written while it ran have.*--index idx.backfill"):
        switch_to_staging(catalog, "idx")
    extra = tmp_path / "late.jsonl"
    extra.write_text('{"_id": "late", "text": "w1 w2 w3"}\n')
    out = _backfill_found(catalog, "idx", v2, [str(extra), str(path)])
    assert out["switched"] and out["count"] == 21 and out["caught_up"]["added"] == 1


def test_backfill_reads_every_file_the_index_was_written_from(catalog, tmp_path):
    """Built from one file, then added to from two more (one changing a text of the first): with no --corpus the
    backfill reads all three, each document as its latest file has it, and switches."""
    path = _corpus(tmp_path, 20)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text('{"_id": "a1", "text": "w1 w2 w3"}\n{"_id": "d3", "text": "w4 w5 w6"}\n')
    second.write_text('{"_id": "a2", "text": "w7 w8 w9"}\n{"_id": "d3", "text": "w4 w5 w6 w7"}\n')
    for extra in (first, second):
        add_documents(catalog, "idx", v1, read_corpus(extra), progress=False)
    assert _found(catalog, "idx") == ["second.jsonl", "first.jsonl", "corpus.jsonl"]
    out = _backfill_found(catalog, "idx", v2)
    assert out["switched"] and out["count"] == 22 and out["built"]["count"] == 22  # each id once: unique for a build
    searcher = Searcher(catalog)
    for doc_id, text in (("a1", "w1 w2 w3"), ("a2", "w7 w8 w9"), ("d3", "w4 w5 w6 w7")):
        hits = searcher.search_vectors("idx", v2([text]), k=1, source_fingerprint=v2.record.fingerprint)
        assert hits[0][0].id == doc_id and hits[0][0].score == pytest.approx(1.0, abs=1e-5)


def test_a_resumed_backfill_reads_the_files_it_began_with(catalog, tmp_path):
    """A file added to the index after a backfill was killed mid-build does not change what the rerun reads, so it
    resumes instead of starting again; the added documents' texts were kept for its catch-up."""
    path = _corpus(tmp_path, 40)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    with pytest.raises(RuntimeError):
        _backfill_found(catalog, "idx", Flaky(v2, 3), chunk_size=10)
    later = tmp_path / "later.jsonl"
    later.write_text('{"_id": "n1", "text": "w1 w2 w3"}\n')
    add_documents(catalog, "idx", v1, read_corpus(later), progress=False)
    assert _found(catalog, "idx") == ["corpus.jsonl"]
    out = _backfill_found(catalog, "idx", v2, chunk_size=10)
    assert out["built"]["resumed_from"] == 20 and out["count"] == 41 and out["caught_up"]["added"] == 1
    assert _found(catalog, "idx") == ["later.jsonl", "corpus.jsonl"]  # none pinned


def test_the_files_of_an_index_outlive_pruned_jobs(catalog, tmp_path, monkeypatch):
    """Only the newest ended jobs of an index are kept (one per HTTP write), but never a done one that names the
    file its documents came from: an upgrade reads the index's documents there."""
    from indexer import jobs

    monkeypatch.setattr(jobs, "FINISHED_KEPT", 2)
    path = _corpus(tmp_path, 10)
    v1 = HashEncoder(32, 1)
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    for i in range(5):
        add_documents(catalog, "idx", v1, ListSource([Doc(f"h{i}", f"w{i} w9")]), progress=False)
    with catalog.session() as s:
        kept = s.query(Job).filter_by(target="idx").all()
    assert sorted(j.kind for j in kept) == ["add", "add", "build"]
    assert _found(catalog, "idx") == ["corpus.jsonl"]


def test_backfill_catches_up_with_writes_made_meanwhile(catalog, tmp_path):
    """Adds and deletes of the live index while the backfill built (and while it caught up) are in the switched
    index: documents the corpus has are embedded with v2 before the switch, deleted ones left out."""
    path = _corpus(tmp_path, 20)
    docs = list(read_corpus(path))
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, ListSource(docs[:15]), progress=False)
    build_index(catalog, staging_name("idx"), v2, ListSource(docs[:15]), progress=False)  # the backfill's build
    add_documents(catalog, "idx", v1, ListSource(docs[15:18]), progress=False)  # written while it built
    delete_items(catalog, "idx", [docs[0].id])

    # while the first catch-up encodes, one more document is written to the live index
    writes_once = During(v2, lambda: add_documents(catalog, "idx", v1, ListSource(docs[18:19]), progress=False))
    out = backfill(catalog, "idx", writes_once, read_corpus(path))
    assert out["switched"] and out["built"] == {} and out["count"] == 18
    assert out["caught_up"] == {"added": 4, "deleted": 1}
    with catalog.session() as s:
        row = get_index(s, "idx")
        assert (row.model.fingerprint, row.count) == (v2.record.fingerprint, 18)
    searcher = Searcher(catalog)
    for doc in (docs[15], docs[18]):
        hits = searcher.search_vectors("idx", v2([doc.content]), k=1, source_fingerprint=v2.record.fingerprint)
        assert hits[0][0].id == doc.id
    hits = searcher.search_vectors("idx", v2([docs[0].content]), k=18, source_fingerprint=v2.record.fingerprint)
    assert docs[0].id not in {h.id for h in hits[0]} and len(hits[0]) == 18


def test_switch_keeps_metadata_changed_after_the_corpus(catalog, tmp_path):
    """A metadata-only `index add` changes no content hash, so the backfill from the original corpus switches;
    the switched index keeps the newer metadata (a filter on it still finds the document), and a service that
    read the field before the switch reads it afresh (the switch replaces every item)."""
    path = _corpus(tmp_path, 20)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    doc = next(d for d in read_corpus(path) if d.id == "d3")
    out = add_documents(catalog, "idx", v1, ListSource([Doc(doc.id, doc.content, {"metadata": {"team": "blue"}})]),
                        progress=False)
    assert out["metadata_updated"] == 1
    late = Doc("late", "w3 w4 w9", {"metadata": {"team": "red"}})
    add_documents(catalog, "idx", v1, ListSource([late]), progress=False)
    searcher = Searcher(catalog)  # it reads the filtered field before the switch
    where = {"metadata.team": "blue"}
    assert [h.id for h in searcher.search_vectors("idx", v1(["w3 w4 w5 w6"]), k=5, where=where)[0]] == ["d3"]
    # the staging index numbers the documents anew (the late one first): ids read before the switch mean others
    backfill(catalog, "idx", v2, ListSource([late, *read_corpus(path)]), chunk_size=10)
    for reader in (searcher, Searcher(catalog)):
        hits = reader.search_vectors("idx", v2(["w3 w4 w5 w6"]), k=5, source_fingerprint=v2.record.fingerprint,
                                     where=where)
        assert [h.id for h in hits[0]] == ["d3"]
    with catalog.session() as s:
        index = get_index(s, "idx")
        assert index.count == 21 and index.history_from == index.generation


def test_documents_written_over_http_during_a_backfill_are_in_the_switched_index(catalog, tmp_path):
    """The backfill's corpus lacks them; the adds made while it ran kept their texts for its catch-up, which
    embeds them with v2. Once switched (or dropped), the texts go; with no backfill running none are kept."""
    from indexer import backfill_texts

    path = _corpus(tmp_path, 20)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    add_documents(catalog, "idx", v1, ListSource([Doc("before", "w7 w8 w9")]), progress=False)  # no backfill yet
    assert not backfill_texts.in_progress(catalog, "idx") and list(backfill_texts.read(catalog, "idx")) == []
    # the backfill's build is done (as `backfill` leaves it when killed before its switch); writes go on
    build_index(catalog, staging_name("idx"), v2, ListSource([*read_corpus(path), Doc("before", "w7 w8 w9")]),
                progress=False)
    assert backfill_texts.in_progress(catalog, "idx")
    late = [Doc("http-1", "w1 w2 w3"), Doc("http-2", "w4 w5 w6")]
    add_documents(catalog, "idx", v1, ListSource(late), progress=False)  # as the HTTP route does
    add_documents(catalog, "idx", v1, ListSource([Doc("http-1", "w1 w2 w3 w4")]), progress=False)  # then changed
    out = backfill(catalog, "idx", v2, read_corpus(path))  # the corpus has neither
    assert out["switched"] and out["count"] == 23 and out["caught_up"] == {"added": 2, "deleted": 0}
    hits = Searcher(catalog).search_vectors("idx", v2(["w1 w2 w3 w4"]), k=1, source_fingerprint=v2.record.fingerprint)
    assert hits[0][0].id == "http-1"  # its latest text, embedded with v2
    assert list(backfill_texts.read(catalog, "idx")) == [] and not backfill_texts.in_progress(catalog, "idx")


def test_an_add_that_began_before_the_backfill_keeps_its_texts_at_its_commit(sqlite_catalog, tmp_path):
    """The add checked for a backfill before encoding, found none, and one began while it encoded: its commit
    keeps the texts of what it writes, so the backfill's catch-up can embed them and switch."""
    from indexer import backfill_texts

    path = _corpus(tmp_path, 10)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(sqlite_catalog, "idx", v1, read_corpus(path), progress=False)
    begins = During(v1, lambda: build_index(sqlite_catalog, staging_name("idx"), v2, read_corpus(path), progress=False))
    add_documents(sqlite_catalog, "idx", begins, ListSource([Doc("http-1", "w1 w2 w3")]), progress=False)
    assert [d.id for d in backfill_texts.read(sqlite_catalog, "idx")] == ["http-1"]
    out = backfill(sqlite_catalog, "idx", v2, read_corpus(path))  # its corpus lacks http-1
    assert out["switched"] and out["caught_up"] == {"added": 1, "deleted": 0} and out["count"] == 11


def _backfill_built(catalog, tmp_path):
    """Index "idx" of 10 documents by v1, and its backfill's staging index built by v2 (a backfill in progress,
    as `backfill` leaves it when killed before its switch); v1."""
    path = _corpus(tmp_path, 10)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    build_index(catalog, staging_name("idx"), v2, read_corpus(path), progress=False)
    return v1


def test_dropping_the_staging_index_drops_the_kept_texts(sqlite_catalog, tmp_path):
    from indexer import backfill_texts
    from indexer.build import drop_index

    v1 = _backfill_built(sqlite_catalog, tmp_path)
    add_documents(sqlite_catalog, "idx", v1, ListSource([Doc("http-1", "w1 w2")]), progress=False)
    assert [d.id for d in backfill_texts.read(sqlite_catalog, "idx")] == ["http-1"]
    drop_index(sqlite_catalog, staging_name("idx"))  # the backfill abandoned
    assert list(backfill_texts.read(sqlite_catalog, "idx")) == [] and not backfill_texts.in_progress(sqlite_catalog, "idx")


def test_a_purge_takes_the_kept_text_out_and_gc_removes_texts_no_backfill_needs(sqlite_catalog, tmp_path):
    from indexer import backfill_texts
    from indexer.cleanup import collect_garbage

    v1 = _backfill_built(sqlite_catalog, tmp_path)
    add_documents(sqlite_catalog, "idx", v1, ListSource([Doc("a", "w1 w2"), Doc("b", "w3 w4")]), progress=False)
    delete_items(sqlite_catalog, "idx", ["a"], purge=True)  # data that must not stay on disk
    assert [d.id for d in backfill_texts.read(sqlite_catalog, "idx")] == ["b"]
    assert collect_garbage(sqlite_catalog)["removed"] == []  # the backfill still needs them
    backfill_texts.keep(sqlite_catalog, "other", [Doc("c", "w5")])  # written as a backfill of "other" switched
    out = collect_garbage(sqlite_catalog)
    assert [r["why"] for r in out["removed"]] == ["texts kept for a backfill of 'other', which is not in progress"]
    assert list(backfill_texts.read(sqlite_catalog, "other")) == [] and len(list(backfill_texts.read(sqlite_catalog, "idx"))) == 1


def test_documents_written_over_http_before_a_backfill_are_read_from_the_texts_the_server_kept(sqlite_catalog, tmp_path):
    """No file has them, but the server kept their texts (`indexer.text_log`, merged by levels meanwhile): a backfill
    with no --corpus embeds each with v2 as last written, and switches."""
    import httpx

    from indexer import backfill_texts, text_log
    from indexer.service import create_app
    from tests.indexer.helpers import serving

    path = _corpus(tmp_path, 20)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(sqlite_catalog, "idx", v1, read_corpus(path), progress=False)
    latest = {f"h{i}": f"w{i} w{i + 1} w{i + 2}" for i in range(10)} | {"h0": "w0 w5 w9", "d3": "w2 w4 w6 w8"}
    with serving(create_app(Searcher(sqlite_catalog, lambda _s: v1))) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            writes = [(f"h{i}", f"w{i} w{i + 1} w{i + 2}") for i in range(10)] + [("h0", latest["h0"]),
                                                                                    ("d3", latest["d3"])]
            for doc_id, text in writes:  # one request each: twelve log files, eight merged into one
                r = c.post("/indexes/idx/documents", json={"documents": [{"_id": doc_id, "text": text}]})
                assert r.status_code == 200, r.text
            assert text_log.idle()
            listed = c.get("/indexes").json()["indexes"][0]["kept_texts"]
            assert listed == text_log.usage(sqlite_catalog, "idx") and listed["files"] == 5 and listed["bytes"] > 0
            metrics = c.get("/metrics").text  # the same bytes, and the merge that made the level-1 file, scraped
            assert f'embedkd_kept_text_bytes{{index="idx"}} {float(listed["bytes"])}' in metrics
            assert 'embedkd_kept_text_merges_total{outcome="done"}' in metrics
            assert 'embedkd_kept_text_merges_total{outcome="failed"}' in metrics
    assert text_log.idle()  # merged in the background
    assert sorted(p.name.split("-")[0] for p in text_log.files(sqlite_catalog, "idx")) == ["0"] * 4 + ["1"]
    # as `--dry-run --corpus FILE` does: reads, pins, encodes nothing; the kept texts are read beside given files
    with backfill_corpora(sqlite_catalog, "idx", [str(path)]) as docs:
        assert (coverage(sqlite_catalog, "idx", docs)["missing"], len(docs.paths)) == (0, 6)  # 5 kept + the given
    assert not backfill_texts.pin_folder(sqlite_catalog, "idx").exists()  # no backfill began: its links went
    out = _backfill_found(sqlite_catalog, "idx", v2)
    assert out["switched"] and out["count"] == 30
    assert not backfill_texts.pin_folder(sqlite_catalog, "idx").exists()  # its links to the kept texts went with it
    searcher = Searcher(sqlite_catalog)
    for doc_id, text in latest.items():
        hits = searcher.search_vectors("idx", v2([text]), k=1, source_fingerprint=v2.record.fingerprint)
        assert hits[0][0].id == doc_id and hits[0][0].score == pytest.approx(1.0, abs=1e-5)


def _from_two_files(catalog, folder, added: str) -> tuple:
    """Index 'idx' built with v1 from 20 documents in `folder`, then `added` (JSONL) added from a second file
    there; (v1, v2)."""
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(catalog, "idx", v1, read_corpus(_corpus(folder, 20)), progress=False)
    (folder / "added.jsonl").write_text(added)
    add_documents(catalog, "idx", v1, read_corpus(folder / "added.jsonl"), progress=False)
    return v1, v2


def test_an_imported_index_keeps_where_its_documents_live(sqlite_catalog, tmp_path):
    """Exported with the paths of the files its documents came from and the texts kept of its HTTP writes, an
    index imported into another catalog backfills there with no --corpus."""
    from indexer import text_log
    from indexer.context import open_catalog
    from indexer.settings import load_settings
    from indexer.transfer import export_index, import_index

    v1, v2 = _from_two_files(sqlite_catalog, tmp_path, '{"_id": "a1", "text": "w1 w2 w3"}\n')
    web = [Doc("h1", "w4 w5 w6")]
    add_documents(sqlite_catalog, "idx", v1, ListSource(web), progress=False)  # as the HTTP route does, then:
    text_log.append(sqlite_catalog, "idx", web, wait=True)
    export_index(sqlite_catalog, "idx", tmp_path / "export")

    other = open_catalog(load_settings(home=tmp_path / "other"))
    got = import_index(other, tmp_path / "export", name="moved")
    assert (got["kept_text_files"], got["source_paths"]) == (1, 2)
    assert _found(other, "moved")[1:] == ["added.jsonl", "corpus.jsonl"]  # the kept texts (pinned) first: newest
    out = _backfill_found(other, "moved", v2)
    assert out["switched"] and out["count"] == 22
    for doc_id, text in (("h1", "w4 w5 w6"), ("a1", "w1 w2 w3")):
        hits = Searcher(other).search_vectors("moved", v2([text]), k=1, source_fingerprint=v2.record.fingerprint)
        assert hits[0][0].id == doc_id
    other.close()


def test_an_index_exported_with_its_corpora_backfills_where_its_files_are_not(sqlite_catalog, tmp_path):
    """`index export --with-corpora` copies the files its documents came from: imported where those paths do not
    exist (here: moved away), it backfills with no --corpus, reading the copies; dropping it deletes them. Without
    them, the backfill is refused before encoding; a file gone at export time refuses the export."""
    import shutil

    from indexer import carried
    from indexer.build import drop_index
    from indexer.context import open_catalog
    from indexer.errors import UserError
    from indexer.settings import load_settings
    from indexer.transfer import export_index, import_index

    src = tmp_path / "here"
    src.mkdir()
    _, v2 = _from_two_files(sqlite_catalog, src, '{"_id": "a1", "text": "w1 w2 w3"}\n{"_id": "d3", "text": "w7 w8"}\n')
    assert export_index(sqlite_catalog, "idx", tmp_path / "with", with_corpora=True)["corpora"] == 2
    export_index(sqlite_catalog, "idx", tmp_path / "without")
    shutil.move(src, tmp_path / "elsewhere")  # the other machine has no such paths

    other = open_catalog(load_settings(home=tmp_path / "other"))
    import_index(other, tmp_path / "without", name="bare")
    with pytest.raises(UserError, match=r"the files they came from are not here \(.*added.jsonl, .*corpus.jsonl: "
                                        r"moved, or another machine\); pass them with --corpus"):
        _backfill_found(other, "bare", v2)
    got = import_index(other, tmp_path / "with", name="moved")
    assert got["corpora"] == 2 and _found(other, "moved") == ["1-added.jsonl", "0-corpus.jsonl"]  # newest first
    out = _backfill_found(other, "moved", v2)
    assert out["switched"] and out["count"] == 21
    for doc_id, text in (("a1", "w1 w2 w3"), ("d3", "w7 w8")):  # d3 as the later file changed it
        hits = Searcher(other).search_vectors("moved", v2([text]), k=1, source_fingerprint=v2.record.fingerprint)
        assert hits[0][0].id == doc_id
    drop_index(other, "moved")
    assert not carried.folder(other, "moved").exists()
    other.close()

    (tmp_path / "elsewhere" / "added.jsonl").unlink()
    shutil.move(tmp_path / "elsewhere", src)
    with pytest.raises(UserError, match="added.jsonl, a file this index's documents came from, is gone"):
        export_index(sqlite_catalog, "idx", tmp_path / "again", with_corpora=True)
    assert not (tmp_path / "again").exists() and not (tmp_path / "again.tmp").exists()


def test_what_an_index_no_longer_holds_is_not_carried_and_a_purge_takes_it_out_of_the_copies(sqlite_catalog, tmp_path):
    """The carried copies hold each document as the index holds it, its line verbatim: a deleted (d1), a purged (d2)
    and a superseded line (d3's first text) stay behind. A purge of the imported index takes its document out of the
    copies, which still backfill it."""
    import json

    from indexer.context import open_catalog
    from indexer.settings import load_settings
    from indexer.transfer import export_index, import_index

    src = tmp_path / "here"
    src.mkdir()
    _, v2 = _from_two_files(sqlite_catalog, src, '{"_id": "d3", "text": "w7 w8"}\n')
    delete_items(sqlite_catalog, "idx", ["d1"])
    delete_items(sqlite_catalog, "idx", ["d2"], purge=True)
    out = export_index(sqlite_catalog, "idx", tmp_path / "out", with_corpora=True)
    copies = tmp_path / "out" / "corpora"
    original = (src / "corpus.jsonl").read_text().splitlines(keepends=True)
    assert (copies / "0-corpus.jsonl").read_text() == "".join(original[:1] + original[4:])  # d0, then d4..d19
    assert (copies / "1-added.jsonl").read_text() == '{"_id": "d3", "text": "w7 w8"}\n'
    manifest = json.loads((tmp_path / "out" / "embedkd-index.json").read_text())
    assert [f["documents"] for f in manifest["sources"]["corpora"]] == [17, 1] and out["corpora"] == 2

    other = open_catalog(load_settings(home=tmp_path / "other"))
    import_index(other, tmp_path / "out", name="moved")
    carried_copy = other.settings.home / "corpora" / "moved" / "0-corpus.jsonl"
    assert '"d0"' in carried_copy.read_text()
    delete_items(other, "moved", ["d0"], purge=True)
    assert carried_copy.read_text() == "".join(original[4:])
    got = _backfill_found(other, "moved", v2)
    assert got["switched"] and got["count"] == 17
    other.close()


def test_a_purge_during_a_backfill_takes_the_text_out_of_the_backfills_links_to_the_kept_texts(sqlite_catalog, tmp_path):
    """A killed backfill keeps links to the kept HTTP texts, to read the same files when rerun; a purge then rewrites
    the kept file and the link alike, and the rerun switches without the purged document."""
    from indexer import backfill_texts, text_log

    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(sqlite_catalog, "idx", v1, read_corpus(_corpus(tmp_path, 12)), progress=False)
    web = [Doc("h1", "w1 w2 private"), Doc("h2", "w3 w4 public")]
    add_documents(sqlite_catalog, "idx", v1, ListSource(web), progress=False)  # as the HTTP route does, then:
    text_log.append(sqlite_catalog, "idx", web, wait=True)
    with pytest.raises(RuntimeError, match="killed"):
        _backfill_found(sqlite_catalog, "idx", Flaky(v2, 2), chunk_size=4)
    links = backfill_texts.pin_folder(sqlite_catalog, "idx")
    assert "private" in "".join(p.read_text() for p in links.iterdir())
    delete_items(sqlite_catalog, "idx", ["h1"], purge=True)
    texts = "".join(p.read_text() for p in links.iterdir())
    assert "private" not in texts and "public" in texts
    out = _backfill_found(sqlite_catalog, "idx", v2, chunk_size=4)
    assert out["switched"] and out["count"] == 13


def test_a_document_written_over_http_after_the_backfill_listed_its_files_is_found(sqlite_catalog, tmp_path):
    """An HTTP write that commits after a backfill pinned the kept texts, before the backfill keeps texts itself, is
    read from the texts the server keeps now: the coverage check passes and the switched index holds it."""
    import httpx

    from indexer.service import create_app
    from tests.indexer.helpers import serving

    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    build_index(sqlite_catalog, "idx", v1, read_corpus(_corpus(tmp_path, 12)), progress=False)
    with serving(create_app(Searcher(sqlite_catalog, lambda _s: v1))) as url:
        with backfill_corpora(sqlite_catalog, "idx") as docs:
            r = httpx.post(f"{url}/indexes/idx/documents", json={"documents": [{"_id": "h1", "text": "w1 w2 w3"}]})
            assert r.status_code == 200, r.text
            assert coverage(sqlite_catalog, "idx", docs)["missing_ids"] == []
            out = backfill(sqlite_catalog, "idx", v2, docs)
    assert out["switched"] and out["count"] == 13
    hits = Searcher(sqlite_catalog).search_vectors("idx", v2(["w1 w2 w3"]), k=1, source_fingerprint=v2.record.fingerprint)
    assert hits[0][0].id == "h1"
