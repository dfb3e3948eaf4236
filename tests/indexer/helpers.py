"""Test helpers: snapshots of the catalog and index files, to prove a failed job changed nothing; calls
from many threads at once."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import select

from indexer import shards
from indexer.catalog import get_index
from indexer.hashing import sha256_file
from indexer.models import Adapter, EmbeddingModel, Index, Item, Job


def snapshot(catalog) -> dict:
    with catalog.session() as s:
        rows = {
            "models": sorted((m.fingerprint, m.dimension) for m in s.scalars(select(EmbeddingModel))),
            "indexes": sorted(
                (i.name, i.count, i.generation, i.file, i.checksum, i.next_id) for i in s.scalars(select(Index))
            ),
            "items": sorted((i.index_id, i.external_id, i.faiss_id, i.content_hash) for i in s.scalars(select(Item))),
            "adapters": sorted((a.id, a.active) for a in s.scalars(select(Adapter))),
            "done_jobs": sorted(j.id for j in s.scalars(select(Job).where(Job.state == "done"))),
        }
    root = Path(catalog.settings.index_dir)
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    rows["files"] = sorted((str(p.relative_to(root)), sha256_file(p)) for p in files)
    return rows


def run_concurrently(fn: Callable, args: list) -> list:
    """fn(arg) for every arg, each from its own thread, all released at once; results (or errors) in order."""
    out: list = [None] * len(args)
    barrier = threading.Barrier(len(args))

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(args[i])
        except Exception as err:  # noqa: BLE001 - the test inspects it
            out[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` served by uvicorn on a free local port, in a thread, while the block runs; its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive(), "the server did not stop within 30 s"


def index_vectors(catalog, name: str) -> tuple[list[str], np.ndarray]:
    """The index's item ids, sorted, and their stored vectors in that order."""
    with catalog.session() as s:
        idx = get_index(s, name)
        ids = {i.external_id: i.faiss_id for i in s.scalars(select(Item).where(Item.index_id == idx.id))}
        index = load_index(catalog, name)
    order = sorted(ids)
    return order, index.reconstruct(np.array([ids[e] for e in order]))


def read_manifest(catalog, name: str) -> dict:
    """Index `name`'s shard manifest, as its current generation wrote it."""
    with catalog.session() as s:
        file = get_index(s, name).file
    return json.loads((Path(catalog.settings.index_dir) / name / file).read_text())


def load_index(catalog, name: str) -> shards.ShardedIndex:
    """Index `name` as searches load it, every file checked against its checksum."""
    with catalog.session() as s:
        idx = get_index(s, name)
        return shards.load(catalog.settings.index_dir / name / idx.file, idx.checksum)


class Failing:
    """The real encoder, failing from its `after`-th call on (a worker lost mid-job)."""

    def __init__(self, encoder, after: int) -> None:
        self.encoder, self.after, self.calls, self.record = encoder, after, 0, encoder.record

    def __call__(self, texts):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("encoder worker lost")
        return self.encoder(texts)


class During:
    """The real encoder, running `action()` once, at its first call (while a write encodes)."""

    def __init__(self, encoder, action) -> None:
        self.encoder, self.action, self.record, self.done = encoder, action, encoder.record, False

    def __call__(self, texts):
        if not self.done:
            self.done = True
            self.action()
        return self.encoder(texts)
