"""A filtered search right after a write: the service brings its field columns up to date by reading what the
write changed (`indexer.fields.refresh_column`), against reading each filtered field afresh (what every
write cost before the item history, migration 0002), in the same run on the same index.

An index of `--docs` vectors (Flat; no model: vectors are rows of a seeded matrix), each document tagged
`bucket` = its number mod 1000 and `tag` = "t" + its number mod 50. Then, `--reps` times for each write kind
(new documents, metadata-only updates, deletions) and size: one write through `indexer.build`, then the same
filtered search (`bucket` in 10 values, `tag` not "t0"; two fields) by two warm services: one that keeps its
columns across the write, one whose columns are dropped first (they alternate going first). Both answers
must be equal. Reported: median seconds of each, their ratio, and the write's own seconds.

    .venv/bin/python benchmarks/filter_after_write.py --docs 200000 --out docs/filter_after_write.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from command import command_line  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered  # this folder is on sys.path when a script in it runs

from indexer.build import add_documents, build_index, delete_items
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource
from indexer.search import Searcher
from indexer.settings import load_settings


def _doc(i: int, shift: int = 0) -> Doc:
    return Doc(f"d{i}", f"document {i}", {"bucket": (i + shift) % 1000, "tag": f"t{(i + shift) % 50}"})


def _timed(searcher: Searcher, name: str, q: np.ndarray, where: dict, fresh: bool) -> tuple[float, list[str]]:
    if fresh:
        searcher._columns.clear()  # what a new generation did before: every filtered field read again
    t0 = time.perf_counter()
    hits = searcher.search_vectors(name, q, k=10, where=where)[0]
    return time.perf_counter() - t0, [h.id for h in hits]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--sizes", default="10,1000", help="items per write, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    extra = args.reps * sum(sizes)
    x, centres = _clustered(args.docs + extra, args.dim, 100, 0)
    encoder = TableEncoder(x)
    q = np.ascontiguousarray(x[:1])
    where = {"bucket": list(range(10)), "tag": {"not_in": ["t0"]}}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp) / "home", database_url=args.database_url)
        catalog = open_catalog(settings, migrate=True)
        t0 = time.perf_counter()
        build_index(catalog, "bench", encoder, ListSource([_doc(i) for i in range(args.docs)]), progress=False)
        build_s = time.perf_counter() - t0
        kept, fresh = Searcher(catalog), Searcher(catalog)
        for s in (kept, fresh):
            s.search_vectors("bench", q, k=10, where=where)  # the index loaded and the fields read once
        next_new, live = args.docs, list(range(args.docs))
        rng = np.random.default_rng(0)
        for kind in ("add", "metadata", "delete"):
            for size in sizes:
                kept_s, fresh_s, write_s = [], [], []
                for rep in range(args.reps):
                    t0 = time.perf_counter()
                    if kind == "add":
                        add_documents(catalog, "bench", encoder, ListSource([_doc(i) for i in range(next_new, next_new + size)]),
                                      progress=False)
                        live += range(next_new, next_new + size)
                        next_new += size
                    elif kind == "metadata":
                        picked = rng.choice(len(live), size, replace=False)
                        add_documents(catalog, "bench", encoder, ListSource([_doc(live[p], rep + 1) for p in picked]),
                                      progress=False)
                    else:
                        picked = set(rng.choice(len(live), size, replace=False).tolist())
                        delete_items(catalog, "bench", [f"d{live[p]}" for p in picked])
                        live = [d for p, d in enumerate(live) if p not in picked]
                    write_s.append(time.perf_counter() - t0)
                    order = [(kept, False), (fresh, True)][:: 1 if rep % 2 == 0 else -1]
                    answers = {}
                    for searcher, drop in order:
                        seconds, answers[drop] = _timed(searcher, "bench", q, where, drop)
                        (fresh_s if drop else kept_s).append(seconds)
                    if answers[False] != answers[True]:
                        raise SystemExit(f"answers differ after {kind} x{size}: {answers}")
                row = {"write": kind, "items": size, "write_s": round(statistics.median(write_s), 3),
                       "refreshed_s": round(statistics.median(kept_s), 4),
                       "read_afresh_s": round(statistics.median(fresh_s), 4),
                       "ratio_refreshed_to_afresh": round(statistics.median(kept_s) / statistics.median(fresh_s), 4)}
                print(json.dumps(row), flush=True)
                results.append(row)
        catalog.close()
    args.out.write_text(json.dumps({
        "command": command_line(__file__, args),
        "docs": args.docs, "dim": args.dim, "reps": args.reps, "build_s": round(build_s, 1),
        "database": "PostgreSQL" if args.database_url else "SQLite", "machine": "2-core CPU, no GPU",
        "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
