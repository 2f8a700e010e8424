"""Index scheduled commands by due time, for the expiry sweep across all shards.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_commands_due", "commands", ["not_before"], postgresql_where=sa.text("status = 'scheduled'")
    )


def downgrade() -> None:
    op.drop_index("ix_commands_due", table_name="commands")
