"""What shards buy a large index: `index add` of a few documents, and a search service picking the change
up, against the same index in one FAISS file; and what they cost a search.

Both layouts hold the same `--docs` vectors, built by `indexer.build.build_index` into two catalogs (one
with a shard size above the corpus, one with `--shard-size`). Each round adds `--add` new documents to
each layout in turn (alternating, same machine, same run), then times the first search of a service that
had the previous generation loaded (it reloads what changed), then search latency at 1 and 32 queries.
The encoder gives seeded random unit vectors (no model: the writes are what is measured).

    .venv/bin/python benchmarks/index_shards.py --docs 1000000 --dim 384 --shard-size 100000 \\
        --out docs/index_shards.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from indexer.build import add_documents, build_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource
from indexer.encoder import ModelRecord
from indexer.search import Searcher
from indexer.settings import load_settings


class RandomEncoder:
    """Seeded random unit vectors: the same texts give the same vectors."""

    def __init__(self, dim: int) -> None:
        self.record = ModelRecord(name="random", source="random", dimension=dim, fingerprint=f"random-{dim}")

    def __call__(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32("\n".join(texts).encode()))
        x = rng.standard_normal((len(texts), self.record.dimension)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def _docs(start: int, n: int) -> ListSource:
    return ListSource([Doc(f"d{i}", f"document {i}") for i in range(start, start + n)])


def _folder_bytes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--add", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--factory", default="Flat")
    ap.add_argument("--out")
    args = ap.parse_args()
    encoder = RandomEncoder(args.dim)
    layouts = {"one_file": args.docs + args.add * args.rounds + 1, "sharded": args.shard_size}
    runs: dict[str, dict[str, list[float]]] = {k: {} for k in layouts}

    def record(layout: str, key: str, value: float) -> None:
        runs[layout].setdefault(key, []).append(value)

    rng = np.random.default_rng(0)
    queries = {n: encoder([f"query {rng.integers(1 << 30)}" for _ in range(n)]) for n in (1, 32)}
    with tempfile.TemporaryDirectory() as tmp:
        catalogs, searchers = {}, {}
        for layout, size in layouts.items():
            catalogs[layout] = open_catalog(load_settings(home=Path(tmp) / layout))
            t0 = time.perf_counter()
            built = build_index(catalogs[layout], "big", encoder, _docs(0, args.docs), factory=args.factory,
                                shard_size=size, progress=False)
            record(layout, "build_s", time.perf_counter() - t0)
            searchers[layout] = Searcher(catalogs[layout])
            searchers[layout].search_vectors("big", queries[1], k=10)
            print(f"built {layout}: {built['count']} vectors in {built['shards']} shards", flush=True)
        for r in range(args.rounds):
            for layout in layouts:
                catalog, searcher = catalogs[layout], searchers[layout]
                folder = catalog.settings.index_dir / "big"
                before = _folder_bytes(folder)
                t0 = time.perf_counter()
                add_documents(catalog, "big", encoder, _docs(args.docs + r * args.add, args.add), progress=False)
                record(layout, "add_s", time.perf_counter() - t0)
                after = _folder_bytes(folder)
                record(layout, "add_bytes_written", sum(v for k, v in after.items() if k not in before))
                t0 = time.perf_counter()
                searcher.search_vectors("big", queries[1], k=10)  # reloads the new generation
                record(layout, "reload_and_first_search_s", time.perf_counter() - t0)
                for n, q in queries.items():
                    times = []
                    for _ in range(5):
                        t0 = time.perf_counter()
                        searcher.search_vectors("big", q, k=10)
                        times.append(time.perf_counter() - t0)
                    record(layout, f"search_{n}q_s", statistics.median(times))
                print(f"round {r} {layout}: " + ", ".join(f"{k} {v[-1]:.4g}" for k, v in runs[layout].items()),
                      flush=True)
    medians = {layout: {k: statistics.median(v) for k, v in by.items()} for layout, by in runs.items()}
    ratios = {k: round(medians["sharded"][k] / medians["one_file"][k], 3) for k in medians["sharded"]
              if medians["one_file"][k]}
    report = {"command": "benchmarks/index_shards.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                                   if k != "out"),
              "docs": args.docs, "dim": args.dim, "factory": args.factory, "shard_size": args.shard_size,
              "add": args.add, "rounds": args.rounds, "runs": runs, "medians": medians,
              "sharded_over_one_file": ratios}
    print(json.dumps({"medians": medians, "sharded_over_one_file": ratios}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
