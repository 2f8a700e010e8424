"""Recorded time, dead letters, and alerts about a hold.

- A command's recorded time is PostgreSQL's clock when its row is written (`clock_timestamp()`),
  not its transaction's start: it decides a payment or release against the hold's `expires_at`.
- A command that keeps failing is parked: status 'dead', with its attempts, its last error and
  its first and last failure times; a partial index lists the parked ones.
- Payments and releases waiting in the inbox are found per shard by their own small index: the
  writer's expiry waits for one recorded before `expires_at`.
- An alert may be about a hold (`paid_without_stock`): one open per hold, resolved by a refund.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN_ALERT = ["kind", "coalesce(product_id, 0)", "coalesce(warehouse_id, 0)"]
NO_HOLD = "coalesce(hold_id, '00000000-0000-0000-0000-000000000000'::uuid)"


def upgrade() -> None:
    op.alter_column("commands", "recorded_at", server_default=sa.text("clock_timestamp()"))
    op.add_column("commands", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("commands", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("commands", sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("commands", sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("command_status", "commands", type_="check")
    op.create_check_constraint(
        "command_status", "commands", "status IN ('recorded', 'scheduled', 'applied', 'dead')"
    )
    op.create_index("ix_commands_dead", "commands", ["seq"], postgresql_where=sa.text("status = 'dead'"))
    op.create_index(
        "ix_commands_pending_hold_commands",
        "commands",
        ["shard"],
        postgresql_where=sa.text("status = 'recorded' AND kind IN ('hold.pay', 'hold.release')"),
    )
    op.add_column("alerts", sa.Column("hold_id", postgresql.UUID(), nullable=True))
    op.add_column("alerts", sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key("alerts_hold_id_fkey", "alerts", "holds", ["hold_id"], ["id"])
    op.create_index("ix_alerts_hold", "alerts", ["hold_id"], postgresql_where=sa.text("hold_id IS NOT NULL"))
    op.drop_index("ux_alerts_open", table_name="alerts")
    op.create_index(
        "ux_alerts_open",
        "alerts",
        [sa.literal_column(c) for c in [*OPEN_ALERT, NO_HOLD]],
        unique=True,
        postgresql_where=sa.text("status <> 'resolved'"),
    )


def downgrade() -> None:
    op.drop_index("ux_alerts_open", table_name="alerts")
    op.execute("DELETE FROM alerts WHERE hold_id IS NOT NULL")
    op.create_index(
        "ux_alerts_open",
        "alerts",
        [sa.literal_column(c) for c in OPEN_ALERT],
        unique=True,
        postgresql_where=sa.text("status <> 'resolved'"),
    )
    op.drop_index("ix_alerts_hold", table_name="alerts")
    op.drop_constraint("alerts_hold_id_fkey", "alerts", type_="foreignkey")
    op.drop_column("alerts", "resolved_at")
    op.drop_column("alerts", "hold_id")
    op.drop_index("ix_commands_pending_hold_commands", table_name="commands")
    op.drop_index("ix_commands_dead", table_name="commands")
    op.execute("UPDATE commands SET status = 'recorded' WHERE status = 'dead'")
    op.drop_constraint("command_status", "commands", type_="check")
    op.create_check_constraint("command_status", "commands", "status IN ('recorded', 'scheduled', 'applied')")
    for column in ("last_failed_at", "first_failed_at", "last_error", "attempts"):
        op.drop_column("commands", column)
    op.alter_column("commands", "recorded_at", server_default=sa.text("now()"))
