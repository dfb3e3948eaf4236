"""The catalog a process works with: settings, engine and sessions, made at the edge (CLI, HTTP app)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .db import is_at_head, make_engine, make_sessionmaker, upgrade
from .errors import UserError
from .settings import Settings, load_settings

__all__ = ["Catalog", "open_catalog"]


@dataclass
class Catalog:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessions.begin() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()


def open_catalog(settings: Settings | None = None, migrate: bool | None = None) -> Catalog:
    """Open the catalog; an embedded SQLite catalog is brought to the newest schema by itself.

    A server database (PostgreSQL) is migrated only when asked (`embedkd db upgrade`), since other
    processes may share it.
    """
    settings = settings or load_settings()
    if settings.home.exists() and not settings.home.is_dir():
        raise UserError(f"EMBEDKD_HOME {settings.home} is a file; point it at a folder (it holds the catalog, "
                        "indexes and adapters)")
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    auto = settings.database_url.startswith("sqlite") if migrate is None else migrate
    try:
        at_head = is_at_head(engine)
    except Exception as err:  # unreachable server, bad URL
        raise UserError(f"cannot open the catalog database {engine.url!r}: {str(err).splitlines()[0]}") from None
    if not at_head:
        if not auto:
            raise UserError(
                f"the catalog database {engine.url!r} is not at the current schema; run `embedkd db upgrade`"
            )
        upgrade(engine)
    return Catalog(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
