"""What applying a command came to: the `outcome` of every command's result, as stored."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class Outcome(enum.StrEnum):
    # hold-level commands and settlements
    RESERVED = "reserved"
    REJECTED = "rejected"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    REALLOCATING = "reallocating"
    PAID_WITHOUT_STOCK = "paid_without_stock"
    PAYMENT_RECORDED = "payment_recorded"
    """Paid while the lines still answer: decided when they have."""
    REFUND_RECORDED = "refund_recorded"
    DEFERRED = "deferred"
    """An expiry that waits for a payment or release recorded before it."""
    COUNTED = "counted"
    """One line's answer counted on its hold, more to come."""
    # line commands (besides the statuses above)
    RETURNED = "returned"
    UNFULFILLED = "unfulfilled"
    # stock commands
    RECEIVED = "received"
    DAMAGED = "damaged"
    IN_TRANSIT = "in_transit"
    """A transfer sent: its pieces are on their way."""
    CANCELLED = "cancelled"
    ADJUSTED = "adjusted"
    """A count or an adjustment changed on_hand (or found it right)."""
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    # any command
    NOOP = "noop"
    """Nothing to do in the state found: recorded, changes nothing."""
    DEAD = "dead"
    """Parked as a dead letter after failing too often."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A warehouse command the stock cannot take (more than is there): a result, never an exception."""

    reason: str
    available: Decimal
    """What there was to take."""
