"""Goods in from Python (`StockClient`), applied by a writer: who did it is on every ledger row, and a
second release that two recordings let through is refused by the writer, changing nothing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import Engine, text

from domain.commands import shard_of
from producers import StockClient
from tests.conftest import Processes
from tests.stack import until
from workers.writer import ShardWriter

WALL = "WALL-20x50-WHITE"


def _drain(client: StockClient, engine: Engine) -> None:
    shard = shard_of(WALL, client.settings.shards)
    ShardWriter(
        engine, shards=client.settings.shards, batch_max=64, holder="w", announce=lambda r: None
    ).drain(lambda: {shard: 1})


def test_goods_in_from_python_names_who_did_each_movement(
    catalog: StockClient, engine: Engine, assert_consistent: Callable[[], None]
) -> None:
    receipt = catalog.receive_goods(
        idempotency_key="grn-1",
        lines=[
            {
                "warehouse": "BUC1",
                "sku": WALL,
                "quantity": "2",
                "unit": "box",
                "lot": "W1",
                "quarantine": True,
            },
            {
                "warehouse": "BUC1",
                "sku": WALL,
                "quantity": "3",
                "unit": "box",
                "lot": "W2",
                "unit_cost": "0.8",
            },
        ],
        invoice="INV-1",
        actor="Ana",
    )
    quarantine_id = receipt.lines[0].quarantine_id
    assert quarantine_id is not None and receipt.lines[1].quarantine_id is None
    _drain(catalog, engine)
    catalog.release_quarantine(quarantine_id, idempotency_key="rel-1", quantity="5", actor="Ion")
    catalog.write_off_quarantine(quarantine_id, idempotency_key="wo-1", reason="chipped", quantity="15")
    catalog.damage(
        idempotency_key="dmg-1", warehouse="BUC1", sku=WALL, lot="W2", quantity="1", unit="box", reason="x"
    )
    _drain(catalog, engine)

    assert [line["outcome"] for line in receipt.wait()] == ["received", "received"]
    rows = [(m.kind, m.actor, m.reason) for m in reversed(catalog.movements(WALL))]
    assert rows == [
        ("receipt", "Ana", "invoice INV-1"),
        ("receipt", "Ana", "invoice INV-1"),
        ("quarantine_release", "Ion", None),
        ("damage", "system", "chipped"),
        ("damage", "system", "x"),
    ]
    damaged = catalog.movements(WALL, kind="damage", lot="W2")[0]
    assert (damaged.unit_cost, damaged.total_cost) == (Decimal("0.8"), Decimal(8))
    stock = catalog.stock(WALL)
    assert (stock.on_hand, stock.quarantine, stock.damaged, stock.available) == (50, 0, 25, 25)
    assert catalog.valuation("BUC1").warehouses[0].products[0].quantity == 50
    assert_consistent()


def test_a_release_recorded_before_another_applied_is_refused_by_the_writer(
    catalog: StockClient, engine: Engine, assert_consistent: Callable[[], None]
) -> None:
    receipt = catalog.receive_goods(
        idempotency_key="grn-2",
        lines=[{"warehouse": "CLJ1", "sku": WALL, "quantity": "20", "lot": "Q1", "quarantine": True}],
    )
    _drain(catalog, engine)
    quarantine_id = receipt.lines[0].quarantine_id
    assert quarantine_id is not None
    first = catalog.release_quarantine(quarantine_id, idempotency_key="rel-a", quantity="15")
    second = catalog.release_quarantine(quarantine_id, idempotency_key="rel-b", quantity="15")  # 20 were left
    _drain(catalog, engine)

    assert first.wait()["outcome"] == "released"
    assert second.wait() == {
        "outcome": "rejected",
        "reason": f"15 pieces asked, 5 left in quarantine {quarantine_id}",
        "available": "5",
    }
    with engine.connect() as conn:
        assert conn.execute(text("SELECT released, status FROM quarantines")).one() == (15, "quarantined")
    assert catalog.stock(WALL).quarantine == 5
    assert_consistent()


def test_a_resend_after_the_command_applied_is_answered_as_recorded_not_judged_again(
    catalog: StockClient, engine: Engine, assert_consistent: Callable[[], None]
) -> None:
    """Once a release emptied its quarantine and a damage took the lot's available pieces, their
    resends (a client that never heard the answer) find nothing left: they still get the same
    ticket and result, and nothing moves again."""
    receipt = catalog.receive_goods(
        idempotency_key="grn-3",
        lines=[
            {"warehouse": "BUC1", "sku": WALL, "quantity": "6", "lot": "R1", "quarantine": True},
            {"warehouse": "BUC1", "sku": WALL, "quantity": "4", "lot": "R2"},
        ],
    )
    _drain(catalog, engine)
    quarantine_id = receipt.lines[0].quarantine_id
    assert quarantine_id is not None

    def release() -> dict[str, object]:
        return catalog.release_quarantine(quarantine_id, idempotency_key="rel-all").wait()

    def damage() -> dict[str, object]:
        return catalog.damage(
            idempotency_key="dmg-all", warehouse="BUC1", sku=WALL, lot="R2", quantity="4", reason="cracked"
        ).wait()

    catalog.release_quarantine(quarantine_id, idempotency_key="rel-all")
    catalog.damage(
        idempotency_key="dmg-all", warehouse="BUC1", sku=WALL, lot="R2", quantity="4", reason="cracked"
    )
    _drain(catalog, engine)
    first = (release(), damage())

    assert (release(), damage()) == first
    assert first[0]["outcome"] == "released" and first[1]["outcome"] == "damaged"
    assert [m.kind for m in catalog.movements(WALL, kind="quarantine_release")] == ["quarantine_release"]
    assert [m.kind for m in catalog.movements(WALL, kind="damage")] == ["damage"]
    assert_consistent()


def test_a_sale_and_its_refund_carry_the_average_cost_and_a_reservation_none(
    catalog: StockClient, processes: Processes, assert_consistent: Callable[[], None]
) -> None:
    processes.worker()
    catalog.receive_goods(
        idempotency_key="grn-cost",
        lines=[
            {"warehouse": "BUC1", "sku": WALL, "quantity": "10", "lot": "C1", "unit_cost": "2.00"},
            {"warehouse": "BUC1", "sku": WALL, "quantity": "10", "lot": "C1", "unit_cost": "3.00"},
        ],
    ).wait(timeout=15)
    hold = catalog.reserve(
        idempotency_key="cart-cost", lines=[{"sku": WALL, "quantity": "4", "unit": "piece"}]
    ).wait(timeout=15)
    catalog.confirm_payment(event_id="pay-cost", hold_id=hold.hold_id, status="paid").wait(timeout=15)
    catalog.confirm_payment(event_id="refund-cost", hold_id=hold.hold_id, status="refunded").wait(timeout=15)

    # The refund gives the line back by a line command of its own, after the refund's answer.
    until(lambda: catalog.movements(WALL, hold_id=hold.hold_id, kind="return"), what="the refund's return")
    costs = {m.kind: (m.unit_cost, m.total_cost) for m in catalog.movements(WALL, hold_id=hold.hold_id)}
    assert costs == {
        "reservation": (None, None),
        "sale": (Decimal("2.5"), Decimal(10)),  # 4 pieces at the average of 10 at 2 and 10 at 3
        "return": (Decimal("2.5"), Decimal(10)),
    }
    assert_consistent()
