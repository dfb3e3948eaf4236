"""Several processes adding to and deleting from one index at once, then a check that nothing was lost,
doubled or misplaced: a correctness check of adds that encode without the index's lock and plan again at
their commit (`indexer.build.add_documents`), on SQLite or PostgreSQL (`--database-url`).

An index of `--docs` documents (64-d; document i's vector is row i of a seeded matrix, so every stored vector
can be checked against its id). `--procs` processes each send `--adds` adds of `--batch` documents: half new to
that process, half drawn from a pool shared by all processes (the same id and text, so a commit often finds
them already added by another: skipped), with an encoder that sleeps `--encode-ms` per document so that adds
overlap; one more process deletes `--deletes` documents of the original index, one at a time. A write refused
by a held lock (Conflict) is sent again. Then: the catalog's items are exactly the original documents minus
the deleted, plus every document any add sent; every stored vector is its own document's row; `embedkd index
verify` finds nothing wrong.

    .venv/bin/python benchmarks/concurrent_adds_check.py --out docs/concurrent_adds_check.json
    .venv/bin/python benchmarks/concurrent_adds_check.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/DB \
        --out docs/concurrent_adds_check_pg.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs
from writes_during_add import SlowEncoder  # this folder is on sys.path when a script in it runs

from indexer import shards
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.context import open_catalog
from indexer.corpus import ListSource
from indexer.errors import Conflict
from indexer.models import Item
from indexer.settings import load_settings
from indexer.verify import verify_index

SHARED = 100_000  # ids from here on are the shared pool's


def _retrying(fn) -> int:
    """fn() until no Conflict; how many times it was refused."""
    refused = 0
    while True:
        try:
            fn()
            return refused
        except Conflict:
            refused += 1
            time.sleep(0.05)


def _adder(args: argparse.Namespace, home: str, proc: int, out) -> None:
    catalog = open_catalog(load_settings(home=home, database_url=args.database_url))
    x, _ = _clustered(SHARED + args.pool, 64, 100, 0)
    encoder = SlowEncoder(x, args.encode_ms)
    rng = np.random.default_rng(proc)
    sent, refused, unchanged = set(), 0, 0
    for a in range(args.adds):
        own = args.docs + (proc * args.adds + a) * args.batch  # this process's new documents
        docs = table_docs(own, args.batch // 2) + [table_docs(int(i), 1)[0] for i in
                                                   SHARED + rng.choice(args.pool, args.batch - args.batch // 2, replace=False)]
        sent.update(d.id for d in docs)
        result: dict = {}
        refused += _retrying(lambda: result.update(add_documents(catalog, "c", encoder, ListSource(docs), progress=False)))
        unchanged += result["unchanged"]
    out.put({"sent": sorted(sent), "refused": refused, "unchanged": unchanged})
    catalog.close()


def _deleter(args: argparse.Namespace, home: str, out) -> None:
    catalog = open_catalog(load_settings(home=home, database_url=args.database_url))
    ids = [f"d{i}" for i in np.random.default_rng(99).choice(args.docs, args.deletes, replace=False)]
    refused = 0
    for doc_id in ids:
        refused += _retrying(lambda: delete_items(catalog, "c", [doc_id]))
        time.sleep(0.05)
    out.put({"deleted": ids, "refused": refused})
    catalog.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--adds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--pool", type=int, default=100, help="shared documents the adds draw from")
    ap.add_argument("--deletes", type=int, default=30)
    ap.add_argument("--encode-ms", type=float, default=5.0)
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    x, _ = _clustered(SHARED + args.pool, 64, 100, 0)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home, database_url=args.database_url), migrate=True)
        build_index(catalog, "c", TableEncoder(x), ListSource(table_docs(0, args.docs)), shard_size=500, progress=False)
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        workers = [ctx.Process(target=_adder, args=(args, home, p, results)) for p in range(args.procs)]
        workers.append(ctx.Process(target=_deleter, args=(args, home, results)))
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        outs = [results.get(timeout=1800) for _ in workers]
        for w in workers:
            w.join()
        seconds = time.perf_counter() - t0
        sent = set().union(*(o["sent"] for o in outs if "sent" in o))
        deleted = next(o["deleted"] for o in outs if "deleted" in o)
        expected = ({f"d{i}" for i in range(args.docs)} - set(deleted)) | sent
        with catalog.session() as s:
            index = get_index(s, "c")
            rows = s.query(Item.external_id, Item.faiss_id).filter(Item.index_id == index.id).all()
            count, generation, file, checksum = index.count, index.generation, index.file, index.checksum
        ids = [e for e, _ in rows]
        stored = shards.load(catalog.settings.index_dir / "c" / file, checksum).reconstruct(
            np.array([f for _, f in rows], dtype=np.int64))
        own = x[[int(e[1:]) for e in ids]]
        verify = verify_index(catalog, "c")
        report = {"command": command_line(__file__, args), "catalog": catalog.engine.dialect.name,
                  "seconds": round(seconds, 1), "writes": args.procs * args.adds + args.deletes,
                  "generations": generation, "refused_then_resent": sum(o["refused"] for o in outs),
                  # shared documents another process had committed first: skipped by the adds that came later
                  "skipped_as_already_added": sum(o.get("unchanged", 0) for o in outs),
                  "items": len(ids), "count": count, "expected": len(expected),
                  "items_are_expected_once": sorted(ids) == sorted(expected) and count == len(expected),
                  "vectors_are_their_documents": bool(np.allclose(stored, own, atol=1e-6)),
                  "verify_ok": bool(verify.get("ok"))}
        catalog.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
