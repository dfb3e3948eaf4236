"""On-disk caches keyed by a teacher's fingerprint and the data: embeddings (npy) and pair scores (SQLite).

A second run with the same teacher and texts reads instead of recomputing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["ScoreCache", "cached_embeddings", "texts_key"]


def texts_key(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def cached_embeddings(cache_dir: Path, fingerprint: str, texts: Sequence[str],
                      encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """`encode(texts)` stored as `cache_dir/emb-<fingerprint[:16]>-<texts hash[:16]>.npy`."""
    path = Path(cache_dir) / f"emb-{fingerprint[:16]}-{texts_key(texts)[:16]}.npy"
    if path.is_file():
        arr = np.load(path)
        if arr.shape[0] == len(texts):
            return arr
    arr = np.ascontiguousarray(encode(list(texts)), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)
    return arr


class ScoreCache:
    """Teacher scores of (query, document) pairs, one SQLite file per teacher fingerprint."""

    def __init__(self, cache_dir: Path, fingerprint: str) -> None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / f"scores-{fingerprint[:16]}.sqlite"
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS s (k TEXT PRIMARY KEY, v REAL NOT NULL)")

    @staticmethod
    def key(query: str, doc: str) -> str:
        return hashlib.sha1(f"{query}\x00{doc}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            q = f"SELECT k, v FROM s WHERE k IN ({','.join('?' * len(chunk))})"
            out.update(dict(self._db.execute(q, chunk).fetchall()))
        return out

    def put_many(self, items: dict[str, float]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO s VALUES (?, ?)", list(items.items()))

    def close(self) -> None:
        self._db.close()
