"""Ledger rows and allocated lines reference their stock balance, not its product, warehouse and lot.

A movement carried three foreign keys (product, warehouse, lot) and an allocated hold line two
(warehouse, lot): a check each per row written, about a fifth of the writer's statement time in the
flash sale. One composite key to the balance is a single check, and says more: the row moves (or
holds) stock of a balance that exists, whose own keys already make product, warehouse and lot exist.
A pending line has no warehouse and lot yet (both NULL), so its key is not checked until allocation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BALANCE = ["product_id", "warehouse_id", "lot_id"]
SINGLE = {
    "movements": [("product_id", "products"), ("warehouse_id", "warehouses"), ("lot_id", "lots")],
    "hold_lines": [("warehouse_id", "warehouses"), ("lot_id", "lots")],
}


def upgrade() -> None:
    for table, keys in SINGLE.items():
        op.create_foreign_key(f"{table}_balance_fkey", table, "stock_balances", BALANCE, BALANCE)
        for column, _ in keys:
            op.drop_constraint(f"{table}_{column}_fkey", table, type_="foreignkey")


def downgrade() -> None:
    for table, keys in SINGLE.items():
        for column, target in keys:
            op.create_foreign_key(f"{table}_{column}_fkey", table, target, [column], ["id"])
        op.drop_constraint(f"{table}_balance_fkey", table, type_="foreignkey")
