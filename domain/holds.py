"""The hold saga: a cart hold, its lines, and every transition between their states.

A hold fans out one line command per line, each applied by the writer of that product's shard.
Hold-level commands (release, payment, expiry) are applied by the hold's *home* shard writer, and
the hold row decides. Each command is judged **as of the time it was recorded** (PostgreSQL's clock
when its inbox row was written), not when a writer got to it: a reserved hold whose ``expires_at``
had passed when a command was recorded is expired first, and the command then meets the expired
hold; a command recorded before ``expires_at`` meets the hold as it was, and the expiry waits for it
(``expire(..., recorded_before_pending=True)`` defers). So the outcome is the same in whatever order
a stalled or busy writer applies them. Line answers are counted on the hold row (``lines_pending``);
the writer that brings the count to zero calls :func:`settle`.

Transitions (hold):
  pending → reserved | rejected | confirmed (paid while pending) | paid_without_stock | refunded
  pending → released (release / failed payment while lines are still answering; settle releases)
  released → confirmed | paid_without_stock | refunded (paid while the lines of a hold released as
    pending were still answering: settle decides as for a hold paid while pending)
  reserved → confirmed | released (paid, released, payment failed: recorded before expires_at)
  reserved → expired (by the clock: its expiry, or any command recorded at or after expires_at)
  expired | released → reallocating (paid later: every line once reserved is re-reserved)
  released → paid_without_stock (paid, with no line ever reserved)
  reallocating → confirmed | paid_without_stock (by the hold's mode) | refunded (refunded meanwhile)
  rejected → paid_without_stock (paid anyway)
  confirmed | paid_without_stock → refunded
Anything else is a recorded no-op.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from domain.outcomes import Outcome
from domain.states import Hold, HoldLine, HoldMode, HoldStatus, LineAction, LineStatus, Payment


@dataclass(frozen=True, slots=True)
class FanOut:
    action: LineAction
    line_no: int
    again: bool = False
    """The second command of this action to this line: a line released, re-reserved when its hold
    was paid after it ended, and given back again (it needs an idempotency key of its own)."""


class Alert(enum.StrEnum):
    """What a decision does to the hold's ``paid_without_stock`` alert."""

    NONE = "none"
    RAISE = "raise"
    RESOLVE = "resolve"


@dataclass(slots=True)
class HoldDecision:
    """What a hold-level command or a settlement does to the hold row, and the line commands it sends."""

    outcome: Outcome
    note: str = ""
    fan_out: list[FanOut] = field(default_factory=list)
    schedule_expiry: bool = False
    alert: Alert = Alert.NONE

    @property
    def changed(self) -> bool:
        return self.outcome not in (Outcome.NOOP, Outcome.DEFERRED)

    @property
    def deferred(self) -> bool:
        """An expiry that waits: a command recorded before ``expires_at`` is still to be applied."""
        return self.outcome is Outcome.DEFERRED


def _noop(hold: Hold, why: str) -> HoldDecision:
    return HoldDecision(outcome=Outcome.NOOP, note=f"hold is {hold.status.value}: {why}")


def _fan_out(
    hold: Hold, action: LineAction, lines: list[HoldLine], statuses: set[LineStatus], *, again: bool = False
) -> list[FanOut]:
    targets = [FanOut(action, line.line_no, again) for line in lines if line.status in statuses]
    if action.answers:
        hold.lines_pending = len(targets)
    return targets


def _give_back(hold: Hold, lines: list[HoldLine], *, again: bool = False) -> list[FanOut]:
    return _fan_out(hold, LineAction.RELEASE, lines, {LineStatus.RESERVED}, again=again)


def is_expired(hold: Hold, at: dt.datetime) -> bool:
    """Expiry is decided by the clock: a hold never expires before ``expires_at``."""
    return at >= hold.expires_at


def _expire_by_clock(hold: Hold, lines: list[HoldLine], recorded_at: dt.datetime) -> HoldDecision | None:
    """A reserved hold whose time had run out when a command was recorded is expired first."""
    if hold.status is not HoldStatus.RESERVED or not is_expired(hold, recorded_at):
        return None
    hold.status = HoldStatus.EXPIRED
    return HoldDecision(
        Outcome.EXPIRED,
        note="the hold had expired when this command was recorded",
        fan_out=_fan_out(hold, LineAction.EXPIRE, lines, {LineStatus.RESERVED}),
    )


def _after_clock(expired: HoldDecision | None, decision: HoldDecision) -> HoldDecision:
    if expired is None:
        return decision
    if not decision.changed:
        return expired
    decision.fan_out = expired.fan_out + decision.fan_out
    return decision


def release(hold: Hold, lines: list[HoldLine], recorded_at: dt.datetime) -> HoldDecision:
    """The checkout gives the hold back (cart abandoned)."""
    expired = _expire_by_clock(hold, lines, recorded_at)
    return _after_clock(expired, _release(hold, lines))


def _release(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    if hold.status is HoldStatus.PENDING:
        if hold.payment in (Payment.PAID, Payment.REFUNDED):  # paid first: the payment wins
            return _noop(hold, "already paid")
        hold.status = HoldStatus.RELEASED  # the lines still answering are released when they settle
        return HoldDecision(outcome=Outcome.RELEASED, note="released while lines were still answering")
    if hold.status is HoldStatus.RESERVED:
        hold.status = HoldStatus.RELEASED
        return HoldDecision(Outcome.RELEASED, fan_out=_give_back(hold, lines))
    return _noop(hold, "nothing to release")


def expire(
    hold: Hold, lines: list[HoldLine], now: dt.datetime, *, recorded_before_pending: bool = False
) -> HoldDecision:
    """The hold's TTL has run out (fired by its delayed message or by the sweep).

    `recorded_before_pending`: a release or payment recorded before ``expires_at`` waits in the
    inbox. It wins over the expiry however late it is applied, so the expiry waits for it.
    """
    if hold.status is not HoldStatus.RESERVED:
        return _noop(hold, "only a reserved hold expires")
    if not is_expired(hold, now):
        return HoldDecision(outcome=Outcome.NOOP, note=f"not due before {hold.expires_at.isoformat()}")
    if recorded_before_pending:
        return HoldDecision(Outcome.DEFERRED, note="a command recorded before expires_at is applied first")
    hold.status = HoldStatus.EXPIRED
    return HoldDecision(
        Outcome.EXPIRED, fan_out=_fan_out(hold, LineAction.EXPIRE, lines, {LineStatus.RESERVED})
    )


def pay(hold: Hold, lines: list[HoldLine], payment: Payment, recorded_at: dt.datetime) -> HoldDecision:
    """A payment event from the provider: paid, failed or refunded."""
    expired = _expire_by_clock(hold, lines, recorded_at)
    if payment is Payment.PAID:
        decision = _paid(hold, lines)
    elif payment is Payment.FAILED:
        decision = _failed(hold, lines)
    else:
        decision = _refunded(hold, lines)
    return _after_clock(expired, decision)


def _failed(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    if hold.payment in (Payment.PAID, Payment.REFUNDED):
        return _noop(hold, "already paid: a late failed attempt changes nothing")
    if hold.status in (HoldStatus.PENDING, HoldStatus.RESERVED):
        hold.payment = Payment.FAILED
        return _release(hold, lines)
    return _noop(hold, "a failed payment changes nothing")


def _paid(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    if hold.payment is Payment.PAID:
        return _noop(hold, "already paid")
    if hold.payment is Payment.REFUNDED:
        return _noop(hold, "already refunded")
    answering = hold.status is HoldStatus.RELEASED and hold.lines_pending > 0  # released while pending
    if hold.status is HoldStatus.PENDING or answering:
        hold.payment = Payment.PAID
        return HoldDecision(outcome=Outcome.PAYMENT_RECORDED, note="decided when the lines have answered")
    if hold.status is HoldStatus.RESERVED:
        hold.status, hold.payment = HoldStatus.CONFIRMED, Payment.PAID
        return HoldDecision(
            Outcome.CONFIRMED, fan_out=_fan_out(hold, LineAction.CONFIRM, lines, {LineStatus.RESERVED})
        )
    if hold.status in (HoldStatus.EXPIRED, HoldStatus.RELEASED):
        # Paid after the stock went back: re-reserve every line that was held once (its expiry or
        # release, if still on its way, is applied before on the same shard), then decide by mode.
        hold.payment = Payment.PAID
        once_held = {LineStatus.RESERVED, LineStatus.EXPIRED, LineStatus.RELEASED}
        reallocate = _fan_out(hold, LineAction.REALLOCATE, lines, once_held)
        if not reallocate:  # no line was ever reserved, so none will answer: decide now, not never
            hold.status = HoldStatus.PAID_WITHOUT_STOCK
            return HoldDecision(
                Outcome.PAID_WITHOUT_STOCK, note="paid for a hold with nothing to sell", alert=Alert.RAISE
            )
        hold.status = HoldStatus.REALLOCATING
        return HoldDecision(
            Outcome.REALLOCATING, note="paid after the hold ended: re-reserving", fan_out=reallocate
        )
    if hold.status is HoldStatus.REJECTED:
        hold.status, hold.payment = HoldStatus.PAID_WITHOUT_STOCK, Payment.PAID
        return HoldDecision(Outcome.PAID_WITHOUT_STOCK, note="paid for a rejected hold", alert=Alert.RAISE)
    return _noop(hold, "payment already settled")


def _refunded(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    if hold.payment is Payment.REFUNDED:
        return _noop(hold, "already refunded")
    if hold.payment is not Payment.PAID:
        return _noop(hold, "nothing was paid")
    if hold.status in (HoldStatus.CONFIRMED, HoldStatus.PAID_WITHOUT_STOCK):
        alert = Alert.RESOLVE if hold.status is HoldStatus.PAID_WITHOUT_STOCK else Alert.NONE
        hold.status, hold.payment = HoldStatus.REFUNDED, Payment.REFUNDED
        # A reserved line may have its confirmation on its way, ahead of the return on its shard
        # (or its release, for an all-or-nothing hold paid without stock: the return is then a no-op).
        sold = {LineStatus.CONFIRMED, LineStatus.RESERVED}
        return HoldDecision(
            Outcome.REFUNDED, fan_out=_fan_out(hold, LineAction.RETURN, lines, sold), alert=alert
        )
    # Paid while its lines are still answering: what they reserve is given back when they have.
    hold.payment = Payment.REFUNDED
    return HoldDecision(Outcome.REFUND_RECORDED, note="decided when the lines have answered")


def line_answered(hold: Hold, lines: list[HoldLine]) -> HoldDecision | None:
    """One more line has answered its allocation: counted on the hold (None: more to come); the
    last one settles it."""
    hold.lines_pending -= 1
    return settle(hold, lines) if hold.lines_pending == 0 else None


def settle(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    """Every line has answered: decide the hold. Called once, by the writer that saw the last answer."""
    if hold.status is HoldStatus.REALLOCATING:
        return _settle_reallocation(hold, lines)
    if hold.status is HoldStatus.RELEASED and hold.payment not in (Payment.PAID, Payment.REFUNDED):
        return HoldDecision(Outcome.RELEASED, fan_out=_give_back(hold, lines))
    if hold.status not in (HoldStatus.PENDING, HoldStatus.RELEASED):  # released + paid: as pending
        return _noop(hold, "already settled")
    if hold.payment is Payment.REFUNDED:
        hold.status = HoldStatus.REFUNDED
        return HoldDecision(
            Outcome.REFUNDED, note="refunded before the lines answered", fan_out=_give_back(hold, lines)
        )
    reserved = [line for line in lines if line.status is LineStatus.RESERVED]
    rejected = [line for line in lines if line.status is LineStatus.REJECTED]
    accepted = not rejected if hold.mode is HoldMode.ALL_OR_NOTHING else bool(reserved)
    if not accepted:
        compensation = _give_back(hold, lines)
        if hold.payment is Payment.PAID:
            hold.status = HoldStatus.PAID_WITHOUT_STOCK
            return HoldDecision(Outcome.PAID_WITHOUT_STOCK, fan_out=compensation, alert=Alert.RAISE)
        hold.status = HoldStatus.REJECTED
        return HoldDecision(Outcome.REJECTED, fan_out=compensation)
    if hold.payment is Payment.PAID:
        hold.status = HoldStatus.CONFIRMED
        return HoldDecision(
            Outcome.CONFIRMED, fan_out=_fan_out(hold, LineAction.CONFIRM, lines, {LineStatus.RESERVED})
        )
    hold.status = HoldStatus.RESERVED
    return HoldDecision(Outcome.RESERVED, schedule_expiry=True)


def _settle_reallocation(hold: Hold, lines: list[HoldLine]) -> HoldDecision:
    """The lines of a hold paid after it ended have answered their re-reservation.

    All or nothing: every line re-reserved → all sold; else none is sold (the re-reserved ones are
    given back) and the hold is paid without stock. Partial: what could be re-reserved is sold, and
    the hold is paid without stock if any line could not be.
    """
    missing = [line for line in lines if line.status is LineStatus.UNFULFILLED]
    if hold.payment is Payment.REFUNDED:
        hold.status = HoldStatus.REFUNDED
        return HoldDecision(
            Outcome.REFUNDED, note="refunded while re-reserving", fan_out=_give_back(hold, lines, again=True)
        )
    if missing and hold.mode is HoldMode.ALL_OR_NOTHING:
        hold.status = HoldStatus.PAID_WITHOUT_STOCK
        return HoldDecision(
            Outcome.PAID_WITHOUT_STOCK,
            note="paid after the hold ended, and not every line could be re-reserved: none is sold",
            fan_out=_give_back(hold, lines, again=True),
            alert=Alert.RAISE,
        )
    sell = _fan_out(hold, LineAction.CONFIRM, lines, {LineStatus.RESERVED})
    if missing:
        hold.status = HoldStatus.PAID_WITHOUT_STOCK
        return HoldDecision(
            Outcome.PAID_WITHOUT_STOCK,
            note="paid after the hold ended: the lines that could be re-reserved are sold",
            fan_out=sell,
            alert=Alert.RAISE,
        )
    hold.status = HoldStatus.CONFIRMED
    return HoldDecision(Outcome.CONFIRMED, note="re-reserved after the hold ended", fan_out=sell)
