"""Adjustment approval per product, and finding an operation before its row exists.

- `products.adjustment_approval_pieces` / `adjustment_approval_value`: a product's own thresholds
  above which an adjustment waits for a second person's approval (NULL: the global setting's).
- `ix_commands_transfer_id`, `ix_commands_adjustment_id`: a follow-up (receive, cancel, approve,
  reject) recorded before the command that creates its transfer or adjustment has applied finds
  that command by the id in its payload (partial indexes: only those two kinds of command).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OPERATIONS = {"transfer": "stock.transfer", "adjustment": "stock.adjust"}


def upgrade() -> None:
    op.add_column("products", sa.Column("adjustment_approval_pieces", sa.Numeric(18, 3), nullable=True))
    op.add_column("products", sa.Column("adjustment_approval_value", sa.Numeric(18, 4), nullable=True))
    op.create_check_constraint(
        "adjustment_approval_not_negative",
        "products",
        "adjustment_approval_pieces >= 0 AND adjustment_approval_value >= 0",
    )
    for name, kind in OPERATIONS.items():
        op.create_index(
            f"ix_commands_{name}_id",
            "commands",
            [sa.text(f"(payload->>'{name}_id')")],
            postgresql_where=sa.text(f"kind = '{kind}'"),
        )


def downgrade() -> None:
    for name in OPERATIONS:
        op.drop_index(f"ix_commands_{name}_id", table_name="commands")
    op.drop_constraint("adjustment_approval_not_negative", "products", type_="check")
    op.drop_column("products", "adjustment_approval_value")
    op.drop_column("products", "adjustment_approval_pieces")
