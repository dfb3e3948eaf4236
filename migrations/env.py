"""Alembic environment: the engine comes from the caller (indexer.db) or EMBEDKD_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from indexer.db import make_engine
from indexer.models import Base
from indexer.settings import load_settings

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    engine = config.attributes.get("engine") or make_engine(load_settings().database_url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
