"""Entry point of `embedkd`. Heavy imports (torch, faiss) happen inside the command handlers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from indexer.errors import UserError

from . import db_cmd, distill_cmd, eval_cmd, index_cmd, reid_cmd, serve_cmd, teacher_cmd, upgrade_cmd

__all__ = ["main", "build_parser"]

_COMMANDS = (index_cmd, eval_cmd, distill_cmd, teacher_cmd, upgrade_cmd, reid_cmd, serve_cmd, db_cmd)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit 2, as for any bad input
        sys.stderr.write(f"embedkd: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedkd", description="Distil small embedding models, index their embeddings in FAISS, and "
                     "upgrade the model without reindexing. `embedkd COMMAND -h` for each command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return int(handler(args) or 0)
    except UserError as err:
        sys.stderr.write(f"embedkd: error: {_one_line(str(err))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("embedkd: interrupted; a rerun of the same command resumes where it stopped\n")
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
