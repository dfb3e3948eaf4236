"""HTTP search service (FastAPI). The same `Searcher` as the CLI; OpenAPI docs at /docs."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from . import text_log
from .auth import require_token
from .auto_compact import AutoCompactor
from .auto_gc import AutoCollector
from .build import add_documents, delete_items
from .catalog import get_index, get_item, list_indexes
from .corpus import Doc, ListSource, parse_record
from .errors import UserError
from .jobs import count_by_state, list_jobs
from .metrics import instrument
from .overview import index_overview
from .search import MAX_K, Searcher
from .where import parse_where
from .write_queue import WriteQueue

__all__ = ["create_app", "SearchRequest", "MAX_DOCUMENTS"]

log = logging.getLogger(__name__)
MAX_DOCUMENTS = 10_000  # documents a request may add: larger loads are indexing jobs (`embedkd index add`)


class SearchRequest(BaseModel):
    index: str = Field(description="index name")
    query: str = Field(description="query text")
    k: int = Field(10, description=f"number of results, 1..{MAX_K}")
    query_model: str | None = Field(None, description="model for the query; routed through the index's adapter")
    with_info: bool = Field(False, description="include each item's stored metadata")
    where: dict[str, Any] | None = Field(
        None, description='only items whose info fields pass, e.g. {"camid": [1, 2], "metadata.year": {"gte": 2019}}; '
                    'operators in, not_in, gt, gte, lt, lte')


class DocumentsRequest(BaseModel):
    documents: list[dict[str, Any]] = Field(
        description='corpus records, as in corpus.jsonl: {"_id" (or "id"), "title", "text", "metadata"}; '
                    f"1..{MAX_DOCUMENTS} a request")


class SearchHit(BaseModel):
    id: str
    score: float
    info: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    results: list[SearchHit]


def _searcher(request: Request) -> Searcher:
    return request.app.state.searcher


SearcherDep = Annotated[Searcher, Depends(_searcher)]


def _add_keeping_texts(searcher: Searcher, index: str, docs: list[Doc], keep_texts: bool) -> dict[str, Any]:
    kept: list[Path] = []

    def keep(written) -> None:
        # before the commit, the index held: a write is in the index only with its texts kept (a backfill reads
        # them), and a failure to keep them fails the write, which the client sends again. Texts of a write
        # whose commit then fails are not used: a backfill takes a text only where the index holds its hash
        path = text_log.append(searcher.catalog, index, written, pending=True)
        kept.extend([path] if path is not None else [])

    out = add_documents(searcher.catalog, index, searcher.index_encoder(index), ListSource(docs), progress=False,
                        lock_wait_s=1.0, keep_failed=False, before_commit=keep if keep_texts else None)
    for path in kept:
        text_log.settle(searcher.catalog, index, path)
    return out


def create_app(searcher: Searcher, token: str | None = None, write_patience_s: float = 10.0,
               compactor: AutoCompactor | None = None, keep_texts: bool = True,
               collector: AutoCollector | None = None) -> FastAPI:
    """The search app; with `token`, requests need it as a bearer token (`indexer.auth`). A document write
    that finds its index held by another process is tried again for `write_patience_s` before a 409.
    `compactor`: compacts the catalog's indexes in the background while the app runs; `collector`: deletes what
    killed processes left (`index gc`), likewise. `keep_texts`: the texts of documents written over HTTP are kept
    for an upgrade to read (`indexer.text_log`)."""
    background = [task for task in (compactor, collector) if task is not None]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for task in background:
            task.start()
        try:
            yield
        finally:
            for task in background:
                await run_in_threadpool(task.stop)

    app = FastAPI(title="embedkd search", version="0.1.0", lifespan=lifespan,
                  description="Search FAISS indexes of the embedkd catalog.")
    app.state.searcher = searcher
    # concurrent document writes to an index are applied together (one generation), not refused
    writes = WriteQueue(
        # the queue waits out a held index itself (patience_s), so its adds take the lock as deletes do; a
        # failed request's chunks go at once (its client resends it, perhaps merged with others)
        lambda index, docs: _add_keeping_texts(searcher, index, docs, keep_texts),
        lambda index, ids, purge=False: delete_items(searcher.catalog, index, ids, purge=purge),
        patience_s=write_patience_s)
    if token:
        require_token(app, token)
    # added last, so it runs first: refused requests are counted too
    instrument(app, searcher.held, lambda: count_by_state(searcher.catalog),
               lambda: {**writes.counts, "waiting": writes.waiting()},
               lambda: {"compactions": dict(compactor.counts) if compactor is not None else {},
                        "gc": dict(collector.counts) if collector is not None else {}},
               lambda: {"usage": text_log.every_usage(searcher.catalog), "merges": text_log.merge_counts()})

    @app.exception_handler(UserError)
    async def _user_error(_request: Request, err: UserError) -> JSONResponse:
        return JSONResponse(status_code=err.status_code, content={"detail": " ".join(str(err).split())})

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, err: OSError) -> JSONResponse:
        # a write fails whole (an add commits with its texts kept or not at all; a purge's files are owed until
        # done), so the client can send it again; 507 says why when the disk is full
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        return JSONResponse(status_code=507 if full else 500, content={
            "detail": f"the server could not write its files: {err}; send the request again"
                      + (" once it has free disk space" if full else "")})

    @app.get("/health")
    def health(s: SearcherDep) -> dict[str, Any]:
        with s.catalog.session() as session:
            n = len(list_indexes(session))
        return {"status": "ok", "indexes": n}

    @app.get("/indexes")
    def indexes(s: SearcherDep) -> dict[str, Any]:
        """Every index, with what its files hold: shards, deleted vectors still in them, why it needs compacting
        (null when it does not), who compacts it now, and the texts kept of its HTTP writes (files, bytes), as
        `embedkd index list` shows."""
        return {"indexes": index_overview(s.catalog)}

    def _run(s: Searcher, req: SearchRequest) -> SearchResponse:
        hits = s.search(req.index, [req.query], k=req.k, query_model=req.query_model, where=req.where)[0]
        return SearchResponse(results=[SearchHit(**h.as_dict(req.with_info)) for h in hits])

    @app.post("/indexes/{index}/documents")
    def add(index: str, body: DocumentsRequest, s: SearcherDep) -> dict[str, Any]:
        """Add or update documents (the index's own model embeds them; unchanged ones are skipped), as
        `embedkd index add` does: a new generation, seen by the next search. Requests arriving while
        the index is being written are applied together in one write (`requests` says how many; the
        counts are that write's)."""
        if not 1 <= len(body.documents) <= MAX_DOCUMENTS:
            raise UserError(f"send 1 to {MAX_DOCUMENTS} documents a request, got {len(body.documents)}")
        docs = [parse_record(row, f"document {i + 1}") for i, row in enumerate(body.documents)]
        empty = next((d.id for d in docs if not d.content), None)
        if empty is not None:
            raise UserError(f"document {empty!r} has neither title nor text; there is nothing to embed")
        return writes.add(index, docs)

    @app.delete("/indexes/{index}/items/{item_id}")
    def delete(index: str, item_id: str, s: SearcherDep, purge: bool = False) -> dict[str, Any]:
        """Delete an item; its vector is skipped until its shard is rewritten, or with `purge=true` leaves the
        index files now."""
        with s.catalog.session() as session:
            get_index(session, index, kind=s.kind or "text")
        return writes.delete(index, [item_id], purge=purge)

    @app.get("/jobs")
    def job_list(s: SearcherDep, index: str | None = None, state: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        """Build, add and compaction jobs, newest first: state, progress, errors, bytes of encoded chunks kept for
        resuming."""
        return {"jobs": list_jobs(s.catalog, target=index, state=state, limit=limit)}

    @app.post("/search", response_model=SearchResponse, response_model_exclude_none=True)
    async def search(req: SearchRequest, s: SearcherDep) -> SearchResponse:
        return await run_in_threadpool(_run, s, req)

    @app.get("/search", response_model=SearchResponse, response_model_exclude_none=True)
    async def search_get(s: SearcherDep, index: str, q: Annotated[str, Query(description="query text")],
                         k: int = 10, query_model: str | None = None,
                         where: Annotated[list[str], Query(description="FIELD=V, FIELD!=V, FIELD>=N...: as --where")] = [],  # noqa: B006
                         ) -> SearchResponse:
        req = SearchRequest(index=index, query=q, k=k, query_model=query_model, where=parse_where(where))
        return await run_in_threadpool(_run, s, req)

    @app.get("/items/{item_id}")
    def item(item_id: str, index: str, s: SearcherDep) -> dict[str, Any]:
        with s.catalog.session() as session:
            it = get_item(session, index, item_id)
            return {"id": it.external_id, "index": index, "faiss_id": it.faiss_id,
                    "content_hash": it.content_hash, "info": it.info}

    return app
