"""Dynamic batching of concurrent query encodings, as inference servers do it.

A search service gets one query per request; encoding each alone leaves most of the model's
throughput unused (on this CPU a batch of 16 short queries encodes 2-3x faster per query than 16
single calls; on a GPU far more). `QueryBatcher` gives every caller its own vectors but runs the
model once for all the requests that arrived while the previous batch was encoding. There is no
fixed wait: at low load a query is encoded at once, alone; batches form only when requests queue up.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from .encoder import Encoder

__all__ = ["QueryBatcher"]


class QueryBatcher:
    """Wrap `encoder` so that concurrent `encode_queries` calls share one model call.

    No worker thread: a caller that finds fewer than `max_running` model calls in flight encodes its
    own query at once (at low load this is the unbatched path plus a lock); callers that arrive
    meanwhile queue up, and when a call finishes, the first of them runs everything queued, up to
    `max_batch` items, for all of them. Two calls in flight by default: on a CPU one batch at a time
    left cores idle at four concurrent clients (0.7-0.8x the throughput of unbatched requests), two
    matched it there and still batched at sixteen (docs/index_benchmark.md).
    Documents (`__call__`) pass through unbatched: they come in batches already.
    """

    def __init__(self, encoder: Encoder, max_batch: int = 64, max_running: int = 2) -> None:
        if max_batch < 1 or max_running < 1:
            raise ValueError(f"max_batch and max_running must be at least 1, got {max_batch} and {max_running}")
        self.encoder = encoder
        self.record = encoder.record
        self.max_batch, self.max_running = max_batch, max_running
        self.batch_sizes: list[int] = []  # items per model call, for benchmarks and tests
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._running = 0

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        return self.encoder(items)

    def encode_queries(self, items: Sequence[Any]) -> np.ndarray:
        request = _Request(list(items))
        with self._lock:
            lead = self._running < self.max_running
            if lead:
                self._running += 1
            else:
                self._queue.append(request)
        if not lead:
            request.wake.wait()  # its vectors are ready, or it was handed the next model call
        if not request.done:
            self._run_batch(request)
        if request.error is not None:
            raise request.error
        return request.vectors

    def _encode(self, items: list[Any]) -> np.ndarray:
        return getattr(self.encoder, "encode_queries", self.encoder)(items)

    def _run_batch(self, first: _Request) -> None:
        with self._lock:
            batch, size = [first], len(first.items)
            while self._queue and size + len(self._queue[0].items) <= self.max_batch:
                batch.append(self._queue.popleft())
                size += len(batch[-1].items)
        try:
            self._encode_batch(batch, size)
        finally:
            with self._lock:
                for r in batch:
                    r.done = True
                    r.wake.set()
                if self._queue:
                    self._queue.popleft().wake.set()  # the first caller in line runs the next model call
                else:
                    self._running -= 1

    def _encode_batch(self, batch: list[_Request], size: int) -> None:
        try:
            vectors = self._encode([item for r in batch for item in r.items])
            self.batch_sizes.append(size)
            start = 0
            for r in batch:
                r.vectors, start = vectors[start:start + len(r.items)], start + len(r.items)
        except Exception:  # noqa: BLE001 - one bad request must not fail the others: encode each alone
            for r in batch:
                try:
                    r.vectors = self._encode(r.items)
                except Exception as err:  # noqa: BLE001 - re-raised in the caller's thread
                    r.error = err


class _Request:
    __slots__ = ("items", "vectors", "error", "done", "wake")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.vectors: np.ndarray | None = None
        self.error: Exception | None = None
        self.done = False
        self.wake = threading.Event()
