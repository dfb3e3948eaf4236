"""What a build's final transaction costs in the catalog: `indexer.catalog.insert_items` for N item rows
on SQLite (a fresh catalog file) and on a fresh PostgreSQL database, timed to the commit.

    .venv/bin/python benchmarks/catalog_insert.py --rows 311000 --out docs/catalog_insert.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path


def main() -> None:
    import numpy as np
    from sqlalchemy import create_engine, text

    from indexer.catalog import ensure_model, insert_items
    from indexer.context import open_catalog
    from indexer.encoder import ModelRecord
    from indexer.models import Index
    from indexer.settings import load_settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=311_000)
    ap.add_argument("--pg-admin", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--out")
    args = ap.parse_args()
    n = args.rows
    ids = [f"{i}-doc" for i in range(n)]
    keys = [f"{i:064x}" for i in range(n)]
    infos = [{"title": f"title of document {i}"} for i in range(n)]
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgresql"):
            admin, db = None, f"embedkd_bench_{uuid.uuid4().hex[:8]}"
            if kind == "postgresql":
                admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")
                with admin.connect() as c:
                    c.execute(text(f'CREATE DATABASE "{db}"'))
                url = args.pg_admin.rsplit("/", 1)[0] + f"/{db}"
                catalog = open_catalog(load_settings(home=Path(tmp) / kind, database_url=url), migrate=True)
            else:
                catalog = open_catalog(load_settings(home=Path(tmp) / kind))
            t0 = time.perf_counter()
            with catalog.session() as s:
                model = ensure_model(s, ModelRecord(name="m", source="m", dimension=4, fingerprint="f" * 64))
                row = Index(name="i", model_id=model.id, factory="Flat", metric="ip", dimension=4, count=n, file="x",
                            checksum="c", generation=1, next_id=n, state="ready")
                s.add(row)
                s.flush()
                insert_items(s, row.id, ids, np.arange(n), keys, infos, generation=1)
            seconds[kind] = time.perf_counter() - t0
            print(f"{kind}: {n} rows in {seconds[kind]:.1f} s", flush=True)
            catalog.close()
            if admin is not None:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE "{db}" WITH (FORCE)'))
    report = {"rows": n, "seconds_to_commit": seconds,
              "microseconds_per_row": {k: v / n * 1e6 for k, v in seconds.items()},
              "command": f"benchmarks/catalog_insert.py --rows {n}"}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
