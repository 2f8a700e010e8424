"""Quarantine: a received line that may not be sold until it is released.

Transitions of a quarantined receipt line (its `quarantines` row; left = quantity − released −
written off):
  quarantined --release q ≤ left-->      quarantined (left − q), or once nothing is left:
                                          released (none written off) | settled (some written off)
  quarantined --write off q ≤ left-->    quarantined (left − q), or once nothing is left:
                                          written_off (none released) | settled (some released)
  quarantined --release / write off q > left-->  refused, nothing changes
  released | written_off | settled --anything-->  refused: nothing is left
A release moves q from the lot's `quarantine` bucket to sellable stock (Δquarantine −q, on_hand
unchanged: the pieces were on hand all along); a write-off moves them to `damaged` (Δdamaged +q,
Δquarantine −q). A quantity left out means all that is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.allocation import LotStock
from domain.movements import Movement, MovementKind, move
from domain.outcomes import Refused
from domain.quantities import decimal_str

ZERO = Decimal(0)


@dataclass(slots=True)
class QuarantinedLine:
    id: str
    quantity: Decimal
    released: Decimal = ZERO
    written_off: Decimal = ZERO

    @property
    def left(self) -> Decimal:
        return self.quantity - self.released - self.written_off

    @property
    def status(self) -> str:
        if self.left > 0:
            return "quarantined"
        if self.written_off == 0:
            return "released"
        return "written_off" if self.released == 0 else "settled"


def release(
    line: QuarantinedLine, stock: LotStock, pieces: Decimal | None, *, unit_cost: Decimal | None = None
) -> Movement | Refused:
    """Release `pieces` (None: all that is left) of the line to sellable stock."""
    taken = _taken(line, pieces)
    if isinstance(taken, Refused):
        return taken
    line.released += taken
    return move(MovementKind.QUARANTINE_RELEASE, stock, quarantine=-taken, unit_cost=unit_cost)


def write_off(
    line: QuarantinedLine,
    stock: LotStock,
    pieces: Decimal | None,
    *,
    reason: str,
    unit_cost: Decimal | None = None,
) -> Movement | Refused:
    """Write `pieces` (None: all that is left) of the line off as damaged."""
    taken = _taken(line, pieces)
    if isinstance(taken, Refused):
        return taken
    line.written_off += taken
    return move(
        MovementKind.DAMAGE, stock, damaged=taken, quarantine=-taken, unit_cost=unit_cost, reason=reason
    )


def _taken(line: QuarantinedLine, pieces: Decimal | None) -> Decimal | Refused:
    if line.left <= 0:
        return Refused(f"quarantine {line.id} is {line.status}: nothing is left in it", available=ZERO)
    if pieces is not None and pieces > line.left:
        return Refused(
            f"{decimal_str(pieces)} pieces asked, {decimal_str(line.left)} left in quarantine {line.id}",
            available=line.left,
        )
    return line.left if pieces is None else pieces
