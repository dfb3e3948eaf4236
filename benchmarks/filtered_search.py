"""Filtered search (`--where`): what a metadata filter costs a search, and what the filtered top 10 finds,
per index kind and filter selectivity, against the same index searched without a filter in the same run.

`--docs` vectors of dimension `--dim` drawn around `--clusters` seeded centres (so that neighbours mean
something, as with real embeddings; no model: the search is what is measured), each document tagged with
`bucket` = its number mod 1000, so a filter on `bucket` in a list of b values allows b/1000 of the index,
spread over every cluster. For each index kind and share allowed: the first search with the filter (for
the first share of each index this reads the field from the catalog in SQL; it is then kept, and
brought up to date by each write), a search with another filter on the same field (a new request with other values), the
median latency of one-query searches through
`Searcher.search_vectors` with and without the filter (alternating), and recall@10 against the exact top 10
among the allowed vectors; for IVF and HNSW also the recall of FAISS's selector search left at the
unfiltered nprobe / efSearch (what `indexer/filtered.py` adjusts).

    .venv/bin/python benchmarks/filtered_search.py --docs 200000 --out docs/filtered_search.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from command import command_line  # this folder is on sys.path when a script in it runs

from indexer import filtered, store
from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource
from indexer.encoder import ModelRecord
from indexer.search import Searcher
from indexer.settings import load_settings


class TableEncoder:
    """Document i's vector is row i of a fixed matrix (texts are "document i")."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        dim = vectors.shape[1]
        self.record = ModelRecord(name="table", source="table", dimension=dim, fingerprint=f"table-{dim}")

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.vectors[[int(t.split()[1]) for t in texts]]


def table_docs(start: int, n: int) -> list[Doc]:
    """Documents `start` .. `start + n - 1` as `TableEncoder` reads them: id "d{i}", text "document {i}"."""
    return [Doc(f"d{i}", f"document {i}") for i in range(start, start + n)]


def _clustered(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), centres


def _plain_recall(index, q: np.ndarray, allowed: np.ndarray, truth: np.ndarray) -> float | None:
    """Recall@10 of FAISS's selector search at the unfiltered nprobe / efSearch (one-shard index)."""
    inner = store._inner(index)
    sel = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        params = faiss.SearchParametersIVF(sel=sel, nprobe=ivf.nprobe)
    elif isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=inner.hnsw.efSearch)
    else:
        return None
    _, got = index.search(q, 10, params=params)
    return _recall(got, truth)


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g[g >= 0]) & set(t)) / len(t) for g, t in zip(got, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--factories", default="Flat;HNSW32;IVF1024,Flat", help="FAISS factory strings, ;-separated")
    ap.add_argument("--shares", default="0.5,0.1,0.01,0.001")
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    x, centres = _clustered(args.docs, args.dim, args.clusters, 0)
    rng = np.random.default_rng(1)
    q = centres[rng.integers(0, args.clusters, args.queries)] + 0.6 * rng.standard_normal(
        (args.queries, args.dim)).astype(np.float32)
    q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
    encoder = TableEncoder(x)
    docs = ListSource([Doc(f"d{i}", f"document {i}", {"bucket": i % 1000}) for i in range(args.docs)])
    factories = args.factories.split(";")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp) / "home", database_url=args.database_url)
        catalog = open_catalog(settings, migrate=True)  # a fresh database of its own (`--database-url`)
        for factory in factories:
            name = "bench-" + "".join(c if c.isalnum() else "-" for c in factory).lower()
            t0 = time.perf_counter()
            build_index(catalog, name, encoder, docs, factory=factory, progress=False)
            build_s = time.perf_counter() - t0
            searcher = Searcher(catalog)
            searcher.search_vectors(name, q[:1], k=10)  # load the index
            index = searcher._load(name).index.shard(0)
            for share in [float(s) for s in args.shares.split(",")]:
                buckets = list(range(max(1, round(share * 1000))))
                where = {"bucket": buckets}
                allowed = np.flatnonzero(np.isin(np.arange(args.docs) % 1000, buckets)).astype(np.int64)
                truth = allowed[np.argsort(-(q @ x[allowed].T), axis=1)[:, :10]]
                t0 = time.perf_counter()
                searcher.search_vectors(name, q[:1], k=10, where=where)
                first_s = time.perf_counter() - t0  # the field read from the catalog, then kept
                shifted = {"bucket": [b + 1 for b in buckets]}  # another filter on the same field, as a new request
                t0 = time.perf_counter()
                searcher.search_vectors(name, q[:1], k=10, where=shifted)
                other_s = time.perf_counter() - t0
                plain_ms, filt_ms, got = [], [], []
                for i in range(len(q)):  # alternating, one query a search
                    t0 = time.perf_counter()
                    searcher.search_vectors(name, q[i : i + 1], k=10)
                    plain_ms.append(1000 * (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    hits = searcher.search_vectors(name, q[i : i + 1], k=10, where=where)[0]
                    filt_ms.append(1000 * (time.perf_counter() - t0))
                    got.append([int(h.id[1:]) for h in hits] + [-1] * (10 - len(hits)))
                row = {"factory": factory, "share": share, "allowed": len(allowed), "build_s": round(build_s, 1),
                       "first_filtered_search_s": round(first_s, 3), "other_filter_same_field_s": round(other_s, 4),
                       "unfiltered_ms": round(statistics.median(plain_ms), 3),
                       "filtered_ms": round(statistics.median(filt_ms), 3),
                       "ratio": round(statistics.median(filt_ms) / statistics.median(plain_ms), 2),
                       "recall_at_10": round(_recall(np.array(got), truth), 4),
                       "path": "%s %s" % filtered.plan(index, len(allowed))}
                plain = _plain_recall(index, q, allowed, truth)
                if plain is not None:
                    row["recall_at_10_selector_unadjusted"] = round(plain, 4)
                print(json.dumps(row), flush=True)
                results.append(row)
        catalog.close()
    args.out.write_text(json.dumps({
        "command": command_line(__file__, args),
        "docs": args.docs, "dim": args.dim, "clusters": args.clusters, "queries": args.queries,
        "machine": "2-core CPU, no GPU", "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
