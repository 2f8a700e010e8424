"""A command kind added in a test module, its handler registered here, is applied by the writer in
inbox order with the others: the next commands are new handler files, not new branches in the writer."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from db.batch_state import InboxCommand
from db.inbox import NewCommand, insert_commands
from db.sql import psycopg_of
from domain.commands import shard_of
from domain.movements import MovementKind, move
from producers import StockClient
from workers.batch import Batch, Result
from workers.handlers import HANDLERS, handles
from workers.writer import ShardWriter

SKU = "GRS-60x60-GREY"
KIND = "test.found"


@pytest.fixture
def found_handler() -> Iterator[None]:
    """`test.found`: pieces found on the shelf of a lot, added to its on_hand with a ledger row."""

    @handles(KIND)
    def found(batch: Batch, command: InboxCommand) -> Result:
        p = command.payload
        stock = next(s for s in batch.stocks(p["product_id"]) if s.lot_code == p["lot"])
        batch.record(move(MovementKind.RECEIPT, stock, on_hand=Decimal(p["pieces"])), command)
        return {"outcome": "found", "on_hand": str(stock.on_hand)}

    yield
    del HANDLERS[KIND]


@pytest.mark.usefixtures("found_handler")
def test_a_kind_registered_by_a_test_is_applied_in_order_by_the_writer(
    catalog: StockClient, engine: Engine, assert_consistent
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    writer = ShardWriter(
        engine, shards=catalog.settings.shards, batch_max=16, holder="w", announce=lambda r: None
    )
    catalog.receive(idempotency_key="rcv-1", warehouse="BUC1", sku=SKU, quantity="10", lot="L1")
    with engine.begin() as conn:
        product_id = conn.execute(text("SELECT id FROM products WHERE sku = :s"), {"s": SKU}).scalar_one()
        insert_commands(
            psycopg_of(conn),
            [NewCommand.of("found-1", KIND, {"product_id": product_id, "lot": "L1", "pieces": "3"}, shard)],
        )
    catalog.receive(idempotency_key="rcv-2", warehouse="BUC1", sku=SKU, quantity="1", lot="L1")

    assert writer.apply_batch({shard: 1}).applied == 3

    with engine.connect() as conn:
        results = conn.execute(
            text("SELECT idempotency_key, result->>'on_hand' FROM commands WHERE shard = :s ORDER BY seq"),
            {"s": shard},
        ).all()
        ledger = (
            conn.execute(
                text("SELECT d_on_hand FROM movements WHERE product_id = :p ORDER BY id"), {"p": product_id}
            )
            .scalars()
            .all()
        )
    assert results == [("rcv-1", "10"), ("found-1", "13"), ("rcv-2", "14")]
    assert ledger == [Decimal(10), Decimal(3), Decimal(1)]
    assert catalog.stock(SKU).on_hand == 14
    assert_consistent()


def test_a_kind_no_handler_applies_fails_and_is_parked_without_stopping_its_shard(
    catalog: StockClient, engine: Engine, assert_consistent
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    writer = ShardWriter(
        engine,
        shards=catalog.settings.shards,
        batch_max=16,
        holder="w",
        announce=lambda r: None,
        max_attempts=2,
    )
    with engine.begin() as conn:
        insert_commands(psycopg_of(conn), [NewCommand.of("nobody-1", "test.nobody", {}, shard)])
    catalog.receive(idempotency_key="rcv-1", warehouse="BUC1", sku=SKU, quantity="2", lot="L1")

    writer.drain(lambda: {shard: 1})

    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                text("SELECT idempotency_key, status FROM commands WHERE shard = :s"), {"s": shard}
            ).all()
        )
    assert rows == {"nobody-1": "dead", "rcv-1": "applied"}
    assert catalog.stock(SKU).on_hand == 2
    assert_consistent()
