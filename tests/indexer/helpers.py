"""Test helpers: snapshots of the catalog and index files, to prove a failed job changed nothing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from indexer.hashing import sha256_file
from indexer.models import Adapter, EmbeddingModel, Index, Item, Job


def snapshot(catalog) -> dict:
    with catalog.session() as s:
        rows = {
            "models": sorted((m.fingerprint, m.dimension) for m in s.scalars(select(EmbeddingModel))),
            "indexes": sorted(
                (i.name, i.count, i.generation, i.file, i.checksum, i.next_id) for i in s.scalars(select(Index))
            ),
            "items": sorted((i.index_id, i.external_id, i.faiss_id, i.content_hash) for i in s.scalars(select(Item))),
            "adapters": sorted((a.id, a.active) for a in s.scalars(select(Adapter))),
            "done_jobs": sorted(j.id for j in s.scalars(select(Job).where(Job.state == "done"))),
        }
    root = Path(catalog.settings.index_dir)
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    rows["files"] = sorted((str(p.relative_to(root)), sha256_file(p)) for p in files)
    return rows
