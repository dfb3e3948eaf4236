"""Small writes while `embedkd index compact` rewrites the same index.

An HNSW index (`--factory`) of `--docs` vectors (`--dim`-d; document i's vector is row i of a seeded matrix,
as in `writes_during_add.py`) with `--deleted` of its documents deleted, listed with its shard: compacting it
rebuilds the shard's graph without them, the long part of a compaction. Another process compacts it; once it
has started, this process sends `--writes` one-document writes, one every `--interval` seconds, each from its own
thread, through the service's write path (`indexer.write_queue.WriteQueue`, the service's patience): they
alternate deletes of indexed documents and adds of new ones. A write that cannot get the index within the
patience is refused with 409. Reported: the compaction (seconds; where it says so, how long it held the index's
write lock and how many times it started), the writes sent while it ran and after (committed, refused,
latency), and checks on the compacted index: its count, every committed add found by its own vector, no
deleted document found, `index verify`.

    .venv/bin/python benchmarks/writes_during_compact.py --out docs/writes_during_compact.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs
from writes_during_add import _summary, _writes, its_result, service_queue, start_again  # this folder is on sys.path

from indexer.build import build_index, delete_items
from indexer.catalog import get_index, items_by_external_ids
from indexer.context import open_catalog
from indexer.corpus import ListSource
from indexer.search import Searcher
from indexer.settings import load_settings
from indexer.verify import verify_index


def _compact(args: argparse.Namespace) -> None:
    try:
        from indexer.compaction import compact_index
    except ImportError:  # the code before compaction left the lock (it held it throughout)
        from indexer.build import compact_index
    catalog = open_catalog(load_settings(home=args.home, database_url=args.database_url))
    (Path(args.home) / "compaction-started").touch()
    t0 = time.perf_counter()
    out = compact_index(catalog, "w")
    keys = ("changed", "count", "shards_before", "shards", "deleted_before", "attempts", "lock_held_s", "deleted_meanwhile")
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), **{k: out[k] for k in keys if k in out}}))


def _delete_target(i: int, first: int, step: int) -> str:
    """The document write `i` deletes: one not deleted before the compaction (those are multiples of `step`)."""
    return f"d{(i - first) * step + 1}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--factory", default="HNSW32")
    ap.add_argument("--deleted", type=float, default=0.03,
                    help="share of the documents deleted before the compaction (listed while under MAX_DELETED)")
    ap.add_argument("--writes", type=int, default=40, help="one-document writes sent while it runs")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between two writes")
    ap.add_argument("--patience", type=float, default=10.0, help="the write queue's patience (the service's default)")
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--home", default=None, help=argparse.SUPPRESS)  # the compaction's process only
    args = ap.parse_args()
    if args.home:
        _compact(args)
        return

    x, _ = _clustered(args.docs + args.writes, args.dim, 100, 0)
    encoder = TableEncoder(x)
    step = round(1 / args.deleted)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home, database_url=args.database_url), migrate=True)
        t0 = time.perf_counter()
        build_index(catalog, "w", encoder, ListSource(table_docs(0, args.docs)), factory=args.factory, progress=False)
        build_s = time.perf_counter() - t0
        before = [f"d{i}" for i in range(0, args.docs, step)]
        delete_items(catalog, "w", before)  # listed with the shard: under its bound (a tenth of it)
        proc = start_again(__file__, args, home)
        while not (Path(home) / "compaction-started").exists():
            if proc.poll() is not None:
                raise SystemExit(f"the compaction ended before it started (exit {proc.returncode})")
            time.sleep(0.05)
        queue = service_queue(catalog, encoder, args.patience)
        first = args.docs  # new documents' ids from here on

        def write(i: int) -> None:
            if i % 2 == 0:
                queue.delete("w", [_delete_target(i, first, step)])
            else:
                queue.add("w", table_docs(i, 1))

        rows = _writes(write, first, args.writes, args.interval, lambda: proc.poll() is None)
        compaction = its_result(proc, "compaction")

        added = [first + i for i, r in enumerate(rows) if r["ok"] and i % 2 == 1]
        deleted = before + [_delete_target(first + i, first, step) for i, r in enumerate(rows) if r["ok"] and i % 2 == 0]
        with catalog.session() as s:
            index = get_index(s, "w")
            count = index.count
            present = items_by_external_ids(s, index.id, [f"d{i}" for i in range(args.docs)] + [f"d{i}" for i in added])
        expected = args.docs - len(deleted) + len(added)
        hits = Searcher(catalog, lambda _s: encoder).search("w", [f"document {i}" for i in added], k=10)
        gone = Searcher(catalog, lambda _s: encoder).search("w", [f"document {d[1:]}" for d in deleted], k=10)
        report = {"command": command_line(__file__, args), "catalog": catalog.engine.dialect.name,
                  "build_s": round(build_s, 1), "compaction": compaction,
                  "writes_during_compaction": _summary([r for r in rows if r["during_add"]]),
                  "writes_after_compaction": _summary([r for r in rows if not r["during_add"]]),
                  "index_count": count, "expected_count": expected,
                  "items_right": len(present) == expected and not set(deleted) & set(present),
                  "added_found_by_own_vector": sum(f"d{i}" in {h.id for h in row} for i, row in zip(added, hits)),
                  "added": len(added),
                  "deleted_found": sum(d in {h.id for h in row} for d, row in zip(deleted, gone)),
                  "verify_ok": verify_index(catalog, "w")["ok"]}
        catalog.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
