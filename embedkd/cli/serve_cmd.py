"""`embedkd serve`: the HTTP search API (FastAPI + uvicorn), OpenAPI docs at /docs."""

from __future__ import annotations

import argparse

from .runtime import add_encoder_options, catalog_from_env, text_encoder_loader

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve search over HTTP (OpenAPI docs at /docs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--preload", action="append", default=[], metavar="INDEX",
                   help="load this index and its model at start (repeatable)")
    p.add_argument("--gpu", action="store_true", help="search on the GPU (FAISS GPU, or exact torch search for Flat)")
    p.add_argument("--query-batch", type=int, default=64, metavar="N",
                   help="encode the queries of concurrent requests together, up to N per model call "
                        "(default 64; 0: each request encodes its own query)")
    add_encoder_options(p)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from embedkd.serve_app import build_app
    from indexer.errors import UserError

    if args.query_batch < 0:
        raise UserError(f"--query-batch must be 0 (off) or a positive number of queries, got {args.query_batch}")
    app = build_app(catalog_from_env(), text_encoder_loader(args), preload=args.preload, use_gpu=args.gpu,
                    query_batch=args.query_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
