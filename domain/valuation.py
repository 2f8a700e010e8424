"""Valuation: moving weighted-average unit cost per (product, warehouse).

Transitions of a (product, warehouse)'s valuation:
  none       --receipt with a unit cost-->  average = that cost
  average a  --receipt of q at cost c, on top of n on hand-->  (n·a + q·c) / (n + q)
  average a  --transfer in of q at the source's average c-->  the same weighted mean
  average a  --anything else (sale, damage, transfer out, adjustment, …)-->  a (the pieces leave at a)
The valuation's quantity is the on_hand of the product at the warehouse, whatever moved it; a
movement that has a cost is valued at the current average (`total_cost = q × unit_cost`).
Stock that was on hand before any cost was known takes the first cost given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from domain.allocation import LotStock

COST_PLACES = Decimal("0.0001")  # stock_valuations.average_cost is NUMERIC(18, 4)


@dataclass(slots=True)
class Valuation:
    product_id: int
    warehouse_id: int
    quantity: Decimal
    """On hand at the warehouse, as last written (the batch sets it from its balances)."""
    average_cost: Decimal


def averaged_in(average: Decimal | None, on_hand: Decimal, quantity: Decimal, unit_cost: Decimal) -> Decimal:
    """The average cost once `quantity` pieces at `unit_cost` join `on_hand` pieces valued at
    `average` (None: no cost known yet, so the new cost is the average)."""
    if average is None or on_hand <= 0:
        return unit_cost.quantize(COST_PLACES, ROUND_HALF_EVEN)
    total = on_hand + quantity
    return ((on_hand * average + quantity * unit_cost) / total).quantize(COST_PLACES, ROUND_HALF_EVEN)


def on_hand_at(stocks: Iterable[LotStock], warehouse_id: int) -> Decimal:
    """A product's on_hand at a warehouse, every lot: what its valuation's quantity is."""
    return sum((s.on_hand for s in stocks if s.warehouse_id == warehouse_id), Decimal(0))
