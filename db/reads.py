"""Reads, straight from PostgreSQL (reads never queue): reference data for recording, a hold's
answer and a product's stock (its ledger: `db.movements`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from db.sql import Pg, Rows, Statement
from domain.allocation import available
from domain.catalog import ProductRef
from domain.commands import AGAIN
from domain.errors import UnknownHold, UnknownSku, UnknownWarehouse
from domain.quantities import Packaging
from domain.receipts import LotFacts
from domain.results import (
    HoldResult,
    HoldView,
    LineShown,
    LotBalance,
    LotName,
    StockView,
    WarehouseStock,
    hold_result,
)
from domain.states import MOVES, Hold, HoldLine, HoldMode, HoldStatus, LineAction, LineStatus, Payment


def lot_facts(pg: Pg, product_id: int, lot_code: str) -> LotFacts | None:
    """The shade, caliber and expiry of a product's lot, if the product has that lot."""
    row = pg.execute(
        "SELECT shade, caliber, expiry FROM lots WHERE product_id = %(p)s AND lot_code = %(lot)s",
        {"p": product_id, "lot": lot_code},
    ).fetchone()
    return LotFacts(*row) if row else None


def load_references(
    skus: Sequence[str], codes: Sequence[str]
) -> Statement[tuple[dict[str, ProductRef], dict[str, int]]]:
    """Active products by SKU and active warehouses by code, in one statement."""
    return Statement(
        "SELECT 'product', id, sku, pieces_per_box, sqm_per_box, allow_partial_boxes FROM products "
        "WHERE sku = ANY(%(s)s) AND active "
        "UNION ALL SELECT 'warehouse', id, code, NULL, NULL, NULL FROM warehouses "
        "WHERE code = ANY(%(c)s) AND active",
        {"s": list(skus), "c": list(codes)},
        _references,
    )


def _references(rows: Rows) -> tuple[dict[str, ProductRef], dict[str, int]]:
    products = {r[2]: ProductRef(r[1], r[2], Packaging(r[3], r[4], r[5])) for r in rows if r[0] == "product"}
    return products, {r[2]: r[1] for r in rows if r[0] == "warehouse"}


def product_id_of(conn: Connection, sku: str) -> int:
    """The id of the product with this SKU (else UnknownSku)."""
    found = conn.execute(text("SELECT id FROM products WHERE sku = :sku"), {"sku": sku}).scalar()
    if found is None:
        raise UnknownSku(sku, field="sku")
    return int(found)


def warehouse_id_of(conn: Connection, code: str) -> int:
    """The id of the warehouse with this code (else UnknownWarehouse)."""
    found = conn.execute(text("SELECT id FROM warehouses WHERE code = :code"), {"code": code}).scalar()
    if found is None:
        raise UnknownWarehouse(code, field="warehouse")
    return int(found)


def read_hold(conn: Connection, hold_id: uuid.UUID) -> HoldResult:
    """The hold and its lines, in one query, each line in its final state: a line command still on
    its way to it (a rejected cart's compensating release, a confirmation) is looked up by its key
    and shown done, as the writer's answer shows it."""
    rows = conn.execute(
        text(
            """
            SELECT h.id, h.status AS hold_status, h.mode, h.payment, h.expires_at, h.created_at, h.lines_pending,
                   l.line_no, l.product_id, p.sku, l.requested_quantity, l.requested_unit, l.pieces, l.rounding,
                   l.status, l.warehouse_id, l.lot_id, l.allocated, p.pieces_per_box, p.sqm_per_box,
                   p.allow_partial_boxes, w.code AS warehouse, lot.lot_code, lot.shade, lot.caliber, l.reason,
                   l.available, l.largest_lot, c.pending
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
        {"id": hold_id, "actions": [action.value for action in MOVES], "again": AGAIN},
    ).all()
    if not rows:
        raise UnknownHold(str(hold_id))
    return hold_result(_hold_view(rows))


def _hold_view(rows: Sequence[Any]) -> HoldView:
    """A hold's rows (one per line) as the domain's hold, lines and what their answer names."""
    first = rows[0]
    hold = Hold(
        str(first.id),
        HoldStatus(first.hold_status),
        HoldMode(first.mode),
        first.expires_at,
        Payment(first.payment),
        first.lines_pending,
    )
    lines = [
        HoldLine(
            hold.id,
            r.line_no,
            r.product_id,
            r.sku,
            r.pieces,
            LineStatus(r.status),
            warehouse_id=r.warehouse_id,
            lot_id=r.lot_id,
            allocated=r.allocated,
            reason=r.reason,
            available=r.available,
            largest_lot=r.largest_lot,
        )
        for r in rows
    ]
    return HoldView(
        hold,
        first.created_at,
        lines,
        shown={
            r.line_no: LineShown(
                r.requested_quantity,
                r.requested_unit,
                r.rounding,
                Packaging(r.pieces_per_box, r.sqm_per_box, r.allow_partial_boxes),
            )
            for r in rows
        },
        lots={r.lot_id: LotName(r.lot_code, r.shade, r.caliber) for r in rows if r.lot_id is not None},
        warehouses={r.warehouse_id: r.warehouse for r in rows if r.warehouse_id is not None},
        pending={r.line_no: [LineAction(k) for k in r.pending or []] for r in rows},
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
                   b.damaged, b.quarantine
            FROM stock_balances b JOIN warehouses w ON w.id = b.warehouse_id JOIN lots l ON l.id = b.lot_id
            WHERE b.product_id = :p ORDER BY w.priority, w.code, l.lot_code
            """
        ),
        {"p": product.id},
    )
    lots = [
        LotBalance(
            warehouse=r.code,
            lot=r.lot_code,
            shade=r.shade,
            caliber=r.caliber,
            expiry=r.expiry,
            on_hand=r.on_hand,
            reserved=r.reserved,
            in_transit=r.in_transit,
            damaged=r.damaged,
            quarantine=r.quarantine,
            available=available(r.on_hand, r.reserved, r.damaged, r.quarantine),
        )
        for r in rows
    ]
    by_warehouse: dict[str, list[LotBalance]] = {}
    for lot in lots:
        by_warehouse.setdefault(lot.warehouse, []).append(lot)
    return StockView(
        sku=product.sku,
        name=product.name,
        pieces_per_box=product.pieces_per_box,
        sqm_per_box=product.sqm_per_box,
        **_totals(lots),
        warehouses=[WarehouseStock(warehouse=code, **_totals(held)) for code, held in by_warehouse.items()],
        lots=lots,
    )


BUCKETS = ("on_hand", "reserved", "available", "in_transit", "damaged", "quarantine")


def _totals(lots: Sequence[LotBalance]) -> dict[str, Decimal]:
    """Each bucket summed over `lots`."""
    return {bucket: sum((getattr(lot, bucket) for lot in lots), Decimal(0)) for bucket in BUCKETS}
