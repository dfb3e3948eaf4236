"""`embedkd serve`: the HTTP search API (FastAPI + uvicorn), OpenAPI docs at /docs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .runtime import add_encoder_options, catalog_from_env, text_encoder_loader

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve search over HTTP (OpenAPI docs at /docs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--preload", action="append", default=[], metavar="INDEX",
                   help="load this index and its model at start (repeatable)")
    p.add_argument("--preload-field", action="append", default=[], metavar="INDEX:FIELD",
                   help="read this filter field of this index at start (repeatable): the first filtered query "
                        "then needs no scan of the catalog (5 s a field for a million items on SQLite)")
    p.add_argument("--gpu", action="store_true", help="search on the GPU (FAISS GPU, or exact torch search for Flat)")
    p.add_argument("--query-batch", type=int, default=64, metavar="N",
                   help="encode the queries of concurrent requests together, up to N per model call "
                        "(default 64; 0: each request encodes its own query)")
    p.add_argument("--token-file", default=None, metavar="PATH",
                   help="require the token in this file as 'Authorization: Bearer TOKEN' on every route but "
                        "/health, /metrics and the docs (default: $EMBEDKD_API_TOKEN; neither: no token)")
    p.add_argument("--compact-every", type=float, default=300.0, metavar="SECONDS",
                   help="check every index this often and compact those with many deleted vectors or small shards, "
                        "in the background: writes and searches go on (default 300; 0: never, run `index compact`)")
    p.add_argument("--compact-deleted", type=float, default=0.05, metavar="SHARE",
                   help="compact an index once this share of the vectors in its files is deleted (default 0.05)")
    p.add_argument("--gc-every", type=float, default=3600.0, metavar="SECONDS",
                   help="delete what killed processes left (as `index gc`, each file in the log) this often, in the "
                        "background (default 3600; 0: never, run `index gc`)")
    p.add_argument("--no-keep-texts", action="store_true",
                   help="do not keep the texts of documents written over HTTP (EMBEDKD_HOME/texts/): a backfill to a "
                        "new model then needs them from you with --corpus")
    add_encoder_options(p)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from embedkd.serve_app import build_app
    from indexer.errors import UserError

    if args.query_batch < 0:
        raise UserError(f"--query-batch must be 0 (off) or a positive number of queries, got {args.query_batch}")
    fields = [tuple(spec.split(":", 1)) for spec in args.preload_field]
    bad = next((spec for spec, f in zip(args.preload_field, fields) if len(f) != 2 or not all(f)), None)
    if bad is not None:
        raise UserError(f"--preload-field {bad!r} is not INDEX:FIELD (e.g. scifact:metadata.year)")
    token = _token(args.token_file)
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: serving on {args.host} without a token: anyone who can reach it can search, "
                         "and add and delete documents and gallery crops; set EMBEDKD_API_TOKEN or --token-file\n")
    for option, value in (("--compact-every", args.compact_every), ("--gc-every", args.gc_every)):
        if value < 0:
            raise UserError(f"{option} must be 0 (never) or a positive number of seconds, got {value}")
    app = build_app(catalog_from_env(), text_encoder_loader(args), preload=args.preload, use_gpu=args.gpu,
                    query_batch=args.query_batch, token=token, preload_fields=fields,
                    compact_every_s=args.compact_every, compact_deleted=args.compact_deleted,
                    keep_texts=not args.no_keep_texts, gc_every_s=args.gc_every)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _token(path: str | None) -> str | None:
    """The bearer token from --token-file, else $EMBEDKD_API_TOKEN, else None (no token)."""
    from indexer.errors import UserError

    if path is None:
        token, source = os.environ.get("EMBEDKD_API_TOKEN", ""), "EMBEDKD_API_TOKEN"
        if not token:
            return None
    else:
        source = f"--token-file {path}"
        try:
            token = Path(path).read_text().strip()
        except OSError as err:
            raise UserError(f"{source}: {err.strerror}; give a readable file holding the token") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UserError(f"{source} must hold one token of 16 or more characters without spaces "
                        "(e.g. from `openssl rand -hex 32`)")
    return token
