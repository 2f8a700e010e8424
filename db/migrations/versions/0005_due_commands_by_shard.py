"""Drop the due-time index across shards: due commands are read shard by shard.

Migration 0002 indexed scheduled commands by due time alone, for the sweep. The writers' claims
then used it too, with a filter on the shard: each of a writer's shards read the due commands of
all the others, from the heap, before finding its own or none (in an expiry storm, every claim).
The sweep and the claims now read `ix_commands_scheduled` (shard, due time) one shard at a time,
and an expiry's command costs one index entry less.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_commands_due", table_name="commands")


def downgrade() -> None:
    op.create_index(
        "ix_commands_due", "commands", ["not_before"], postgresql_where=sa.text("status = 'scheduled'")
    )
