"""Counts: what was physically found of a lot in a warehouse, against the books.

A count states the pieces on the shelf (damaged and quarantined ones included: they are part of
on_hand). The difference to on_hand becomes one ``count_adjustment``. The books cannot go below
what is held (reserved + damaged + quarantine): a count below it keeps the holds, takes on_hand
down only to what is held, and raises a ``count_below_reserved`` alert that names the holds on the
lot, so that someone looks for the missing pieces before the holds are sold.

Transitions (lot balance, per count):
  counted = on_hand → unchanged (the count agrees)
  held ≤ counted ≠ on_hand → on_hand := counted (count_adjustment of the difference)
  counted < held → on_hand := held (count_adjustment, if any), count_below_reserved alert
  counted < 0 → refused (InvalidCommand: never recorded)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.allocation import LotStock
from domain.errors import InvalidCommand
from domain.movements import Movement, MovementKind, move
from domain.outcomes import Outcome
from domain.quantities import decimal_str


@dataclass(frozen=True, slots=True)
class HeldLine:
    """A hold line holding pieces of the counted lot."""

    hold_id: str
    line_no: int
    pieces: Decimal


@dataclass(frozen=True, slots=True)
class BelowHeld:
    """The count found fewer pieces than are held: the books keep the held ones, and ops look."""

    counted: Decimal
    held: Decimal
    reserved: Decimal
    holds: tuple[HeldLine, ...]

    @property
    def missing(self) -> Decimal:
        return self.held - self.counted

    def detail(self) -> dict[str, object]:
        return {
            "counted": decimal_str(self.counted),
            "held": decimal_str(self.held),
            "reserved": decimal_str(self.reserved),
            "missing": decimal_str(self.missing),
            "holds": [
                {"hold_id": h.hold_id, "line_no": h.line_no, "pieces": decimal_str(h.pieces)}
                for h in self.holds
            ],
        }


@dataclass(slots=True)
class CountDecision:
    outcome: Outcome
    difference: Decimal
    """What on_hand changed by."""
    movements: list[Movement] = field(default_factory=list)
    below_held: BelowHeld | None = None


def check_counted(counted: Decimal, *, field: str = "counted") -> Decimal:
    if counted < 0:
        raise InvalidCommand("a count cannot be negative", field=field)
    return counted


def count(
    stock: LotStock,
    counted: Decimal,
    holding: Sequence[HeldLine] = (),
    *,
    reason: str | None = None,
    unit_cost: Decimal | None = None,
) -> CountDecision:
    """Bring the lot balance's on_hand to what was counted, never below what is held."""
    check_counted(counted)
    held = stock.reserved + stock.damaged + stock.quarantine
    target = max(counted, held)
    difference = target - stock.on_hand
    movements = (
        [move(MovementKind.COUNT_ADJUSTMENT, stock, on_hand=difference, unit_cost=unit_cost, reason=reason)]
        if difference
        else []
    )
    below = BelowHeld(counted, held, stock.reserved, tuple(holding)) if counted < held else None
    return CountDecision(Outcome.ADJUSTED, difference, movements, below)
