"""The one search path behind the CLI, the library and HTTP: query -> encoder -> adapter -> FAISS -> items.

Encoders load once per process (`encoder_for` is called once per model source) and indexes once per
generation: a write switches the catalog to a new generation and the next search picks it up.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from . import shards, store
from .adapters import adapter_path, load_adapter
from .batching import QueryBatcher
from .catalog import active_adapter, adapter_sources, check_kind, get_index, items_by_faiss_ids
from .context import Catalog
from .encoder import Encoder
from .errors import Conflict, NotFound, UserError
from .fields import FieldColumn, refresh_column
from .where import Where, check_field, check_where, select_ids

__all__ = ["Hit", "Searcher", "MAX_K", "mean_query"]

MAX_K = 10_000
_COLUMN_BYTES = 512 << 20  # filtered fields' values kept in memory (about 22 MB per field per million items)
_ALLOWED_CACHE = 64  # recent filters' answers kept too (a repeated filter then costs nothing)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    info: dict[str, Any] | None = field(default=None, compare=False)

    def as_dict(self, with_info: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "score": self.score}
        if with_info and self.info:
            out["info"] = self.info
        return out


@dataclass
class _Loaded:
    generation: int
    index: shards.ShardedIndex
    model_fingerprint: str
    model_source: str
    dimension: int
    index_id: int
    count: int
    model_kind: str


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise UserError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise UserError(f"k={k} is too large; ask for at most {MAX_K} results")
    return k


def _encode_queries(encoder: Encoder, queries: Sequence[Any]) -> np.ndarray:
    return getattr(encoder, "encode_queries", encoder)(list(queries))


def mean_query(q: np.ndarray) -> np.ndarray:
    """One query (1 x d) from several vectors of one thing, e.g. a person's crops along a track: their mean,
    made unit length when they are (a mean of unit vectors is shorter, and cosine indexes hold unit vectors)."""
    q = np.asarray(q, dtype=np.float32)
    mean = q.mean(axis=0, keepdims=True)
    if np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-3):
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return mean


def _adapted(adapter: Any, q: np.ndarray, index_vectors: np.ndarray | None) -> np.ndarray:
    """Queries through `adapter` into the index's space, unit length (a blend also takes `index_vectors`)."""
    q = np.ascontiguousarray(adapter.apply(q, index_vectors), dtype=np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q


class Searcher:
    def __init__(self, catalog: Catalog, encoder_for: Callable[[str], Encoder] | None = None,
                 use_gpu: bool = False, nprobe: int | None = None, ef_search: int | None = None,
                 query_batch: int = 0, kind: str | None = None, registered_query_models_only: bool = False) -> None:
        """`nprobe` / `ef_search` override the IVF / HNSW search defaults of `store.set_search_params`.
        `query_batch` > 0: concurrent searches share query encodings, up to that many queries a model call
        (`QueryBatcher`; for a service answering many threads at once). `kind` ("text", "image"): what
        `encoder_for`'s models take; an index of another kind is then an error before any model loads.
        `registered_query_models_only`: a `query_model` must be the index's model or one with an active adapter
        into it, as registered, before anything is loaded (a service must not load whatever a client names)."""
        self.kind = kind
        self.registered_only = registered_query_models_only
        self.catalog = catalog
        self.query_batch = query_batch
        self.use_gpu = use_gpu
        self.nprobe, self.ef_search = nprobe, ef_search
        self._encoder_for = encoder_for
        self._encoders: dict[str, Encoder] = {}
        self._indexes: dict[str, _Loaded] = {}
        self._adapters: dict[tuple[int, str], Any] = {}
        self._columns: dict[tuple[int, str], FieldColumn] = {}  # (index id, field) -> values, at their generation
        self._allowed: dict[tuple[int, int, str], np.ndarray] = {}  # (index id, generation, filter) -> FAISS ids
        self._field_reads: Counter = Counter()  # "whole" fields read, "changes" merged (`fields.refresh_column`)
        self._lock = threading.RLock()

    def held(self) -> dict[str, Any]:
        """What this searcher holds in memory: its loaded indexes (generation, vectors, shards, deleted vectors still
        in their files: when to run `index compact`) and filter fields."""
        with self._lock:
            return {"indexes": {name: {"generation": one.generation, "vectors": int(one.index.ntotal),
                                       "shards": len(one.index.shards),
                                       "deleted_listed": one.index.deleted_listed}
                                for name, one in self._indexes.items()},
                    "filter_fields": len(self._columns), "filter_field_bytes": sum(c.nbytes for c in self._columns.values()),
                    "filters_cached": len(self._allowed), "field_reads": dict(self._field_reads)}

    def encoder(self, source: str) -> Encoder:
        with self._lock:
            if source not in self._encoders:
                if self._encoder_for is None:
                    raise UserError("this searcher has no encoder loader; search with vectors instead")
                encoder = self._encoder_for(source)
                self._encoders[source] = QueryBatcher(encoder, self.query_batch) if self.query_batch > 0 else encoder
            return self._encoders[source]

    def _row(self, name: str) -> tuple:
        with self.catalog.session() as s:
            row = get_index(s, name)
            meta = (row.model.fingerprint, row.model.source, row.dimension, row.id, row.count, row.model.kind)
            return row.generation, row.file, row.checksum, row.factory, row.metric, meta

    def _load(self, name: str) -> _Loaded:
        gen, file, checksum, factory, metric, meta = self._row(name)
        with self._lock:
            cached = self._indexes.get(name)
            if cached is not None and cached.generation == gen and cached.index_id == meta[3]:
                return cached
            # a write changes few shards: those it left alone stay loaded (and on the GPU)
            reuse = ({(sh.file, sh.checksum): sh.index for sh in cached.index.shards}
                     if cached is not None and cached.index_id == meta[3] else None)

            def prepare(index: faiss.Index):
                store.set_search_params(index, self.nprobe, self.ef_search)
                if self.use_gpu:
                    from .gpu import to_gpu

                    return to_gpu(index, factory, metric)
                return index

            for _attempt in range(3):
                try:
                    index = shards.load(self.catalog.settings.index_dir / name / file, checksum, reuse, prepare)
                    break
                except UserError:
                    # a write that committed meanwhile removes the files of the generation being read: read its
                    # successor; an unchanged generation means the files are really missing or corrupt
                    latest = self._row(name)
                    if latest[0] == gen:
                        raise
                    gen, file, checksum, factory, metric, meta = latest
            else:
                raise Conflict(f"index {name!r} changed three times while loading; search again")
            cached = _Loaded(gen, index, *meta)
            self._indexes[name] = cached
            return cached

    def index_encoder(self, name: str) -> Encoder:
        """Index `name`'s own model (what writes to it encode with), of this searcher's kind."""
        loaded = self._load(name)
        if self.kind is not None:
            check_kind(name, loaded.model_kind, self.kind)
        return self._index_encoder(loaded, name)

    def _index_encoder(self, loaded: _Loaded, name: str) -> Encoder:
        """The index's own model, refused when its weights are no longer those the index was built with."""
        encoder = self.encoder(loaded.model_source)
        if encoder.record.fingerprint != loaded.model_fingerprint:
            raise Conflict(
                f"the model at {loaded.model_source!r} has changed since index {name!r} was built "
                "(weight fingerprint differs); restore it or rebuild the index"
            )
        return encoder

    def _adapter(self, loaded: _Loaded, name: str, source_fingerprint: str, source_name: str | None = None):
        key = (loaded.index_id, source_fingerprint)
        with self.catalog.session() as s:
            row = active_adapter(s, get_index(s, name), source_fingerprint, source_name)
            path, checksum, adapter_id = row.file, row.checksum, row.id
        with self._lock:
            cached = self._adapters.get(key)
            if cached is None or cached[0] != adapter_id:
                adapter = load_adapter(adapter_path(self.catalog.settings.adapter_dir, path), checksum=checksum,
                                       source_fingerprint=source_fingerprint,
                                       target_fingerprint=loaded.model_fingerprint)
                cached = (adapter_id, adapter)
                self._adapters[key] = cached
            return cached[1]

    def search_vectors(self, name: str, vectors: np.ndarray, k: int = 10, source_fingerprint: str | None = None,
                       index_vectors: np.ndarray | None = None, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """Search with query vectors from a model with `source_fingerprint` (default: the index's model).
        `index_vectors`: the same queries by the index's model, which a blended adapter needs. `where`: a
        metadata filter (`indexer.where`)."""
        check_k(k)
        where = check_where(where)
        loaded = self._load(name)
        q = vectors  # `_search` makes it a contiguous float32 matrix; an adapter takes one vector or many
        if source_fingerprint is not None and source_fingerprint != loaded.model_fingerprint:
            q = _adapted(self._adapter(loaded, name, source_fingerprint), q, index_vectors)
        return self._search(loaded, name, q, k, where)

    def search(self, name: str, queries: Sequence[Any], k: int = 10, query_model: str | None = None,
               where: dict[str, Any] | None = None, fuse: bool = False) -> list[list[Hit]]:
        """Search texts (or images) with the index's model, or with `query_model` through its adapter.
        `where`: only items whose info fields pass (`indexer.where`), e.g. {"camid": {"not_in": [3]}}.
        `fuse`: the queries show one thing (a person's crops from one track): one search, by `mean_query`
        of their vectors in the index's space."""
        check_k(k)
        where = check_where(where)
        if not len(queries):
            raise UserError("no query given; pass at least one query")
        for qtext in queries:
            if isinstance(qtext, str) and not qtext.strip():
                raise UserError("the query is empty; give some text to search for")
        loaded = self._load(name)
        if self.kind is not None:
            check_kind(name, loaded.model_kind, self.kind)
        if query_model is not None and self.registered_only:
            self._require_registered(loaded, name, query_model)
        encoder = self.encoder(query_model) if query_model is not None else self._index_encoder(loaded, name)
        q = _encode_queries(encoder, queries)
        if encoder.record.fingerprint != loaded.model_fingerprint:
            adapter = self._adapter(loaded, name, encoder.record.fingerprint, query_model)
            own = _encode_queries(self._index_encoder(loaded, name), queries) if adapter.needs_index_queries else None
            q = _adapted(adapter, q, own)
        return self._search(loaded, name, mean_query(q) if fuse else q, k, where)

    def require_registered(self, name: str, query_model: str) -> None:
        """A NotFound error unless `query_model` is index `name`'s model or has an active adapter into it."""
        self._require_registered(self._load(name), name, query_model)

    def _require_registered(self, loaded: _Loaded, name: str, query_model: str) -> None:
        # a local folder is registered by its absolute path: a relative one names the same model
        local = Path(query_model).expanduser()
        names = {query_model, str(local.resolve())} if local.exists() else {query_model}
        if loaded.model_source in names:
            return
        with self.catalog.session() as s:
            sources = adapter_sources(s, get_index(s, name))
        if not names & set(sources):
            fit = (f"embedkd reid gallery upgrade --gallery {name}" if loaded.model_kind == "image"
                   else f"embedkd upgrade fit --index {name}") + f" --model {query_model}"
            raise NotFound(
                f"query model {query_model!r} has no active adapter into index {name!r}; this service loads only the "
                f"index's model and the registered query models ({', '.join(map(repr, sources)) or 'none yet'}); "
                f"run `{fit}` first"
            )

    def load_fields(self, name: str, fields: Sequence[str]) -> None:
        """Read index `name`'s filter `fields` now (a service's start), not on the first filtered query."""
        self._columns_for(self._load(name), [check_field(f) for f in fields])

    def _columns_for(self, loaded: _Loaded, fields: list[str]) -> dict[str, FieldColumn]:
        """`fields`' columns at `loaded`'s generation or later: held ones, brought up to date where a write
        changed the index since (`indexer.fields.refresh_column`), kept for the next query."""
        with self._lock:
            columns = {f: self._columns.get((loaded.index_id, f)) for f in fields}
        stale = [f for f, c in columns.items() if c is None or c.generation < loaded.generation]
        if not stale:
            return columns
        reads: Counter = Counter()
        with self.catalog.session() as s:
            columns.update({f: refresh_column(s, loaded.index_id, f, columns[f], reads) for f in stale})
        with self._lock:
            self._field_reads.update(reads)
            for f in stale:
                held = self._columns.pop((loaded.index_id, f), None)  # another thread's may be newer: keep that
                newest = held if held is not None and held.generation > columns[f].generation else columns[f]
                self._columns[(loaded.index_id, f)] = newest  # last: the least recently read go first
            while sum(c.nbytes for c in self._columns.values()) > _COLUMN_BYTES and len(self._columns) > 1:
                del self._columns[next(iter(self._columns))]
        return columns

    def _allowed_ids(self, loaded: _Loaded, where: Where) -> np.ndarray | None:
        """The FAISS ids that pass `where` (None: all of them), from its fields' values, read once per field and
        brought up to date by what each write changed (`indexer.fields`: a filter that changes with every request
        costs one SQL scan, not one each, and a write costs reading its rows, not every row again)."""
        answer = (loaded.index_id, loaded.generation, json.dumps(where, sort_keys=True))
        with self._lock:
            allowed = self._allowed.get(answer)
        if allowed is None:
            allowed = select_ids(self._columns_for(loaded, list(where)), where)
            with self._lock:
                for key in [k for k in self._allowed if k[0] == loaded.index_id and k[1] != loaded.generation]:
                    del self._allowed[key]  # a write's new generation makes them stale
                while len(self._allowed) >= _ALLOWED_CACHE:
                    del self._allowed[next(iter(self._allowed))]
                self._allowed[answer] = allowed
        return None if len(allowed) == loaded.count else allowed

    def _search(self, loaded: _Loaded, name: str, q: np.ndarray, k: int, where: Where | None = None) -> list[list[Hit]]:
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.shape[1] != loaded.dimension:
            raise Conflict(
                f"query vectors have dimension {q.shape[1]} but index {name!r} holds {loaded.dimension}-d vectors; "
                "query with the index's model or through an adapter"
            )
        allowed = self._allowed_ids(loaded, where) if where else None
        scores, ids = loaded.index.search(q, min(k, max(loaded.index.ntotal, 1)), allowed)
        with self.catalog.session() as s:
            items = items_by_faiss_ids(s, loaded.index_id, np.unique(ids[ids >= 0]).tolist())
            found = {f: (it.external_id, it.info) for f, it in items.items()}
        return [
            [Hit(found[int(i)][0], float(sc), found[int(i)][1]) for sc, i in zip(srow, irow) if int(i) in found]
            for srow, irow in zip(scores, ids)
        ]
