"""Holds that ended and were paid (or refunded) anyway, and what their answers show.

Each was found by a model-based run and is replayed here through the public client.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text

from producers import StockClient
from producers.client import CommandTicket
from tests.conftest import Processes
from tests.flow import wait_all_applied
from tests.test_holds import hold_of, receive, settled

A, B = "GRS-60x60-GREY", "WALL-20x50-WHITE"


def _cart(client: StockClient, mode: str = "all_or_nothing") -> str:
    lines = [{"sku": A, "quantity": "2", "unit": "piece"}, {"sku": B, "quantity": "2", "unit": "piece"}]
    answer = client.reserve(idempotency_key=f"cart-{uuid.uuid4().hex}", lines=lines, mode=mode).wait(
        timeout=15
    )
    assert answer.status == "reserved"
    return answer.hold_id


def _released_then_b_taken(client: StockClient, engine: Engine, mode: str) -> str:
    """A 10 pieces, B 2; the cart (A 2, B 2) is reserved, released; another checkout takes B."""
    receive(client, A, "10", lot="A1")
    receive(client, B, "2", lot="B1")
    hold_id = _cart(client, mode)
    client.release(hold_id, idempotency_key=f"rel-{uuid.uuid4().hex}").wait(timeout=15)
    wait_all_applied(engine)
    assert (
        hold_of(client, [{"sku": B, "quantity": "2", "unit": "piece"}]).wait(timeout=15).status == "reserved"
    )
    return hold_id


def _pay(client: StockClient, hold_id: str, status: str = "paid") -> dict:
    return client.confirm_payment(event_id=f"ntp-{uuid.uuid4().hex}", hold_id=hold_id, status=status).wait(
        timeout=15
    )


def _alerts(engine: Engine, hold_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT severity, status, details FROM alerts WHERE hold_id = :h"), {"h": hold_id}
        ).all()


def test_an_all_or_nothing_cart_paid_after_it_was_released_is_sold_whole_or_not_at_all(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    hold_id = _released_then_b_taken(catalog, engine, "all_or_nothing")

    _pay(catalog, hold_id)
    done = catalog.wait_for(hold_id, lambda: settled(catalog, hold_id, "paid_without_stock"), timeout=15)
    wait_all_applied(engine)

    assert [(line.sku, line.status) for line in done.lines] == [(A, "released"), (B, "unfulfilled")]
    assert catalog.stock(A).on_hand == 10 and catalog.stock(A).reserved == 0  # nothing of the cart sold
    [(severity, status, details)] = _alerts(engine, hold_id)
    assert (severity, status) == ("critical", "open")
    assert [(line["sku"], line["status"]) for line in details[0]["lines"]] == [
        (A, "released"),
        (B, "unfulfilled"),
    ]
    assert_consistent()


def test_a_partial_cart_paid_after_it_was_released_sells_what_it_can_and_names_the_rest(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    hold_id = _released_then_b_taken(catalog, engine, "partial")

    _pay(catalog, hold_id)
    done = catalog.wait_for(hold_id, lambda: settled(catalog, hold_id, "paid_without_stock"), timeout=15)
    wait_all_applied(engine)

    assert [(line.sku, line.status) for line in done.lines] == [(A, "confirmed"), (B, "unfulfilled")]
    assert catalog.stock(A).on_hand == 8
    [(_, status, details)] = _alerts(engine, hold_id)
    assert status == "open" and details[0]["lines"][1]["status"] == "unfulfilled"
    assert_consistent()


def test_a_refund_of_a_hold_paid_without_stock_ends_it_refunded_and_resolves_its_alert(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    hold_id = _released_then_b_taken(catalog, engine, "partial")
    _pay(catalog, hold_id)
    catalog.wait_for(hold_id, lambda: settled(catalog, hold_id, "paid_without_stock"), timeout=15)

    refund = _pay(catalog, hold_id, "refunded")
    wait_all_applied(engine)

    assert (refund["outcome"], refund["hold_status"]) == ("refunded", "refunded")
    hold = catalog.hold(hold_id)
    assert (hold.status, hold.payment) == ("refunded", "refunded")
    assert [line.status for line in hold.lines] == ["returned", "unfulfilled"]
    assert catalog.stock(A).on_hand == 10  # what was sold of it came back
    [(_, status, _)] = _alerts(engine, hold_id)
    assert status == "resolved"
    assert_consistent()


def test_the_answer_to_a_rejected_cart_shows_its_compensated_line_given_back(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    """The compensating release is still on its way when the cart is decided: the answer shows the
    line's final state (released, nothing held), not the reserved state it is leaving."""
    processes.worker()
    receive(catalog, A, "10", lot="A1")
    receive(catalog, B, "1", lot="B1")
    lines = [{"sku": A, "quantity": "2", "unit": "piece"}, {"sku": B, "quantity": "2", "unit": "piece"}]

    answer = catalog.reserve(idempotency_key=f"cart-{uuid.uuid4().hex}", lines=lines).wait(timeout=15)
    read = catalog.hold(answer.hold_id)

    for shown in (answer, read):
        assert shown.status == "rejected"
        assert [(line.sku, line.status, line.reserved_pieces) for line in shown.lines] == [
            (A, "released", 0),
            (B, "rejected", 0),
        ]
    CommandTicket(catalog, f"line.release:{answer.hold_id}:1").wait(timeout=15)
    assert catalog.stock(A).reserved == 0
    assert_consistent()
