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
    """The append-only ledger: Σ movements of a lot balance = the balance."""

    __tablename__ = "movements"
    __table_args__ = (
        Index("ix_movements_balance", "product_id", "warehouse_id", "lot_id"),
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
