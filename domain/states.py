"""The states of a hold and its lines, the line commands between them, and a hold's identity.

The saga that moves them is `domain.holds`; what a line command does to stock is `domain.lines`.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from decimal import Decimal

from domain.errors import UnknownHold


class HoldStatus(enum.StrEnum):
    PENDING = "pending"
    RESERVED = "reserved"
    REJECTED = "rejected"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    REALLOCATING = "reallocating"
    PAID_WITHOUT_STOCK = "paid_without_stock"

    @property
    def settled(self) -> bool:
        """Whether the hold has an answer: not waiting for its lines."""
        return self not in UNSETTLED


UNSETTLED = frozenset({HoldStatus.PENDING, HoldStatus.REALLOCATING})
"""The statuses of a hold still waiting for its lines' answers: it has no answer yet."""


class LineStatus(enum.StrEnum):
    PENDING = "pending"
    RESERVED = "reserved"
    REJECTED = "rejected"
    RELEASED = "released"
    EXPIRED = "expired"
    CONFIRMED = "confirmed"
    RETURNED = "returned"
    UNFULFILLED = "unfulfilled"


class HoldMode(enum.StrEnum):
    ALL_OR_NOTHING = "all_or_nothing"
    PARTIAL = "partial"


class Payment(enum.StrEnum):
    NONE = "none"
    PAID = "paid"
    FAILED = "failed"
    REFUNDED = "refunded"


class LineAction(enum.StrEnum):
    """A line command, applied by the product's shard writer."""

    RESERVE = "line.reserve"
    REALLOCATE = "line.reallocate"
    RELEASE = "line.release"
    EXPIRE = "line.expire"
    CONFIRM = "line.confirm"
    RETURN = "line.return"

    @property
    def answers(self) -> bool:
        """Whether the hold waits for this command's answer (it decrements ``lines_pending``)."""
        return self in (LineAction.RESERVE, LineAction.REALLOCATE)


MOVES: dict[LineAction, tuple[LineStatus, LineStatus]] = {
    LineAction.RELEASE: (LineStatus.RESERVED, LineStatus.RELEASED),
    LineAction.EXPIRE: (LineStatus.RESERVED, LineStatus.EXPIRED),
    LineAction.CONFIRM: (LineStatus.RESERVED, LineStatus.CONFIRMED),
    LineAction.RETURN: (LineStatus.CONFIRMED, LineStatus.RETURNED),
}
"""The line commands whose outcome is known when they are sent: the status each acts on → leaves."""


def line_after(status: LineStatus, pending: list[LineAction]) -> LineStatus:
    """A line's final status once the commands still on their way to it apply, in order.

    An answer shows every line's final state: a rejected cart's compensated line is ``released``,
    even while its release command waits on its shard. Allocations (reserve, reallocate) are not
    known in advance; the hold does not answer while one is on its way.
    """
    for action in pending:
        acts_on, leaves = MOVES.get(action, (None, None))
        if status is acts_on and leaves is not None:
            status = leaves
    return status


@dataclass(slots=True)
class HoldLine:
    hold_id: str
    line_no: int
    product_id: int
    sku: str
    pieces: Decimal
    status: LineStatus = LineStatus.PENDING
    requested_warehouse_id: int | None = None
    warehouse_id: int | None = None
    lot_id: int | None = None
    allocated: Decimal = Decimal(0)
    """Pieces taken from the chosen lot (reserved, then sold, then maybe returned)."""
    returned: Decimal = Decimal(0)
    """Pieces of the sold line that came back (returns): never more than `allocated`."""
    reason: str | None = None
    available: Decimal | None = None
    largest_lot: dict[str, str] | None = None


@dataclass(slots=True)
class Hold:
    id: str
    status: HoldStatus
    mode: HoldMode
    expires_at: dt.datetime
    payment: Payment = Payment.NONE
    lines_pending: int = 0


def parse_hold_id(hold_id: object) -> str:
    """A hold id in its canonical form; anything that is not a UUID names no hold (UnknownHold)."""
    try:
        return str(uuid.UUID(str(hold_id)))
    except ValueError:
        raise UnknownHold(str(hold_id)) from None
