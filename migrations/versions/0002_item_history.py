"""Item history: which generation last wrote each item, and which items each generation removed.

A search service keeps each filtered field's values in memory (`indexer.fields`); with this history it
brings them up to date after a write by reading only what the write changed, not every item again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("generation", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_items_index_generation", "items", ["index_id", "generation"])
    # History is complete from this generation on; existing rows carry 0, so it starts at each index's current one.
    op.add_column("indexes", sa.Column("history_from", sa.Integer, nullable=False, server_default="0"))
    op.execute(sa.text("UPDATE indexes SET history_from = generation"))
    op.create_table(
        "item_removals",
        sa.Column("index_id", sa.Integer, sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("faiss_id", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
    )
    op.create_index("ix_item_removals_index_generation", "item_removals", ["index_id", "generation"])


def downgrade() -> None:
    op.drop_index("ix_item_removals_index_generation", table_name="item_removals")
    op.drop_table("item_removals")
    with op.batch_alter_table("indexes") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("history_from")
    op.drop_index("ix_items_index_generation", table_name="items")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("generation")
