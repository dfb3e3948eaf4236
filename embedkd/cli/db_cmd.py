"""`embedkd db upgrade|downgrade|current`: schema migrations of the catalog (Alembic)."""

from __future__ import annotations

import argparse

from .output import emit

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="catalog schema migrations")
    dsub = p.add_subparsers(dest="db_command", required=True, parser_class=type(p))
    for name, helptext in (("upgrade", "migrate to a revision (default head)"),
                           ("downgrade", "migrate down to a revision (default base: drops the catalog!)")):
        c = dsub.add_parser(name, help=helptext)
        c.add_argument("revision", nargs="?", default="head" if name == "upgrade" else "base")
        c.add_argument("--json", action="store_true")
        c.set_defaults(handler=_migrate, direction=name)
    cur = dsub.add_parser("current", help="show the catalog's revision")
    cur.add_argument("--json", action="store_true")
    cur.set_defaults(handler=_current)


def _engine():
    from indexer.db import make_engine
    from indexer.settings import load_settings

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.database_url)


def _migrate(args: argparse.Namespace) -> int:
    from indexer import db

    engine = _engine()
    (db.upgrade if args.direction == "upgrade" else db.downgrade)(engine, args.revision)
    return _current(args)


def _current(args: argparse.Namespace) -> int:
    from alembic.runtime.migration import MigrationContext

    with _engine().connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    emit({"revision": ",".join(heads) or None}, args.json)
    return 0
