"""Small writes to a large index: new shards merged by the logarithmic method (`indexer/shards.py`, now)
against appending each write to the last shard on disk (the policy before, reproduced below), same run.

Two indexes of `--docs` vectors (`--factory`, `--dim`-d, no model: document i's vector is row i of a seeded
matrix, so the figures are the write path alone), built the same way. Then `--writes` writes of `--batch`
new documents each through `indexer.build.add_documents` (what `embedkd index add` and the HTTP write
route run), alternating which policy writes first. Reported per policy: write latency (median, p95,
max), bytes of index files written per write, shards at the end, and the ratios. Then the search cost of
the shards the small writes left: `--queries` single-query searches through `indexer.search.Searcher`,
interleaved, best of 3, and whether both indexes return the same top 10 (Flat: they must).

    .venv/bin/python benchmarks/small_writes.py --docs 100000 --writes 200 --out docs/small_writes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
from command import command_line  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered  # this folder is on sys.path when a script in it runs

from indexer import shards
from indexer.build import add_documents, build_index
from indexer.catalog import get_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource
from indexer.search import Searcher
from indexer.settings import load_settings


def _append_to_tail(self: shards.ShardedIndex, vectors: np.ndarray, ids: np.ndarray) -> None:
    """`ShardedIndex.add_with_ids` before the logarithmic method: fill the last shard, whether or not it is on disk."""
    ids = np.asarray(ids, dtype=np.int64)
    start = 0
    while start < len(ids):
        tail = self.shard(len(self.shards) - 1)
        room = self.shard_size - int(tail.ntotal)
        if room <= 0:
            fresh = faiss.clone_index(tail)
            fresh.reset()
            self.shards.append(shards.Shard(int(ids[start]), fresh))
            continue
        end = min(len(ids), start + room)
        tail.add_with_ids(np.ascontiguousarray(vectors[start:end], np.float32), ids[start:end])
        self.dirty.add(len(self.shards) - 1)
        start = end


@contextmanager
def _policy(name: str):
    current = shards.ShardedIndex.add_with_ids
    if name == "append_to_tail":
        shards.ShardedIndex.add_with_ids = _append_to_tail
    try:
        yield
    finally:
        shards.ShardedIndex.add_with_ids = current


def _docs(start: int, n: int) -> list[Doc]:
    return [Doc(f"d{i}", f"document {i}") for i in range(start, start + n)]


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def _summary(seconds: list[float], written: list[int]) -> dict:
    lat = sorted(seconds)
    return {"write_median_s": round(statistics.median(lat), 4), "write_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 4),
            "write_max_s": round(lat[-1], 4), "write_total_s": round(sum(lat), 2),
            "mb_written_per_write": round(sum(written) / len(written) / 2**20, 3),
            "mb_written_max": round(max(written) / 2**20, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--factory", default="Flat")
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10, help="documents per write")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    policies = ["log_shards", "append_to_tail"]
    x, _ = _clustered(args.docs + args.writes * args.batch, args.dim, 100, 0)
    encoder = TableEncoder(x)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home), migrate=True)
        report = {"command": command_line(__file__, args), "docs": args.docs, "dim": args.dim, "factory": args.factory,
                  "writes": args.writes, "batch": args.batch, "shard_size": shards.DEFAULT_SHARD_SIZE}
        for name in policies:
            t0 = time.perf_counter()
            build_index(catalog, name, encoder, ListSource(_docs(0, args.docs)), factory=args.factory, progress=False)
            report[f"build_seconds_{name}"] = round(time.perf_counter() - t0, 2)
        seconds: dict[str, list[float]] = {p: [] for p in policies}
        written: dict[str, list[int]] = {p: [] for p in policies}
        for w in range(args.writes):
            docs = _docs(args.docs + w * args.batch, args.batch)
            for name in policies if w % 2 == 0 else policies[::-1]:
                folder = catalog.settings.index_dir / name
                before = _files(folder)
                with _policy(name):
                    t0 = time.perf_counter()
                    add_documents(catalog, name, encoder, ListSource(docs), progress=False)
                    seconds[name].append(time.perf_counter() - t0)
                written[name].append(sum(size for file, size in _files(folder).items() if file not in before))
            if w % 20 == 0:
                print(w, {p: round(seconds[p][-1], 3) for p in policies}, flush=True)
        for name in policies:
            with catalog.session() as s:
                index = get_index(s, name)
                assert index.count == args.docs + args.writes * args.batch, "documents lost or doubled"
                manifest = json.loads((catalog.settings.index_dir / name / index.file).read_text())
            report[name] = {**_summary(seconds[name], written[name]),
                            "shards": [e["count"] for e in manifest["shards"]]}
        report["write_median_ratio"] = round(report["append_to_tail"]["write_median_s"]
                                             / report["log_shards"]["write_median_s"], 1)
        report["bytes_written_ratio"] = round(report["append_to_tail"]["mb_written_per_write"]
                                              / report["log_shards"]["mb_written_per_write"], 1)

        searcher = Searcher(catalog, lambda _s: encoder)
        rng = np.random.default_rng(1)
        queries = [f"document {i}" for i in rng.integers(0, len(x), args.queries)]
        hits = {name: [[h.id for h in row] for row in searcher.search(name, queries, k=10)] for name in policies}
        best = {name: float("inf") for name in policies}
        for _ in range(3):
            for name in policies:
                t0 = time.perf_counter()
                for q in queries:
                    searcher.search(name, [q], k=10)
                best[name] = min(best[name], (time.perf_counter() - t0) / len(queries))
        report["search_ms_per_query"] = {name: round(1000 * best[name], 3) for name in policies}
        report["search_time_ratio_log_over_tail"] = round(best["log_shards"] / best["append_to_tail"], 3)
        report["same_top10"] = round(float(np.mean([a == b for a, b in zip(hits[policies[0]], hits[policies[1]])])), 4)
        catalog.close()
    print(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
