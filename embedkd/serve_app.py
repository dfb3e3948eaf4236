"""The HTTP app with every route of the product: index search (indexer) plus ReID galleries when present."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from indexer.auto_compact import AutoCompactor
from indexer.auto_gc import AutoCollector
from indexer.context import Catalog
from indexer.encoder import Encoder
from indexer.search import Searcher
from indexer.service import create_app
from reid.uploads import collect_uploads

__all__ = ["build_app"]


def build_app(catalog: Catalog, encoder_for: Callable[[str], Encoder], preload: list[str] | None = None,
              use_gpu: bool = False, query_batch: int = 64, token: str | None = None,
              preload_fields: list[tuple[str, str]] | None = None, compact_every_s: float = 0.0,
              compact_deleted: float = 0.05, keep_texts: bool = True, gc_every_s: float = 0.0) -> FastAPI:
    """`query_batch`: concurrent requests share query encodings up to this many a model call (0: each alone);
    `token`: requests need it as a bearer token; `preload_fields`: (index, field) filter fields read at start;
    `compact_every_s`: indexes that need it are compacted in the background this often (0: never), one whose
    deleted vectors reach `compact_deleted` of its vectors among them (`indexer.auto_compact`); `keep_texts`: the
    texts written over HTTP are kept for an upgrade (`indexer.text_log`); `gc_every_s`: what killed processes left
    is deleted this often (0: never; `indexer.auto_gc`)."""
    compactor = AutoCompactor(catalog, compact_every_s, compact_deleted) if compact_every_s else None
    collector = AutoCollector(catalog, gc_every_s, also=[collect_uploads]) if gc_every_s else None
    searcher = Searcher(catalog, encoder_for, use_gpu=use_gpu, query_batch=query_batch, kind="text",
                        registered_query_models_only=True)
    for name in preload or []:
        searcher.search(name, ["warm-up"], k=1)  # loads the index and its model once, before traffic
    for name, field_name in preload_fields or []:
        searcher.load_fields(name, [field_name])  # a filter's first query then costs milliseconds, not a scan
    app = create_app(searcher, token=token, compactor=compactor, keep_texts=keep_texts, collector=collector)
    from reid.http import gallery_router

    app.include_router(gallery_router(catalog))
    return app
