"""How long `embedkd index export` keeps the index from its writers, against how long it runs.

An index of `--docs` vectors (Flat, `--dim`-d, seeded unit vectors: the files' size is what matters), exported
`--repeat` times to new folders; the time the export holds the index's write lock is measured around
`indexer.locks.target_lock` as `indexer.transfer` calls it. Writes wait for the lock (HTTP writes answer 409
after 10 s), so the held time is what an export costs a live index.

    .venv/bin/python benchmarks/export_lock.py --docs 200000 --out docs/export_lock.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs

from indexer import jobs, transfer
from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import ListSource
from indexer.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    x, _ = _clustered(args.docs, args.dim, 100, 0)
    held: list[float] = []
    lock = transfer.locks.target_lock

    @contextlib.contextmanager
    def timed(*a, **k):
        with lock(*a, **k):
            t0 = time.perf_counter()
            try:
                yield
            finally:
                held.append(time.perf_counter() - t0)

    transfer.locks.target_lock = timed
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home), migrate=True)
        build_index(catalog, "e", TableEncoder(x), ListSource(table_docs(0, args.docs)), progress=False)
        held.clear()  # the patch is the module's: the build's lock was timed too
        total = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            out = transfer.export_index(catalog, "e", Path(home) / f"export{i}")
            total.append(time.perf_counter() - t0)
        report = {"command": command_line(__file__, args), "bytes": out["bytes"],
                  "export_s_median": round(statistics.median(total), 3),
                  "lock_held_s_median": round(statistics.median(held), 4),
                  "held_share": round(statistics.median(held) / statistics.median(total), 4),
                  "jobs_folder_left": sorted(p.name for p in catalog.settings.job_dir.glob("*")),
                  "disk_bytes_of_one_export": jobs.disk_bytes(Path(home) / "export0")}
        catalog.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
