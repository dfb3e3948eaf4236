"""`embedkd teacher`: placeholder until its issue lands."""

from __future__ import annotations

import argparse

from indexer.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="(not yet available)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise UserError("`embedkd teacher` is not available in this version")
