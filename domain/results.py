"""What a hold looks like to the checkout: the answer a ticket returns.

Built in one place from plain line facts, whether the writer builds it from its batch (and sends it
with the wake-up) or a reader builds it from PostgreSQL rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, computed_field

from domain.quantities import Packaging, boxes_in, sqm_in

HELD = ("reserved", "confirmed")


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
class LineFacts:
    """Everything a line's answer shows, as stored."""

    line_no: int
    sku: str
    requested: Decimal
    unit: str
    pieces: Decimal
    rounding: str
    status: str
    allocated: Decimal
    packaging: Packaging
    warehouse: str | None
    lot: str | None
    shade: str | None
    caliber: str | None
    reason: str | None
    available: Decimal | None
    largest_lot: dict[str, Any] | None


def line_result(facts: LineFacts) -> HoldLineResult:
    held = facts.allocated if facts.status in HELD else Decimal(0)
    return HoldLineResult(
        line_no=facts.line_no,
        sku=facts.sku,
        requested=facts.requested,
        unit=facts.unit,
        pieces=facts.pieces,
        rounding=facts.rounding,
        status=facts.status,
        reserved_pieces=held,
        reserved_boxes=boxes_in(held, facts.packaging),
        reserved_sqm=sqm_in(held, facts.packaging),
        warehouse=facts.warehouse,
        lot=facts.lot,
        shade=facts.shade,
        caliber=facts.caliber,
        reason=facts.reason,
        available=facts.available,
        largest_lot=facts.largest_lot,
    )
