"""The schema is made only by the Alembic migrations: up to head, down to base, up again."""

from __future__ import annotations

from sqlalchemy import inspect

from indexer import db
from indexer.models import Base

TABLES = {"models", "indexes", "items", "adapters", "jobs"}


def _roundtrip(url: str) -> None:
    engine = db.make_engine(url)
    db.upgrade(engine)
    assert db.is_at_head(engine)
    insp = inspect(engine)
    assert TABLES <= set(insp.get_table_names())
    # Every column the ORM declares exists in the migrated schema.
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in insp.get_columns(table.name)}
        assert {c.name for c in table.columns} <= have, table.name
    db.downgrade(engine, "base")
    assert TABLES.isdisjoint(inspect(engine).get_table_names())
    assert not db.is_at_head(engine)
    db.upgrade(engine)
    assert db.is_at_head(engine)
    engine.dispose()


def test_migrations_up_down_sqlite(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'catalog.db'}")


def test_migrations_up_down_postgres(pg_url):
    _roundtrip(pg_url)


def test_fresh_sqlite_catalog_is_brought_to_head(tmp_path):
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    cat = open_catalog(load_settings(home=tmp_path / "h"))
    assert db.is_at_head(cat.engine)
    assert (tmp_path / "h" / "catalog.db").is_file()
