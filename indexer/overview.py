"""What `embedkd index list` and `GET /indexes` show of every index: its catalog row, what its files hold (shards,
deleted vectors still in them, why it needs compacting, who compacts it now) and the texts kept of its HTTP
writes. Reads the catalog and each index's manifest, no vectors."""

from __future__ import annotations

from typing import Any

from . import text_log
from .catalog import list_indexes
from .compaction import compaction_status
from .context import Catalog

__all__ = ["index_overview"]


def index_overview(catalog: Catalog) -> list[dict[str, Any]]:
    with catalog.session() as s:
        rows = [{"name": i.name, "model": i.model.name, "model_fingerprint": i.model.fingerprint,
                 "dimension": i.dimension, "factory": i.factory, "metric": i.metric, "count": i.count,
                 "state": i.state, "generation": i.generation} for i in list_indexes(s)]
    for row in rows:
        row.update(compaction_status(catalog, row["name"]), kept_texts=text_log.usage(catalog, row["name"]))
    return rows
