"""What migration 0002 (item history) costs an existing catalog: a catalog at revision 0001 holding one index
of `--items` items with metadata, migrated to head; the seconds of the migration, against the seconds of
inserting those rows at 0001 (the same run, the same database).

    .venv/bin/python benchmarks/migration_0002.py --items 1000000 --out docs/migration_0002.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from command import command_line  # this folder is on sys.path when a script in it runs

from indexer import db


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--database-url", default=None, help="an empty database (default: SQLite in a temp folder)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'catalog.db'}"
        engine = db.make_engine(url)
        db.upgrade(engine, "0001")
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO models (id, name, source, kind, dimension, normalized, fingerprint, "
                                 "info, created_at) VALUES (1, 'm', 'm', 'text', 384, true, 'fp', '{}', "
                                 "CURRENT_TIMESTAMP)"))
            conn.execute(sa.text("INSERT INTO indexes (id, name, model_id, factory, metric, dimension, count, "
                                 "generation, next_id, state, created_at, updated_at) VALUES (1, 'big', 1, 'Flat', "
                                 f"'ip', 384, {args.items}, 7, {args.items}, 'ready', CURRENT_TIMESTAMP, "
                                 "CURRENT_TIMESTAMP)"))
            insert = sa.text("INSERT INTO items (index_id, external_id, faiss_id, content_hash, info) "
                             "VALUES (1, :e, :f, :h, :i)")
            for start in range(0, args.items, 50_000):
                conn.execute(insert, [{"e": f"d{i}", "f": i, "h": f"{i:064x}",
                                       "i": json.dumps({"title": f"document {i}", "metadata": {"year": 2000 + i % 25}})}
                                      for i in range(start, min(start + 50_000, args.items))])
        insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        db.upgrade(engine)
        migrate_s = time.perf_counter() - t0
        with engine.connect() as conn:
            history = conn.execute(sa.text("SELECT generation, history_from FROM indexes")).one()
            stamped = conn.execute(sa.text("SELECT count(*) FROM items WHERE generation = 0")).scalar()
        if url.startswith("postgresql"):
            db.downgrade(engine, "base")  # leave the given database as it was
        engine.dispose()
    row = {"items": args.items, "insert_at_0001_s": round(insert_s, 2), "migrate_to_head_s": round(migrate_s, 2),
           "ratio_migrate_to_insert": round(migrate_s / insert_s, 3), "history_from": history[1],
           "generation": history[0], "items_stamped_0": stamped}
    print(json.dumps(row))
    args.out.write_text(json.dumps({
        "command": command_line(__file__, args),
        "database": "PostgreSQL" if args.database_url else "SQLite", "machine": "2-core CPU, no GPU",
        "results": [row]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
