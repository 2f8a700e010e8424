"""A lot balance for the pure rules' tests: one product, one lot, in a warehouse, with its buckets."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from domain.allocation import LotStock


def a_lot(
    on_hand: int = 0,
    reserved: int = 0,
    *,
    warehouse_id: int = 1,
    damaged: int = 0,
    quarantine: int = 0,
    in_transit: int = 0,
) -> LotStock:
    return LotStock(
        balance_id=warehouse_id,
        product_id=1,
        warehouse_id=warehouse_id,
        lot_id=7,
        lot_code="L7",
        received_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        expiry=None,
        on_hand=Decimal(on_hand),
        reserved=Decimal(reserved),
        damaged=Decimal(damaged),
        quarantine=Decimal(quarantine),
        in_transit=Decimal(in_transit),
    )


def buckets(stock: LotStock) -> tuple[Decimal, ...]:
    """on_hand, reserved, in_transit, damaged, quarantine."""
    return (stock.on_hand, stock.reserved, stock.in_transit, stock.damaged, stock.quarantine)
