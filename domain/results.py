"""What callers read back: a hold's answer, a product's stock, its ledger.

A hold's answer is built in one place (:func:`hold_result`) from the domain's hold and lines, whether
the writer builds it from its batch (and sends it with the wake-up) or a reader builds it from
PostgreSQL rows: each line is shown in its final state, once the line commands still on their way to
it have applied (:func:`domain.states.line_after`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, computed_field

from domain.quantities import Packaging, boxes_in, sqm_in
from domain.states import Hold, HoldLine, LineAction, LineStatus, line_after

HELD = (LineStatus.RESERVED, LineStatus.CONFIRMED)


class HoldLineResult(BaseModel):
    line_no: int
    sku: str
    requested: Decimal
    unit: str
    pieces: Decimal
    rounding: str
    status: str
    reserved_pieces: Decimal
    reserved_boxes: Decimal | None
    reserved_sqm: Decimal | None
    warehouse: str | None
    lot: str | None
    shade: str | None
    caliber: str | None
    reason: str | None
    available: Decimal | None
    largest_lot: dict[str, Any] | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome(self) -> str:
        """The line's outcome: reserved, rejected, confirmed, released, expired, returned, unfulfilled."""
        return self.status


class HoldResult(BaseModel):
    hold_id: str
    status: str
    mode: str
    payment: str
    expires_at: dt.datetime
    created_at: dt.datetime
    lines: list[HoldLineResult]


@dataclass(frozen=True, slots=True)
class LineShown:
    """What a line's answer shows beyond the domain's line: the request as made, and packaging."""

    requested: Decimal
    unit: str
    rounding: str
    packaging: Packaging


@dataclass(frozen=True, slots=True)
class LotName:
    code: str
    shade: str | None
    caliber: str | None


_NO_LOT = LotName("", None, None)


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold with everything its answer names: lines as shown, lots and warehouses by id, and the
    line commands still on their way to each line (line_no → actions, in order)."""

    hold: Hold
    created_at: dt.datetime
    lines: Sequence[HoldLine]
    shown: Mapping[int, LineShown]
    lots: Mapping[int, LotName]
    warehouses: Mapping[int, str]
    pending: Mapping[int, Sequence[LineAction]]


def hold_result(view: HoldView) -> HoldResult:
    """The answer a ticket returns."""
    hold = view.hold
    return HoldResult(
        hold_id=hold.id,
        status=hold.status.value,
        mode=hold.mode.value,
        payment=hold.payment.value,
        expires_at=hold.expires_at,
        created_at=view.created_at,
        lines=[_line_result(view, line) for line in view.lines],
    )


def _line_result(view: HoldView, line: HoldLine) -> HoldLineResult:
    shown = view.shown[line.line_no]
    status = line_after(line.status, list(view.pending.get(line.line_no, ())))
    held = line.allocated if status in HELD else Decimal(0)
    lot = view.lots.get(line.lot_id, _NO_LOT) if line.lot_id is not None else _NO_LOT
    return HoldLineResult(
        line_no=line.line_no,
        sku=line.sku,
        requested=shown.requested,
        unit=shown.unit,
        pieces=line.pieces,
        rounding=shown.rounding,
        status=status.value,
        reserved_pieces=held,
        reserved_boxes=boxes_in(held, shown.packaging),
        reserved_sqm=sqm_in(held, shown.packaging),
        warehouse=view.warehouses.get(line.warehouse_id) if line.warehouse_id is not None else None,
        lot=lot.code or None,
        shade=lot.shade,
        caliber=lot.caliber,
        reason=line.reason,
        available=line.available,
        largest_lot=line.largest_lot,
    )


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


class WarehouseStock(BaseModel):
    """A product's buckets summed over its lots in one warehouse."""

    warehouse: str
    on_hand: Decimal
    reserved: Decimal
    available: Decimal
    in_transit: Decimal
    damaged: Decimal
    quarantine: Decimal


class StockView(BaseModel):
    """A product's stock: totals of every bucket, per warehouse, and per warehouse and lot."""

    sku: str
    name: str
    pieces_per_box: int | None
    sqm_per_box: Decimal | None
    on_hand: Decimal
    reserved: Decimal
    available: Decimal
    in_transit: Decimal
    damaged: Decimal
    quarantine: Decimal
    warehouses: list[WarehouseStock]
    lots: list[LotBalance]


class BalanceAfter(BaseModel):
    """A lot balance as a movement left it."""

    on_hand: Decimal
    reserved: Decimal
    in_transit: Decimal
    damaged: Decimal
    quarantine: Decimal


class MovementView(BaseModel):
    """One ledger row: what (kind and the change to each bucket), who (a token's name, or
    "system"), why (reason, and the command that made it), what it cost, and the balance it left
    (None on rows written before balances were kept). An audit reads back from any number to the
    request that made it, when that request was recorded and when it was applied."""

    id: int
    at: dt.datetime
    """When its command was applied (the batch's clock as it wrote it: never before `recorded_at`)."""
    kind: str
    sku: str
    warehouse: str
    lot: str
    on_hand: Decimal
    reserved: Decimal
    in_transit: Decimal
    damaged: Decimal
    quarantine: Decimal
    unit_cost: Decimal | None
    total_cost: Decimal | None
    reason: str | None
    actor: str
    balance_after: BalanceAfter | None
    hold_id: str | None
    line_no: int | None
    command_key: str
    command_kind: str
    recorded_at: dt.datetime
    applied_at: dt.datetime | None


class MovementPage(BaseModel):
    movements: list[MovementView]
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; None: this is the last."""


class ProductValue(BaseModel):
    sku: str
    quantity: Decimal
    average_cost: Decimal
    value: Decimal
    """quantity × average_cost, to the cent."""


class WarehouseValue(BaseModel):
    warehouse: str
    value: Decimal
    products: list[ProductValue]


class ValuationView(BaseModel):
    """Stock value at moving-average cost, per warehouse and product."""

    value: Decimal
    warehouses: list[WarehouseValue]
