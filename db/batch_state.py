"""What a batch's commands act on, as its claim loads it: the rows of one statement, named.

`db.claims` builds its state statement from the row types here (their fields in order, each with
its SQL expression), and `read_state` turns the statement's JSON back into the domain's objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from db.records import Row
from db.sql import parse_decimal, parse_time
from domain.allocation import LotStock, WarehouseRoute
from domain.counts import HeldLine
from domain.quantities import Packaging
from domain.results import LineShown, LotName
from domain.states import Hold, HoldLine, HoldMode, HoldStatus, LineStatus, Payment
from domain.valuation import Valuation


@dataclass(frozen=True, slots=True)
class InboxCommand:
    seq: int
    key: str
    kind: str
    payload: dict[str, Any]
    recorded_at: dt.datetime
    shard: int
    attempts: int = 0
    """Failed tries so far (a poison command is parked after TESSERA_MAX_ATTEMPTS)."""
    last_error: str | None = None


@dataclass(slots=True)
class BatchState:
    """What a batch's commands act on, loaded with them: the holds and lines they name, every lot
    balance of the products they name, and the warehouses."""

    holds: dict[str, Hold]
    lines: dict[str, list[HoldLine]]
    stocks: dict[int, list[LotStock]]
    routes: list[WarehouseRoute]
    created_at: dict[str, dt.datetime] = field(default_factory=dict)
    home_shards: dict[str, int] = field(default_factory=dict)
    """hold → its home shard, whose writer applies the hold's own commands."""
    locked: set[str] = field(default_factory=set)
    """The holds this batch locked, whose home shard it leases: the only ones it may write."""
    shown: dict[tuple[str, int], LineShown] = field(default_factory=dict)
    lot_names: dict[int, LotName] = field(default_factory=dict)
    """lot id → its code, shade and caliber, for the lots the batch's lines and products hold."""
    deferring: set[str] = field(default_factory=set)
    """Holds with a payment or release recorded before their expires_at still to apply."""
    fresh_lot_ids: list[int] = field(default_factory=list)
    fresh_balance_ids: list[int] = field(default_factory=list)
    """Ids drawn for lots and balances the batch may create (one of each per stock command), so
    that it decides with them in memory and writes them with the rest of its rows."""
    valuations: dict[tuple[int, int], Valuation] | None = None
    """(product, warehouse) → its valuation, for the asked products; None: not loaded (a batch
    without stock commands, whose on_hand changes the writes apply to the valuations themselves;
    see `db.warehouse_state`)."""
    records: dict[str, dict[str, Row]] = field(default_factory=dict)
    """table → id → row, for the operation rows the stock commands name (`db.records`)."""
    held: dict[tuple[int, int, int], list[HeldLine]] = field(default_factory=dict)
    """(product, warehouse, lot) → the hold lines reserved there, for the balances counts name."""


class HoldRow(NamedTuple):
    id: str
    status: str
    mode: str
    expires_at: str
    payment: str
    lines_pending: int
    created_at: str
    home_shard: int
    locked: bool


class LineRow(NamedTuple):
    hold_id: str
    line_no: int
    product_id: int
    sku: str
    pieces: str
    status: str
    requested_warehouse_id: int | None
    warehouse_id: int | None
    lot_id: int | None
    allocated: str
    returned: str
    reason: str | None
    available: str | None
    largest_lot: dict[str, str] | None
    requested_quantity: str
    requested_unit: str
    rounding: str
    pieces_per_box: int | None
    sqm_per_box: str | None
    allow_partial_boxes: bool
    lot_code: str | None
    shade: str | None
    caliber: str | None


class BalanceRow(NamedTuple):
    asked_product: int
    balance_id: int | None
    product_id: int
    warehouse_id: int
    lot_id: int
    lot_code: str
    received_at: str
    expiry: str | None
    on_hand: str
    reserved: str
    in_transit: str
    damaged: str
    quarantine: str
    shade: str | None
    caliber: str | None


# Each part of the state comes back as JSON arrays, one per row, their columns in the order of the
# row type that reads them (SQL expression by field name; a field without one fails at import).
HOLD_SQL = {name: name for name in HoldRow._fields}
LINE_SQL = {
    **{name: f"l.{name}" for name in LineRow._fields},
    "sku": "p.sku",
    "pieces": "l.pieces::text",
    "allocated": "l.allocated::text",
    "returned": "l.returned::text",
    "available": "l.available::text",
    "requested_quantity": "l.requested_quantity::text",
    "pieces_per_box": "p.pieces_per_box",
    "sqm_per_box": "p.sqm_per_box::text",
    "allow_partial_boxes": "p.allow_partial_boxes",
    "lot_code": "lot.lot_code",
    "shade": "lot.shade",
    "caliber": "lot.caliber",
}
BALANCE_SQL = {
    **{name: f"b.{name}" for name in BalanceRow._fields},
    "asked_product": "asked.id",
    "balance_id": "b.id",
    "lot_code": "l.lot_code",
    "received_at": "l.received_at",
    "expiry": "l.expiry",
    "on_hand": "b.on_hand::text",
    "reserved": "b.reserved::text",
    "in_transit": "b.in_transit::text",
    "damaged": "b.damaged::text",
    "quarantine": "b.quarantine::text",
    "shade": "l.shade",
    "caliber": "l.caliber",
}


def columns(row_type: type[tuple[Any, ...]], sql: Mapping[str, str]) -> str:
    return ", ".join(sql[name] for name in row_type._fields)  # type: ignore[attr-defined]


def read_state(loaded: tuple[Any, ...]) -> tuple[list[InboxCommand], BatchState]:
    commands_json, holds, lines, stocks, routes = (part or [] for part in loaded[:5])
    fresh_lots, fresh_balances = loaded[5]
    commands = [
        InboxCommand(seq, key, kind, payload, parse_time(at), shard, attempts, error)
        for seq, key, kind, payload, at, shard, attempts, error in commands_json
    ]
    state = BatchState(
        holds={},
        lines={},
        stocks={},
        routes=[WarehouseRoute(*r) for r in routes],
        fresh_lot_ids=list(fresh_lots),
        fresh_balance_ids=list(fresh_balances),
    )
    for hold in map(HoldRow._make, holds):
        _add_hold(state, hold)
    for line in map(LineRow._make, lines):
        _add_line(state, line)
    for balance in map(BalanceRow._make, stocks):
        _add_balance(state, balance)
    return commands, state


def _add_hold(state: BatchState, row: HoldRow) -> None:
    state.holds[row.id] = Hold(
        row.id,
        HoldStatus(row.status),
        HoldMode(row.mode),
        parse_time(row.expires_at),
        Payment(row.payment),
        row.lines_pending,
    )
    state.created_at[row.id] = parse_time(row.created_at)
    state.home_shards[row.id] = row.home_shard
    if row.locked:
        state.locked.add(row.id)


def _add_line(state: BatchState, row: LineRow) -> None:
    state.lines.setdefault(row.hold_id, []).append(
        HoldLine(
            row.hold_id,
            row.line_no,
            row.product_id,
            row.sku,
            Decimal(row.pieces),
            LineStatus(row.status),
            requested_warehouse_id=row.requested_warehouse_id,
            warehouse_id=row.warehouse_id,
            lot_id=row.lot_id,
            allocated=Decimal(row.allocated),
            returned=Decimal(row.returned),
            reason=row.reason,
            available=parse_decimal(row.available),
            largest_lot=row.largest_lot,
        )
    )
    state.shown[(row.hold_id, row.line_no)] = LineShown(
        Decimal(row.requested_quantity),
        row.requested_unit,
        row.rounding,
        Packaging(row.pieces_per_box, parse_decimal(row.sqm_per_box), row.allow_partial_boxes),
    )
    if row.lot_id is not None and row.lot_code is not None:
        state.lot_names[row.lot_id] = LotName(row.lot_code, row.shade, row.caliber)


def _add_balance(state: BatchState, row: BalanceRow) -> None:
    lots = state.stocks.setdefault(row.asked_product, [])
    if row.balance_id is None:  # a product with no lot yet
        return
    lots.append(
        LotStock(
            row.balance_id,
            row.product_id,
            row.warehouse_id,
            row.lot_id,
            row.lot_code,
            parse_time(row.received_at),
            dt.date.fromisoformat(row.expiry) if row.expiry else None,
            Decimal(row.on_hand),
            Decimal(row.reserved),
            Decimal(row.damaged),
            Decimal(row.quarantine),
            row.shade,
            row.caliber,
            Decimal(row.in_transit),
        )
    )
    state.lot_names[row.lot_id] = LotName(row.lot_code, row.shade, row.caliber)
