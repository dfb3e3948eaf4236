"""Register a fitted adapter for an index: write its file, add the catalog row, make it the active one.

The file is written first (atomically); the row is committed last, in one transaction that also
deactivates the index's other adapters for the same query model. A failure leaves the catalog as it
was (and removes the new file).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import update

from indexer.adapters import Adapter, save_adapter
from indexer.catalog import ensure_model, get_index
from indexer.context import Catalog
from indexer.encoder import ModelRecord
from indexer.errors import Conflict
from indexer.models import Adapter as AdapterRow

__all__ = ["adapter_file_name", "register_adapter"]


def adapter_file_name(index_name: str, adapter: Adapter) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"{time.time_ns() % 1_000_000_000:09d}"
    return f"{index_name}/{adapter.source_fingerprint[:12]}-{adapter.kind}-{stamp}.npz"


def register_adapter(catalog: Catalog, index_name: str, adapter: Adapter, source: ModelRecord,
                     metrics: dict[str, Any], activate: bool = True) -> dict[str, Any]:
    """Save `adapter` (v2 `source` -> the index's model) and add its catalog row; returns the row's fields."""
    with catalog.session() as s:
        index = get_index(s, index_name)
        target_fp = index.model.fingerprint
    if source.fingerprint == target_fp:
        raise Conflict(f"index {index_name!r} already uses this model; no adapter is needed")
    adapter = replace(adapter, source_fingerprint=source.fingerprint, target_fingerprint=target_fp)
    rel = adapter_file_name(index_name, adapter)
    path = Path(catalog.settings.adapter_dir) / rel
    checksum = save_adapter(adapter, path)
    try:
        with catalog.session() as s:
            index = get_index(s, index_name)
            if index.model.fingerprint != target_fp:
                raise Conflict(f"index {index_name!r} changed model while the adapter was fitted; fit again")
            src = ensure_model(s, source)
            if activate:
                s.execute(
                    update(AdapterRow)
                    .where(AdapterRow.index_id == index.id, AdapterRow.source_model_id == src.id)
                    .values(active=False)
                )
            row = AdapterRow(index_id=index.id, source_model_id=src.id, target_model_id=index.model_id,
                             kind=adapter.kind, file=rel, checksum=checksum, metrics=metrics, active=activate)
            s.add(row)
            s.flush()
            out = {"adapter_id": row.id, "file": str(path), "checksum": checksum, "active": activate}
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return out
