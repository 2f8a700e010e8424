"""What a batch of warehouse commands can do, through handlers registered here: move every bucket,
write the ledger row with who, why, what it cost and the balance it left, open a balance of a known
lot in another warehouse, keep a valuation, write and read back an operation row, raise an alert.
And a valuation's quantity follows on_hand whichever batch moves it (a sale of a hold)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from db.batch_state import InboxCommand
from db.inbox import NewCommand, insert_commands
from db.reconcile import reconcile
from db.sql import psycopg_of
from domain.commands import shard_of
from domain.movements import MovementKind, move
from producers import StockClient
from workers.batch import Batch, Result
from workers.handlers import HANDLERS, handles
from workers.writer import ShardWriter

SKU = "GRS-60x60-GREY"
SHELVE, SETTLE = "stock.test_shelve", "stock.test_settle"


@pytest.fixture
def handlers() -> Iterator[None]:
    """`stock.test_shelve`: moves the payload's deltas in lot L1 of a warehouse (its balance opened
    there if it has none), costs the piece, records a quarantine row and raises an alert.
    `stock.test_settle`: reads that row back and closes it."""

    @handles(SHELVE)
    def shelve(batch: Batch, command: InboxCommand) -> Result:
        p = command.payload
        lot = next(s for s in batch.stocks(p["product_id"]) if s.lot_code == "L1")
        stock = batch.balance_in(lot, p["warehouse_id"])
        deltas = {b: Decimal(p[b]) for b in ("on_hand", "in_transit", "damaged", "quarantine") if b in p}
        cost = Decimal(p["unit_cost"])
        batch.record(move(MovementKind.RECEIPT, stock, **deltas, unit_cost=cost, reason=p["reason"]), command)
        batch.set_average_cost(stock.product_id, stock.warehouse_id, cost)
        batch.save(
            "quarantines",
            {
                "id": p["quarantine_id"],
                "product_id": stock.product_id,
                "warehouse_id": stock.warehouse_id,
                "lot_id": stock.lot_id,
                "quantity": p["quarantine"],
                "released": 0,
                "written_off": 0,
                "status": "quarantined",
                "command_seq": command.seq,
            },
        )
        batch.raise_alert("count_below_reserved", stock.product_id, stock.warehouse_id, {"lot": "L1"})
        return {"outcome": "shelved"}

    @handles(SETTLE)
    def settle(batch: Batch, command: InboxCommand) -> Result:
        row = batch.operation("quarantines", command.payload["quarantine_id"])
        assert row is not None
        batch.save("quarantines", {**row, "released": row["quantity"], "status": "released"})
        return {"outcome": "settled", "was": row["status"]}

    yield
    del HANDLERS[SHELVE], HANDLERS[SETTLE]


def _ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT 'product', id FROM products WHERE sku = :sku "
                "UNION ALL SELECT code, id FROM warehouses WHERE code IN ('BUC1', 'CLJ1')"
            ),
            {"sku": SKU},
        ).all()
    return {name: ident for name, ident in rows}


def _send(engine: Engine, client: StockClient, key: str, kind: str, payload: dict[str, Any]) -> None:
    with engine.begin() as conn:
        insert_commands(
            psycopg_of(conn), [NewCommand.of(key, kind, payload, shard_of(SKU, client.settings.shards))]
        )


@pytest.mark.usefixtures("handlers")
def test_a_warehouse_batch_writes_every_bucket_its_ledger_row_valuation_operation_row_and_alert(
    catalog: StockClient, engine: Engine
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    writer = ShardWriter(
        engine, shards=catalog.settings.shards, batch_max=16, holder="w", announce=lambda r: None
    )
    ids = _ids(engine)
    catalog.receive(idempotency_key="rcv-1", warehouse="BUC1", sku=SKU, quantity="10", lot="L1", shade="A")
    quarantine_id = str(uuid.uuid4())
    _send(
        engine,
        catalog,
        "shelve-1",
        SHELVE,
        {
            "product_id": ids["product"],
            "warehouse_id": ids["CLJ1"],  # L1 has no balance in Cluj yet
            "on_hand": "6",
            "in_transit": "2",
            "quarantine": "4",
            "damaged": "1",
            "unit_cost": "2.5",
            "reason": "found in the yard",
            "quarantine_id": quarantine_id,
            "actor": "Ana",
        },
    )

    assert writer.apply_batch({shard: 1}).applied == 2

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT d_on_hand, d_in_transit, d_damaged, d_quarantine, unit_cost, total_cost, reason, actor, "
                "on_hand_after, reserved_after, in_transit_after, damaged_after, quarantine_after "
                "FROM movements WHERE warehouse_id = :w"
            ),
            {"w": ids["CLJ1"]},
        ).one()
        receipt_actor = conn.execute(
            text("SELECT actor FROM movements WHERE warehouse_id = :w"), {"w": ids["BUC1"]}
        )
        valuation = conn.execute(
            text("SELECT warehouse_id, quantity, average_cost FROM stock_valuations")
        ).all()
        quarantine = conn.execute(text("SELECT status, quantity::text FROM quarantines")).one()
        alert = conn.execute(text("SELECT kind, warehouse_id, details FROM alerts")).one()
    assert tuple(row) == (6, 2, 1, 4, Decimal("2.5"), Decimal(15), "found in the yard", "Ana", 6, 0, 2, 1, 4)
    assert receipt_actor.scalar_one() is None  # the system's: no actor in its payload
    assert valuation == [(ids["CLJ1"], Decimal(6), Decimal("2.5"))]
    assert tuple(quarantine) == ("quarantined", "4.000")
    assert tuple(alert) == ("count_below_reserved", ids["CLJ1"], [{"lot": "L1"}])
    cluj = next(lot for lot in catalog.stock(SKU).lots if lot.warehouse == "CLJ1")
    assert (cluj.on_hand, cluj.in_transit, cluj.damaged, cluj.quarantine, cluj.available) == (6, 2, 1, 4, 1)

    _send(engine, catalog, "settle-1", SETTLE, {"quarantine_id": quarantine_id, "product_id": ids["product"]})
    writer.apply_batch({shard: 1})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, released FROM quarantines")).one() == ("released", 4)
        assert conn.execute(
            text("SELECT result->>'was' FROM commands WHERE idempotency_key = 'settle-1'")
        ).scalar() == ("quarantined")
        # This test's handlers move in_transit and quarantine with no transfer, and close the
        # quarantine row without the balance, which only real operations keep together: every
        # other check of reconcile holds.
        unexplained = {"in_transit_vs_transfers", "quarantine_vs_lines"}
        assert [d for d in reconcile(conn) if d.bucket not in unexplained] == []


@pytest.mark.usefixtures("handlers")
def test_a_valuations_quantity_follows_on_hand_when_a_hold_is_sold(
    catalog: StockClient, engine: Engine, assert_consistent: Callable[[], None]
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    writer = ShardWriter(
        engine, shards=catalog.settings.shards, batch_max=16, holder="w", announce=lambda r: None
    )
    ids = _ids(engine)
    catalog.receive(idempotency_key="rcv-1", warehouse="BUC1", sku=SKU, quantity="10", lot="L1")
    payload = {"product_id": ids["product"], "warehouse_id": ids["BUC1"], "on_hand": "2", "quarantine": "1"}
    _send(
        engine,
        catalog,
        "shelve-1",
        SHELVE,
        {**payload, "unit_cost": "3", "reason": "r", "quarantine_id": str(uuid.uuid4())},
    )
    writer.drain(lambda: {shard: 1})
    ticket = catalog.reserve(
        idempotency_key="cart-1", lines=[{"sku": SKU, "quantity": "5", "warehouse": "BUC1"}]
    )
    writer.drain(lambda: {shard: 1})
    catalog.confirm_payment(event_id="pay-1", hold_id=ticket.hold_id, status="paid")
    writer.drain(lambda: {shard: 1})

    with engine.connect() as conn:
        assert conn.execute(text("SELECT quantity FROM stock_valuations")).scalar_one() == 7
        conn.execute(text("UPDATE stock_valuations SET quantity = 8"))
        differences = reconcile(conn)
        conn.rollback()
    assert [(d.bucket, d.balance, d.expected) for d in differences] == [("valuation_quantity", 8, 7)]
    assert_consistent()
