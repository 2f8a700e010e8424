"""What producers read back: hold results and stock, straight from Postgres (reads never queue)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import Connection, text

from domain.commands import AGAIN
from domain.errors import UnknownHold, UnknownSku
from domain.holds import MOVES, LineAction, LineStatus, line_after
from domain.quantities import Packaging
from domain.results import HoldResult, LineFacts, line_result


class LotBalance(BaseModel):
    warehouse: str
    lot: str
    shade: str | None
    caliber: str | None
    expiry: dt.date | None
    on_hand: Decimal
    reserved: Decimal
    in_transit: Decimal
    damaged: Decimal
    quarantine: Decimal
    available: Decimal


class StockView(BaseModel):
    sku: str
    name: str
    pieces_per_box: int | None
    sqm_per_box: Decimal | None
    on_hand: Decimal
    reserved: Decimal
    available: Decimal
    lots: list[LotBalance]


def parse_hold_id(hold_id: object) -> uuid.UUID:
    """A hold id as a UUID; anything that is not one names no hold (UnknownHold)."""
    try:
        return uuid.UUID(str(hold_id))
    except ValueError:
        raise UnknownHold(str(hold_id)) from None


def read_hold(conn: Connection, hold_id: str) -> HoldResult:
    """The hold and its lines, in one query, each line in its final state: a line command still on
    its way to it (a rejected cart's compensating release, a confirmation) is looked up by its key
    and shown done, as the writer's answer shows it."""
    hid = parse_hold_id(hold_id)
    rows = conn.execute(
        text(
            """
            SELECT h.id, h.status AS hold_status, h.mode, h.payment, h.expires_at, h.created_at,
                   l.line_no, p.sku, l.requested_quantity, l.requested_unit, l.pieces, l.rounding, l.status,
                   l.allocated, p.pieces_per_box, p.sqm_per_box, p.allow_partial_boxes, w.code AS warehouse,
                   lot.lot_code, lot.shade, lot.caliber, l.reason, l.available, l.largest_lot, c.pending
            FROM holds h JOIN hold_lines l ON l.hold_id = h.id JOIN products p ON p.id = l.product_id
            LEFT JOIN warehouses w ON w.id = l.warehouse_id LEFT JOIN lots lot ON lot.id = l.lot_id
            LEFT JOIN LATERAL (
                SELECT array_agg(kind ORDER BY seq) AS pending FROM commands
                WHERE status = 'recorded' AND idempotency_key = ANY(
                    SELECT action || ':' || h.id || ':' || l.line_no || again
                    FROM unnest(CAST(:actions AS text[])) AS action, unnest(ARRAY['', CAST(:again AS text)]) AS again)
            ) AS c ON true
            WHERE h.id = :id ORDER BY l.line_no
            """
        ),
        {"id": hid, "actions": [action.value for action in MOVES], "again": AGAIN},
    ).all()
    if not rows:
        raise UnknownHold(str(hold_id))
    lines = [
        line_result(
            LineFacts(
                line_no=r.line_no,
                sku=r.sku,
                requested=r.requested_quantity,
                unit=r.requested_unit,
                pieces=r.pieces,
                rounding=r.rounding,
                status=line_after(LineStatus(r.status), [LineAction(k) for k in r.pending or []]).value,
                allocated=r.allocated,
                packaging=Packaging(r.pieces_per_box, r.sqm_per_box, r.allow_partial_boxes),
                warehouse=r.warehouse,
                lot=r.lot_code,
                shade=r.shade,
                caliber=r.caliber,
                reason=r.reason,
                available=r.available,
                largest_lot=r.largest_lot,
            )
        )
        for r in rows
    ]
    hold = rows[0]
    return HoldResult(
        hold_id=str(hold.id),
        status=hold.hold_status,
        mode=hold.mode,
        payment=hold.payment,
        expires_at=hold.expires_at,
        created_at=hold.created_at,
        lines=lines,
    )


def read_stock(conn: Connection, sku: str) -> StockView:
    product = conn.execute(
        text("SELECT id, sku, name, pieces_per_box, sqm_per_box FROM products WHERE sku = :sku"), {"sku": sku}
    ).first()
    if product is None:
        raise UnknownSku(sku)
    rows = conn.execute(
        text(
            """
            SELECT w.code, l.lot_code, l.shade, l.caliber, l.expiry, b.on_hand, b.reserved, b.in_transit,
                   b.damaged, b.quarantine,
                   greatest(b.on_hand - b.reserved - b.damaged - b.quarantine, 0) AS available
            FROM stock_balances b JOIN warehouses w ON w.id = b.warehouse_id JOIN lots l ON l.id = b.lot_id
            WHERE b.product_id = :p ORDER BY w.priority, w.code, l.lot_code
            """
        ),
        {"p": product.id},
    )
    lots = [LotBalance(**dict(zip(LotBalance.model_fields, row, strict=True))) for row in rows]
    return StockView(
        sku=product.sku,
        name=product.name,
        pieces_per_box=product.pieces_per_box,
        sqm_per_box=product.sqm_per_box,
        on_hand=sum((lot.on_hand for lot in lots), Decimal(0)),
        reserved=sum((lot.reserved for lot in lots), Decimal(0)),
        available=sum((lot.available for lot in lots), Decimal(0)),
        lots=lots,
    )


class MovementView(BaseModel):
    """One ledger row, with the command that explains it: an audit reads back from any number to
    the request that made it, when that request was recorded and when it was applied."""

    id: int
    at: dt.datetime
    """When its command was applied (the batch's clock as it wrote it: never before `recorded_at`)."""
    kind: str
    warehouse: str
    lot: str
    on_hand: Decimal
    reserved: Decimal
    hold_id: str | None
    line_no: int | None
    command_key: str
    command_kind: str
    recorded_at: dt.datetime
    applied_at: dt.datetime | None


def read_movements(
    conn: Connection, sku: str, *, limit: int = 100, before_id: int | None = None
) -> list[MovementView]:
    """A product's ledger, newest first, `limit` rows at most, older than `before_id` if given."""
    product = conn.execute(text("SELECT id FROM products WHERE sku = :sku"), {"sku": sku}).scalar()
    if product is None:
        raise UnknownSku(sku)
    rows = conn.execute(
        text(
            """
            SELECT m.id, m.created_at, m.kind, w.code, l.lot_code, m.d_on_hand, m.d_reserved, m.hold_id::text,
                   m.line_no, c.idempotency_key, c.kind, c.recorded_at, c.applied_at
            FROM movements m JOIN commands c ON c.seq = m.command_seq
            JOIN warehouses w ON w.id = m.warehouse_id JOIN lots l ON l.id = m.lot_id
            WHERE m.product_id = :p AND (CAST(:before AS bigint) IS NULL OR m.id < :before)
            ORDER BY m.id DESC LIMIT :limit
            """
        ),
        {"p": product, "before": before_id, "limit": limit},
    )
    return [MovementView(**dict(zip(MovementView.model_fields, row, strict=True))) for row in rows]
