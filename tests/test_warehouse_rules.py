"""Warehouse decisions without a database: transfers, counts, adjustments and returns, each
transition of their modules' docstrings, and the books they leave."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import adjustments, counts, returns, transfers
from domain.adjustments import Adjustment, AdjustmentRefusal, AdjustmentStatus, Threshold
from domain.allocation import LotStock, WarehouseRoute
from domain.counts import HeldLine
from domain.errors import InvalidCommand
from domain.lines import apply_line
from domain.movements import MovementKind
from domain.returns import Condition, ReturnRefusal
from domain.states import HoldLine, LineAction, LineStatus
from domain.transfers import Transfer, TransferRefusal, TransferStatus
from tests.lots import a_lot, buckets

D = Decimal
BUC = WarehouseRoute(1, "BUC1", can_ship=True, priority=1, active=True)
CLJ = WarehouseRoute(2, "CLJ1", can_ship=True, priority=2, active=True)
ROUTES = {1: BUC, 2: CLJ}


# -- transfers ------------------------------------------------------------------------------------


def a_transfer(quantity: int = 10, *, destination_id: int = 2) -> Transfer:
    return Transfer(
        "t-1", product_id=1, lot_id=7, source_id=1, destination_id=destination_id, quantity=D(quantity)
    )


def sent(quantity: int = 10) -> tuple[Transfer, LotStock, LotStock]:
    transfer, source, destination = a_transfer(quantity), a_lot(100), a_lot(warehouse_id=2)
    transfers.create(transfer, source, ROUTES, lambda: destination)
    return transfer, source, destination


def test_a_transfer_takes_the_pieces_out_of_the_source_lot_into_the_destinations_in_transit() -> None:
    transfer, source, destination = sent(10)

    assert transfer.status is TransferStatus.IN_TRANSIT
    assert buckets(source) == (90, 0, 0, 0, 0)
    assert buckets(destination) == (0, 0, 10, 0, 0)


def test_reserved_stock_cannot_be_transferred() -> None:
    source, created = a_lot(100, reserved=95), []

    decision = transfers.create(a_transfer(10), source, ROUTES, lambda: created.append(1) or a_lot())

    assert (decision.outcome, decision.refusal) == ("rejected", TransferRefusal.INSUFFICIENT_STOCK)
    assert "5 available" in decision.note
    assert buckets(source) == (100, 95, 0, 0, 0) and not created and not decision.movements


@pytest.mark.parametrize(
    ("routes", "destination_id", "refusal"),
    [
        (ROUTES, 1, TransferRefusal.SAME_WAREHOUSE),
        (
            {1: BUC, 2: WarehouseRoute(2, "CLJ1", True, 2, active=False)},
            2,
            TransferRefusal.WAREHOUSE_INACTIVE,
        ),
        ({1: BUC}, 2, TransferRefusal.WAREHOUSE_INACTIVE),
        (
            {1: BUC, 2: WarehouseRoute(2, "SHW1", True, 2, True, can_receive=False)},
            2,
            TransferRefusal.CANNOT_RECEIVE,
        ),
    ],
)
def test_a_transfer_between_warehouses_that_cannot_trade_is_refused(
    routes: dict[int, WarehouseRoute], destination_id: int, refusal: TransferRefusal
) -> None:
    source = a_lot(100)

    decision = transfers.create(a_transfer(10, destination_id=destination_id), source, routes, a_lot)

    assert (decision.outcome, decision.refusal) == ("rejected", refusal)
    assert source.on_hand == 100


def test_a_lot_the_source_does_not_have_is_refused() -> None:
    decision = transfers.create(a_transfer(), None, ROUTES, a_lot)

    assert decision.refusal is TransferRefusal.UNKNOWN_LOT


def test_a_received_transfer_puts_the_good_and_damaged_pieces_on_hand_and_writes_off_the_rest() -> None:
    transfer, _, destination = sent(10)

    decision = transfers.receive(transfer, destination, good=D(7), damaged=D(2), reason="broken pallet")

    assert decision.outcome == "received" and transfer.status is TransferStatus.RECEIVED
    assert buckets(destination) == (9, 0, 0, 2, 0)
    assert [(m.kind, m.on_hand, m.in_transit, m.damaged) for m in decision.movements] == [
        (MovementKind.TRANSFER_IN, 9, -9, 2),
        (MovementKind.WRITE_OFF, 0, -1, 0),
    ]
    assert all(m.reason == "broken pallet" for m in decision.movements)
    assert (transfer.received, transfer.damaged, transfer.written_off) == (7, 2, 1)


def test_a_transfer_received_without_quantities_arrived_whole() -> None:
    transfer, _, destination = sent(10)

    transfers.receive(transfer, destination)

    assert buckets(destination) == (10, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("good", "damaged", "reason", "refusal"),
    [
        (D(9), D(2), "x", TransferRefusal.MORE_THAN_SENT),
        (D(8), D(0), None, TransferRefusal.REASON_REQUIRED),
        (D(8), D(2), None, TransferRefusal.REASON_REQUIRED),
    ],
)
def test_a_receipt_of_more_than_was_sent_or_of_missing_pieces_without_a_reason_is_refused(
    good: Decimal, damaged: Decimal, reason: str | None, refusal: TransferRefusal
) -> None:
    transfer, _, destination = sent(10)

    decision = transfers.receive(transfer, destination, good=good, damaged=damaged, reason=reason)

    assert decision.refusal is refusal and transfer.status is TransferStatus.IN_TRANSIT
    assert buckets(destination) == (0, 0, 10, 0, 0)


def test_a_cancelled_transfer_puts_the_pieces_back_at_the_source() -> None:
    transfer, source, destination = sent(10)

    decision = transfers.cancel(transfer, source, destination)

    assert decision.outcome == "cancelled" and transfer.status is TransferStatus.CANCELLED
    assert buckets(source) == (100, 0, 0, 0, 0) and buckets(destination) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("first", ["receive", "cancel"])
def test_a_second_receive_or_cancel_is_a_no_op_that_names_the_transfers_state(first: str) -> None:
    transfer, source, destination = sent(10)
    if first == "receive":
        transfers.receive(transfer, destination)
    else:
        transfers.cancel(transfer, source, destination)
    before = buckets(source), buckets(destination)

    for decision in (
        transfers.receive(transfer, destination),
        transfers.cancel(transfer, source, destination),
    ):
        assert decision.outcome == "noop" and transfer.status.value in decision.note

    assert (buckets(source), buckets(destination)) == before


@given(
    available=st.integers(0, 50),
    quantity=st.integers(1, 60),
    good=st.integers(0, 60),
    damaged=st.integers(0, 60),
    cancel=st.booleans(),
)
def test_a_transfer_conserves_pieces_whatever_happens_to_it(
    available: int, quantity: int, good: int, damaged: int, cancel: bool
) -> None:
    transfer = a_transfer(quantity)
    source, destination = a_lot(available + 5, reserved=5), a_lot(warehouse_id=2)
    if transfers.create(transfer, source, ROUTES, lambda: destination).refusal:  # no transfer
        assert source.on_hand == available + 5 and destination.in_transit == 0
        return
    if cancel:
        transfers.cancel(transfer, source, destination)
    else:
        transfers.receive(transfer, destination, good=D(good), damaged=D(damaged), reason="r")

    total = source.on_hand + destination.on_hand + source.in_transit + destination.in_transit
    assert total + transfer.written_off == available + 5
    assert all(b >= 0 for b in buckets(source) + buckets(destination))


# -- counts ---------------------------------------------------------------------------------------


def test_a_count_makes_on_hand_what_was_found() -> None:
    stock = a_lot(100, reserved=10)

    decision = counts.count(stock, D(97))

    assert (decision.difference, stock.on_hand, decision.below_held) == (-3, 97, None)
    assert [(m.kind, m.on_hand) for m in decision.movements] == [(MovementKind.COUNT_ADJUSTMENT, -3)]


def test_a_count_that_agrees_changes_nothing() -> None:
    decision = counts.count(a_lot(100), D(100))

    assert decision.difference == 0 and not decision.movements


def test_a_count_below_what_is_reserved_keeps_the_holds_and_names_them() -> None:
    stock = a_lot(100, reserved=30, damaged=5)
    holding = [HeldLine("h-1", 1, D(20)), HeldLine("h-2", 1, D(10))]

    decision = counts.count(stock, D(12), holding)

    assert buckets(stock) == (35, 30, 0, 5, 0)
    assert decision.below_held is not None
    assert decision.below_held.missing == 23
    assert [h["hold_id"] for h in decision.below_held.detail()["holds"]] == ["h-1", "h-2"]  # type: ignore[index]


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(InvalidCommand):
        counts.count(a_lot(10), D(-1))


@given(on_hand=st.integers(0, 100), reserved=st.integers(0, 100), counted=st.integers(0, 200))
def test_a_count_never_takes_on_hand_below_what_is_held(on_hand: int, reserved: int, counted: int) -> None:
    stock = a_lot(max(on_hand, reserved), reserved)

    decision = counts.count(stock, D(counted))

    assert stock.on_hand == max(counted, reserved)
    assert (decision.below_held is not None) == (counted < reserved)
    assert sum((m.on_hand for m in decision.movements), D(0)) == decision.difference


# -- adjustments ----------------------------------------------------------------------------------

LIMITS = Threshold(pieces=D(50), value=D(1000))


def an_adjustment(quantity: int, *, by: str | None = "ana") -> Adjustment:
    return Adjustment("a-1", 1, 1, 7, D(quantity), reason="found behind the rack", requested_by=by)


def test_a_small_adjustment_applies_at_once_with_its_reason() -> None:
    adjustment, stock = an_adjustment(-5), a_lot(100)

    decision = adjustments.request(adjustment, stock, LIMITS, unit_cost=D(10))

    assert (decision.outcome, adjustment.status, stock.on_hand) == ("adjusted", AdjustmentStatus.APPLIED, 95)
    assert [(m.kind, m.on_hand, m.reason) for m in decision.movements] == [
        (MovementKind.ADJUSTMENT, -5, "found behind the rack")
    ]


@pytest.mark.parametrize(("quantity", "unit_cost"), [(51, None), (-51, D(1)), (20, D("50.01"))])
def test_an_adjustment_above_the_threshold_in_pieces_or_value_waits_for_approval(
    quantity: int, unit_cost: Decimal | None
) -> None:
    adjustment, stock = an_adjustment(quantity), a_lot(100)

    decision = adjustments.request(adjustment, stock, LIMITS, unit_cost)

    assert (decision.outcome, adjustment.status, stock.on_hand) == (
        "awaiting_approval",
        AdjustmentStatus.AWAITING_APPROVAL,
        100,
    )


def test_a_products_own_threshold_replaces_the_global_one() -> None:
    assert LIMITS.over(Threshold(pieces=D(5))) == Threshold(D(5), D(1000))


def test_an_approved_adjustment_changes_stock_once_however_often_it_is_approved() -> None:
    adjustment, stock = an_adjustment(60), a_lot(100)
    adjustments.request(adjustment, stock, LIMITS, None)

    first = adjustments.approve(adjustment, stock, "ion")
    second = adjustments.approve(adjustment, stock, "ion")

    assert (first.outcome, second.outcome, stock.on_hand) == ("approved", "noop", 160)
    assert adjustment.decided_by == "ion"


@pytest.mark.parametrize("approver", ["ana", None])
def test_the_asker_or_nobody_cannot_approve_or_reject(approver: str | None) -> None:
    adjustment, stock = an_adjustment(60), a_lot(100)
    adjustments.request(adjustment, stock, LIMITS, None)

    for decision in (
        adjustments.approve(adjustment, stock, approver),
        adjustments.reject(adjustment, approver),
    ):
        assert decision.refusal is AdjustmentRefusal.SAME_APPROVER

    assert (adjustment.status, stock.on_hand) == (AdjustmentStatus.AWAITING_APPROVAL, 100)


def test_a_rejected_adjustment_never_changes_stock() -> None:
    adjustment, stock = an_adjustment(60), a_lot(100)
    adjustments.request(adjustment, stock, LIMITS, None)

    assert adjustments.reject(adjustment, "ion").outcome == "rejected"
    assert adjustments.approve(adjustment, stock, "ion").outcome == "noop"
    assert (adjustment.status, stock.on_hand) == (AdjustmentStatus.REJECTED, 100)


def test_an_adjustment_below_what_is_held_is_refused() -> None:
    adjustment, stock = an_adjustment(-20), a_lot(100, reserved=85)

    decision = adjustments.request(adjustment, stock, LIMITS, None)

    assert (decision.refusal, adjustment.status, stock.on_hand) == (
        AdjustmentRefusal.INSUFFICIENT_STOCK,
        AdjustmentStatus.REJECTED,
        100,
    )


def test_an_approval_that_stock_no_longer_allows_is_refused_and_the_adjustment_waits() -> None:
    adjustment, stock = an_adjustment(-60), a_lot(100)
    adjustments.request(adjustment, stock, LIMITS, None)
    stock.reserved = D(50)

    decision = adjustments.approve(adjustment, stock, "ion")

    assert (decision.refusal, adjustment.status, stock.on_hand) == (
        AdjustmentRefusal.INSUFFICIENT_STOCK,
        AdjustmentStatus.AWAITING_APPROVAL,
        100,
    )


@given(on_hand=st.integers(0, 100), reserved=st.integers(0, 100), quantity=st.integers(-150, 150))
def test_stock_never_goes_below_what_is_held_by_an_adjustment(
    on_hand: int, reserved: int, quantity: int
) -> None:
    stock = a_lot(max(on_hand, reserved), reserved)
    adjustment = an_adjustment(quantity)

    adjustments.request(adjustment, stock, Threshold(), None)
    adjustments.approve(adjustment, stock, "ion")

    assert stock.on_hand >= stock.reserved >= 0


# -- returns --------------------------------------------------------------------------------------


def a_sold_line(allocated: int = 10, *, status: LineStatus = LineStatus.CONFIRMED) -> HoldLine:
    return HoldLine(
        "h-1",
        1,
        product_id=1,
        sku="GRS",
        pieces=D(allocated),
        status=status,
        warehouse_id=1,
        lot_id=7,
        allocated=D(allocated),
    )


def test_resellable_goods_go_back_on_hand_of_the_lot_they_were_sold_from() -> None:
    line, stock = a_sold_line(10), a_lot(50)

    decision = returns.take_back(line, stock, D(4), Condition.RESELLABLE)

    assert (decision.outcome, line.returned, line.status) == ("returned", 4, LineStatus.CONFIRMED)
    assert buckets(stock) == (54, 0, 0, 0, 0)


def test_damaged_goods_go_back_on_hand_as_damaged_with_their_reason() -> None:
    line, stock = a_sold_line(10), a_lot(50)

    decision = returns.take_back(line, stock, D(10), Condition.DAMAGED, "cracked in the van")

    assert line.status is LineStatus.RETURNED
    assert buckets(stock) == (60, 0, 0, 10, 0) and stock.available == 50
    assert [m.reason for m in decision.movements] == ["cracked in the van"]


@pytest.mark.parametrize(
    ("line", "quantity", "condition", "refusal"),
    [
        (a_sold_line(status=LineStatus.RESERVED), 1, Condition.RESELLABLE, ReturnRefusal.NOT_SOLD),
        (a_sold_line(status=LineStatus.RETURNED), 1, Condition.RESELLABLE, ReturnRefusal.NOT_SOLD),
        (a_sold_line(10), 11, Condition.RESELLABLE, ReturnRefusal.MORE_THAN_SOLD),
        (a_sold_line(10), 1, Condition.DAMAGED, ReturnRefusal.REASON_REQUIRED),
    ],
)
def test_unsold_or_already_returned_goods_are_refused(
    line: HoldLine, quantity: int, condition: Condition, refusal: ReturnRefusal
) -> None:
    stock = a_lot(50)

    decision = returns.take_back(line, stock, D(quantity), condition)

    assert decision.refusal is refusal and stock.on_hand == 50


def test_a_line_returned_in_parts_takes_back_no_more_than_was_sold() -> None:
    line, stock = a_sold_line(10), a_lot(50)
    returns.take_back(line, stock, D(6), Condition.RESELLABLE)

    assert returns.take_back(line, stock, D(5), Condition.RESELLABLE).refusal is ReturnRefusal.MORE_THAN_SOLD
    assert returns.take_back(line, stock, D(4), Condition.RESELLABLE).outcome == "returned"
    assert (line.status, stock.on_hand) == (LineStatus.RETURNED, 60)


def test_a_refund_of_a_partly_returned_line_gives_back_only_the_rest() -> None:
    line, stock = a_sold_line(10), a_lot(50)
    returns.take_back(line, stock, D(3), Condition.RESELLABLE)

    outcome = apply_line(LineAction.RETURN, line, [stock], [BUC])

    assert [m.on_hand for m in outcome.movements] == [7]
    assert (line.status, line.returned, stock.on_hand) == (LineStatus.RETURNED, 10, 60)


def test_a_refund_after_the_whole_line_came_back_changes_nothing() -> None:
    line, stock = a_sold_line(10), a_lot(50)
    returns.take_back(line, stock, D(10), Condition.RESELLABLE)

    outcome = apply_line(LineAction.RETURN, line, [stock], [BUC])

    assert outcome.outcome == "noop" and stock.on_hand == 60
