"""Receipts decided in memory with the rest of their batch: a lot created by one command is there
for the next, and a fact a lot had not stated is filled in by the receipt that states it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, text

from domain.commands import shard_of
from producers import StockClient
from workers.writer import ShardWriter

SKU = "MOSAIC-30"


def _writer(client: StockClient, engine: Engine) -> ShardWriter:
    return ShardWriter(
        engine, shards=client.settings.shards, batch_max=64, holder="w", announce=lambda r: None
    )


def test_a_hold_in_the_same_batch_as_the_receipt_of_a_new_lot_is_served_from_it(
    catalog: StockClient, engine: Engine, assert_consistent
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    catalog.receive(
        idempotency_key="rcv-new", warehouse="BUC1", sku=SKU, quantity="2", unit="box", lot="M9", shade="C"
    )
    ticket = catalog.reserve(idempotency_key="cart-1", lines=[{"sku": SKU, "quantity": "5", "unit": "piece"}])

    report = _writer(catalog, engine).apply_batch({shard: 1})

    assert report.applied == 2  # the receipt and the line's reservation, in one transaction
    hold = catalog.hold(ticket.hold_id)
    assert (hold.status, hold.lines[0].lot, hold.lines[0].shade) == ("reserved", "M9", "C")
    stock = catalog.stock(SKU)
    assert (stock.on_hand, stock.reserved) == (Decimal(22), Decimal(5))
    assert_consistent()


def test_a_receipt_that_states_a_fact_the_lot_lacked_fills_it_in(
    catalog: StockClient, engine: Engine, assert_consistent
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    writer = _writer(catalog, engine)
    catalog.receive(idempotency_key="rcv-1", warehouse="BUC1", sku=SKU, quantity="1", lot="M1")
    writer.apply_batch({shard: 1})
    catalog.receive(idempotency_key="rcv-2", warehouse="CLJ1", sku=SKU, quantity="1", lot="M1", shade="B")
    catalog.receive(idempotency_key="rcv-3", warehouse="BUC1", sku=SKU, quantity="1", lot="M1", caliber="3")
    writer.apply_batch({shard: 1})

    with engine.connect() as conn:
        lots = conn.execute(text("SELECT lot_code, shade, caliber FROM lots")).all()
    assert lots == [("M1", "B", "3")]
    assert [(lot.warehouse, lot.shade, lot.caliber) for lot in catalog.stock(SKU).lots] == [
        ("BUC1", "B", "3"),
        ("CLJ1", "B", "3"),
    ]
    assert_consistent()
