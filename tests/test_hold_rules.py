"""The hold saga: every transition of domain/holds.py's docstring, every no-op, and what the lines do."""

from __future__ import annotations

import datetime as dt
from collections import deque
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.allocation import LotStock, WarehouseRoute
from domain.errors import InvariantBroken
from domain.holds import Alert, FanOut, HoldDecision, expire, is_expired, pay, release, settle
from domain.lines import apply_line, fail_line
from domain.movements import MovementKind, move
from domain.states import Hold, HoldLine, HoldMode, HoldStatus, LineAction, LineStatus, Payment, line_after

S, L = HoldStatus, LineStatus
A = LineAction
EXPIRES_AT = dt.datetime(2025, 3, 1, 12, 15, tzinfo=dt.UTC)
BEFORE = EXPIRES_AT - dt.timedelta(minutes=5)
AFTER = EXPIRES_AT + dt.timedelta(minutes=5)

ALLOWED = {
    (S.PENDING, S.RESERVED),
    (S.PENDING, S.REJECTED),
    (S.PENDING, S.CONFIRMED),
    (S.PENDING, S.PAID_WITHOUT_STOCK),
    (S.PENDING, S.RELEASED),
    (S.RESERVED, S.CONFIRMED),
    (S.RESERVED, S.RELEASED),
    (S.RESERVED, S.EXPIRED),
    (S.RESERVED, S.REALLOCATING),
    (S.EXPIRED, S.REALLOCATING),
    (S.RELEASED, S.REALLOCATING),
    (S.REALLOCATING, S.CONFIRMED),
    (S.REALLOCATING, S.PAID_WITHOUT_STOCK),
    (S.CONFIRMED, S.REFUNDED),
    (S.RELEASED, S.CONFIRMED),  # released while pending, then paid before the lines answered
    (S.RELEASED, S.PAID_WITHOUT_STOCK),  # … and one was rejected, or no line was ever reserved
    (S.PENDING, S.REFUNDED),  # paid and refunded while the lines answered
    (S.RELEASED, S.REFUNDED),
    (S.REALLOCATING, S.REFUNDED),  # refunded while re-reserving
    (S.PAID_WITHOUT_STOCK, S.REFUNDED),
    # Not in the docstring's list but implied by it: a rejected hold that is paid anyway.
    (S.REJECTED, S.PAID_WITHOUT_STOCK),
}
"""domain/holds.py's module docstring, as data."""


def a_hold(
    status: HoldStatus,
    *line_statuses: LineStatus,
    mode: HoldMode = HoldMode.ALL_OR_NOTHING,
    payment: Payment = Payment.NONE,
    lines_pending: int = 0,
) -> tuple[Hold, list[HoldLine]]:
    hold = Hold("h-1", status, mode, EXPIRES_AT, payment=payment, lines_pending=lines_pending)
    lines = [
        HoldLine("h-1", n, product_id=1, sku="GRS-60x60-GREY", pieces=Decimal(8), status=s)
        for n, s in enumerate(line_statuses, start=1)
    ]
    return hold, lines


def fan_out(decision: HoldDecision) -> list[tuple[LineAction, int]]:
    return [(f.action, f.line_no) for f in decision.fan_out]


# -- pending: the lines are still answering ----------------------------------------------------


def test_a_hold_whose_lines_were_all_reserved_is_reserved_and_its_expiry_is_scheduled() -> None:
    hold, lines = a_hold(S.PENDING, L.RESERVED, L.RESERVED)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("reserved", S.RESERVED)
    assert decision.schedule_expiry
    assert decision.fan_out == []


def test_all_or_nothing_with_one_line_rejected_is_rejected_and_gives_back_the_reserved_lines() -> None:
    hold, lines = a_hold(S.PENDING, L.RESERVED, L.REJECTED, L.RESERVED)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("rejected", S.REJECTED)
    assert fan_out(decision) == [(A.RELEASE, 1), (A.RELEASE, 3)]
    assert not decision.schedule_expiry
    assert decision.alert is Alert.NONE


def test_partial_mode_keeps_the_reserved_lines_when_others_are_rejected() -> None:
    hold, lines = a_hold(S.PENDING, L.REJECTED, L.RESERVED, mode=HoldMode.PARTIAL)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("reserved", S.RESERVED)
    assert decision.fan_out == []
    assert decision.schedule_expiry


def test_partial_mode_with_every_line_rejected_is_rejected() -> None:
    hold, lines = a_hold(S.PENDING, L.REJECTED, L.REJECTED, mode=HoldMode.PARTIAL)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("rejected", S.REJECTED)
    assert decision.fan_out == []


def test_a_payment_while_the_lines_answer_is_recorded_and_the_hold_is_confirmed_when_they_have() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, L.PENDING, lines_pending=2)

    recorded = pay(hold, lines, Payment.PAID, BEFORE)
    assert (recorded.outcome, hold.status, hold.payment) == ("payment_recorded", S.PENDING, Payment.PAID)
    lines[0].status = lines[1].status = L.RESERVED
    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("confirmed", S.CONFIRMED)
    assert fan_out(decision) == [(A.CONFIRM, 1), (A.CONFIRM, 2)]
    assert not decision.schedule_expiry


def test_a_payment_while_the_lines_answer_then_a_rejection_is_paid_without_stock() -> None:
    hold, lines = a_hold(S.PENDING, L.RESERVED, L.REJECTED, payment=Payment.PAID)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("paid_without_stock", S.PAID_WITHOUT_STOCK)
    assert fan_out(decision) == [(A.RELEASE, 1)]
    assert decision.alert is Alert.RAISE


def test_a_release_while_the_lines_answer_releases_what_they_reserved_once_they_have() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, L.PENDING, lines_pending=2)

    released = release(hold, lines, BEFORE)
    assert (released.outcome, hold.status, released.fan_out) == ("released", S.RELEASED, [])
    lines[0].status, lines[1].status = L.RESERVED, L.REJECTED
    decision = settle(hold, lines)

    assert hold.status is S.RELEASED
    assert fan_out(decision) == [(A.RELEASE, 1)]


def test_a_failed_payment_while_the_lines_answer_releases_the_hold() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, lines_pending=1)

    decision = pay(hold, lines, Payment.FAILED, BEFORE)

    assert (decision.outcome, hold.status, hold.payment) == ("released", S.RELEASED, Payment.FAILED)


def test_a_pending_hold_does_not_expire_while_its_lines_answer() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, lines_pending=1)

    decision = expire(hold, lines, AFTER)

    assert (decision.outcome, hold.status) == ("noop", S.PENDING)


def test_a_release_after_the_payment_was_recorded_changes_nothing() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, payment=Payment.PAID, lines_pending=1)

    decision = release(hold, lines, BEFORE)

    assert (decision.outcome, hold.status, hold.payment) == ("noop", S.PENDING, Payment.PAID)


def test_a_late_failed_payment_after_the_payment_was_recorded_changes_nothing() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, payment=Payment.PAID, lines_pending=1)

    decision = pay(hold, lines, Payment.FAILED, BEFORE)

    assert (decision.outcome, hold.status, hold.payment) == ("noop", S.PENDING, Payment.PAID)


def test_a_payment_after_a_release_while_lines_still_answer_waits_for_them_and_sells_what_they_reserved() -> (
    None
):
    hold, lines = a_hold(S.PENDING, L.PENDING, L.PENDING, lines_pending=2)
    pay(hold, lines, Payment.FAILED, BEFORE)  # the first attempt failed: the hold is given back…

    recorded = pay(hold, lines, Payment.PAID, BEFORE)  # …and the retry succeeded before the lines answered
    assert recorded.fan_out == []
    assert hold.lines_pending == 2
    lines[0].status = lines[1].status = L.RESERVED
    decision = settle(hold, lines)

    assert (decision.outcome, hold.status, hold.payment) == ("confirmed", S.CONFIRMED, Payment.PAID)
    assert fan_out(decision) == [(A.CONFIRM, 1), (A.CONFIRM, 2)]


# -- reserved: the first command to move it wins -------------------------------------------------


def test_a_payment_before_expiry_confirms_the_hold_and_sells_every_reserved_line() -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED, L.RESERVED)

    decision = pay(hold, lines, Payment.PAID, BEFORE)

    assert (decision.outcome, hold.status, hold.payment) == ("confirmed", S.CONFIRMED, Payment.PAID)
    assert fan_out(decision) == [(A.CONFIRM, 1), (A.CONFIRM, 2)]


def test_a_partial_hold_confirms_only_its_reserved_lines() -> None:
    hold, lines = a_hold(S.RESERVED, L.REJECTED, L.RESERVED, mode=HoldMode.PARTIAL)

    decision = pay(hold, lines, Payment.PAID, BEFORE)

    assert fan_out(decision) == [(A.CONFIRM, 2)]


def test_a_release_before_expiry_gives_back_every_reserved_line() -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED, L.RESERVED)

    decision = release(hold, lines, BEFORE)

    assert (decision.outcome, hold.status) == ("released", S.RELEASED)
    assert fan_out(decision) == [(A.RELEASE, 1), (A.RELEASE, 2)]


def test_a_release_after_expires_at_is_an_expiry() -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED)

    decision = release(hold, lines, AFTER)

    assert (decision.outcome, hold.status) == ("expired", S.EXPIRED)
    assert fan_out(decision) == [(A.EXPIRE, 1)]


def test_a_failed_payment_on_a_reserved_hold_gives_the_stock_back() -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED)

    decision = pay(hold, lines, Payment.FAILED, BEFORE)

    assert (decision.outcome, hold.status, hold.payment) == ("released", S.RELEASED, Payment.FAILED)
    assert fan_out(decision) == [(A.RELEASE, 1)]


@pytest.mark.parametrize("now", [EXPIRES_AT, AFTER], ids=["exactly-at-expires_at", "after"])
def test_a_hold_expires_at_its_expires_at_and_gives_its_lines_back(now: dt.datetime) -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED, L.RESERVED)

    decision = expire(hold, lines, now)

    assert (decision.outcome, hold.status) == ("expired", S.EXPIRED)
    assert fan_out(decision) == [(A.EXPIRE, 1), (A.EXPIRE, 2)]
    assert hold.lines_pending == 0


@pytest.mark.parametrize(
    "now", [BEFORE, EXPIRES_AT - dt.timedelta(microseconds=1)], ids=["minutes-before", "a-microsecond-before"]
)
def test_a_hold_never_expires_before_expires_at(now: dt.datetime) -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED)

    decision = expire(hold, lines, now)

    assert (decision.outcome, hold.status, decision.fan_out) == ("noop", S.RESERVED, [])
    assert "not due before" in decision.note


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_expiry_is_decided_by_the_clock_alone(now: dt.datetime) -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED)

    decision = expire(hold, lines, now)

    assert is_expired(hold, now) == (now >= EXPIRES_AT)
    assert (hold.status is S.EXPIRED) == (now >= EXPIRES_AT)
    assert decision.changed == (now >= EXPIRES_AT)


@pytest.mark.parametrize("now", [EXPIRES_AT, AFTER], ids=["exactly-at-expires_at", "after"])
def test_a_payment_at_or_after_expiry_expires_the_lines_then_re_reserves_them(now: dt.datetime) -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED, L.RESERVED)

    decision = pay(hold, lines, Payment.PAID, now)

    assert (decision.outcome, hold.status, hold.payment) == ("reallocating", S.REALLOCATING, Payment.PAID)
    assert fan_out(decision) == [(A.EXPIRE, 1), (A.EXPIRE, 2), (A.REALLOCATE, 1), (A.REALLOCATE, 2)]
    assert hold.lines_pending == 2


# -- ended holds that are paid anyway ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line_status"), [(S.EXPIRED, L.EXPIRED), (S.RELEASED, L.RELEASED)], ids=["expired", "released"]
)
def test_a_payment_after_the_hold_ended_re_reserves_its_lines(
    status: HoldStatus, line_status: LineStatus
) -> None:
    hold, lines = a_hold(status, line_status, line_status)

    decision = pay(hold, lines, Payment.PAID, AFTER)

    assert (decision.outcome, hold.status) == ("reallocating", S.REALLOCATING)
    assert fan_out(decision) == [(A.REALLOCATE, 1), (A.REALLOCATE, 2)]
    assert hold.lines_pending == 2


def test_a_payment_right_after_expiry_also_re_reserves_lines_whose_expiry_is_still_in_flight() -> None:
    hold, lines = a_hold(S.EXPIRED, L.RESERVED, L.EXPIRED)  # line 1's EXPIRE has not applied yet

    decision = pay(hold, lines, Payment.PAID, AFTER)

    assert fan_out(decision) == [(A.REALLOCATE, 1), (A.REALLOCATE, 2)]


def test_a_payment_after_expiry_of_a_partial_hold_does_not_try_its_rejected_lines() -> None:
    hold, lines = a_hold(S.EXPIRED, L.EXPIRED, L.REJECTED, mode=HoldMode.PARTIAL)

    decision = pay(hold, lines, Payment.PAID, AFTER)

    assert fan_out(decision) == [(A.REALLOCATE, 1)]
    assert hold.lines_pending == 1


@pytest.mark.parametrize(
    ("status", "line_statuses"),
    [
        (
            S.RELEASED,
            (L.REJECTED, L.REJECTED),
        ),  # released while pending, every line rejected: nothing to sell
        (S.REJECTED, (L.REJECTED, L.RELEASED)),
    ],
)
def test_a_payment_for_a_hold_with_nothing_to_sell_is_paid_without_stock_at_once_and_raises_the_alert(
    status: S, line_statuses: tuple[L, L]
) -> None:
    hold, lines = a_hold(status, *line_statuses)

    decision = pay(hold, lines, Payment.PAID, BEFORE)

    assert (decision.outcome, hold.status, hold.payment) == (
        "paid_without_stock",
        S.PAID_WITHOUT_STOCK,
        Payment.PAID,
    )
    assert decision.alert is Alert.RAISE
    assert decision.fan_out == []


@pytest.mark.parametrize("mode", HoldMode)
def test_a_re_reservation_that_got_every_line_sells_them_all_and_confirms_the_hold(mode: HoldMode) -> None:
    hold, lines = a_hold(S.REALLOCATING, L.RESERVED, L.RESERVED, mode=mode, payment=Payment.PAID)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("confirmed", S.CONFIRMED)
    assert fan_out(decision) == [(A.CONFIRM, 1), (A.CONFIRM, 2)]
    assert decision.alert is Alert.NONE


def test_a_re_reservation_ignores_lines_that_were_rejected_from_the_start() -> None:
    hold, lines = a_hold(S.REALLOCATING, L.RESERVED, L.REJECTED, mode=HoldMode.PARTIAL, payment=Payment.PAID)

    decision = settle(hold, lines)

    assert (decision.outcome, fan_out(decision)) == ("confirmed", [(A.CONFIRM, 1)])


def test_an_all_or_nothing_cart_paid_after_it_ended_is_sold_whole_or_not_at_all() -> None:
    """A 2, B 2 reserved, released; B sold to another checkout; the payment arrives: nothing is sold."""
    hold, lines = a_hold(S.REALLOCATING, L.RESERVED, L.UNFULFILLED, payment=Payment.PAID)

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("paid_without_stock", S.PAID_WITHOUT_STOCK)
    assert fan_out(decision) == [(A.RELEASE, 1)]  # line A's re-reservation is given back, not sold
    assert decision.alert is Alert.RAISE


def test_a_partial_cart_paid_after_it_ended_sells_what_it_can_and_flags_the_rest() -> None:
    hold, lines = a_hold(
        S.REALLOCATING, L.RESERVED, L.UNFULFILLED, mode=HoldMode.PARTIAL, payment=Payment.PAID
    )

    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("paid_without_stock", S.PAID_WITHOUT_STOCK)
    assert fan_out(decision) == [(A.CONFIRM, 1)]
    assert decision.alert is Alert.RAISE


def test_a_refund_while_re_reserving_gives_back_what_was_re_reserved() -> None:
    hold, lines = a_hold(S.REALLOCATING, L.PENDING, L.PENDING, payment=Payment.PAID, lines_pending=2)

    recorded = pay(hold, lines, Payment.REFUNDED, AFTER)
    assert (recorded.outcome, hold.status, hold.payment) == (
        "refund_recorded",
        S.REALLOCATING,
        Payment.REFUNDED,
    )
    lines[0].status, lines[1].status = L.RESERVED, L.UNFULFILLED
    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("refunded", S.REFUNDED)
    assert fan_out(decision) == [(A.RELEASE, 1)]
    assert decision.alert is Alert.NONE


def test_a_refund_while_the_lines_answer_is_recorded_and_gives_their_stock_back_when_they_have() -> None:
    hold, lines = a_hold(S.PENDING, L.PENDING, L.PENDING, lines_pending=2)
    pay(hold, lines, Payment.PAID, BEFORE)

    recorded = pay(hold, lines, Payment.REFUNDED, BEFORE)
    assert (recorded.outcome, hold.payment) == ("refund_recorded", Payment.REFUNDED)
    assert pay(hold, lines, Payment.PAID, BEFORE).outcome == "noop"  # a late 'paid' does not undo it
    lines[0].status, lines[1].status = L.RESERVED, L.RESERVED
    decision = settle(hold, lines)

    assert (decision.outcome, hold.status) == ("refunded", S.REFUNDED)
    assert fan_out(decision) == [(A.RELEASE, 1), (A.RELEASE, 2)]


# -- confirmed and refunds -----------------------------------------------------------------------


def test_a_refund_returns_every_sold_line_to_stock() -> None:
    hold, lines = a_hold(S.CONFIRMED, L.CONFIRMED, L.CONFIRMED, payment=Payment.PAID)

    decision = pay(hold, lines, Payment.REFUNDED, AFTER)

    assert (decision.outcome, hold.status, hold.payment) == ("refunded", S.REFUNDED, Payment.REFUNDED)
    assert fan_out(decision) == [(A.RETURN, 1), (A.RETURN, 2)]


@pytest.mark.parametrize("mode", HoldMode)
def test_a_refund_of_a_hold_paid_without_stock_is_never_dropped(mode: HoldMode) -> None:
    """It ends refunded, returns what was sold of it, and resolves its alert."""
    hold, lines = a_hold(S.PAID_WITHOUT_STOCK, L.CONFIRMED, L.UNFULFILLED, mode=mode, payment=Payment.PAID)

    decision = pay(hold, lines, Payment.REFUNDED, AFTER)

    assert (decision.outcome, hold.status, hold.payment) == ("refunded", S.REFUNDED, Payment.REFUNDED)
    assert fan_out(decision) == [(A.RETURN, 1)]
    assert decision.alert is Alert.RESOLVE


def test_a_refund_right_after_confirmation_also_returns_lines_whose_sale_is_still_in_flight() -> None:
    hold, lines = a_hold(S.CONFIRMED, L.CONFIRMED, L.RESERVED, L.REJECTED, payment=Payment.PAID)

    decision = pay(hold, lines, Payment.REFUNDED, AFTER)

    assert fan_out(decision) == [(A.RETURN, 1), (A.RETURN, 2)]


# -- every other command is a recorded no-op -----------------------------------------------------

NOOPS = [
    pytest.param(S.CONFIRMED, "expire", AFTER, id="expire-a-confirmed-hold"),
    pytest.param(S.RELEASED, "expire", AFTER, id="expire-a-released-hold"),
    pytest.param(S.EXPIRED, "expire", AFTER, id="expire-twice"),
    pytest.param(S.REJECTED, "expire", AFTER, id="expire-a-rejected-hold"),
    pytest.param(S.REALLOCATING, "expire", AFTER, id="expire-while-reallocating"),
    pytest.param(S.REFUNDED, "expire", AFTER, id="expire-a-refunded-hold"),
    pytest.param(S.CONFIRMED, "release", BEFORE, id="release-a-confirmed-hold"),
    pytest.param(S.EXPIRED, "release", AFTER, id="release-an-expired-hold"),
    pytest.param(S.RELEASED, "release", BEFORE, id="release-twice"),
    pytest.param(S.REJECTED, "release", BEFORE, id="release-a-rejected-hold"),
    pytest.param(S.REALLOCATING, "release", AFTER, id="release-while-reallocating"),
    pytest.param(S.PAID_WITHOUT_STOCK, "release", AFTER, id="release-paid-without-stock"),
    pytest.param(S.REFUNDED, "release", AFTER, id="release-a-refunded-hold"),
    pytest.param(S.CONFIRMED, "paid", BEFORE, id="paid-twice"),
    pytest.param(S.REALLOCATING, "paid", AFTER, id="paid-while-reallocating"),
    pytest.param(S.PAID_WITHOUT_STOCK, "paid", AFTER, id="paid-again-without-stock"),
    pytest.param(S.REFUNDED, "paid", AFTER, id="paid-after-refund"),
    pytest.param(S.CONFIRMED, "failed", BEFORE, id="failed-after-confirmation"),
    pytest.param(S.EXPIRED, "failed", AFTER, id="failed-after-expiry"),
    pytest.param(S.RELEASED, "failed", BEFORE, id="failed-after-release"),
    pytest.param(S.REJECTED, "failed", BEFORE, id="failed-for-a-rejected-hold"),
    pytest.param(S.REFUNDED, "failed", AFTER, id="failed-after-refund"),
    pytest.param(S.PENDING, "refunded", BEFORE, id="refund-while-pending"),
    pytest.param(S.RESERVED, "refunded", BEFORE, id="refund-a-reserved-hold"),
    pytest.param(S.EXPIRED, "refunded", AFTER, id="refund-an-expired-hold"),
    pytest.param(S.REFUNDED, "refunded", AFTER, id="refund-twice"),
    pytest.param(S.RESERVED, "settle", BEFORE, id="settle-a-reserved-hold"),
    pytest.param(S.CONFIRMED, "settle", BEFORE, id="settle-a-confirmed-hold"),
    pytest.param(S.EXPIRED, "settle", AFTER, id="settle-an-expired-hold"),
    pytest.param(S.REJECTED, "settle", BEFORE, id="settle-a-rejected-hold"),
]


@pytest.mark.parametrize(("status", "command", "now"), NOOPS)
def test_a_command_that_cannot_apply_is_a_noop_that_changes_nothing(
    status: HoldStatus, command: str, now: dt.datetime
) -> None:
    paid = status in (S.CONFIRMED, S.REALLOCATING, S.PAID_WITHOUT_STOCK)
    hold, lines = a_hold(status, L.RESERVED, L.CONFIRMED, payment=Payment.PAID if paid else Payment.NONE)
    if status is S.REFUNDED:
        hold.payment = Payment.REFUNDED
    before = (hold.status, hold.payment, hold.lines_pending, [line.status for line in lines])

    if command == "expire":
        decision = expire(hold, lines, now)
    elif command == "release":
        decision = release(hold, lines, now)
    elif command == "settle":
        decision = settle(hold, lines)
    else:
        decision = pay(hold, lines, Payment(command), now)

    assert decision.outcome == "noop"
    assert not decision.changed
    assert decision.fan_out == []
    assert not decision.schedule_expiry and decision.alert is Alert.NONE
    assert (hold.status, hold.payment, hold.lines_pending, [line.status for line in lines]) == before
    assert decision.note


def test_only_allocations_are_answered_by_the_lines() -> None:
    assert {action for action in LineAction if action.answers} == {A.RESERVE, A.REALLOCATE}


# -- what each line command does to the stock ---------------------------------------------------

BUC = WarehouseRoute(1, "BUC1", can_ship=True, priority=1, active=True)


def a_lot(on_hand: int, reserved: int = 0, *, lot_id: int = 1) -> LotStock:
    return LotStock(
        balance_id=lot_id,
        product_id=1,
        warehouse_id=1,
        lot_id=lot_id,
        lot_code=f"L{lot_id}",
        received_at=dt.datetime(2025, 1, lot_id, tzinfo=dt.UTC),
        expiry=None,
        on_hand=Decimal(on_hand),
        reserved=Decimal(reserved),
    )


def a_line(status: LineStatus = L.PENDING, pieces: int = 8, *, lot_id: int | None = None) -> HoldLine:
    line = HoldLine("h-1", 1, product_id=1, sku="GRS-60x60-GREY", pieces=Decimal(pieces), status=status)
    if lot_id is not None:
        line.warehouse_id, line.lot_id, line.allocated = 1, lot_id, Decimal(pieces)
    return line


def test_a_reserved_line_moves_its_pieces_into_the_reserved_bucket_of_one_lot() -> None:
    stock, line = a_lot(100), a_line()

    outcome = apply_line(A.RESERVE, line, [stock], [BUC])

    assert (outcome.outcome, line.status, line.allocated, line.lot_id) == ("reserved", L.RESERVED, 8, 1)
    assert (stock.on_hand, stock.reserved) == (100, 8)
    assert [(m.kind, m.on_hand, m.reserved) for m in outcome.movements] == [(MovementKind.RESERVATION, 0, 8)]


def test_a_line_that_no_lot_can_serve_is_rejected_with_the_reason_and_what_is_available() -> None:
    stocks, line = [a_lot(5, lot_id=1), a_lot(6, lot_id=2)], a_line(pieces=8)

    outcome = apply_line(A.RESERVE, line, stocks, [BUC])

    assert (outcome.outcome, line.status, outcome.movements) == ("rejected", L.REJECTED, [])
    assert line.available == 11
    assert line.largest_lot == {"lot": "L2", "warehouse": "BUC1", "available": "6"}
    assert line.reason and "not in any single lot" in line.reason
    assert [(s.on_hand, s.reserved) for s in stocks] == [(5, 0), (6, 0)]


@pytest.mark.parametrize(
    ("action", "status", "kind", "on_hand", "reserved"),
    [
        (A.CONFIRM, L.CONFIRMED, MovementKind.SALE, 92, 0),
        (A.RELEASE, L.RELEASED, MovementKind.RELEASE, 100, 0),
        (A.EXPIRE, L.EXPIRED, MovementKind.EXPIRY, 100, 0),
    ],
)
def test_a_reserved_line_is_sold_released_or_expired_from_the_lot_it_holds(
    action: LineAction, status: LineStatus, kind: MovementKind, on_hand: int, reserved: int
) -> None:
    stock, line = a_lot(100, 8), a_line(L.RESERVED, lot_id=1)

    outcome = apply_line(action, line, [stock], [BUC])

    assert (outcome.outcome, line.status) == (status.value, status)
    assert (stock.on_hand, stock.reserved) == (on_hand, reserved)
    assert [m.kind for m in outcome.movements] == [kind]


@pytest.mark.parametrize("status", [L.EXPIRED, L.RELEASED])
def test_a_line_paid_after_it_went_back_is_reserved_again_from_any_lot_that_covers_it(
    status: LineStatus,
) -> None:
    stocks, line = [a_lot(3, lot_id=1), a_lot(50, lot_id=2)], a_line(status, lot_id=1)

    outcome = apply_line(A.REALLOCATE, line, stocks, [BUC])

    assert (outcome.outcome, line.status, line.lot_id) == ("reserved", L.RESERVED, 2)
    assert (stocks[1].on_hand, stocks[1].reserved) == (50, 8)
    assert [m.kind for m in outcome.movements] == [MovementKind.RESERVATION]


def test_a_line_paid_after_its_stock_was_sold_to_someone_else_is_unfulfilled() -> None:
    stock, line = a_lot(10, 10), a_line(L.EXPIRED, lot_id=1)

    outcome = apply_line(A.REALLOCATE, line, [stock], [BUC])

    assert (outcome.outcome, line.status, outcome.movements) == ("unfulfilled", L.UNFULFILLED, [])
    assert line.reason


def test_a_line_still_held_when_its_re_reservation_comes_answers_that_it_is_reserved() -> None:
    """Its release or expiry was parked as a dead letter: it still holds its pieces."""
    stock, line = a_lot(10, 8), a_line(L.RESERVED, lot_id=1)

    outcome = apply_line(A.REALLOCATE, line, [stock], [BUC])

    assert (outcome.outcome, line.status, outcome.movements) == ("reserved", L.RESERVED, [])
    assert (stock.on_hand, stock.reserved) == (10, 8)


def test_a_returned_line_puts_its_pieces_back_into_the_lot_they_left() -> None:
    stock, line = a_lot(92), a_line(L.CONFIRMED, lot_id=1)

    outcome = apply_line(A.RETURN, line, [stock], [BUC])

    assert (outcome.outcome, line.status, stock.on_hand) == ("returned", L.RETURNED, 100)
    assert [m.kind for m in outcome.movements] == [MovementKind.RETURN]


LINE_NOOPS = [
    (action, status)
    for action, allowed in [
        (A.RESERVE, {L.PENDING}),
        (A.CONFIRM, {L.RESERVED}),
        (A.RELEASE, {L.RESERVED}),
        (A.EXPIRE, {L.RESERVED}),
        (A.REALLOCATE, {L.EXPIRED, L.RELEASED, L.RESERVED}),
        (A.RETURN, {L.CONFIRMED}),
    ]
    for status in LineStatus
    if status not in allowed
]


@pytest.mark.parametrize(
    ("action", "status"), LINE_NOOPS, ids=[f"{a.value}-on-{s.value}" for a, s in LINE_NOOPS]
)
def test_a_line_command_on_a_line_in_another_state_is_a_noop(action: LineAction, status: LineStatus) -> None:
    stock, line = a_lot(100, 8), a_line(status, lot_id=1)

    outcome = apply_line(action, line, [stock], [BUC])

    assert (outcome.outcome, line.status, outcome.movements) == ("noop", status, [])
    assert (stock.on_hand, stock.reserved) == (100, 8)


@pytest.mark.parametrize(
    ("on_hand", "reserved"),
    [(-1, 0), (0, 1), (0, -9)],
    ids=["on-hand-below-zero", "over-reserved", "reserved-below-zero"],
)
def test_a_movement_that_would_break_a_balance_is_a_bug_not_a_result(on_hand: int, reserved: int) -> None:
    stock = a_lot(0, 8)
    stock.on_hand = Decimal(8)

    with pytest.raises(InvariantBroken):
        move(MovementKind.SALE, stock, on_hand=Decimal(on_hand - 8), reserved=Decimal(reserved))

    assert (stock.on_hand, stock.reserved) == (8, 8)


# -- time is decided by when a command was recorded ---------------------------------------------

AT = EXPIRES_AT
JUST_BEFORE = EXPIRES_AT - dt.timedelta(microseconds=1)
RECORDED = {"before": JUST_BEFORE, "at": AT, "after": AFTER}
RULES = {
    # (command, recorded) → (hold status, payment, line commands sent in all)
    ("paid", "before"): (S.CONFIRMED, Payment.PAID, [(A.CONFIRM, 1), (A.CONFIRM, 2)]),
    ("release", "before"): (S.RELEASED, Payment.NONE, [(A.RELEASE, 1), (A.RELEASE, 2)]),
    ("failed", "before"): (S.RELEASED, Payment.FAILED, [(A.RELEASE, 1), (A.RELEASE, 2)]),
    ("paid", "at"): (
        S.REALLOCATING,
        Payment.PAID,
        [(A.EXPIRE, 1), (A.EXPIRE, 2), (A.REALLOCATE, 1), (A.REALLOCATE, 2)],
    ),
    ("release", "at"): (S.EXPIRED, Payment.NONE, [(A.EXPIRE, 1), (A.EXPIRE, 2)]),
    ("failed", "at"): (S.EXPIRED, Payment.NONE, [(A.EXPIRE, 1), (A.EXPIRE, 2)]),
}
for _command in ("paid", "release", "failed"):
    RULES[(_command, "after")] = RULES[(_command, "at")]


def _hold_command(hold: Hold, lines: list[HoldLine], command: str, recorded_at: dt.datetime) -> HoldDecision:
    if command == "release":
        return release(hold, lines, recorded_at)
    return pay(hold, lines, Payment(command), recorded_at)


@pytest.mark.parametrize("order", ["applied-before-the-expiry", "applied-after-the-expiry"])
@pytest.mark.parametrize("recorded", ["before", "at", "after"])
@pytest.mark.parametrize("command", ["paid", "release", "failed"])
def test_a_command_is_judged_by_when_it_was_recorded_whatever_the_order_it_is_applied_in(
    command: str, recorded: str, order: str
) -> None:
    """A payment, release or failed payment recorded before expires_at wins over the expiry; one
    recorded at or after it meets an expired hold. The writer applies the expiry command (due at
    expires_at, applied later) before or after the command, knowing whether a command recorded
    before expires_at still waits in the inbox: the outcome is the same either way."""
    hold, lines = a_hold(S.RESERVED, L.RESERVED, L.RESERVED)
    recorded_at = RECORDED[recorded]
    decisions = []
    if order == "applied-before-the-expiry":
        decisions.append(_hold_command(hold, lines, command, recorded_at))
        decisions.append(expire(hold, lines, AFTER))
    else:
        waits = recorded_at < EXPIRES_AT
        first = expire(hold, lines, AFTER, recorded_before_pending=waits)
        assert first.deferred == waits
        decisions.append(first)
        decisions.append(_hold_command(hold, lines, command, recorded_at))
        if first.deferred:  # the expiry comes round again in a later batch
            decisions.append(expire(hold, lines, AFTER))

    status, payment, sent = RULES[(command, recorded)]
    assert (hold.status, hold.payment) == (status, payment)
    assert [f for d in decisions for f in fan_out(d)] == sent


def test_an_expiry_never_waits_for_a_command_recorded_after_expires_at() -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED)

    decision = expire(hold, lines, AFTER, recorded_before_pending=False)

    assert (decision.outcome, hold.status) == ("expired", S.EXPIRED)


def test_a_deferred_expiry_changes_nothing() -> None:
    hold, lines = a_hold(S.RESERVED, L.RESERVED)

    decision = expire(hold, lines, AFTER, recorded_before_pending=True)

    assert (decision.deferred, decision.changed, decision.fan_out, hold.status) == (
        True,
        False,
        [],
        S.RESERVED,
    )


# -- what an answer shows: every line's final state ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "pending", "final"),
    [
        (L.RESERVED, [A.RELEASE], L.RELEASED),  # a rejected cart's compensated line
        (L.RESERVED, [A.EXPIRE], L.EXPIRED),
        (L.RESERVED, [A.CONFIRM], L.CONFIRMED),
        (L.RESERVED, [A.CONFIRM, A.RETURN], L.RETURNED),  # refunded right after it was paid
        (L.RESERVED, [A.RELEASE, A.RETURN], L.RELEASED),  # the return finds nothing sold
        (L.CONFIRMED, [A.RETURN], L.RETURNED),
        (L.RESERVED, [], L.RESERVED),
        (L.EXPIRED, [A.REALLOCATE], L.EXPIRED),  # an allocation's outcome is not known in advance
        (L.REJECTED, [A.RELEASE], L.REJECTED),
    ],
)
def test_a_line_is_shown_as_the_commands_on_their_way_to_it_will_leave_it(
    status: LineStatus, pending: list[LineAction], final: LineStatus
) -> None:
    assert line_after(status, pending) is final


def test_the_answer_to_a_rejected_cart_shows_its_compensated_line_released() -> None:
    hold, lines = a_hold(S.PENDING, L.RESERVED, L.REJECTED)

    decision = settle(hold, lines)

    pending = {f.line_no: [f.action] for f in decision.fan_out}
    shown = [line_after(line.status, pending.get(line.line_no, [])) for line in lines]
    assert (hold.status, shown) == (S.REJECTED, [L.RELEASED, L.REJECTED])


# -- a line command that could not be applied (a dead letter) ------------------------------------


def test_a_dead_reservation_answers_as_a_refusal_that_names_the_error() -> None:
    line = a_line(L.PENDING)

    outcome = fail_line(A.RESERVE, line, "KeyError: 'lot'")

    assert (outcome.outcome, line.status) == ("rejected", L.REJECTED)
    assert line.reason == "could not be applied: KeyError: 'lot'"


@pytest.mark.parametrize(("status", "answer"), [(L.EXPIRED, "unfulfilled"), (L.RESERVED, "reserved")])
def test_a_dead_re_reservation_still_answers(status: LineStatus, answer: str) -> None:
    line = a_line(status, lot_id=1)

    assert fail_line(A.REALLOCATE, line, "boom").outcome == answer


@pytest.mark.parametrize("action", [A.RELEASE, A.EXPIRE, A.CONFIRM, A.RETURN])
def test_any_other_dead_line_command_changes_nothing(action: LineAction) -> None:
    line = a_line(L.RESERVED, lot_id=1)

    assert (fail_line(action, line, "boom").outcome, line.status) == ("noop", L.RESERVED)


# -- the saga end to end, in any order the shards may interleave -----------------------------------


class Saga:
    """One product shard's line queue and the hold's home shard, mirroring workers/writer.py."""

    def __init__(self, mode: HoldMode, line_pieces: list[int], lots: list[int]) -> None:
        self.hold = Hold("h-1", S.PENDING, mode, EXPIRES_AT, lines_pending=len(line_pieces))
        self.lines = [
            HoldLine("h-1", n, product_id=1, sku="GRS-60x60-GREY", pieces=Decimal(p))
            for n, p in enumerate(line_pieces, start=1)
        ]
        self.stocks = [a_lot(on_hand, lot_id=i) for i, on_hand in enumerate(lots, start=1)]
        self.received = sum(lots)
        self.queue: deque[FanOut] = deque(FanOut(A.RESERVE, line.line_no) for line in self.lines)
        self.now = BEFORE
        self.sent: set[tuple[LineAction, int, bool]] = set()
        self.taken = Decimal(0)  # by other checkouts

    def decided(self, before: HoldStatus, decision: HoldDecision) -> None:
        assert (before, self.hold.status) in ALLOWED or before is self.hold.status, (before, self.hold.status)
        for f in decision.fan_out:
            # Each fan-out has its own idempotency key (action, line, again): one sent twice would be dropped.
            assert (f.action, f.line_no, f.again) not in self.sent, f
            self.sent.add((f.action, f.line_no, f.again))
            self.queue.append(f)

    def other_checkout(self) -> None:
        """Another checkout takes up to 10 available pieces of each lot (as lines of its own would)."""
        for stock in self.stocks:
            taken = min(stock.available, Decimal(10))
            move(MovementKind.RESERVATION, stock, reserved=taken)
            self.taken += taken

    def next_line_command(self) -> None:
        command = self.queue.popleft()
        line = self.lines[command.line_no - 1]
        outcome = apply_line(command.action, line, self.stocks, [BUC])
        if command.action.answers and outcome.outcome != "noop":
            self.hold.lines_pending -= 1
            if self.hold.lines_pending == 0:
                before = self.hold.status
                self.decided(before, settle(self.hold, self.lines))

    def hold_command(self, command: str) -> None:
        before = self.hold.status
        if command == "release":
            decision = release(self.hold, self.lines, self.now)
        elif command == "expire":
            decision = expire(self.hold, self.lines, self.now)
        else:
            decision = pay(self.hold, self.lines, Payment(command), self.now)
        self.decided(before, decision)


EVENTS = st.sampled_from(
    ["line", "line", "line", "release", "expire", "paid", "failed", "refunded", "clock", "other-checkout"]
)


@settings(max_examples=2000, deadline=None)
@given(
    mode=st.sampled_from(HoldMode),
    line_pieces=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    lots=st.lists(st.integers(0, 40), max_size=3),
    events=st.lists(EVENTS, max_size=25),
)
def test_in_any_interleaving_the_hold_only_moves_as_documented_and_ends_settled_without_leaking_stock(
    mode: HoldMode, line_pieces: list[int], lots: list[int], events: list[str]
) -> None:
    saga = Saga(mode, line_pieces, lots)

    for event in events:
        if event == "line":
            if saga.queue:
                saga.next_line_command()
        elif event == "clock":
            saga.now = AFTER
        elif event == "other-checkout":
            saga.other_checkout()
        else:
            saga.hold_command(event)
    while saga.queue:
        saga.next_line_command()

    hold, lines = saga.hold, saga.lines
    assert hold.status not in (S.PENDING, S.REALLOCATING), "every line answered, yet the hold is undecided"
    assert hold.lines_pending == 0
    held = sum(line.allocated for line in lines if line.status is L.RESERVED)
    sold = sum(line.allocated for line in lines if line.status is L.CONFIRMED)
    assert sum(s.reserved for s in saga.stocks) == held + saga.taken
    assert sum(s.on_hand for s in saga.stocks) == saga.received - sold
    if hold.status is not S.RESERVED:
        assert held == 0, "a hold that is over still holds stock"
    if hold.status is S.CONFIRMED:
        assert all(line.status in (L.CONFIRMED, L.REJECTED) for line in lines)
    if hold.payment is Payment.PAID and hold.status is not S.CONFIRMED:
        assert hold.status is S.PAID_WITHOUT_STOCK, "paid, but neither sold nor flagged"
    if hold.status is S.REFUNDED or (hold.status is S.PAID_WITHOUT_STOCK and mode is HoldMode.ALL_OR_NOTHING):
        assert sold == 0, "an all-or-nothing cart partly sold, or a refunded one still sold"
