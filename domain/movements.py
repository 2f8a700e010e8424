"""The ledger's rows: every change to a lot balance is a movement of a kind, with its signed deltas.

`move` is the one way a balance changes: it applies the deltas to the in-memory balance, keeps the
invariants (every bucket ≥ 0, reserved + damaged + quarantine ≤ on_hand; otherwise InvariantBroken,
a bug and never a result) and returns the ledger row that says so, with the balance it left. The
kinds and their deltas are the table of docs/warehouse.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

from domain.allocation import LotStock
from domain.errors import InvariantBroken
from domain.outcomes import Outcome

ZERO = Decimal(0)
COST_PLACES = Decimal("0.0001")  # movements.total_cost is NUMERIC(18, 4)


class MovementKind(enum.StrEnum):
    RECEIPT = "receipt"
    SALE = "sale"
    RETURN = "return"
    RESERVATION = "reservation"
    RELEASE = "release"
    EXPIRY = "expiry"
    QUARANTINE_RELEASE = "quarantine_release"
    DAMAGE = "damage"
    WRITE_OFF = "write_off"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    TRANSFER_CANCEL = "transfer_cancel"
    ADJUSTMENT = "adjustment"
    COUNT_ADJUSTMENT = "count_adjustment"


@dataclass(frozen=True, slots=True)
class Movement:
    """One ledger row: signed changes to a lot balance's buckets, what a piece cost (None: no cost),
    why, and each bucket as the row left it."""

    kind: MovementKind
    stock: LotStock
    on_hand: Decimal = ZERO
    reserved: Decimal = ZERO
    in_transit: Decimal = ZERO
    damaged: Decimal = ZERO
    quarantine: Decimal = ZERO
    unit_cost: Decimal | None = None
    reason: str | None = None
    after: tuple[Decimal, Decimal, Decimal, Decimal, Decimal] = (ZERO, ZERO, ZERO, ZERO, ZERO)
    """on_hand, reserved, in_transit, damaged, quarantine once the row applied."""

    @property
    def quantity(self) -> Decimal:
        """The pieces the movement moves: its largest change to any bucket."""
        return max(
            abs(self.on_hand),
            abs(self.reserved),
            abs(self.in_transit),
            abs(self.damaged),
            abs(self.quarantine),
        )

    @property
    def total_cost(self) -> Decimal | None:
        """quantity × unit cost (None without a unit cost)."""
        if self.unit_cost is None:
            return None
        return (self.quantity * self.unit_cost).quantize(COST_PLACES)


def move(
    kind: MovementKind,
    stock: LotStock,
    *,
    on_hand: Decimal = ZERO,
    reserved: Decimal = ZERO,
    in_transit: Decimal = ZERO,
    damaged: Decimal = ZERO,
    quarantine: Decimal = ZERO,
    unit_cost: Decimal | None = None,
    reason: str | None = None,
) -> Movement:
    """Apply a signed change to a balance, keeping its invariants, and say it in a ledger row."""
    after = (
        stock.on_hand + on_hand,
        stock.reserved + reserved,
        stock.in_transit + in_transit,
        stock.damaged + damaged,
        stock.quarantine + quarantine,
    )
    new_on_hand, new_reserved, new_in_transit, new_damaged, new_quarantine = after
    if min(after) < 0 or new_reserved + new_damaged + new_quarantine > new_on_hand:
        changes = ", ".join(
            f"{name} {old}{delta:+}"
            for name, old, delta in (
                ("on_hand", stock.on_hand, on_hand),
                ("reserved", stock.reserved, reserved),
                ("in_transit", stock.in_transit, in_transit),
                ("damaged", stock.damaged, damaged),
                ("quarantine", stock.quarantine, quarantine),
            )
            if delta
        )
        raise InvariantBroken(f"{kind} on lot {stock.lot_code}: {changes}")
    stock.on_hand, stock.reserved = new_on_hand, new_reserved
    stock.in_transit, stock.damaged, stock.quarantine = new_in_transit, new_damaged, new_quarantine
    return Movement(kind, stock, on_hand, reserved, in_transit, damaged, quarantine, unit_cost, reason, after)


R = TypeVar("R", bound=enum.StrEnum)


@dataclass(slots=True)
class Decision(Generic[R]):
    """What a warehouse operation decided: its outcome, why (`note`, and the refusal's code if it
    was refused) and the movements that carry it out (none: nothing changed)."""

    outcome: Outcome
    note: str = ""
    refusal: R | None = None
    movements: list[Movement] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.movements)
