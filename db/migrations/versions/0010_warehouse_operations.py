"""Warehouse operations (issue 22; the model is docs/warehouse.md).

- A ledger row says who (actor), why (reason), what it cost (unit and total cost) and the balance it
  left in each bucket (`*_after`; NULL on rows written before this revision).
- `ix_movements_product_id`: a product's history newest first, a page at a time.
- `warehouses.can_receive`: a location goods may not arrive at (receipts, transfers in).
- `stock_valuations`: moving weighted-average cost per (product, warehouse).
- `transfers`, `adjustments`, `quarantines`: the rows of the operations that outlive their command.
- `hold_lines.returned`: what came back of a line's sale, never more than it was allocated.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

QTY = sa.Numeric(18, 3)
MONEY = sa.Numeric(18, 4)
BUCKETS = ("on_hand", "reserved", "in_transit", "damaged", "quarantine")
BALANCE = ["product_id", "warehouse_id", "lot_id"]


def _now(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _qty(name: str, *, default: bool = False) -> sa.Column[Any]:
    return sa.Column(name, QTY, server_default="0" if default else None, nullable=False)


def _people() -> list[sa.Column[Any]]:
    return [
        sa.Column("requested_by_token_id", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.Text(), nullable=True),
        sa.Column("decided_by_token_id", sa.Integer(), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
    ]


def _seqs() -> list[sa.Column[Any]]:
    return [
        sa.Column("command_seq", sa.BigInteger(), sa.ForeignKey("commands.seq"), nullable=False),
        sa.Column("decided_seq", sa.BigInteger(), sa.ForeignKey("commands.seq"), nullable=True),
    ]


def upgrade() -> None:
    op.add_column("movements", sa.Column("unit_cost", MONEY, nullable=True))
    op.add_column("movements", sa.Column("total_cost", MONEY, nullable=True))
    op.add_column("movements", sa.Column("reason", sa.Text(), nullable=True))
    op.add_column("movements", sa.Column("actor", sa.Text(), nullable=True))
    for bucket in BUCKETS:
        op.add_column("movements", sa.Column(f"{bucket}_after", QTY, nullable=True))
    op.create_index("ix_movements_product_id", "movements", ["product_id", "id"])

    op.add_column(
        "warehouses", sa.Column("can_receive", sa.Boolean(), server_default=sa.text("true"), nullable=False)
    )
    op.add_column("hold_lines", _qty("returned", default=True))
    op.create_check_constraint(
        "line_returned_within_allocated", "hold_lines", "returned >= 0 AND returned <= allocated"
    )

    op.create_table(
        "stock_valuations",
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), sa.ForeignKey("warehouses.id"), nullable=False),
        _qty("quantity", default=True),
        sa.Column("average_cost", MONEY, server_default="0", nullable=False),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("product_id", "warehouse_id"),
        sa.CheckConstraint("quantity >= 0 AND average_cost >= 0", name="valuation_not_negative"),
    )
    op.create_table(
        "transfers",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("lot_id", sa.Integer(), sa.ForeignKey("lots.id"), nullable=False),
        sa.Column("from_warehouse_id", sa.Integer(), sa.ForeignKey("warehouses.id"), nullable=False),
        sa.Column("to_warehouse_id", sa.Integer(), sa.ForeignKey("warehouses.id"), nullable=False),
        _qty("quantity"),
        _qty("received", default=True),
        _qty("damaged", default=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("unit_cost", MONEY, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        *_people(),
        *_seqs(),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint("status IN ('in_transit', 'received', 'cancelled')", name="transfer_status"),
        sa.CheckConstraint("from_warehouse_id <> to_warehouse_id", name="transfer_between_two_warehouses"),
        sa.CheckConstraint(
            "quantity > 0 AND received >= 0 AND damaged >= 0 AND received + damaged <= quantity",
            name="transfer_quantities",
        ),
    )
    op.create_index("ix_transfers_product_id", "transfers", ["product_id"])
    op.create_table(
        "adjustments",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), sa.ForeignKey("warehouses.id"), nullable=False),
        sa.Column("lot_id", sa.Integer(), sa.ForeignKey("lots.id"), nullable=False),
        _qty("quantity"),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("unit_cost", MONEY, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        *_people(),
        *_seqs(),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "status IN ('applied', 'awaiting_approval', 'approved', 'rejected')", name="adjustment_status"
        ),
        sa.CheckConstraint("quantity <> 0", name="adjustment_changes_something"),
    )
    op.create_index("ix_adjustments_product_id", "adjustments", ["product_id"])
    op.create_table(
        "quarantines",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        _qty("quantity"),
        _qty("released", default=True),
        _qty("written_off", default=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("command_seq", sa.BigInteger(), sa.ForeignKey("commands.seq"), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "status IN ('quarantined', 'released', 'written_off', 'settled')", name="quarantine_status"
        ),
        sa.CheckConstraint(
            "quantity > 0 AND released >= 0 AND written_off >= 0 AND released + written_off <= quantity",
            name="quarantine_quantities",
        ),
        sa.ForeignKeyConstraint(
            BALANCE, [f"stock_balances.{c}" for c in BALANCE], name="quarantines_balance_fkey"
        ),
    )
    op.create_index("ix_quarantines_product_id", "quarantines", ["product_id"])


def downgrade() -> None:
    for table in ("quarantines", "adjustments", "transfers", "stock_valuations"):
        op.drop_table(table)
    op.drop_constraint("line_returned_within_allocated", "hold_lines", type_="check")
    op.drop_column("hold_lines", "returned")
    op.drop_column("warehouses", "can_receive")
    op.drop_index("ix_movements_product_id", table_name="movements")
    for column in ("unit_cost", "total_cost", "reason", "actor", *(f"{b}_after" for b in BUCKETS)):
        op.drop_column("movements", column)
