"""Transfers, counts, adjustments and returns over real HTTP: `tessera api` and a worker against the
real PostgreSQL and Redis. Each happy path, each refusal; a refusal is a 4xx problem document (or,
for what only the stock decides, a recorded `rejected` result) and changes nothing; every test ends
with the books reconciled and the invariants checked."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import check_invariants, fingerprint
from tests.stack import Stack, cli_out, running_stack, until

TABLES = (
    "commands",
    "movements",
    "stock_balances",
    "lots",
    "transfers",
    "adjustments",
    "hold_lines",
    "holds",
    "alerts",
    "warehouses",
)
STOCK_TABLES = tuple(t for t in TABLES if t != "commands")
"""What a command refused by the writer leaves alone (its inbox row records the refusal)."""


@pytest.fixture(scope="module")
def api(admin_engine: Engine, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(admin_engine, template_db, tmp_path_factory.mktemp("warehouse")) as stack:
        stack.client.upsert_warehouse(code="OLD1", name="Closed", priority=7, active=False)
        stack.client.upsert_warehouse(
            code="SHOW", name="Showroom", can_ship=False, priority=9, type="showroom"
        )
        with stack.engine.begin() as conn:
            conn.execute(text("UPDATE warehouses SET can_receive = false WHERE code = 'SHOW'"))
        stack.tokens["second ops"] = cli_out(
            stack.env, "token", "create", "--role", "ops", "--name", "second ops"
        ).split()[-1]
        yield stack


@pytest.fixture(autouse=True)
def _books_reconcile(api: Stack) -> Iterator[None]:
    yield
    check_invariants(api.engine)


def post(
    api: Stack, path: str, body: dict[str, Any] | None, *, key: str, role: str = "warehouse"
) -> httpx.Response:
    return api.call("POST", f"{path}?wait=10", role, headers={"Idempotency-Key": key}, json=body)


def applied(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "applied", body
    result: dict[str, Any] = body["result"]
    return result


def refused(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = answer.json()
    assert problem["code"] == code, problem
    return problem


def lots(api: Stack, sku: str) -> dict[tuple[str, str], tuple[Decimal, ...]]:
    """(warehouse, lot) → on_hand, reserved, in_transit, damaged, quarantine."""
    view = api.call("GET", f"/v1/stock/{sku}", "warehouse").json()
    buckets = ("on_hand", "reserved", "in_transit", "damaged", "quarantine")
    return {(b["warehouse"], b["lot"]): tuple(Decimal(b[k]) for k in buckets) for b in view["lots"]}


def product(api: Stack) -> str:
    """A product of its own for a test (sold by the piece): no other test's lots to allocate from."""
    sku = f"T-{uuid.uuid4().hex[:8]}"
    api.client.upsert_product(sku=sku, name=f"tile {sku}")
    return sku


def receive(
    api: Stack, sku: str, lot: str, pieces: int, warehouse: str = "BUC1", unit_cost: str | None = None
) -> None:
    body = {"warehouse": warehouse, "sku": sku, "quantity": str(pieces), "unit": "piece", "lot": lot}
    if unit_cost is not None:
        body["unit_cost"] = unit_cost
    assert (
        applied(post(api, "/v1/receipts", body, key=f"rcv-{uuid.uuid4().hex[:8]}"))["outcome"] == "received"
    )


def hold(api: Stack, sku: str, pieces: int, warehouse: str = "BUC1") -> str:
    line = {"sku": sku, "quantity": str(pieces), "unit": "piece", "warehouse": warehouse}
    placed = post(api, "/v1/holds", {"lines": [line]}, key=f"cart-{uuid.uuid4().hex[:8]}", role="checkout")
    assert placed.status_code == 201 and placed.json()["status"] == "reserved", placed.text
    hold_id: str = placed.json()["hold_id"]
    return hold_id


def alerts(api: Stack, kind: str) -> list[Any]:
    with api.engine.connect() as conn:
        return list(conn.execute(text("SELECT details FROM alerts WHERE kind = :k"), {"k": kind}).scalars())


# -- transfers ------------------------------------------------------------------------------------


def transfer_body(sku: str, lot: str, quantity: int, to: str = "CLJ1") -> dict[str, Any]:
    return {"from_warehouse": "BUC1", "to_warehouse": to, "sku": sku, "lot": lot, "quantity": str(quantity)}


def test_a_transfer_goes_in_transit_and_arrives_with_its_damage_and_shortfall_recorded(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "T1", 50)

    sent = post(api, "/v1/transfers", transfer_body(sku, "T1", 20), key="tr-1")
    transfer_id = sent.json()["transfer_id"]
    assert applied(sent) == {
        "outcome": "in_transit",
        "transfer_id": transfer_id,
        "quantity": "20",
        "status": "in_transit",
    }
    assert lots(api, sku)[("BUC1", "T1")][0] == 30
    assert lots(api, sku)[("CLJ1", "T1")] == (0, 0, 20, 0, 0)
    again = post(api, "/v1/transfers", transfer_body(sku, "T1", 20), key="tr-1")
    assert again.json()["transfer_id"] == transfer_id and lots(api, sku)[("BUC1", "T1")][0] == 30

    arrived = post(
        api,
        f"/v1/transfers/{transfer_id}/receive",
        {"received": "17", "damaged": "2", "reason": "pallet dropped"},
        key="tr-1-in",
    )

    assert applied(arrived) | {"transfer_id": None} == {
        "outcome": "received",
        "transfer_id": None,
        "quantity": "20",
        "status": "received",
        "received": "17",
        "damaged": "2",
        "written_off": "1",
    }
    assert lots(api, sku)[("CLJ1", "T1")] == (19, 0, 0, 2, 0)
    with api.engine.connect() as conn:
        kinds = conn.execute(
            text(
                "SELECT m.kind, m.reason, m.actor FROM movements m JOIN commands c ON c.seq = m.command_seq "
                "WHERE c.idempotency_key = 'tr-1-in' ORDER BY m.id"
            )
        ).all()
    assert [tuple(k) for k in kinds] == [
        ("transfer_in", "pallet dropped", "test warehouse"),
        ("write_off", "pallet dropped", "test warehouse"),
    ]
    twice = post(api, f"/v1/transfers/{transfer_id}/cancel", None, key="tr-1-cancel")
    assert applied(twice)["outcome"] == "noop" and applied(twice)["status"] == "received"


def test_a_transfer_carries_the_sources_average_cost_to_its_destination(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "T5", 50, unit_cost="12.5")
    transfer_id = post(api, "/v1/transfers", transfer_body(sku, "T5", 20), key="tr-5").json()["transfer_id"]

    applied(post(api, f"/v1/transfers/{transfer_id}/receive", {}, key="tr-5-in"))

    with api.engine.connect() as conn:
        valuations = conn.execute(
            text(
                "SELECT w.code, v.quantity, v.average_cost FROM stock_valuations v JOIN products p ON p.id = v.product_id "
                "JOIN warehouses w ON w.id = v.warehouse_id WHERE p.sku = :sku ORDER BY w.code"
            ),
            {"sku": sku},
        ).all()
        costs = conn.execute(
            text(
                "SELECT DISTINCT m.unit_cost FROM movements m JOIN commands c ON c.seq = m.command_seq "
                "WHERE c.idempotency_key IN ('tr-5', 'tr-5-in')"
            )
        ).scalars()
        assert list(costs) == [Decimal("12.5")]
    assert [tuple(v) for v in valuations] == [("BUC1", 30, Decimal("12.5")), ("CLJ1", 20, Decimal("12.5"))]


def test_a_cancelled_transfer_puts_its_pieces_back_at_the_source(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "T2", 30)
    transfer_id = post(api, "/v1/transfers", transfer_body(sku, "T2", 12), key="tr-2").json()["transfer_id"]

    cancelled = post(api, f"/v1/transfers/{transfer_id}/cancel", None, key="tr-2-cancel")

    assert applied(cancelled)["status"] == "cancelled"
    assert lots(api, sku)[("BUC1", "T2")][0] == 30 and lots(api, sku)[("CLJ1", "T2")] == (0, 0, 0, 0, 0)
    late = post(api, f"/v1/transfers/{transfer_id}/receive", {}, key="tr-2-in")
    assert applied(late)["outcome"] == "noop" and lots(api, sku)[("CLJ1", "T2")][0] == 0


def test_reserved_stock_cannot_be_transferred_and_the_refusal_changes_nothing(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "T3", 40)
    hold(api, sku, 35)
    before = fingerprint(api.engine, TABLES)

    problem = refused(
        post(api, "/v1/transfers", transfer_body(sku, "T3", 10), key="tr-3"), 422, "not_enough_stock"
    )

    assert "5 available" in problem["detail"] and problem["field"] == "quantity"
    assert fingerprint(api.engine, TABLES) == before


def test_a_transfer_the_writer_refuses_changes_no_stock_and_cannot_be_received(api: Stack) -> None:
    """Stock that went between the recording and the writer (a hold recorded just before): the
    writer refuses the transfer as its recorded result."""
    sku = product(api)
    receive(api, sku, "T6", 40)
    worker = next(p for p in api.processes.procs if "worker" in p.args and p.poll() is None)
    worker.send_signal(signal.SIGSTOP)  # both recorded before either applies
    try:
        line = {"sku": sku, "quantity": "35", "unit": "piece", "warehouse": "BUC1"}
        api.call(
            "POST",
            "/v1/holds",
            "checkout",
            headers={"Idempotency-Key": f"cart-{sku}"},
            json={"lines": [line]},
        )
        sent = api.call(
            "POST",
            "/v1/transfers",
            "warehouse",
            headers={"Idempotency-Key": "tr-6"},
            json=transfer_body(sku, "T6", 10),
        )
        assert sent.status_code == 202, sent.text
    finally:
        worker.send_signal(signal.SIGCONT)
    drained(api)
    before = fingerprint(api.engine, STOCK_TABLES)

    result = applied(post(api, "/v1/transfers", transfer_body(sku, "T6", 10), key="tr-6"))

    assert (result["outcome"], result["reason"]) == ("rejected", "insufficient_stock")
    assert "5 available" in result["note"] and "status" not in result
    assert lots(api, sku)[("BUC1", "T6")] == (40, 35, 0, 0, 0) and ("CLJ1", "T6") not in lots(api, sku)
    assert fingerprint(api.engine, STOCK_TABLES) == before
    unknown = post(api, f"/v1/transfers/{sent.json()['transfer_id']}/receive", {}, key="tr-6-in")
    refused(unknown, 404, "unknown_transfer")


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        pytest.param({"to_warehouse": "BUC1"}, "same_warehouse", "to_warehouse", id="same-warehouse"),
        pytest.param({"to_warehouse": "OLD1"}, "warehouse_inactive", "to_warehouse", id="inactive"),
        pytest.param({"to_warehouse": "SHOW"}, "cannot_receive", "to_warehouse", id="cannot-receive"),
        pytest.param(
            {"to_warehouse": "NOWHERE"}, "warehouse_inactive", "to_warehouse", id="unknown-warehouse"
        ),
        pytest.param({"lot": "L1"}, "unknown_lot", "lot", id="lot-of-another-product"),
        pytest.param({"unit": "box"}, "invalid_command", "quantity", id="unit-the-product-has-not"),
        pytest.param({"quantity": "1.0005"}, "invalid_command", "quantity", id="too-many-decimals"),
        pytest.param({"quantity": "2.5"}, "invalid_command", "quantity", id="half-a-piece"),
    ],
)
def test_a_transfer_that_cannot_be_done_is_refused_before_it_is_recorded(
    api: Stack, change: dict[str, str], code: str, field: str
) -> None:
    sku = product(api)
    receive(api, sku, "T4", 10)
    body = {**transfer_body(sku, "T4", 5), **change}
    before = fingerprint(api.engine, TABLES)

    problem = refused(post(api, "/v1/transfers", body, key=f"tr-bad-{uuid.uuid4().hex[:6]}"), 422, code)

    assert problem["field"] == field
    assert fingerprint(api.engine, TABLES) == before


# -- counts ---------------------------------------------------------------------------------------


def count_line(sku: str, lot: str, counted: str) -> dict[str, Any]:
    return {"warehouse": "BUC1", "sku": sku, "lot": lot, "counted": counted}


def test_a_count_records_the_difference_per_lot(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "C1", 40)
    receive(api, sku, "C2", 40)

    answer = post(
        api, "/v1/counts", {"lines": [count_line(sku, "C1", "37"), count_line(sku, "C2", "41")]}, key="cnt-1"
    )

    assert answer.status_code == 200, answer.text
    results = [line["result"] for line in answer.json()["lines"]]
    assert [(r["difference"], r["on_hand"]) for r in results] == [("-3", "37"), ("1", "41")]
    assert lots(api, sku)[("BUC1", "C1")][0] == 37 and lots(api, sku)[("BUC1", "C2")][0] == 41
    with api.engine.connect() as conn:
        kinds = conn.execute(
            text(
                "SELECT DISTINCT m.kind FROM movements m JOIN commands c ON c.seq = m.command_seq "
                "WHERE c.idempotency_key LIKE 'cnt-1:%'"
            )
        ).scalars()
        assert list(kinds) == ["count_adjustment"]


def test_a_count_below_what_is_reserved_keeps_the_holds_and_raises_an_alert_naming_them(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "C3", 30)
    held = hold(api, sku, 20)

    answer = post(api, "/v1/counts", {"lines": [count_line(sku, "C3", "12")]}, key="cnt-2")

    result = answer.json()["lines"][0]["result"]
    assert (result["on_hand"], result["difference"]) == ("20", "-10")
    assert lots(api, sku)[("BUC1", "C3")][:2] == (20, 20)
    assert api.call("GET", f"/v1/holds/{held}", "checkout").json()["status"] == "reserved"
    details = [d for ds in alerts(api, "count_below_reserved") for d in ds if d.get("lot") == "C3"]
    assert len(details) == 1 and details[0]["missing"] == "8"
    assert [h["hold_id"] for h in details[0]["holds"]] == [held]


def test_a_negative_count_is_refused_and_changes_nothing(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "C4", 5)
    before = fingerprint(api.engine, TABLES)

    problem = refused(
        post(api, "/v1/counts", {"lines": [count_line(sku, "C4", "-1")]}, key="cnt-neg"),
        422,
        "invalid_command",
    )

    assert problem["field"] == "lines[0].counted"
    assert fingerprint(api.engine, TABLES) == before


# -- adjustments ----------------------------------------------------------------------------------


def adjustment(sku: str, lot: str, quantity: str) -> dict[str, Any]:
    return {
        "warehouse": "BUC1",
        "sku": sku,
        "lot": lot,
        "quantity": quantity,
        "reason": "found on the wrong rack",
    }


def test_a_small_adjustment_applies_at_once(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "A1", 20)

    answer = post(api, "/v1/adjustments", adjustment(sku, "A1", "-3"), key="adj-1")

    assert applied(answer)["status"] == "applied"
    assert lots(api, sku)[("BUC1", "A1")][0] == 17


def test_an_adjustment_above_the_threshold_waits_and_is_applied_once_when_another_token_approves(
    api: Stack,
) -> None:
    sku = product(api)
    receive(api, sku, "A2", 20)
    asked = post(api, "/v1/adjustments", adjustment(sku, "A2", "150"), key="adj-2")
    adjustment_id = asked.json()["adjustment_id"]
    assert applied(asked)["status"] == "awaiting_approval"
    assert lots(api, sku)[("BUC1", "A2")][0] == 20

    first = post(api, f"/v1/adjustments/{adjustment_id}/approve", None, key="adj-2-ok", role="ops")
    second = post(
        api, f"/v1/adjustments/{adjustment_id}/approve", None, key="adj-2-ok-again", role="second ops"
    )

    assert (applied(first)["outcome"], applied(first)["status"]) == ("approved", "approved")
    assert (applied(second)["outcome"], applied(second)["status"]) == ("noop", "approved")
    assert lots(api, sku)[("BUC1", "A2")][0] == 170
    with api.engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, requested_by, decided_by FROM adjustments WHERE id = :i"),
            {"i": adjustment_id},
        ).one()
    assert tuple(row) == ("approved", "test warehouse", "test ops")


def test_a_products_own_threshold_replaces_the_global_one(api: Stack) -> None:
    sku = product(api)
    api.client.upsert_product(sku=sku, name="fragile décor", adjustment_approval_pieces=5)
    receive(api, sku, "A5", 20)

    small = applied(post(api, "/v1/adjustments", adjustment(sku, "A5", "-5"), key="adj-5"))
    large = applied(post(api, "/v1/adjustments", adjustment(sku, "A5", "-6"), key="adj-6"))

    assert (small["status"], large["status"]) == ("applied", "awaiting_approval")
    assert lots(api, sku)[("BUC1", "A5")][0] == 15


def test_an_approval_by_the_token_that_asked_is_403_and_changes_nothing(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "A3", 200)
    asked = post(api, "/v1/adjustments", adjustment(sku, "A3", "-120"), key="adj-3", role="ops")
    adjustment_id = asked.json()["adjustment_id"]
    assert applied(asked)["status"] == "awaiting_approval"
    before = fingerprint(api.engine, TABLES)

    for decision in ("approve", "reject"):
        answer = post(
            api, f"/v1/adjustments/{adjustment_id}/{decision}", None, key=f"adj-3-{decision}", role="ops"
        )
        refused(answer, 403, "same_approver")

    assert fingerprint(api.engine, TABLES) == before
    rejected = post(api, f"/v1/adjustments/{adjustment_id}/reject", None, key="adj-3-no", role="second ops")
    assert applied(rejected)["status"] == "rejected" and lots(api, sku)[("BUC1", "A3")][0] == 200


def test_an_adjustment_that_would_leave_less_than_is_held_is_refused(api: Stack) -> None:
    sku = product(api)
    receive(api, sku, "A4", 10)
    hold(api, sku, 8)
    before = fingerprint(api.engine, ("movements", "stock_balances"))

    result = applied(post(api, "/v1/adjustments", adjustment(sku, "A4", "-5"), key="adj-4"))

    assert (result["outcome"], result["reason"], result["status"]) == (
        "rejected",
        "insufficient_stock",
        "rejected",
    )
    assert fingerprint(api.engine, ("movements", "stock_balances")) == before


def test_an_unknown_adjustment_is_404_and_a_warehouse_token_may_not_approve(api: Stack) -> None:
    refused(
        post(api, f"/v1/adjustments/{uuid.uuid4()}/approve", None, key="adj-x", role="ops"),
        404,
        "unknown_adjustment",
    )
    refused(post(api, f"/v1/adjustments/{uuid.uuid4()}/approve", None, key="adj-y"), 403, "forbidden")


# -- returns --------------------------------------------------------------------------------------


def sold(api: Stack, sku: str, lot: str, pieces: int) -> str:
    """A hold of `pieces` from `lot`, paid."""
    receive(api, sku, lot, pieces)
    hold_id = hold(api, sku, pieces)
    paid = api.client.confirm_payment(event_id=f"evt-{hold_id}", hold_id=hold_id, status="paid").wait(10)
    assert paid["outcome"] == "confirmed", paid
    drained(api)  # the line's sale follows on the product's shard
    return hold_id


def drained(api: Stack) -> None:
    def nothing_waits() -> bool:
        with api.engine.connect() as conn:
            return not conn.execute(
                text("SELECT count(*) FROM commands WHERE status = 'recorded'")
            ).scalar_one()

    until(nothing_waits, what="the inbox drained")


def returned(
    line_no: int, quantity: str, condition: str = "resellable", reason: str | None = None
) -> dict[str, Any]:
    return {"line_no": line_no, "quantity": quantity, "condition": condition, "reason": reason}


def test_returned_goods_go_back_to_their_lot_resellable_or_damaged(api: Stack) -> None:
    sku = product(api)
    hold_id = sold(api, sku, "R1", 10)
    assert lots(api, sku)[("BUC1", "R1")][0] == 0

    first = post(api, "/v1/returns", {"hold_id": hold_id, "lines": [returned(1, "3")]}, key="ret-1")
    second = post(
        api,
        "/v1/returns",
        {"hold_id": hold_id, "lines": [returned(1, "2", "damaged", "chipped")]},
        key="ret-2",
    )

    assert first.json()["lines"][0]["result"]["returned"] == "3"
    again = post(api, "/v1/returns", {"hold_id": hold_id, "lines": [returned(1, "3")]}, key="ret-1")
    assert again.json() == first.json()  # a resend, answered as recorded: not judged again
    assert second.json()["lines"][0]["result"]["returned"] == "5"
    assert lots(api, sku)[("BUC1", "R1")] == (5, 0, 0, 2, 0)


def test_a_refund_after_a_partial_return_gives_back_only_the_rest(api: Stack) -> None:
    sku = product(api)
    hold_id = sold(api, sku, "R2", 10)
    assert applied_lines(
        post(api, "/v1/returns", {"hold_id": hold_id, "lines": [returned(1, "4")]}, key="ret-3")
    )

    refund = api.client.confirm_payment(
        event_id=f"refund-{hold_id}", hold_id=hold_id, status="refunded"
    ).wait(10)

    assert refund["outcome"] == "refunded"
    # the line's return follows on the product's shard; it gives back 6, not 10
    until(lambda: lots(api, sku)[("BUC1", "R2")][0] == 10, what="the refund's return")
    assert api.call("GET", f"/v1/holds/{hold_id}", "checkout").json()["lines"][0]["status"] == "returned"


@pytest.mark.parametrize(
    ("lines", "paid", "status", "code"),
    [
        pytest.param([returned(1, "11")], True, 409, "more_than_sold", id="more-than-sold"),
        pytest.param([returned(1, "1")], False, 409, "not_sold", id="unsold"),
        pytest.param([returned(2, "1")], True, 409, "not_sold", id="no-such-line"),
        pytest.param([returned(1, "1", "damaged")], True, 422, "invalid_command", id="damage-without-reason"),
        pytest.param([returned(1, "0.5")], True, 422, "invalid_command", id="half-piece"),
    ],
)
def test_goods_not_sold_or_already_returned_are_refused_and_change_nothing(
    api: Stack, lines: list[dict[str, Any]], paid: bool, status: int, code: str
) -> None:
    sku, lot = product(api), f"R{uuid.uuid4().hex[:6]}"
    if paid:
        hold_id = sold(api, sku, lot, 10)
    else:
        receive(api, sku, lot, 10)
        hold_id = hold(api, sku, 10)
    before = fingerprint(api.engine, TABLES)

    refused(
        post(api, "/v1/returns", {"hold_id": hold_id, "lines": lines}, key=f"ret-bad-{lot}"), status, code
    )

    assert fingerprint(api.engine, TABLES) == before


def test_goods_returned_in_full_cannot_come_back_again(api: Stack) -> None:
    hold_id = sold(api, product(api), "R3", 6)
    assert applied_lines(
        post(api, "/v1/returns", {"hold_id": hold_id, "lines": [returned(1, "6")]}, key="ret-4")
    )
    before = fingerprint(api.engine, TABLES)

    refused(
        post(api, "/v1/returns", {"hold_id": hold_id, "lines": [returned(1, "1")]}, key="ret-5"),
        409,
        "not_sold",
    )

    assert fingerprint(api.engine, TABLES) == before


def applied_lines(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200 and answer.json()["status"] == "applied", answer.text
    return [line["result"] for line in answer.json()["lines"]]
