"""Many clients writing small batches to one index at once: group commit (`indexer.write_queue.WriteQueue`,
what `POST /indexes/{index}/documents` and `DELETE /indexes/{index}/items/{id}` use) against each request
making its own write, as the service did before (a request that could not get the index's write lock
within a second was refused with 409; here a refused client waits 50 ms and sends again, as a client would).

An index of `--docs` vectors (Flat, `--dim`-d, no model: document i's vector is row i of a seeded matrix,
so the figures are the write path alone; a real model adds its encoding time per document to both).
Then for each number of clients and each mode, alternating which mode goes first: every client sends
`--writes` requests of `--batch` new documents, one after another, all clients at once from their own
threads, through the same function the HTTP route calls. Reported: wall seconds, documents committed per
second, the ratio queued / one-at-a-time, request latency (median, p95), writes made (generations),
refusals, and a check that every document is in the index exactly once.

    .venv/bin/python benchmarks/concurrent_writes.py --docs 100000 --out docs/concurrent_writes.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

from command import command_line  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs

from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource
from indexer.errors import Conflict
from indexer.settings import load_settings
from indexer.write_queue import WriteQueue


def _run(write, clients: int, writes: int, batch: int, first: int) -> dict:
    """Each client sends `writes` requests of `batch` new documents; ids from `first` on."""
    latencies: list[float] = []
    refused = [0]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        barrier.wait()
        for w in range(writes):
            docs = table_docs(first + (c * writes + w) * batch, batch)
            t0 = time.perf_counter()
            while True:
                try:
                    write(docs)
                    break
                except Conflict:
                    refused[0] += 1
                    time.sleep(0.05)
                except BaseException as err:  # noqa: BLE001 - reported
                    errors.append(err)
                    break
            latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    lat = sorted(latencies)
    n = clients * writes * batch
    return {"seconds": round(wall, 3), "docs_per_s": round(n / wall, 1), "latency_median_s": round(statistics.median(lat), 4),
            "latency_p95_s": round(lat[max(0, math.ceil(0.95 * len(lat)) - 1)], 4), "refused_then_resent": refused[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--writes", type=int, default=4, help="requests per client")
    ap.add_argument("--batch", type=int, default=10, help="documents per request")
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    clients = [int(c) for c in args.clients.split(",")]
    total_new = 2 * sum(clients) * args.writes * args.batch + args.batch
    x, _ = _clustered(args.docs + total_new, args.dim, 100, 0)
    encoder = TableEncoder(x)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home, database_url=args.database_url), migrate=True)
        t0 = time.perf_counter()
        build_index(catalog, "w", encoder, ListSource(table_docs(0, args.docs)), progress=False)
        report = {"command": command_line(__file__, args),
                  "catalog": catalog.engine.dialect.name, "docs": args.docs, "dim": args.dim,
                  "build_seconds": round(time.perf_counter() - t0, 2), "batch": args.batch, "writes": args.writes,
                  "runs": []}

        def one_at_a_time(docs: list[Doc]) -> dict:
            return add_documents(catalog, "w", encoder, ListSource(docs), progress=False)

        queue = WriteQueue(lambda name, docs: add_documents(catalog, name, encoder, ListSource(docs), progress=False),
                           lambda name, ids: delete_items(catalog, name, ids))
        modes = {"queued": lambda docs: queue.add("w", docs), "one_at_a_time": one_at_a_time}
        # a warm-up write, so that one-off first-write costs (reading the build's template, opening the first
        # small shard) land on neither mode
        one_at_a_time(table_docs(args.docs, args.batch))
        first = args.docs + args.batch
        for i, n in enumerate(clients):
            order = ["queued", "one_at_a_time"] if i % 2 == 0 else ["one_at_a_time", "queued"]
            row = {"clients": n}
            for mode in order:
                with catalog.session() as s:
                    before = get_index(s, "w")
                    gen0, count0 = before.generation, before.count
                out = _run(modes[mode], n, args.writes, args.batch, first)
                first += n * args.writes * args.batch
                with catalog.session() as s:
                    after = get_index(s, "w")
                    out["writes_made"] = after.generation - gen0
                    assert after.count - count0 == n * args.writes * args.batch, "documents lost or doubled"
                row[mode] = out
                print(n, mode, out, flush=True)
            row["docs_per_s_ratio"] = round(row["queued"]["docs_per_s"] / row["one_at_a_time"]["docs_per_s"], 2)
            report["runs"].append(row)
        catalog.close()
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
