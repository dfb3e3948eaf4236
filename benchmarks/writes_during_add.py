"""Small writes while a long `embedkd index add` (or `upgrade backfill`, `--during backfill`) runs on the same index.

An index of `--docs` vectors (Flat, `--dim`-d; document i's vector is row i of a seeded matrix, as in
`concurrent_writes.py`). Another process adds `--add-docs` new documents to it, as `embedkd index add` does,
with an encoder that takes `--encode-ms` per document (a stand-in for a model, so that the add runs long
and the figures measure the locking alone: it sleeps, so it leaves the cores to the writes). Once that
add's job is running, this process sends `--writes` one-document adds, one every `--interval` seconds, each
from its own thread, through the service's write path (`indexer.write_queue.WriteQueue` with the
service's default patience, `--patience`): a write that cannot get the index within the patience is
refused with 409. Reported: the long add's seconds, and for the writes sent while it ran: how many were
committed and refused, latency (median, p95, max); then a check that every committed document is in the
index exactly once.

`--during backfill`: the other process re-embeds the index with another model (`--dim2`-d vectors, the same
`--encode-ms` per document) from a corpus of the index's documents and switches to it; the writes alternate
one-document deletes of indexed documents and adds of new documents, which the backfill's corpus lacks (as
HTTP writes are). Reported as well: whether the backfill switched, what it caught up, and that the switched
index lacks every deleted document and holds every added one.

    .venv/bin/python benchmarks/writes_during_add.py --out docs/writes_during_add.json
    .venv/bin/python benchmarks/writes_during_add.py --during backfill --docs 3000 --out docs/writes_during_backfill.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs

from indexer import jobs
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index, items_by_external_ids
from indexer.context import open_catalog
from indexer.corpus import ListSource
from indexer.errors import Conflict
from indexer.settings import load_settings
from indexer.write_queue import WriteQueue


class SlowEncoder(TableEncoder):
    """`TableEncoder` that takes `ms` per document, as a model would (asleep, so the cores stay free)."""

    def __init__(self, vectors: np.ndarray, ms: float) -> None:
        super().__init__(vectors)
        self.ms = ms

    def __call__(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.ms * len(texts) / 1000)
        return super().__call__(texts)


def _long_job(args: argparse.Namespace, x: np.ndarray) -> None:
    catalog = open_catalog(load_settings(home=args.home, database_url=args.database_url))
    t0 = time.perf_counter()
    if args.during == "backfill":
        from embedkd.upgrade.backfill import backfill

        x2, _ = _clustered(len(x), args.dim2, 100, 1)
        out = backfill(catalog, "w", SlowEncoder(x2, args.encode_ms), ListSource(table_docs(0, args.docs)), chunk_size=256)
        out = {"switched": out["switched"], "caught_up": out["caught_up"], "count": out["count"]}
    else:
        out = add_documents(catalog, "w", SlowEncoder(x, args.encode_ms), ListSource(table_docs(args.docs, args.add_docs)),
                            chunk_size=256, progress=False)
        out = {"added": out["added"]}
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), **out}))


def _writes(write, first: int, n: int, interval: float, running) -> list[dict]:
    """`write(i)` for i in `first` .., one every `interval` s, each from its own thread."""
    results: list[dict] = [{} for _ in range(n)]

    def send(i: int) -> None:
        during = running()
        t0 = time.perf_counter()
        try:
            write(first + i)
            ok = True
        except Conflict:
            ok = False
        results[i] = {"during_add": during, "ok": ok, "seconds": time.perf_counter() - t0}

    threads = []
    start = time.perf_counter()
    for i in range(n):
        time.sleep(max(0.0, start + i * interval - time.perf_counter()))
        threads.append(threading.Thread(target=send, args=(i,)))
        threads[-1].start()
    for t in threads:
        t.join()
    return results


def start_again(script: str, args: argparse.Namespace, home: str) -> subprocess.Popen:
    """`script` in another process with the same arguments and `--home` (which makes it run the long job)."""
    cmd = [sys.executable, script, "--home", home] + [
        a for k, v in vars(args).items() if v is not None and k not in ("out", "home")
        for a in (f"--{k.replace('_', '-')}", str(v))]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def its_result(proc: subprocess.Popen, what: str) -> dict:
    """The JSON line the long job's process printed last, once it ended; `what` names it in the error."""
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the {what} failed (exit {proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])


def service_queue(catalog, encoder, patience_s: float) -> WriteQueue:
    """The HTTP service's write path for index writes, as `indexer.service.create_app` builds it."""
    return WriteQueue(lambda name, docs: add_documents(catalog, name, encoder, ListSource(docs), progress=False,
                                                       lock_wait_s=1.0, keep_failed=False),
                      lambda name, ids, purge=False: delete_items(catalog, name, ids, purge=purge),
                      patience_s=patience_s)


def _summary(rows: list[dict]) -> dict:
    lat = sorted(r["seconds"] for r in rows if r["ok"])
    out = {"sent": len(rows), "committed": sum(r["ok"] for r in rows), "refused_409": sum(not r["ok"] for r in rows)}
    if lat:
        out.update(latency_median_s=round(statistics.median(lat), 4),
                   latency_p95_s=round(lat[max(0, math.ceil(0.95 * len(lat)) - 1)], 4), latency_max_s=round(lat[-1], 4))
    refused = [r["seconds"] for r in rows if not r["ok"]]
    if refused:
        out["refused_after_median_s"] = round(statistics.median(refused), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000, help="vectors in the index before the add")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--during", choices=["add", "backfill"], default="add", help="what the other process runs")
    ap.add_argument("--dim2", type=int, default=256, help="the backfill's model's dimension")
    ap.add_argument("--add-docs", type=int, default=3000, help="documents of the long add")
    ap.add_argument("--encode-ms", type=float, default=10.0, help="the long add's encoding time per document")
    ap.add_argument("--writes", type=int, default=40, help="one-document writes sent while it runs")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between two writes")
    ap.add_argument("--patience", type=float, default=10.0, help="the write queue's patience (the service's default)")
    ap.add_argument("--database-url", default=None, help="catalog database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--home", default=None, help=argparse.SUPPRESS)  # the long add's process only
    args = ap.parse_args()

    x, _ = _clustered(args.docs + args.add_docs + args.writes, args.dim, 100, 0)
    if args.home:
        _long_job(args, x)
        return
    encoder = TableEncoder(x)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home, database_url=args.database_url), migrate=True)
        build_index(catalog, "w", encoder, ListSource(table_docs(0, args.docs)), progress=False)
        proc = start_again(__file__, args, home)
        while not jobs.list_jobs(catalog, state="running"):  # its job has started encoding
            if proc.poll() is not None:
                raise SystemExit(f"the long {args.during} ended before its job ran (exit {proc.returncode})")
            time.sleep(0.05)
        queue = service_queue(catalog, encoder, args.patience)
        backfilling = args.during == "backfill"
        first = args.docs + args.add_docs  # new documents' ids from here on

        def write(i: int) -> None:
            if backfilling and i % 2 == 0:  # a delete of an indexed document
                queue.delete("w", [f"d{i - first}"])
            else:
                queue.add("w", table_docs(i, 1))

        rows = _writes(write, first, args.writes, args.interval, lambda: proc.poll() is None)
        long_job = its_result(proc, f"long {args.during}")
        committed = [f"d{first + i}" for i, r in enumerate(rows) if r["ok"] and not (backfilling and i % 2 == 0)]
        deleted = [f"d{i}" for i, r in enumerate(rows) if r["ok"] and backfilling and i % 2 == 0]
        with catalog.session() as s:
            index = get_index(s, "w")
            count = index.count
            if backfilling:
                expected = args.docs - len(deleted) + len(committed)
                found = items_by_external_ids(s, index.id, [f"d{i}" for i in range(args.docs)] + committed)
                right = count == expected and len(found) == expected and not set(deleted) & set(found)
            else:
                expected = args.docs + args.add_docs + len(committed)
                found = items_by_external_ids(s, index.id, committed + [f"d{i}" for i in range(args.docs, first)])
                right = count == expected and len(found) == len(committed) + args.add_docs
        report = {"command": command_line(__file__, args), "catalog": catalog.engine.dialect.name,
                  "long_" + args.during: long_job,
                  f"long_{args.during}_encoding_s": round((args.docs if backfilling else args.add_docs)
                                                          * args.encode_ms / 1000, 1),
                  f"writes_during_{args.during}": _summary([r for r in rows if r["during_add"]]),
                  f"writes_after_{args.during}": _summary([r for r in rows if not r["during_add"]]),
                  "index_count": count, "expected_count": expected,
                  "all_present_once" if not backfilling else "deleted_gone_added_and_rest_present": right}
        catalog.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
