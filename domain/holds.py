"""The hold saga: a cart hold, its lines, and every transition between their states.

A hold fans out one line command per line, each applied by the writer of that product's shard.
Hold-level commands (release, payment, expiry) are applied by the hold's *home* shard writer, and
the hold row decides: the first command to move it out of ``reserved`` wins, and every later one
becomes an explicit no-op, or — for a payment after expiry — a re-reservation attempt that ends
``confirmed`` or ``paid_without_stock``. Line answers are counted on the hold row
(``lines_pending``); the writer that brings the count to zero calls :func:`settle`.

Transitions (hold):
  pending → reserved | rejected | confirmed (paid while pending) | paid_without_stock
  pending → released (release / failed payment while lines are still answering; settle releases)
  released → confirmed | paid_without_stock (paid while the lines of a hold released as pending were
    still answering: settle decides as for a hold paid while pending; or paid with no line to sell)
  reserved → confirmed | released | expired | reallocating (paid at or after expires_at)
  expired | released → reallocating (paid later) → confirmed | paid_without_stock
  confirmed → refunded
Anything else is a recorded no-op.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from decimal import Decimal


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
    RELEASE = "line.release"
    EXPIRE = "line.expire"
    CONFIRM = "line.confirm"
    SELL = "line.sell"
    RETURN = "line.return"

    @property
    def answers(self) -> bool:
        """Whether the hold waits for this command's answer (it decrements ``lines_pending``)."""
        return self in (LineAction.RESERVE, LineAction.SELL)


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


@dataclass(frozen=True, slots=True)
class FanOut:
    action: LineAction
    line_no: int


@dataclass(slots=True)
class HoldDecision:
    """What a hold-level command or a settlement does to the hold row, and the line commands it sends."""

    outcome: str
    note: str = ""
    fan_out: list[FanOut] = field(default_factory=list)
    schedule_expiry: bool = False
    raise_paid_without_stock: bool = False

    @property
    def changed(self) -> bool:
        return self.outcome != "noop"


def _noop(hold: Hold, why: str) -> HoldDecision:
    return HoldDecision(outcome="noop", note=f"hold is {hold.status.value}: {why}")


def _fan_out(
    hold: Hold, action: LineAction, lines: list[HoldLine], statuses: set[LineStatus]
) -> list[FanOut]:
    targets = [FanOut(action, line.line_no) for line in lines if line.status in statuses]
    if action.answers:
        hold.lines_pending = len(targets)
    return targets


def is_expired(hold: Hold, now: dt.datetime) -> bool:
    """Expiry is decided by the clock: a hold never expires before ``expires_at``."""
    return now >= hold.expires_at


def release(hold: Hold, lines: list[HoldLine], now: dt.datetime) -> HoldDecision:
    """The checkout gives the hold back (cart abandoned)."""
    if hold.status is HoldStatus.PENDING:
        if hold.payment is Payment.PAID:  # paid first: the payment wins, as it does on a reserved hold
            return _noop(hold, "already paid")
        hold.status = HoldStatus.RELEASED  # the lines still answering are released when they settle
        return HoldDecision(outcome="released", note="released while lines were still answering")
    if hold.status is HoldStatus.RESERVED:
        if is_expired(hold, now):
            return expire(hold, lines, now)
        hold.status = HoldStatus.RELEASED
        return HoldDecision(
            "released", fan_out=_fan_out(hold, LineAction.RELEASE, lines, {LineStatus.RESERVED})
        )
    return _noop(hold, "nothing to release")


def expire(hold: Hold, lines: list[HoldLine], now: dt.datetime) -> HoldDecision:
    """The hold's TTL has run out (fired by its delayed message or by the sweep)."""
    if hold.status is not HoldStatus.RESERVED:
        return _noop(hold, "only a reserved hold expires")
    if not is_expired(hold, now):
        return HoldDecision(outcome="noop", note=f"not due before {hold.expires_at.isoformat()}")
    hold.status = HoldStatus.EXPIRED
    return HoldDecision("expired", fan_out=_fan_out(hold, LineAction.EXPIRE, lines, {LineStatus.RESERVED}))


def pay(hold: Hold, lines: list[HoldLine], payment: Payment, now: dt.datetime) -> HoldDecision:
    """A payment event from the provider: paid, failed or refunded."""
    if payment is Payment.PAID:
        return _paid(hold, lines, now)
    if payment is Payment.FAILED:
        if hold.payment is Payment.PAID:
            return _noop(hold, "already paid: a late failed attempt changes nothing")
        if hold.status in (HoldStatus.PENDING, HoldStatus.RESERVED):
            hold.payment = Payment.FAILED
            return release(hold, lines, now)
        return _noop(hold, "a failed payment changes nothing")
    if hold.status is HoldStatus.CONFIRMED:
        hold.status, hold.payment = HoldStatus.REFUNDED, Payment.REFUNDED
        # A line still reserved has its CONFIRM in flight, ahead of the RETURN on the same shard.
        sold = {LineStatus.CONFIRMED, LineStatus.RESERVED}
        return HoldDecision("refunded", fan_out=_fan_out(hold, LineAction.RETURN, lines, sold))
    return _noop(hold, "only a confirmed hold is refunded")


def _paid(hold: Hold, lines: list[HoldLine], now: dt.datetime) -> HoldDecision:
    if hold.payment is Payment.PAID:
        return _noop(hold, "already paid")
    answering = hold.status is HoldStatus.RELEASED and hold.lines_pending > 0  # released while pending
    if hold.status is HoldStatus.PENDING or answering:
        hold.payment = Payment.PAID
        return HoldDecision(outcome="payment_recorded", note="confirmed when the lines have answered")
    if hold.status is HoldStatus.RESERVED and not is_expired(hold, now):
        hold.status, hold.payment = HoldStatus.CONFIRMED, Payment.PAID
        return HoldDecision(
            "confirmed", fan_out=_fan_out(hold, LineAction.CONFIRM, lines, {LineStatus.RESERVED})
        )
    if hold.status in (HoldStatus.RESERVED, HoldStatus.EXPIRED, HoldStatus.RELEASED):
        # Paid after the stock went back: expire what is still held, then try to sell it again.
        fan_out: list[FanOut] = []
        was_reserved = {LineStatus.RESERVED}
        if hold.status is HoldStatus.RESERVED:
            fan_out = _fan_out(hold, LineAction.EXPIRE, lines, was_reserved)
        sold_from = {LineStatus.RESERVED, LineStatus.EXPIRED, LineStatus.RELEASED}
        sell = _fan_out(hold, LineAction.SELL, lines, sold_from)
        hold.payment = Payment.PAID
        if not sell:  # no line was ever reserved, so none will answer: decide now, not never
            hold.status = HoldStatus.PAID_WITHOUT_STOCK
            return HoldDecision(
                "paid_without_stock",
                note="paid for a hold with nothing to sell",
                raise_paid_without_stock=True,
            )
        fan_out += sell
        hold.status = HoldStatus.REALLOCATING
        return HoldDecision("reallocating", note="paid after the hold ended: re-reserving", fan_out=fan_out)
    if hold.status is HoldStatus.REJECTED:
        hold.status, hold.payment = HoldStatus.PAID_WITHOUT_STOCK, Payment.PAID
        return HoldDecision(
            "paid_without_stock", note="paid for a rejected hold", raise_paid_without_stock=True
        )
    return _noop(hold, "payment already settled")


def settle(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    """Every line has answered: decide the hold. Called once, by the writer that saw the last answer."""
    if hold.status is HoldStatus.REALLOCATING:
        if all(
            line.status is LineStatus.CONFIRMED for line in lines if line.status is not LineStatus.REJECTED
        ):
            hold.status = HoldStatus.CONFIRMED
            return HoldDecision("confirmed", note="re-reserved after expiry")
        hold.status = HoldStatus.PAID_WITHOUT_STOCK
        return HoldDecision("paid_without_stock", note="paid, but stock was gone after expiry")
    if hold.status is HoldStatus.RELEASED and hold.payment is not Payment.PAID:
        return HoldDecision(
            "released", fan_out=_fan_out(hold, LineAction.RELEASE, lines, {LineStatus.RESERVED})
        )
    if hold.status not in (HoldStatus.PENDING, HoldStatus.RELEASED):  # released + paid: decide as pending
        return _noop(hold, "already settled")
    reserved = [line for line in lines if line.status is LineStatus.RESERVED]
    rejected = [line for line in lines if line.status is LineStatus.REJECTED]
    accepted = not rejected if hold.mode is HoldMode.ALL_OR_NOTHING else bool(reserved)
    if not accepted:
        compensation = _fan_out(hold, LineAction.RELEASE, lines, {LineStatus.RESERVED})
        if hold.payment is Payment.PAID:
            hold.status = HoldStatus.PAID_WITHOUT_STOCK
            return HoldDecision("paid_without_stock", fan_out=compensation, raise_paid_without_stock=True)
        hold.status = HoldStatus.REJECTED
        return HoldDecision("rejected", fan_out=compensation)
    if hold.payment is Payment.PAID:
        hold.status = HoldStatus.CONFIRMED
        return HoldDecision(
            "confirmed", fan_out=_fan_out(hold, LineAction.CONFIRM, lines, {LineStatus.RESERVED})
        )
    hold.status = HoldStatus.RESERVED
    return HoldDecision("reserved", schedule_expiry=True)
