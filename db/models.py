"""SQLAlchemy 2 models: the schema, with the domain's invariants enforced by the database too."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

Qty = Numeric(18, 3)
"""Quantities in the product's base unit (pieces)."""
Money = Numeric(18, 4)
"""Costs: a piece's unit cost, a movement's total cost."""


class Base(DeclarativeBase):
    pass


class Xid8(UserDefinedType[str]):
    """PostgreSQL's 64-bit transaction id (read as text)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("pieces_per_box IS NULL OR pieces_per_box > 0", name="pieces_per_box_positive"),
        CheckConstraint("sqm_per_box IS NULL OR sqm_per_box > 0", name="sqm_per_box_positive"),
        CheckConstraint("sqm_per_box IS NULL OR pieces_per_box IS NOT NULL", name="sqm_needs_box"),
        CheckConstraint(
            "adjustment_approval_pieces >= 0 AND adjustment_approval_value >= 0",
            name="adjustment_approval_not_negative",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    base_unit: Mapped[str] = mapped_column(String(16), server_default="piece")
    pieces_per_box: Mapped[int | None] = mapped_column(Integer)
    sqm_per_box: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    allow_partial_boxes: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _now()
    adjustment_approval_pieces: Mapped[Decimal | None] = mapped_column(Qty)
    """Above this many pieces (either way) an adjustment waits for approval (NULL: the global setting)."""
    adjustment_approval_value: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    """Above this value at the average cost an adjustment waits for approval (NULL: the global setting)."""


class Warehouse(Base):
    __tablename__ = "warehouses"
    __table_args__ = (CheckConstraint("type IN ('warehouse', 'showroom')", name="warehouse_type"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), server_default="warehouse")
    can_ship: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    priority: Mapped[int] = mapped_column(Integer, server_default="100")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    can_receive: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    """Whether goods may arrive here (receipts, transfers in)."""


class Lot(Base):
    __tablename__ = "lots"
    __table_args__ = (UniqueConstraint("product_id", "lot_code"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    lot_code: Mapped[str] = mapped_column(String(64))
    shade: Mapped[str | None] = mapped_column(String(32))
    caliber: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[dt.datetime] = _now()
    expiry: Mapped[dt.date | None] = mapped_column(Date)


class StockBalance(Base):
    """One (product, warehouse, lot): its buckets, never negative, reserved ≤ on_hand."""

    __tablename__ = "stock_balances"
    __table_args__ = (
        UniqueConstraint("product_id", "warehouse_id", "lot_id"),
        CheckConstraint(
            "on_hand >= 0 AND reserved >= 0 AND in_transit >= 0 AND damaged >= 0 AND quarantine >= 0",
            name="buckets_not_negative",
        ),
        CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
        CheckConstraint("reserved + damaged + quarantine <= on_hand", name="available_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    on_hand: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    reserved: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    in_transit: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    damaged: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    quarantine: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    updated_at: Mapped[dt.datetime] = _now()


class Hold(Base):
    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("lines_pending >= 0", name="lines_pending_not_negative"),
        CheckConstraint("ttl_seconds > 0", name="ttl_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(32))
    payment: Mapped[str] = mapped_column(String(16), server_default="none")
    home_shard: Mapped[int] = mapped_column(Integer)
    ttl_seconds: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    lines_pending: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    settled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    """When the hold was first decided (reserved, rejected, …); later transitions move updated_at."""


class HoldLine(Base):
    __tablename__ = "hold_lines"
    __table_args__ = (
        CheckConstraint("pieces > 0 AND allocated >= 0", name="line_quantities"),
        CheckConstraint("returned >= 0 AND returned <= allocated", name="line_returned_within_allocated"),
        Index("ix_hold_lines_product_status", "product_id", "status"),
        # An allocated line holds stock of an existing balance (warehouse and lot are set together,
        # on allocation): one check per write, and it implies the warehouse and the lot exist.
        ForeignKeyConstraint(
            ["product_id", "warehouse_id", "lot_id"],
            ["stock_balances.product_id", "stock_balances.warehouse_id", "stock_balances.lot_id"],
            name="hold_lines_balance_fkey",
        ),
    )

    hold_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    requested_quantity: Mapped[Decimal] = mapped_column(Qty)
    requested_unit: Mapped[str] = mapped_column(String(16))
    pieces: Mapped[Decimal] = mapped_column(Qty)
    rounding: Mapped[str] = mapped_column(Text)
    requested_warehouse_id: Mapped[int | None] = mapped_column(ForeignKey("warehouses.id"))
    status: Mapped[str] = mapped_column(String(16))
    warehouse_id: Mapped[int | None] = mapped_column(Integer)
    lot_id: Mapped[int | None] = mapped_column(Integer)
    allocated: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    returned: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    """Pieces of the line's sale that came back (returns), never more than were allocated."""
    reason: Mapped[str | None] = mapped_column(Text)
    available: Mapped[Decimal | None] = mapped_column(Qty)
    largest_lot: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Command(Base):
    """The durable inbox: every command, recorded before its sender is answered."""

    __tablename__ = "commands"
    __table_args__ = (
        CheckConstraint("status IN ('recorded', 'scheduled', 'applied', 'dead')", name="command_status"),
        Index("ix_commands_pending", "shard", "seq", postgresql_where=text("status = 'recorded'")),
        # Delayed commands (hold expiry) wait as 'scheduled' until due, out of the pending index.
        Index("ix_commands_scheduled", "shard", "not_before", postgresql_where=text("status = 'scheduled'")),
        # Payments and releases still to apply: a hold's expiry waits for one recorded before it.
        Index(
            "ix_commands_pending_hold_commands",
            "shard",
            postgresql_where=text("status = 'recorded' AND kind IN ('hold.pay', 'hold.release')"),
        ),
        # Commands parked after failing TESSERA_MAX_ATTEMPTS times.
        Index("ix_commands_dead", "seq", postgresql_where=text("status = 'dead'")),
        # A transfer's or adjustment's creating command by the id it draws (before its row exists).
        Index(
            "ix_commands_transfer_id",
            text("(payload->>'transfer_id')"),
            postgresql_where=text("kind = 'stock.transfer'"),
        ),
        Index(
            "ix_commands_adjustment_id",
            text("(payload->>'adjustment_id')"),
            postgresql_where=text("kind = 'stock.adjust'"),
        ),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    payload_hash: Mapped[str] = mapped_column(String(64))
    shard: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # PostgreSQL's clock when the row was written, not its transaction's start: the recorded time
    # decides a payment or release against the hold's expires_at.
    recorded_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp(), nullable=False
    )
    not_before: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    """How many times applying it failed (not counting transient errors, which are retried in place)."""
    last_error: Mapped[str | None] = mapped_column(Text)
    first_failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Movement(Base):
    """The append-only ledger: Σ movements of a lot balance = the balance. Each row says what
    (kind, deltas), who (actor: a token's name; NULL = the system), why (reason; its command's key
    through command_seq), what it cost and the balance it left (the `*_after` columns, NULL on rows
    written before they existed)."""

    __tablename__ = "movements"
    __table_args__ = (
        Index("ix_movements_balance", "product_id", "warehouse_id", "lot_id"),
        # The history of a product, newest first, a page at a time (GET /v1/movements).
        Index("ix_movements_product_id", "product_id", "id"),
        # Every movement moves an existing balance: one check per row, which implies the product,
        # the warehouse and the lot exist (the balance's own keys).
        ForeignKeyConstraint(
            ["product_id", "warehouse_id", "lot_id"],
            ["stock_balances.product_id", "stock_balances.warehouse_id", "stock_balances.lot_id"],
            name="movements_balance_fkey",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    product_id: Mapped[int] = mapped_column(Integer)
    warehouse_id: Mapped[int] = mapped_column(Integer)
    lot_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    d_on_hand: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    d_reserved: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    d_in_transit: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    d_damaged: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    d_quarantine: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    command_seq: Mapped[int] = mapped_column(ForeignKey("commands.seq"))
    hold_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    line_no: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _now()
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    total_cost: Mapped[Decimal | None] = mapped_column(Money)
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(Text)
    on_hand_after: Mapped[Decimal | None] = mapped_column(Qty)
    reserved_after: Mapped[Decimal | None] = mapped_column(Qty)
    in_transit_after: Mapped[Decimal | None] = mapped_column(Qty)
    damaged_after: Mapped[Decimal | None] = mapped_column(Qty)
    quarantine_after: Mapped[Decimal | None] = mapped_column(Qty)


class StockValuation(Base):
    """Moving weighted-average unit cost per (product, warehouse); `quantity` = Σ on_hand there."""

    __tablename__ = "stock_valuations"
    __table_args__ = (CheckConstraint("quantity >= 0 AND average_cost >= 0", name="valuation_not_negative"),)

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"), primary_key=True)
    quantity: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    average_cost: Mapped[Decimal] = mapped_column(Money, server_default="0")
    updated_at: Mapped[dt.datetime] = _now()


def _seq(nullable: bool = False) -> Any:
    """The inbox command that wrote (or decided) a row."""
    return mapped_column(BigInteger, ForeignKey("commands.seq"), nullable=nullable)


class Transfer(Base):
    """Stock on its way from one warehouse to another, in one lot: `in_transit` → `received` |
    `cancelled`. Its id is drawn by the producer; its row is written by the product's writer."""

    __tablename__ = "transfers"
    __table_args__ = (
        CheckConstraint("status IN ('in_transit', 'received', 'cancelled')", name="transfer_status"),
        CheckConstraint("from_warehouse_id <> to_warehouse_id", name="transfer_between_two_warehouses"),
        CheckConstraint(
            "quantity > 0 AND received >= 0 AND damaged >= 0 AND received + damaged <= quantity",
            name="transfer_quantities",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    from_warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    to_warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    quantity: Mapped[Decimal] = mapped_column(Qty)
    received: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    """Pieces that arrived in good condition."""
    damaged: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    """Pieces that arrived damaged (quantity − received − damaged never arrived)."""
    status: Mapped[str] = mapped_column(String(16))
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by_token_id: Mapped[int | None] = mapped_column(Integer)
    requested_by: Mapped[str | None] = mapped_column(Text)
    decided_by_token_id: Mapped[int | None] = mapped_column(Integer)
    decided_by: Mapped[str | None] = mapped_column(Text)
    command_seq: Mapped[int] = _seq()
    decided_seq: Mapped[int | None] = _seq(nullable=True)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Adjustment(Base):
    """A signed change to a lot's on_hand, with its reason: `applied`, or above the threshold
    `awaiting_approval` → `approved` | `rejected` (by another token than the one that asked)."""

    __tablename__ = "adjustments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('applied', 'awaiting_approval', 'approved', 'rejected')", name="adjustment_status"
        ),
        CheckConstraint("quantity <> 0", name="adjustment_changes_something"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    quantity: Mapped[Decimal] = mapped_column(Qty)
    """The signed change to on_hand."""
    status: Mapped[str] = mapped_column(String(24))
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    """Why an approved adjustment could not change the stock, if it could not."""
    requested_by_token_id: Mapped[int | None] = mapped_column(Integer)
    requested_by: Mapped[str | None] = mapped_column(Text)
    decided_by_token_id: Mapped[int | None] = mapped_column(Integer)
    decided_by: Mapped[str | None] = mapped_column(Text)
    command_seq: Mapped[int] = _seq()
    decided_seq: Mapped[int | None] = _seq(nullable=True)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Quarantine(Base):
    """A receipt line that arrived in quarantine, and what became of it: released to stock or
    written off as damaged. Its id is drawn by the producer and returned with the receipt."""

    __tablename__ = "quarantines"
    __table_args__ = (
        CheckConstraint(
            "status IN ('quarantined', 'released', 'written_off', 'settled')", name="quarantine_status"
        ),
        CheckConstraint(
            "quantity > 0 AND released >= 0 AND written_off >= 0 AND released + written_off <= quantity",
            name="quarantine_quantities",
        ),
        ForeignKeyConstraint(
            ["product_id", "warehouse_id", "lot_id"],
            ["stock_balances.product_id", "stock_balances.warehouse_id", "stock_balances.lot_id"],
            name="quarantines_balance_fkey",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[int] = mapped_column(Integer, index=True)
    warehouse_id: Mapped[int] = mapped_column(Integer)
    lot_id: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[Decimal] = mapped_column(Qty)
    released: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    written_off: Mapped[Decimal] = mapped_column(Qty, server_default="0")
    status: Mapped[str] = mapped_column(String(16))
    command_seq: Mapped[int] = _seq()
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class OutboxEvent(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    xid: Mapped[str] = mapped_column(Xid8(), server_default=text("pg_current_xact_id()"))
    """The writing transaction: events are read in (xid, id) order, once no older one runs."""

    __table_args__ = (Index("ix_outbox_order", "xid", "id"),)


class ApiToken(Base):
    """A bearer token of the HTTP API: its role, and only a SHA-256 hash of the token itself."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("role IN ('checkout', 'payments', 'warehouse', 'ops')", name="token_role"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = _now()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Alert(Base):
    """One open alert per (kind, product, warehouse, hold), raised by the writer that decides it.

    Stock alerts are about a product (and warehouse); `paid_without_stock` is about a hold."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="alert_status"),
        Index(
            "ux_alerts_open",
            "kind",
            text("coalesce(product_id, 0)"),
            text("coalesce(warehouse_id, 0)"),
            text("coalesce(hold_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
        ),
        Index("ix_alerts_hold", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"))
    warehouse_id: Mapped[int | None] = mapped_column(ForeignKey("warehouses.id"))
    hold_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("holds.id"))
    details: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    occurrences: Mapped[int] = mapped_column(Integer, server_default="1")
    raised_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ShardFence(Base):
    """The epoch of the newest lease that applied to a shard: older epochs are fenced out."""

    __tablename__ = "shard_fences"

    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = _now()


class ApplyBatch(Base):
    """One writer transaction: who applied how many commands of which shard, and when."""

    __tablename__ = "apply_batches"
    __table_args__ = (Index("ix_apply_batches_shard_finished", "shard", "finished_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(Text)
    commands: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
