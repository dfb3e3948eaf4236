"""Concurrent writes to one index: applied together in arrival order, each request with its own outcome."""

from __future__ import annotations

import threading
import time

import pytest

from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index, get_item
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import Conflict, UserError
from indexer.write_queue import MAX_WAITING, WriteQueue


class _Gated:
    """The real write functions; the first write waits for `release`, so that requests queue behind it."""

    def __init__(self, catalog, encoder) -> None:
        self.catalog, self.encoder = catalog, encoder
        self.started, self.release = threading.Event(), threading.Event()
        self.writes: list[tuple[str, list]] = []

    def add(self, index: str, docs: list[Doc]) -> dict:
        self._gate("add", [d.id for d in docs])
        return add_documents(self.catalog, index, self.encoder, ListSource(docs), progress=False)

    def delete(self, index: str, ids: list[str]) -> dict:
        self._gate("delete", ids)
        return delete_items(self.catalog, index, ids)

    def _gate(self, kind: str, ids: list) -> None:
        self.writes.append((kind, ids))
        if len(self.writes) == 1:
            self.started.set()
            assert self.release.wait(60)


class _Poisoned:
    """The real model, failing on any batch holding the text POISON."""

    def __init__(self, encoder) -> None:
        self.encoder, self.record = encoder, encoder.record

    def __call__(self, texts):
        if any("POISON" in t for t in texts):
            raise RuntimeError("the model cannot read this")
        return self.encoder(texts)


def _queued(queue: WriteQueue, gated: _Gated, first, rest: list, before_release=None) -> list:
    """Run `first` (a write that blocks) and then each of `rest` in order from its own thread, all queued
    behind the first; release it; outcomes (result or error) in order."""
    out: list = [None] * (1 + len(rest))

    def run(i: int, call) -> None:
        try:
            out[i] = call()
        except Exception as err:  # noqa: BLE001 - the test inspects it
            out[i] = err

    threads = [threading.Thread(target=run, args=(0, first))]
    threads[0].start()
    assert gated.started.wait(60)
    for i, call in enumerate(rest, start=1):
        threads.append(threading.Thread(target=run, args=(i, call)))
        threads[-1].start()
        while queue.waiting() < i:  # arrival order is the order given
            time.sleep(0.01)
    if before_release is not None:
        before_release()
    gated.release.set()
    for t in threads:
        t.join(120)
    return out


@pytest.fixture
def index(catalog, minilm, beir_small):
    """A 10-document index on SQLite and on PostgreSQL (whose write lock is an advisory lock)."""
    build_index(catalog, "w", minilm, ListSource(list(read_corpus(beir_small))[:10]), progress=False)
    return catalog


def _doc(i: str, text: str, **info) -> Doc:
    return Doc(i, text, {"metadata": info} if info else None)


def test_requests_queued_behind_a_write_are_applied_as_one(index, minilm):
    gated = _Gated(index, minilm)
    queue = WriteQueue(gated.add, gated.delete)
    first = lambda: queue.add("w", [_doc("a", "Statins lower cholesterol.")])  # noqa: E731
    rest = [lambda: queue.add("w", [_doc("b", "Octopus camouflage in the deep sea.")]),
            lambda: queue.add("w", [_doc("x", "Version one of x.", v=1)]),
            lambda: queue.add("w", [_doc("x", "Version two of x.", v=2), _doc("c", "Coral reefs bleach.")])]
    out = _queued(queue, gated, first, rest)
    assert [type(o) for o in out] == [dict] * 4, out
    assert out[0]["requests"] == 1 and out[0]["generation"] == 2
    assert {o["generation"] for o in out[1:]} == {3} and all(o["requests"] == 3 for o in out[1:])  # one write
    assert out[1]["added"] == 3 and out[1]["count"] == 14  # b, x (its latest version only), c
    assert gated.writes == [("add", ["a"]), ("add", ["b", "x", "c"])]
    with index.session() as s:
        assert get_item(s, "w", "x").info == {"metadata": {"v": 2}}  # the later request's version wins
        assert get_index(s, "w").generation == 3


def test_adds_and_deletes_keep_their_order(index, minilm):
    gated = _Gated(index, minilm)
    queue = WriteQueue(gated.add, gated.delete)
    first = lambda: queue.add("w", [_doc("y", "First text of y.")])  # noqa: E731
    rest = [lambda: queue.delete("w", ["y"]),
            lambda: queue.delete("w", ["y"]),  # a second client deleting the same item: one delete
            lambda: queue.add("w", [_doc("y", "Second text of y.")])]
    out = _queued(queue, gated, first, rest)
    assert [type(o) for o in out] == [dict] * 4, out
    assert gated.writes == [("add", ["y"]), ("delete", ["y"]), ("add", ["y"])]
    assert out[1]["deleted"] == 1 and out[1] == out[2] and out[3]["added"] == 1 and out[3]["count"] == 11
    with index.session() as s:
        assert get_item(s, "w", "y").faiss_id == 11  # added again after its delete, under a new id


def test_a_bad_request_fails_alone(index, minilm):
    gated = _Gated(index, _Poisoned(minilm))
    queue = WriteQueue(gated.add, gated.delete)
    first = lambda: queue.add("w", [_doc("a", "Statins lower cholesterol.")])  # noqa: E731
    rest = [lambda: queue.add("w", [_doc("b", "Octopus camouflage.")]),
            lambda: queue.add("w", [_doc("p", "POISON")]),
            lambda: queue.delete("w", ["nobody"]),
            lambda: queue.add("w", [_doc("c", "Coral reefs bleach.")])]
    out = _queued(queue, gated, first, rest)
    assert isinstance(out[2], RuntimeError) and "cannot read this" in str(out[2])
    assert isinstance(out[3], UserError) and "no item with id 'nobody'" in str(out[3])
    assert out[1]["added"] == 1 and out[4]["added"] == 1 and out[1]["requests"] == out[4]["requests"] == 1
    # the combined write failed, then its requests were applied one at a time: b alone, p alone (fails)
    assert gated.writes[1:] == [("add", ["b", "p"]), ("add", ["b"]), ("add", ["p"]), ("delete", ["nobody"]), ("add", ["c"])]
    with index.session() as s:
        assert get_index(s, "w").count == 13  # a, b, c
    assert queue._pending == {}  # idle again: the next request writes at once


def test_a_lone_request_writes_at_once(index, minilm):
    queue = WriteQueue(lambda i, d: add_documents(index, i, minilm, ListSource(d), progress=False),
                       lambda i, ids: delete_items(index, i, ids))
    assert queue.add("w", [_doc("z", "Zebrafish regenerate fins.")])["requests"] == 1
    assert queue.delete("w", ["z"])["deleted"] == 1
    with pytest.raises(UserError, match="has no item with id 'z'"):
        queue.delete("w", ["z"])
    assert queue._pending == {}


def test_waiting_requests_are_bounded(index, minilm):
    """Each waiting request holds a server thread: past MAX_WAITING the next is refused, nothing written for it."""
    gated = _Gated(index, minilm)
    queue = WriteQueue(gated.add, gated.delete)
    first = lambda: queue.add("w", [_doc("a", "Statins lower cholesterol.")])  # noqa: E731
    rest = [lambda i=i: queue.add("w", [_doc(f"q{i}", f"Queued note {i}.")]) for i in range(MAX_WAITING)]

    def release_when_full() -> None:  # runs once all MAX_WAITING wait behind the first write
        assert queue.waiting() == MAX_WAITING
        full = f"{MAX_WAITING} writes are already waiting in this service; send this one to index 'w'"
        with pytest.raises(Conflict, match=full):
            queue.add("w", [_doc("late", "Too late.")])
        refused.append(True)

    refused: list = []
    out = _queued(queue, gated, first, rest, before_release=release_when_full)
    assert refused == [True] and all(isinstance(o, dict) for o in out)
    assert queue.counts["refused", "add"] == 1 and queue.counts["requests", "add"] == 1 + MAX_WAITING
    assert queue.waiting() == 0
    assert gated.writes[1] == ("add", [f"q{i}" for i in range(MAX_WAITING)])
    with index.session() as s:
        assert get_index(s, "w").count == 11 + MAX_WAITING
    with pytest.raises(UserError, match="no item with id 'late'"), index.session() as s:
        get_item(s, "w", "late")


def test_an_index_held_by_another_process_is_waited_for(index, minilm):
    """Another process (a compaction, another add's commit) holds the index for longer than the lock's own
    one-second wait: a queued write tries again for `patience_s` and goes through when it is released; with no
    patience, a 409."""
    from indexer import locks

    writes = (lambda i, d: add_documents(index, i, minilm, ListSource(d), progress=False, lock_wait_s=1.0),  # as the service
              lambda i, ids: delete_items(index, i, ids))
    holding, release = threading.Event(), threading.Event()

    def other_job() -> None:
        with locks.target_lock(index, "w"):
            holding.set()
            release.wait(30)

    job = threading.Thread(target=other_job)
    job.start()
    assert holding.wait(30)
    with pytest.raises(Conflict, match="another job is writing index 'w'"):
        WriteQueue(*writes, patience_s=0).add("w", [_doc("n", "Nobody waits.")])
    threading.Timer(1.5, release.set).start()  # the job ends after 1.5 s, past the lock's own wait
    out = WriteQueue(*writes, patience_s=20).add("w", [_doc("p", "Patience pays.")])
    job.join(30)
    assert out["added"] == 1 and out["count"] == 11
