"""Returns: goods a customer brings back, line by line, against a confirmed hold.

Only what was sold on a line and has not come back yet can be returned (``allocated −
returned``). A resellable piece goes back into the on_hand of the lot it was sold from; a damaged
one too, and into that lot's ``damaged`` with a reason (it is on the shelf, not sellable). A refund
(`line.return`) later gives back only the rest of the line.

Transitions (hold line):
  confirmed → confirmed (part of what was sold comes back: returned grows)
  confirmed → returned (the rest of what was sold comes back: returned = allocated)
  any other status, or more than sold and not yet returned → refused (nothing changes)
"""

from __future__ import annotations

import enum
from decimal import Decimal

from domain.allocation import LotStock
from domain.movements import Decision, MovementKind, move
from domain.outcomes import Outcome
from domain.quantities import decimal_str
from domain.states import HoldLine, LineStatus


class Condition(enum.StrEnum):
    RESELLABLE = "resellable"
    DAMAGED = "damaged"


class ReturnRefusal(enum.StrEnum):
    NOT_SOLD = "not_sold"
    MORE_THAN_SOLD = "more_than_sold"
    REASON_REQUIRED = "reason_required"


ReturnDecision = Decision[ReturnRefusal]


def returnable(line: HoldLine) -> Decimal:
    """What was sold on the line and has not come back yet."""
    return line.allocated - line.returned if line.status is LineStatus.CONFIRMED else Decimal(0)


def refusal(
    line: HoldLine, quantity: Decimal, condition: Condition, reason: str | None
) -> tuple[ReturnRefusal, str] | None:
    """Why these goods cannot be taken back on this line (None: they can). The producer asks before
    recording (a 4xx); the writer asks again, as another return may have come first."""
    if line.status is not LineStatus.CONFIRMED:
        return ReturnRefusal.NOT_SOLD, f"line {line.line_no} is {line.status.value}: nothing sold to return"
    if quantity > returnable(line):
        return (
            ReturnRefusal.MORE_THAN_SOLD,
            f"line {line.line_no}: {decimal_str(quantity)} pieces returned, {decimal_str(returnable(line))} "
            f"sold and not yet returned",
        )
    if condition is Condition.DAMAGED and not reason:
        return ReturnRefusal.REASON_REQUIRED, "damaged goods need a reason"
    return None


def take_back(
    line: HoldLine,
    stock: LotStock,
    quantity: Decimal,
    condition: Condition,
    reason: str | None = None,
    *,
    unit_cost: Decimal | None = None,
) -> ReturnDecision:
    """Take `quantity` pieces of a sold line back into the lot it was sold from."""
    if refused := refusal(line, quantity, condition, reason):
        return ReturnDecision(Outcome.REJECTED, refused[1], refused[0])
    damaged = quantity if condition is Condition.DAMAGED else Decimal(0)
    movement = move(
        MovementKind.RETURN, stock, on_hand=quantity, damaged=damaged, unit_cost=unit_cost, reason=reason
    )
    line.returned += quantity
    if line.returned == line.allocated:
        line.status = LineStatus.RETURNED
    return ReturnDecision(Outcome.RETURNED, movements=[movement])
