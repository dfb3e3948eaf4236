"""Catalog schema: embedding models, indexes, items, adapters and jobs.

The schema is made only by the Alembic migrations in migrations/; these classes describe it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "EmbeddingModel", "Index", "Item", "item_removals", "Adapter", "Job"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class EmbeddingModel(Base):
    """A model version, identified by a fingerprint of its weights."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(32), default="text")
    dimension: Mapped[int] = mapped_column(Integer)
    normalized: Mapped[bool] = mapped_column(Boolean, default=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    # Lineage and evaluation for distilled models: teacher, data, loss, steps, metrics.
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Index(Base):
    __tablename__ = "indexes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    factory: Mapped[str] = mapped_column(String(256))
    metric: Mapped[str] = mapped_column(String(16), default="ip")
    dimension: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Current FAISS file (relative to the index directory) and its sha256; a write makes a new
    # generation file and switches this row last, so a failed write leaves the old one in place.
    file: Mapped[str | None] = mapped_column(String(512), nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    next_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # Items' changes (Item.generation, item_removals) are recorded completely from this generation on; a
    # backfill's switch, which replaces every item, moves it forward.
    history_from: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(32), default="ready")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)

    model: Mapped[EmbeddingModel] = relationship()


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("index_id", "external_id", name="uq_items_index_external"),
        UniqueConstraint("index_id", "faiss_id", name="uq_items_index_faiss"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(512))
    faiss_id: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)  # the index generation that last wrote this row


# FAISS ids that a generation removed (deleted, or replaced by a changed document): with Item.generation, what
# a search service needs to bring its in-memory field values up to date after a write (`indexer.fields`).
item_removals = Table(
    "item_removals",
    Base.metadata,
    Column("index_id", Integer, ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
    Column("faiss_id", BigInteger, nullable=False),
    Column("generation", Integer, nullable=False),
)


class Adapter(Base):
    """A fitted map from a query model's space into an index's model space."""

    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"), index=True)
    source_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    target_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    kind: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(String(1024))
    checksum: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    source_model: Mapped[EmbeddingModel] = relationship(foreign_keys=[source_model_id])
    target_model: Mapped[EmbeddingModel] = relationship(foreign_keys=[target_model_id])


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(256), index=True)
    state: Mapped[str] = mapped_column(String(16), default="running")
    # Hash of what defines the job (corpus, model, factory): a rerun resumes only the same job.
    params_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)
