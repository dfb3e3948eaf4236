"""What an add's commit reads, under the index's write lock, when other writes committed while it encoded.

An add plans from the index's items before it encodes; at its commit, if the index moved on meanwhile, it
plans again. Reading every item of its corpus again (`_read_seen`) costs the corpus's size; reading only the
item rows written and the FAISS ids removed since (`_since`) costs what the other writes did. An index of
`--docs` vectors (64-d, no model: the catalog reads are what is timed), an add of the whole snapshot
(`--docs` documents plus `--new` new ones, `--delete-missing` as a nightly sync runs it), then `--writes`
one-document adds and deletes by others; then both ways of planning again, alternating, best of `--repeat`.
Both must give the same plan.

    .venv/bin/python benchmarks/add_commit_plan.py --docs 200000 --out docs/add_commit_plan.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs

from indexer.build import _plan, _read_seen, _scan, _since, add_documents, build_index, delete_items, index_row
from indexer.context import open_catalog
from indexer.corpus import ListSource
from indexer.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200000)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--writes", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    n = args.docs + args.new + args.writes
    x, _ = _clustered(n, 64, 100, 0)
    encoder = TableEncoder(x)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home, database_url=args.database_url), migrate=True)
        build_index(catalog, "w", encoder, ListSource(table_docs(0, args.docs)), progress=False)
        scan = _scan(ListSource(table_docs(0, args.docs + args.new)))
        index = index_row(catalog, "w")
        t0 = time.perf_counter()
        seen = _read_seen(catalog, index, scan, delete_missing=True)
        first_read = time.perf_counter() - t0
        for i in range(args.writes):  # others' writes while the add encodes
            if i % 2:
                delete_items(catalog, "w", [f"d{i}"])
            else:
                add_documents(catalog, "w", encoder, ListSource(table_docs(args.docs + args.new + i, 1)), progress=False)
        now = index_row(catalog, "w")
        times: dict[str, list[float]] = {"full": [], "since": []}
        plans = {}
        for _ in range(args.repeat):
            for way in ("since", "full"):
                t0 = time.perf_counter()
                again = _since(catalog, now, scan, seen) if way == "since" else _read_seen(catalog, now, scan, True)
                plans[way] = _plan(now, scan, again, 1.0)
                times[way].append(time.perf_counter() - t0)
        full, since = min(times["full"]), min(times["since"])
        report = {"command": command_line(__file__, args), "catalog": catalog.engine.dialect.name,
                  "docs": args.docs, "corpus": args.docs + args.new, "writes_meanwhile": args.writes,
                  "first_read_s": round(first_read, 3), "replan_full_s": round(full, 4),
                  "replan_since_s": round(since, 4), "ratio_full_over_since": round(full / since, 1),
                  "same_plan": plans["full"] == plans["since"],
                  "plan": {"encode": len(plans["since"].positions), "delete": len(plans["since"].missing_faiss_ids)}}
        catalog.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
