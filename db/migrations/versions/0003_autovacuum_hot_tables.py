"""Analyze and vacuum the fast-growing tables more often than PostgreSQL's defaults.

Sessions keep their statement plans (and PostgreSQL its foreign-key check plans) until a table's
statistics change. With the default thresholds (10 % of the table changed) a table that grows fast
from empty keeps plans made when it was tiny, which scan it whole, for a long while; and the
writer's index on pending commands collects dead entries between vacuums. 2 % and 5 % keep both short.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HOT_TABLES = ("commands", "holds", "hold_lines", "movements", "outbox", "apply_batches")


def upgrade() -> None:
    for table in HOT_TABLES:
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_analyze_scale_factor = 0.02, "
            "autovacuum_vacuum_scale_factor = 0.05)"
        )


def downgrade() -> None:
    for table in HOT_TABLES:
        op.execute(
            f"ALTER TABLE {table} RESET (autovacuum_analyze_scale_factor, autovacuum_vacuum_scale_factor)"
        )
