"""The batch log read by shard and time: the ops views' last batch and commands per minute.

`ix_apply_batches_shard` (shard) made "the shard's last batch" a walk through every batch the shard
ever had; (shard, finished_at) answers it, and the last minutes' batches, from the index's end.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_apply_batches_shard_finished", "apply_batches", ["shard", "finished_at"])
    op.drop_index("ix_apply_batches_shard", table_name="apply_batches")


def downgrade() -> None:
    op.create_index("ix_apply_batches_shard", "apply_batches", ["shard"])
    op.drop_index("ix_apply_batches_shard_finished", table_name="apply_batches")
