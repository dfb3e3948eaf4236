"""Concurrent writes to an index, applied together: group commit, as databases do it.

Every write makes a new generation: it reads and rewrites the shards it touches and commits once. A
service that takes documents over HTTP gets many small writes at once; applied one by one they queue
on the index's write lock (and a request that waited more than a second was refused with 409). A
`WriteQueue` instead lets one of the waiting requests apply everything queued for the index as one
write: consecutive adds become one `add_documents` (a later request's version of an id wins, as if
applied in order), consecutive deletes one `delete_items` (purges, `delete(purge=True)`, apart from plain
deletes), adds and deletes keep their order. When a
combined write fails, its requests are applied one at a time, so a bad request fails alone.

No worker thread (as `batching.QueryBatcher`): a request that finds no write of its index in progress
applies its own at once; requests arriving meanwhile queue, and when the write finishes the first of
them leads the next one. A request waits only for writes queued before it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .corpus import Doc
from .errors import Conflict, UserError

__all__ = ["WriteQueue", "MAX_BATCH_DOCUMENTS", "MAX_WAITING"]

MAX_BATCH_DOCUMENTS = 50_000  # documents one combined write takes; the rest go in the next
# requests that may wait behind writes, all indexes together: each holds one of the server's threads
# (40 by default), which searches need too
MAX_WAITING = 16


@dataclass
class _Op:
    kind: str  # "add", "delete" or "purge" (a delete that takes the vectors out of the index files now)
    items: list[Any]  # Docs, or ids
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set with `done` when this request is to apply the next write
    result: dict[str, Any] | None = None
    error: BaseException | None = None


class WriteQueue:
    """Apply adds (`add(index, docs)`) and deletes (`delete(index, ids)`) of concurrent callers in
    arrival order, combining consecutive ones of a kind into one write. `apply_add(index, docs)` and
    `apply_delete(index, ids, purge=False)` do a write and return its result (`indexer.build`'s functions)."""

    def __init__(self, apply_add: Callable[[str, list[Doc]], dict[str, Any]],
                 apply_delete: Callable[..., dict[str, Any]], patience_s: float = 10.0) -> None:
        self._apply = {"add": apply_add, "delete": apply_delete,
                       "purge": lambda index, ids: apply_delete(index, ids, purge=True)}
        # another process (an `index add` or `delete` job) may hold the index for a while: a write refused
        # with Conflict is tried again for this long before its requests get the 409
        self.patience_s = patience_s
        self._lock = threading.Lock()
        # index -> requests waiting behind its write; an index has an entry exactly while it is being written
        self._pending: dict[str, list[_Op]] = {}
        # ("requests" | "writes" | "refused", kind): what /metrics shows; every key present, so a reader never sees it grow
        self.counts: Counter[tuple[str, str]] = Counter({(what, kind): 0 for what in ("requests", "writes", "refused")
                                                         for kind in self._apply})

    def add(self, index: str, docs: Sequence[Doc]) -> dict[str, Any]:
        seen: set[str] = set()
        for doc in docs:  # checked per request: across requests a later version wins, within one it is a mistake
            if doc.id in seen:
                raise UserError(f"document id {doc.id!r} appears twice in this request; ids must be unique")
            seen.add(doc.id)
        return self._submit(index, _Op("add", list(docs)))

    def delete(self, index: str, ids: Sequence[str], purge: bool = False) -> dict[str, Any]:
        return self._submit(index, _Op("purge" if purge else "delete", list(ids)))

    def waiting(self) -> int:
        """Requests waiting behind a write now, all indexes together (at MAX_WAITING the next is refused)."""
        with self._lock:
            return self._waiting()

    def _waiting(self) -> int:  # call holding self._lock
        return sum(len(ops) for ops in self._pending.values())

    def _submit(self, index: str, op: _Op) -> dict[str, Any]:
        with self._lock:
            waiting = self._waiting()
            if waiting >= MAX_WAITING:
                self.counts["refused", op.kind] += 1
                raise Conflict(f"{waiting} writes are already waiting in this service; send this one to index "
                               f"{index!r} again in a moment, or send fewer, larger requests")
            lead = index not in self._pending  # no write of this index in progress: this request does it
            self._pending.setdefault(index, []).append(op)
        if not lead:
            op.done.wait()  # applied by another request's write, or handed the lead
            lead = op.lead
        if lead:
            self._write_head(index)
        if op.error is not None:
            raise op.error
        return op.result

    def _write_head(self, index: str) -> None:
        """Apply the run of requests at the head of the index's queue (the leader's own is first), then hand
        the lead to the oldest request still waiting, or mark the index idle."""
        with self._lock:
            pending = self._pending[index]
            batch = _take_run(pending)
        try:
            self._apply_batch(index, batch)
        finally:  # whatever happened, no request may be left waiting
            with self._lock:
                nxt = pending[0] if pending else None
                if nxt is None:
                    del self._pending[index]
            for op in batch:
                op.done.set()
            if nxt is not None:
                nxt.lead = True
                nxt.done.set()

    def _apply_batch(self, index: str, batch: list[_Op]) -> None:
        kind = batch[0].kind
        self.counts["requests", kind] += len(batch)
        self.counts["writes", kind] += 1
        try:
            result = self._patiently(kind, index, _merged(batch))
        except Conflict as err:  # the index stayed held elsewhere: no request's fault, all get the 409
            for op in batch:
                op.error = err
            return
        except Exception as err:  # each request gets its own outcome below
            if len(batch) == 1:
                batch[0].error = err
                return
            self.counts["writes", kind] += len(batch)
            for op in batch:  # one bad request must not fail the others: apply them one at a time
                try:
                    op.result = {**self._patiently(kind, index, _merged([op])), "requests": 1}
                except Exception as one:
                    op.error = one
            return
        for op in batch:
            op.result = {**result, "requests": len(batch)}

    def _patiently(self, kind: str, index: str, items: list[Any]) -> dict[str, Any]:
        end = time.monotonic() + self.patience_s
        while True:
            try:
                return self._apply[kind](index, items)
            except Conflict:  # the index is being written elsewhere, or changed under this write: try again
                if time.monotonic() >= end:
                    raise
                time.sleep(0.2)


def _take_run(pending: list[_Op]) -> list[_Op]:
    """Remove and return the oldest requests of the first one's kind, up to MAX_BATCH_DOCUMENTS items."""
    kind, n, taken = pending[0].kind, len(pending[0].items), 1
    while taken < len(pending) and pending[taken].kind == kind and n + len(pending[taken].items) <= MAX_BATCH_DOCUMENTS:
        n += len(pending[taken].items)
        taken += 1
    run = pending[:taken]
    del pending[:taken]
    return run


def _merged(batch: list[_Op]) -> list[Any]:
    """The batch's items in order; for adds, a document id sent again keeps only its latest version."""
    if batch[0].kind != "add":
        return list(dict.fromkeys(i for op in batch for i in op.items))
    latest: dict[str, Doc] = {}
    for op in batch:
        for doc in op.items:
            latest.pop(doc.id, None)  # re-inserted at the end: the order of the latest versions
            latest[doc.id] = doc
    return list(latest.values())
