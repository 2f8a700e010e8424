"""The ledger read back: movements newest first, filtered, a page at a time (keyset on the id).

A page is found along `ix_movements_product_id` (product, id) when the product is known (a SKU,
or the products of a hold's lines), else along the primary key; the other filters only filter.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from db.reads import product_id_of, warehouse_id_of
from domain.results import BalanceAfter, MovementView


@dataclass(frozen=True, slots=True)
class MovementQuery:
    """Which movements: every filter left None matches all."""

    product_id: int | None = None
    warehouse_id: int | None = None
    lot: str | None = None
    kind: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    hold_id: uuid.UUID | None = None
    before_id: int | None = None
    """Only movements older than this one (the page after the one that ended with it)."""


_FILTERS = {
    "product_id": "m.product_id = :product_id",
    "warehouse_id": "m.warehouse_id = :warehouse_id",
    "lot": "l.lot_code = :lot",
    "kind": "m.kind = :kind",
    "since": "m.created_at >= :since",
    "until": "m.created_at < :until",
    "hold_id": "m.hold_id = :hold_id AND m.product_id IN (SELECT product_id FROM hold_lines WHERE hold_id = :hold_id)",
    "before_id": "m.id < :before_id",
}

_SELECT = """
    SELECT m.id, m.created_at, m.kind, p.sku, w.code, l.lot_code, m.d_on_hand, m.d_reserved, m.d_in_transit,
           m.d_damaged, m.d_quarantine, m.unit_cost, m.total_cost, m.reason, m.actor, m.on_hand_after,
           m.reserved_after, m.in_transit_after, m.damaged_after, m.quarantine_after, m.hold_id::text, m.line_no,
           c.idempotency_key, c.kind AS command_kind, c.recorded_at, c.applied_at
    FROM movements m JOIN commands c ON c.seq = m.command_seq JOIN products p ON p.id = m.product_id
    JOIN warehouses w ON w.id = m.warehouse_id JOIN lots l ON l.id = m.lot_id
"""


def find_movements(conn: Connection, query: MovementQuery, *, limit: int) -> list[MovementView]:
    """Up to `limit` movements that match, newest first."""
    params: dict[str, Any] = {
        name: getattr(query, name) for name in _FILTERS if getattr(query, name) is not None
    }
    where = " AND ".join(_FILTERS[name] for name in params) or "true"
    rows = conn.execute(
        text(f"{_SELECT} WHERE {where} ORDER BY m.id DESC LIMIT :limit"), {**params, "limit": limit}
    )
    return [_view(row) for row in rows]


def _view(r: Any) -> MovementView:
    after = (
        BalanceAfter(
            on_hand=r.on_hand_after,
            reserved=r.reserved_after,
            in_transit=r.in_transit_after,
            damaged=r.damaged_after,
            quarantine=r.quarantine_after,
        )
        if r.on_hand_after is not None
        else None
    )
    return MovementView(
        id=r.id,
        at=r.created_at,
        kind=r.kind,
        sku=r.sku,
        warehouse=r.code,
        lot=r.lot_code,
        on_hand=r.d_on_hand,
        reserved=r.d_reserved,
        in_transit=r.d_in_transit,
        damaged=r.d_damaged,
        quarantine=r.d_quarantine,
        unit_cost=r.unit_cost,
        total_cost=r.total_cost,
        reason=r.reason,
        actor=r.actor or "system",
        balance_after=after,
        hold_id=r.hold_id,
        line_no=r.line_no,
        command_key=r.idempotency_key,
        command_kind=r.command_kind,
        recorded_at=r.recorded_at,
        applied_at=r.applied_at,
    )


def read_movements(
    conn: Connection,
    sku: str | None = None,
    *,
    warehouse: str | None = None,
    limit: int = 100,
    **filters: Any,
) -> list[MovementView]:
    """Movements newest first, of a product by SKU and a warehouse by code (UnknownSku,
    UnknownWarehouse if there is none), and `filters` (the other fields of `MovementQuery`)."""
    query = MovementQuery(
        product_id=product_id_of(conn, sku) if sku is not None else None,
        warehouse_id=warehouse_id_of(conn, warehouse) if warehouse is not None else None,
        **filters,
    )
    return find_movements(conn, query, limit=limit)
