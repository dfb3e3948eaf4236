"""Small writes and deletes to a large index, two policies in the same run: `lsm` (`indexer/shards.py` now:
an add writes a new shard and merges the newest ones by the logarithmic method; a delete lists its id with
its shard) against `rewrite` (before: an add appends to the last shard, reproduced below; a delete rewrites
its shard).

Two indexes of `--docs` vectors (`--factory`, `--dim`-d, no model: document i's vector is row i of a seeded
matrix, so the figures are the write path alone), built the same way. Then `--writes` writes of `--batch`
new documents each through `indexer.build.add_documents` (what `embedkd index add` and the HTTP write
route run), alternating which policy writes first. Then `--deletes` deletes of one stored document each
(seeded, the same for both): `lsm` lists them as deleted with their shard, `rewrite` rewrites the
shard without them (`delete_items(purge=True)`, what every delete did before). Reported per policy: write
and delete latency (median, p95, max), bytes of index files written per write and per delete, shards at the
end, and the ratios. Then the search cost of what the writes and deletes left (small shards, deleted ids
skipped by a selector): `--queries` single-query searches through `indexer.search.Searcher`, interleaved,
best of 3, and whether both indexes return the same top 10 (Flat and IVF: they must). With `--compact`, the
`lsm` index is then compacted (`embedkd index compact`) and searched again.

    .venv/bin/python benchmarks/small_writes.py --docs 100000 --writes 200 --deletes 100 --out docs/small_writes.json
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
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs

from indexer import shards
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.compaction import compact_index
from indexer.context import open_catalog
from indexer.corpus import ListSource
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
    if name == "rewrite":
        shards.ShardedIndex.add_with_ids = _append_to_tail
    try:
        yield
    finally:
        shards.ShardedIndex.add_with_ids = current


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def _summary(what: str, seconds: list[float], written: list[int]) -> dict:
    lat = sorted(seconds)
    return {f"{what}_median_s": round(statistics.median(lat), 4), f"{what}_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 4),
            f"{what}_max_s": round(lat[-1], 4), f"{what}_total_s": round(sum(lat), 2),
            f"mb_written_per_{what}": round(sum(written) / len(written) / 2**20, 3),
            f"mb_written_max_{what}": round(max(written) / 2**20, 3)}


def _timed(catalog, name: str, action) -> tuple[float, int]:
    """Seconds `action` took and the bytes of the index files it wrote."""
    folder = catalog.settings.index_dir / name
    before = _files(folder)
    with _policy(name):
        t0 = time.perf_counter()
        action()
        seconds = time.perf_counter() - t0
    return seconds, sum(size for file, size in _files(folder).items() if file not in before)


def _search_cost(searcher: Searcher, queries: list[str], policies: list[str]) -> dict:
    """Single-query latency of each index (interleaved, best of 3) and how often their top 10 agree."""
    hits = {name: [[h.id for h in row] for row in searcher.search(name, queries, k=10)] for name in policies}
    best = {name: float("inf") for name in policies}
    for _ in range(3):
        for name in policies:
            t0 = time.perf_counter()
            for q in queries:
                searcher.search(name, [q], k=10)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(queries))
    return {"search_ms_per_query": {name: round(1000 * best[name], 3) for name in policies},
            "search_time_ratio_lsm_over_rewrite": round(best["lsm"] / best["rewrite"], 3),
            "same_top10": round(float(np.mean([a == b for a, b in zip(hits[policies[0]], hits[policies[1]])])), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--factory", default="Flat")
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10, help="documents per write")
    ap.add_argument("--deletes", type=int, default=100, help="single-document deletes after the writes")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--compact", action="store_true", help="then `index compact` the lsm index and search again")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    policies = ["lsm", "rewrite"]
    x, _ = _clustered(args.docs + args.writes * args.batch, args.dim, 100, 0)
    encoder = TableEncoder(x)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home), migrate=True)
        report = {"command": command_line(__file__, args), "docs": args.docs, "dim": args.dim, "factory": args.factory,
                  "writes": args.writes, "batch": args.batch, "shard_size": shards.DEFAULT_SHARD_SIZE}
        for name in policies:
            t0 = time.perf_counter()
            build_index(catalog, name, encoder, ListSource(table_docs(0, args.docs)), factory=args.factory, progress=False)
            report[f"build_seconds_{name}"] = round(time.perf_counter() - t0, 2)
        runs: dict[str, dict[str, list]] = {p: {"write": [], "write_bytes": [], "delete": [], "delete_bytes": []}
                                            for p in policies}
        for w in range(args.writes):
            docs = table_docs(args.docs + w * args.batch, args.batch)
            for name in policies if w % 2 == 0 else policies[::-1]:
                seconds, written = _timed(catalog, name, lambda: add_documents(catalog, name, encoder, ListSource(docs),
                                                                               progress=False))
                runs[name]["write"].append(seconds)
                runs[name]["write_bytes"].append(written)
            if w % 20 == 0:
                print("write", w, {p: round(runs[p]["write"][-1], 3) for p in policies}, flush=True)
        gone = np.random.default_rng(2).choice(args.docs, args.deletes, replace=False)
        for d, doc in enumerate(gone.tolist()):
            for name in policies if d % 2 == 0 else policies[::-1]:
                seconds, written = _timed(catalog, name, lambda: delete_items(catalog, name, [f"d{doc}"],
                                                                              purge=name == "rewrite"))
                runs[name]["delete"].append(seconds)
                runs[name]["delete_bytes"].append(written)
            if d % 20 == 0:
                print("delete", d, {p: round(runs[p]["delete"][-1], 3) for p in policies}, flush=True)
        for name in policies:
            with catalog.session() as s:
                index = get_index(s, name)
                assert index.count == args.docs + args.writes * args.batch - args.deletes, "documents lost or doubled"
                manifest = json.loads((catalog.settings.index_dir / name / index.file).read_text())
            report[name] = {**_summary("write", runs[name]["write"], runs[name]["write_bytes"]),
                            **(_summary("delete", runs[name]["delete"], runs[name]["delete_bytes"]) if args.deletes else {}),
                            "shards": [e["count"] for e in manifest["shards"]],
                            "deleted_listed": sum(len(e.get("deleted", [])) for e in manifest["shards"])}
        old, new = report["rewrite"], report["lsm"]
        report["write_median_ratio"] = round(old["write_median_s"] / new["write_median_s"], 1)
        report["bytes_per_write_ratio"] = round(old["mb_written_per_write"] / max(new["mb_written_per_write"], 1e-6), 1)
        if args.deletes:
            report["delete_median_ratio"] = round(old["delete_median_s"] / new["delete_median_s"], 1)
            report["bytes_per_delete"] = {p: report[p]["mb_written_per_delete"] for p in policies}

        searcher = Searcher(catalog, lambda _s: encoder)
        rng = np.random.default_rng(1)
        queries = [f"document {i}" for i in rng.integers(0, len(x), args.queries)]
        report.update(_search_cost(searcher, queries, policies))
        if args.compact:  # fold the small shards and listed deletes away, then search again
            t0 = time.perf_counter()
            out = compact_index(catalog, "lsm")
            report["compact"] = {"seconds": round(time.perf_counter() - t0, 2), "shards_after": out["shards"],
                                 **_search_cost(searcher, queries, policies)}
        catalog.close()
        catalog.close()
    print(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
