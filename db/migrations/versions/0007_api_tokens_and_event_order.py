"""API tokens, and the order in which events can be read.

- `api_tokens`: the HTTP API's bearer tokens, by role; only a SHA-256 hash of each is stored.
- `outbox.xid`: the id of the transaction that wrote the event. A reader serves events in
  (xid, id) order, and only those of transactions older than every transaction still running
  (`pg_snapshot_xmin`): a row's id is drawn before its transaction commits, so two writers
  committing out of order would otherwise let a reader pass over an event that commits later.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('checkout', 'payments', 'warehouse', 'ops')", name="token_role"),
    )
    op.add_column(
        "outbox",
        sa.Column("xid", sa.Text(), server_default=sa.text("pg_current_xact_id()::text"), nullable=False),
    )
    op.execute("ALTER TABLE outbox ALTER COLUMN xid DROP DEFAULT")
    op.execute("ALTER TABLE outbox ALTER COLUMN xid TYPE xid8 USING xid::xid8")
    op.execute("ALTER TABLE outbox ALTER COLUMN xid SET DEFAULT pg_current_xact_id()")
    op.create_index("ix_outbox_order", "outbox", ["xid", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_order", table_name="outbox")
    op.drop_column("outbox", "xid")
    op.drop_table("api_tokens")
