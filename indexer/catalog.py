"""Catalog queries and updates. Every function takes a Session; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from .encoder import ModelRecord
from .errors import NotFound, UserError
from .models import Adapter, EmbeddingModel, Index, Item, item_removals

__all__ = [
    "ensure_model",
    "find_model",
    "get_index",
    "check_kind",
    "KIND_COMMANDS",
    "list_indexes",
    "items_by_faiss_ids",
    "items_by_external_ids",
    "get_item",
    "insert_items",
    "delete_items_by_faiss_ids",
    "update_item_infos",
    "REMOVALS_KEPT",
    "active_adapter",
    "model_from_record",
]


def find_model(session: Session, fingerprint: str) -> EmbeddingModel | None:
    return session.scalar(select(EmbeddingModel).where(EmbeddingModel.fingerprint == fingerprint))


def ensure_model(session: Session, record: ModelRecord) -> EmbeddingModel:
    """The catalog row for this model version, created on first use (keyed by weight fingerprint)."""
    row = find_model(session, record.fingerprint)
    if row is None:
        row = model_from_record(record)
        session.add(row)
        session.flush()
    elif record.info and not row.info:
        row.info = dict(record.info)
    return row


def model_from_record(record: ModelRecord) -> EmbeddingModel:
    return EmbeddingModel(
        name=record.name,
        source=record.source,
        kind=record.kind,
        dimension=record.dimension,
        normalized=record.normalized,
        fingerprint=record.fingerprint,
        info=dict(record.info),
    )


def get_index(session: Session, name: str, kind: str | None = None) -> Index:
    """Index `name`; with `kind`, one whose model embeds that kind of input (`check_kind`)."""
    row = session.scalar(select(Index).where(Index.name == name))
    if row is None:
        known = session.scalars(select(Index.name).order_by(Index.name).limit(10)).all()
        hint = f"known indexes: {', '.join(known)}" if known else "the catalog has no index yet"
        raise NotFound(f"no index named {name!r} ({hint}); build one with `embedkd index build`")
    if kind is not None:
        check_kind(name, row.model.kind, kind)
    return row


# the command group for an index whose model embeds each kind of input (both have add / drop / query)
KIND_COMMANDS = {"text": "embedkd index", "image": "embedkd reid gallery"}


def check_kind(name: str, index_kind: str, kind: str) -> None:
    """Refuse to encode `kind` inputs for an index whose model embeds `index_kind`, before a model is loaded
    as the wrong kind (whose own error would blame the model's folder, which the user never passed)."""
    if index_kind != kind:
        raise UserError(f"index {name!r} holds {index_kind} embeddings, not {kind}; "
                        f"use the `{KIND_COMMANDS.get(index_kind, 'embedkd')}` commands with it")


def list_indexes(session: Session) -> Sequence[Index]:
    return session.scalars(select(Index).order_by(Index.name)).all()


def items_by_faiss_ids(session: Session, index_id: int, faiss_ids: Iterable[int]) -> dict[int, Item]:
    ids = [int(i) for i in faiss_ids if int(i) >= 0]
    out: dict[int, Item] = {}
    for start in range(0, len(ids), 500):  # stay under SQL parameter limits
        chunk = ids[start : start + 500]
        rows = session.scalars(select(Item).where(Item.index_id == index_id, Item.faiss_id.in_(chunk)))
        out.update({r.faiss_id: r for r in rows})
    return out


def items_by_external_ids(session: Session, index_id: int, external_ids: Iterable[str]) -> dict[str, Item]:
    ids = list(external_ids)
    out: dict[str, Item] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.scalars(select(Item).where(Item.index_id == index_id, Item.external_id.in_(chunk)))
        out.update({r.external_id: r for r in rows})
    return out


def get_item(session: Session, index_name: str, external_id: str) -> Item:
    index = get_index(session, index_name)
    item = session.scalar(select(Item).where(Item.index_id == index.id, Item.external_id == external_id))
    if item is None:
        raise NotFound(f"index {index_name!r} has no item with id {external_id!r}")
    return item


def insert_items(
    session: Session,
    index_id: int,
    external_ids: Sequence[str],
    faiss_ids: np.ndarray,
    content_hashes: Sequence[str],
    infos: Sequence[dict[str, Any] | None],
    generation: int,
) -> None:
    """Insert item rows, written by the index's generation `generation`."""
    if not len(external_ids) == len(faiss_ids) == len(content_hashes) == len(infos):
        raise ValueError("insert_items: ids, faiss ids, hashes and infos differ in length")
    for start in range(0, len(external_ids), 5000):  # rows made per batch: a build may insert millions
        part = slice(start, start + 5000)
        rows = [{"index_id": index_id, "external_id": e, "faiss_id": int(f), "content_hash": h, "info": i,
                 "generation": generation}
                for e, f, h, i in zip(external_ids[part], faiss_ids[part], content_hashes[part], infos[part])]
        session.execute(Item.__table__.insert(), rows)


def update_item_infos(session: Session, index_id: int, infos: dict[int, dict[str, Any] | None], generation: int) -> None:
    """Set the `info` (metadata) of items by FAISS id, in one executemany, as generation `generation`."""
    if infos:
        table = Item.__table__
        stmt = table.update().where(table.c.index_id == index_id, table.c.faiss_id == bindparam("fid"))
        session.execute(stmt.values(info=bindparam("new_info"), generation=generation),
                        [{"fid": f, "new_info": i} for f, i in infos.items()])


REMOVALS_KEPT = 1000  # generations of removals kept: a service further behind reads its filter fields afresh


def delete_items_by_faiss_ids(session: Session, index_id: int, faiss_ids: Sequence[int], generation: int) -> None:
    """Delete items by FAISS id, recording the removals as generation `generation`'s."""
    ids = [int(i) for i in faiss_ids]
    if not ids:
        return
    for start in range(0, len(ids), 500):
        session.execute(delete(Item).where(Item.index_id == index_id, Item.faiss_id.in_(ids[start : start + 500])))
    session.execute(item_removals.insert(), [{"index_id": index_id, "faiss_id": i, "generation": generation} for i in ids])
    oldest = generation - REMOVALS_KEPT
    session.execute(delete(item_removals).where(item_removals.c.index_id == index_id,
                                                item_removals.c.generation <= oldest))
    session.execute(update(Index).where(Index.id == index_id, Index.history_from < oldest).values(history_from=oldest))


def adapter_sources(session: Session, index: Index) -> list[str]:
    """The models (as their sources were registered: names or paths) with an active adapter into `index`."""
    rows = session.scalars(
        select(EmbeddingModel.source)
        .join(Adapter, Adapter.source_model_id == EmbeddingModel.id)
        .where(Adapter.index_id == index.id, Adapter.active.is_(True))
    )
    return sorted(set(rows))


def active_adapter(session: Session, index: Index, source_fingerprint: str, source_name: str | None = None) -> Adapter:
    """The active adapter that maps `source_fingerprint`'s space (the model the user named `source_name`) into
    the index's model space."""
    row = session.scalar(
        select(Adapter)
        .join(EmbeddingModel, Adapter.source_model_id == EmbeddingModel.id)
        .where(Adapter.index_id == index.id, Adapter.active.is_(True), EmbeddingModel.fingerprint == source_fingerprint)
        .order_by(Adapter.created_at.desc())
    )
    if row is None:
        named = f" {source_name!r}" if source_name else ""
        raise NotFound(
            f"index {index.name!r} was built with model {index.model.name!r} and the query model{named} has no active "
            f"adapter into its space; run `embedkd upgrade fit --index {index.name} --model {source_name or 'MODEL'}` "
            "or query with the index's own model"
        )
    return row
