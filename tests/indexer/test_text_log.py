"""Texts of documents written over HTTP, kept for an upgrade (`indexer/text_log.py`): appended per write, merged
by levels keeping each document's latest text the index still holds, forgotten with the index."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from indexer import locks, pins, text_log
from indexer.backfill_texts import staging_name
from indexer.build import add_documents, build_index, delete_items, drop_index
from indexer.cleanup import collect_garbage
from indexer.corpus import Corpora, Doc, ListSource, read_corpus
from indexer.hashing import content_key
from indexer.models import Item
from tests.indexer.helpers import snapshot


def _write(catalog, encoder, docs: list[Doc]) -> None:
    """An HTTP write's texts kept (the service keeps them just before the commit)."""
    add_documents(catalog, "t", encoder, ListSource(docs), progress=False)
    text_log.append(catalog, "t", docs, wait=True)


def _texts(catalog) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in text_log.files(catalog, "t"):
        for doc in read_corpus(path):
            out.setdefault(doc.id, []).append(doc.content)
    return out


def test_a_merge_keeps_each_documents_latest_text_the_index_holds(catalog, minilm, monkeypatch):
    monkeypatch.setattr(text_log, "_BATCH", 3)  # judged against the catalog three texts at a time
    build_index(catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    for i in range(6):
        _write(catalog, minilm, [Doc(f"a{i}", f"first text of document {i}")])
    assert len(text_log.files(catalog, "t")) == 6
    _write(catalog, minilm, [Doc("a0", "second text of document 0")])
    delete_items(catalog, "t", ["a1"])
    _write(catalog, minilm, [Doc("a6", "first text of document 6", {"metadata": {"team": "red"}})])  # the 8th file
    files = text_log.files(catalog, "t")
    assert [p.name.split("-")[0] for p in files] == ["1"]  # eight level-0 files merged into one of level 1
    assert _texts(catalog) == {"a0": ["second text of document 0"], "a2": ["first text of document 2"],
                               "a3": ["first text of document 3"], "a4": ["first text of document 4"],
                               "a5": ["first text of document 5"], "a6": ["first text of document 6"]}
    assert next(iter(read_corpus(files[0]))).info == {"metadata": {"team": "red"}}  # newest first, metadata kept
    _write(catalog, minilm, [Doc("a7", "first text of document 7")])
    assert [p.name.split("-")[0] for p in text_log.files(catalog, "t")] == ["0", "1"]  # newest first


def test_no_merge_while_another_runs_or_a_backfill_does(sqlite_catalog, minilm):
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    for i in range(text_log.FANOUT):
        add_documents(sqlite_catalog, "t", minilm, ListSource([Doc(f"a{i}", f"text {i}")]), progress=False)
        with locks.text_log_lock(sqlite_catalog, "t"):  # another process merges: this append merges nothing
            text_log.append(sqlite_catalog, "t", [Doc(f"a{i}", f"text {i}")], wait=True)
    assert len(text_log.files(sqlite_catalog, "t")) == text_log.FANOUT
    # a backfill reads the files it started with: none merged away under it
    build_index(sqlite_catalog, staging_name("t"), minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    assert text_log.merge(sqlite_catalog, "t") == 0 and len(text_log.files(sqlite_catalog, "t")) == text_log.FANOUT
    drop_index(sqlite_catalog, staging_name("t"))
    assert text_log.merge(sqlite_catalog, "t") == text_log.FANOUT and len(text_log.files(sqlite_catalog, "t")) == 1


def test_the_texts_go_with_their_index(sqlite_catalog, minilm):
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    _write(sqlite_catalog, minilm, [Doc("a0", "a text")])
    folder = text_log.files(sqlite_catalog, "t")[0].parent
    drop_index(sqlite_catalog, "t")
    assert not folder.exists()
    # a drop killed before it removed them: gc does
    build_index(sqlite_catalog, "u", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    text_log.append(sqlite_catalog, "u", [Doc("a0", "a text")], wait=True)
    kept = text_log.files(sqlite_catalog, "u")[0].parent
    orphan = kept.parent / "gone"
    kept.rename(orphan)
    out = collect_garbage(sqlite_catalog)
    assert [r["path"] for r in out["removed"]] == [str(orphan)] and not orphan.exists()


def test_a_purge_takes_the_text_out_now(sqlite_catalog, minilm):
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    _write(sqlite_catalog, minilm, [Doc("a0", "a private text"), Doc("a1", "another text")])
    _write(sqlite_catalog, minilm, [Doc("a2", "a third text")])
    delete_items(sqlite_catalog, "t", ["a2"])  # listed, not purged: the text waits for a merge
    assert set(_texts(sqlite_catalog)) == {"a0", "a1", "a2"}
    delete_items(sqlite_catalog, "t", ["a0"], purge=True)
    assert _texts(sqlite_catalog) == {"a1": ["another text"], "a2": ["a third text"]}
    delete_items(sqlite_catalog, "t", ["a1"], purge=True)  # its file had nothing else: it goes
    assert _texts(sqlite_catalog) == {"a2": ["a third text"]} and len(text_log.files(sqlite_catalog, "t")) == 1


def test_a_reader_keeps_its_files_through_a_merge(sqlite_catalog, minilm):
    """A backfill scans its corpora for minutes while writes go on: the merge that deletes the files it listed
    leaves it its links, which go when it is done; those of a reader killed on this machine, with `index gc`."""
    import os

    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    for i in range(text_log.FANOUT - 1):
        _write(sqlite_catalog, minilm, [Doc(f"a{i}", f"text {i}")])
    listed = text_log.files(sqlite_catalog, "t")
    with text_log.pinned(sqlite_catalog, "t") as paths:
        _write(sqlite_catalog, minilm, [Doc("b", "one more")])  # the eighth file: all eight merged, the listed gone
        assert len(text_log.files(sqlite_catalog, "t")) == 1 and not any(p.exists() for p in listed)
        assert sorted(d.id for p in paths for d in read_corpus(p)) == [f"a{i}" for i in range(text_log.FANOUT - 1)]
        folder = paths[0].parent
    assert not folder.exists()
    dead = sqlite_catalog.settings.job_dir / f"{pins.prefix('texts', pid=2**22 + 12345)}abcd1234"
    dead.mkdir(parents=True)
    mine = sqlite_catalog.settings.job_dir / f"{pins.prefix('texts', pid=os.getpid())}abcd1234"
    mine.mkdir()
    removed = [r["path"] for r in collect_garbage(sqlite_catalog)["removed"]]
    assert str(dead) in removed and str(mine) not in removed and mine.exists()


def test_a_merge_of_texts_no_longer_held_leaves_no_file(sqlite_catalog, minilm):
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    with locks.text_log_lock(sqlite_catalog, "t"):  # another process merges meanwhile: these appends merge nothing
        for i in range(text_log.FANOUT):
            _write(sqlite_catalog, minilm, [Doc(f"a{i}", f"text {i}")])
    delete_items(sqlite_catalog, "t", [f"a{i}" for i in range(text_log.FANOUT)])
    assert text_log.merge(sqlite_catalog, "t") == text_log.FANOUT and text_log.files(sqlite_catalog, "t") == []


def test_merged_texts_are_gzipped_and_a_purge_keeps_them_so(sqlite_catalog, minilm):
    """A write's own file is plain JSONL; merged ones are gzipped, and stay so when a purge rewrites them. A plain
    merged file (as versions before gzip wrote them) is read as before."""
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    _write(sqlite_catalog, minilm, [Doc("a0", "text 0")])
    assert text_log.files(sqlite_catalog, "t")[0].read_bytes().startswith(b'{"_id": "a0"')
    for i in range(1, text_log.FANOUT):
        _write(sqlite_catalog, minilm, [Doc(f"a{i}", f"text {i}")])
    (merged,) = text_log.files(sqlite_catalog, "t")
    assert merged.name.endswith(".jsonl.gz") and merged.read_bytes()[:2] == b"\x1f\x8b"
    delete_items(sqlite_catalog, "t", ["a0"], purge=True)
    assert text_log.files(sqlite_catalog, "t") == [merged] and merged.read_bytes()[:2] == b"\x1f\x8b"
    assert _texts(sqlite_catalog) == {f"a{i}": [f"text {i}"] for i in range(1, text_log.FANOUT)}
    plain = merged.with_name("1-00000000000000000001-0000abcd.jsonl")
    plain.write_text('{"_id": "old", "text": "kept by an earlier version"}\n')
    assert text_log.files(sqlite_catalog, "t") == [merged, plain]
    assert _texts(sqlite_catalog)["old"] == ["kept by an earlier version"]


def test_a_failed_background_merge_is_counted_and_loses_nothing(sqlite_catalog, minilm, monkeypatch):
    """A background merge that fails is only logged, so it is counted for /metrics; its files stay as they were."""
    failed = text_log.merge_counts().get("failed", 0)

    def broken(*_args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(text_log, "merge", broken)
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    for i in range(text_log.FANOUT):
        add_documents(sqlite_catalog, "t", minilm, ListSource([Doc(f"a{i}", f"text {i}")]), progress=False)
        text_log.append(sqlite_catalog, "t", [Doc(f"a{i}", f"text {i}")])  # the eighth merges in the background
    assert text_log.idle()
    assert text_log.merge_counts()["failed"] == failed + 1
    assert len(text_log.files(sqlite_catalog, "t")) == text_log.FANOUT and len(_texts(sqlite_catalog)) == text_log.FANOUT


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_writes_leave_each_documents_latest_text_first(sqlite_catalog, minilm, monkeypatch, seed):
    """Random adds, updates, listed deletes and purges over a few ids, merged by levels of 3: after every step,
    the files read newest first give each held document its latest text, and a purged text is in no file."""
    import numpy as np

    from indexer.corpus import Corpora

    monkeypatch.setattr(text_log, "FANOUT", 3)
    rng = np.random.default_rng(seed)
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("seed", "a seed document")]), progress=False)
    held: dict[str, str] = {}
    purged: set[str] = set()
    for step in range(40):
        kind = int(rng.integers(5))
        if kind <= 2 or not held:
            ids = sorted({f"d{i}" for i in rng.integers(0, 12, int(rng.integers(1, 4)))})
            docs = [Doc(i, f"text {i} at step {step}") for i in ids]
            _write(sqlite_catalog, minilm, docs)
            held.update({d.id: d.content for d in docs})
            purged -= set(ids)
        else:
            gone = str(rng.choice(sorted(held)))
            delete_items(sqlite_catalog, "t", [gone], purge=kind == 4)
            del held[gone]
            if kind == 4:
                purged.add(gone)
        files = text_log.files(sqlite_catalog, "t")
        latest = {d.id: d.content for d in Corpora(files)} if files else {}
        assert {i: latest.get(i) for i in held} == held, step
        assert not purged & {d.id for d in Corpora(files).every_version()} if files else True, step
        levels = [p.name.split("-")[0] for p in files]
        assert all(levels.count(lv) < 3 for lv in set(levels)), levels  # every full level merged


def test_an_add_hands_what_it_commits_to_before_commit_holding_the_index(sqlite_catalog, minilm):
    """The service keeps the texts of an HTTP write there: a reader that waits for the index's lock after seeing the
    documents in the catalog finds their texts kept; and a write whose texts cannot be kept is not committed."""
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("a", "first"), Doc("b", "second")]), progress=False)
    got = []

    def keep(docs):
        with sqlite_catalog.session() as s:  # not yet in the catalog
            held = {i.external_id: i.content_hash for i in s.scalars(select(Item))}
        got.append((list(docs), locks.is_writing(sqlite_catalog, "t"), held == {"a": content_key("first"),
                                                                              "b": content_key("second")}))

    docs = ListSource([Doc("a", "first"), Doc("b", "changed", {"metadata": {"k": 1}}), Doc("c", "new")])
    before = snapshot(sqlite_catalog)

    def full(_docs):
        raise OSError(28, "no space left on device")

    with pytest.raises(OSError, match="no space"):
        add_documents(sqlite_catalog, "t", minilm, docs, progress=False, keep_failed=False, before_commit=full)
    assert snapshot(sqlite_catalog) == before
    add_documents(sqlite_catalog, "t", minilm, docs, progress=False, before_commit=keep)
    assert got == [([Doc("b", "changed", {"metadata": {"k": 1}}), Doc("c", "new")], True, True)]  # unchanged "a" out


def test_a_merge_while_a_write_commits_keeps_its_pending_texts(sqlite_catalog, minilm):
    """The service keeps a write's texts just before its commit. A merge that ran between the two would find the
    index not yet holding them and drop them, unless they wait in a pending file, which merges leave alone."""
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("a", "first"), Doc("b", "second")]), progress=False)
    for _ in range(text_log.FANOUT - 1):
        text_log.append(sqlite_catalog, "t", [Doc("a", "first")], wait=True)
    pending = []

    def keep_then_merge(docs):
        pending.append(text_log.append(sqlite_catalog, "t", docs, pending=True))
        text_log.append(sqlite_catalog, "t", [Doc("b", "second")], wait=True)  # a level full: merged now

    add_documents(sqlite_catalog, "t", minilm, ListSource([Doc("c", "new")]), progress=False,
                  before_commit=keep_then_merge)
    assert sorted(p.name.split("-")[0] for p in text_log.files(sqlite_catalog, "t")) == ["0", "1"]  # merged; pending
    text_log.settle(sqlite_catalog, "t", pending[0])
    assert not pending[0].exists()
    files = text_log.files(sqlite_catalog, "t")
    assert {d.id: d.content for d in Corpora(files)} == {"a": "first", "b": "second", "c": "new"}
    for _ in range(text_log.FANOUT):  # once settled, a merge takes it like any other
        text_log.append(sqlite_catalog, "t", [Doc("a", "first")], wait=True)
    assert {d.id: d.content for d in Corpora(text_log.files(sqlite_catalog, "t"))}["c"] == "new"


def test_a_purge_racing_the_settling_of_a_pending_file_leaves_none_of_its_text(sqlite_catalog, minilm, monkeypatch):
    """A write's thread settles its pending file after the commit, without the text-log lock; a purge of one of its
    documents in that moment must not rewrite the pending file while the settling moves the old one into place."""
    build_index(sqlite_catalog, "t", minilm, ListSource([Doc("a", "first")]), progress=False)
    pending = []
    add_documents(sqlite_catalog, "t", minilm, ListSource([Doc("c", "secret words")]), progress=False,
                  before_commit=lambda docs: pending.append(text_log.append(sqlite_catalog, "t", docs, pending=True)))
    real = text_log.read_corpus

    def read_then_settle(path):  # the write's thread settles just as the purge has read the file
        yield from real(path)
        text_log.settle(sqlite_catalog, "t", pending[0])

    monkeypatch.setattr(text_log, "read_corpus", read_then_settle)
    delete_items(sqlite_catalog, "t", ["c"], purge=True)
    monkeypatch.setattr(text_log, "read_corpus", real)
    kept = [p for p in text_log.root(sqlite_catalog).rglob("*") if p.is_file() and b"secret" in p.read_bytes()]
    assert kept == []
