"""Picking the stock that serves one line.

Algorithm, in plain words: the line is served from the requested warehouse, else from the
warehouses that can ship, in configured priority order. Within a warehouse a tile line comes from
a **single lot** (mixed shades on one floor are a real complaint): among the lots whose available
quantity covers the whole line, the one expiring first (FEFO), then the one received first (FIFO).
If no lot can serve the line, the rejection says what is available in all and which lot is largest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from domain.quantities import decimal_str

ZERO = Decimal(0)
_FAR_FUTURE = dt.date.max


@dataclass(slots=True)
class LotStock:
    """The balance of one (product, warehouse, lot), mutable inside a writer's batch."""

    balance_id: int
    product_id: int
    warehouse_id: int
    lot_id: int
    lot_code: str
    received_at: dt.datetime
    expiry: dt.date | None
    on_hand: Decimal
    reserved: Decimal
    damaged: Decimal = ZERO
    quarantine: Decimal = ZERO
    shade: str | None = None
    caliber: str | None = None
    in_transit: Decimal = ZERO
    """Pieces on their way to this balance (not in its on_hand: transfers)."""

    @property
    def available(self) -> Decimal:
        return available(self.on_hand, self.reserved, self.damaged, self.quarantine)


def available(on_hand: Decimal, reserved: Decimal, damaged: Decimal, quarantine: Decimal) -> Decimal:
    """What can still be sold from a balance: on hand, less what is held, damaged or in quarantine."""
    return max(ZERO, on_hand - reserved - damaged - quarantine)


@dataclass(frozen=True, slots=True)
class WarehouseRoute:
    warehouse_id: int
    code: str
    can_ship: bool
    priority: int
    active: bool
    can_receive: bool = True
    """Whether goods may arrive here (receipts, transfers in)."""


@dataclass(frozen=True, slots=True)
class Pick:
    """The lot chosen for a line."""

    stock: LotStock
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class LargestLot:
    lot_code: str
    warehouse_code: str
    available: Decimal


@dataclass(frozen=True, slots=True)
class Shortage:
    """Why a line cannot be served, and what could be had instead."""

    reason: str  # "insufficient_stock" | "no_single_lot"
    available: Decimal
    largest_lot: LargestLot | None

    def message(self, requested: Decimal) -> str:
        if self.reason == "no_single_lot" and self.largest_lot:
            lot = self.largest_lot
            return (
                f"{decimal_str(requested)} pieces are not in any single lot; {decimal_str(self.available)} "
                f"available in all, largest lot {lot.lot_code} in {lot.warehouse_code} has {decimal_str(lot.available)}"
            )
        return f"{decimal_str(requested)} pieces requested, {decimal_str(self.available)} available"


def candidate_warehouses(
    routes: list[WarehouseRoute], requested_warehouse_id: int | None
) -> list[WarehouseRoute]:
    """The requested warehouse alone, else the active shipping warehouses by priority."""
    if requested_warehouse_id is not None:
        return [r for r in routes if r.warehouse_id == requested_warehouse_id and r.active]
    shipping = [r for r in routes if r.active and r.can_ship]
    return sorted(shipping, key=lambda r: (r.priority, r.code))


def _lot_order(stock: LotStock) -> tuple[dt.date, dt.datetime, int]:
    return (stock.expiry or _FAR_FUTURE, stock.received_at, stock.lot_id)


def allocate_line(
    quantity: Decimal,
    stocks: list[LotStock],
    routes: list[WarehouseRoute],
    *,
    requested_warehouse_id: int | None = None,
) -> Pick | Shortage:
    """Choose the single lot that serves `quantity` pieces, or say why none can."""
    warehouses = candidate_warehouses(routes, requested_warehouse_id)
    by_warehouse: dict[int, list[LotStock]] = {}
    for stock in stocks:
        by_warehouse.setdefault(stock.warehouse_id, []).append(stock)
    for route in warehouses:
        serving = [s for s in by_warehouse.get(route.warehouse_id, []) if s.available >= quantity]
        if serving:
            return Pick(stock=min(serving, key=_lot_order), quantity=quantity)
    codes = {r.warehouse_id: r.code for r in warehouses}
    eligible = [s for s in stocks if s.warehouse_id in codes and s.available > 0]
    total = sum((s.available for s in eligible), ZERO)
    largest = max(eligible, key=lambda s: (s.available, -s.lot_id), default=None)
    return Shortage(
        reason="no_single_lot" if total >= quantity else "insufficient_stock",
        available=total,
        largest_lot=(
            LargestLot(largest.lot_code, codes[largest.warehouse_id], largest.available) if largest else None
        ),
    )
