"""Initial catalog: models, indexes, items, adapters, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIGPK = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER only


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("normalized", sa.Boolean, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "indexes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("factory", sa.String(256), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("file", sa.String(512), nullable=True),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("next_id", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("id", _BIGPK, primary_key=True, autoincrement=True),
        sa.Column("index_id", sa.Integer, sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("external_id", sa.String(512), nullable=False),
        sa.Column("faiss_id", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("info", sa.JSON, nullable=True),
        sa.UniqueConstraint("index_id", "external_id", name="uq_items_index_external"),
        sa.UniqueConstraint("index_id", "faiss_id", name="uq_items_index_faiss"),
    )
    op.create_index("ix_items_index_id", "items", ["index_id"])
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("index_id", sa.Integer, sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source_model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("target_model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("file", sa.String(1024), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_adapters_index_id", "adapters", ["index_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params_hash", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("progress", sa.BigInteger, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=True),
        sa.Column("checkpoint", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_jobs_target", "jobs", ["target"])


def downgrade() -> None:
    op.drop_index("ix_jobs_target", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_adapters_index_id", table_name="adapters")
    op.drop_table("adapters")
    op.drop_index("ix_items_index_id", table_name="items")
    op.drop_table("items")
    op.drop_table("indexes")
    op.drop_table("models")
