"""Moving an index between catalogs (`embedkd index export` / `import`) against building it again, in one run.

`--docs` vectors of dimension `--dim` (seeded; no model, so the baseline build costs only FAISS and the
catalog: a real rebuild adds re-embedding every document on top), each with a little metadata, built in a
SQLite catalog; then exported, and imported into a fresh SQLite catalog and, with `--database-url`, into an
empty PostgreSQL database. Reported: seconds of each step, the export's bytes, and ratios to the build.

    .venv/bin/python benchmarks/transfer.py --docs 200000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_transfer --out docs/transfer.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from command import command_line  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder  # this folder is on sys.path when a script in it runs

from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource
from indexer.settings import load_settings
from indexer.transfer import export_index, import_index
from indexer.verify import verify_index


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--database-url", default=None, help="an empty PostgreSQL database to import into as well")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((args.docs, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    docs = ListSource([Doc(f"d{i}", f"document {i}", {"metadata": {"bucket": i % 1000}}) for i in range(args.docs)])
    row: dict = {"docs": args.docs}
    with tempfile.TemporaryDirectory() as tmp:
        src = open_catalog(load_settings(home=Path(tmp) / "src"))
        t0 = time.perf_counter()
        build_index(src, "big", TableEncoder(x), docs, progress=False)
        row["build_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        out = export_index(src, "big", Path(tmp) / "export")
        row.update(export_s=round(time.perf_counter() - t0, 2), export_bytes=out["bytes"])
        targets = [("sqlite", None)] + ([("postgresql", args.database_url)] if args.database_url else [])
        for label, url in targets:
            dst = open_catalog(load_settings(home=Path(tmp) / label, database_url=url), migrate=True)
            t0 = time.perf_counter()
            import_index(dst, Path(tmp) / "export")
            row[f"import_{label}_s"] = round(time.perf_counter() - t0, 2)
            row[f"verified_{label}"] = verify_index(dst, "big")["ok"]
            row[f"ratio_export_import_{label}_to_build"] = round(
                (row["export_s"] + row[f"import_{label}_s"]) / row["build_s"], 3)
            if url:
                from indexer import db

                dst.close()
                db.downgrade(db.make_engine(url), "base")  # leave the given database empty again
            else:
                dst.close()
        src.close()
    print(json.dumps(row))
    args.out.write_text(json.dumps({
        "command": command_line(__file__, args),
        "machine": "2-core CPU, no GPU", "results": [row]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
