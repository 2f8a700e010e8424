"""The apply transaction proves the lease epoch in Postgres: an older epoch can never apply."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from db.repository import claim_batch, psycopg_of
from domain.commands import shard_of
from domain.errors import LeaseLost
from producers import StockClient
from workers.writer import ShardWriter

SKU = "GRS-60x60-GREY"


def _writer(engine: Engine, holder: str) -> ShardWriter:
    return ShardWriter(engine, shards=4, batch_max=16, holder=holder, after_commit=lambda report: None)


def _receive(client: StockClient, key: str) -> None:
    client.receive(idempotency_key=key, warehouse="BUC1", sku=SKU, quantity="1", lot="L1")


def test_a_writer_with_an_older_epoch_is_fenced_out(catalog: StockClient, engine: Engine) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    _receive(catalog, "first")
    assert _writer(engine, "new").apply_batch(shard, epoch=5).applied == 1
    _receive(catalog, "second")
    with pytest.raises(LeaseLost):
        _writer(engine, "stale").apply_batch(shard, epoch=4)
    assert _writer(engine, "newer").apply_batch(shard, epoch=6).applied == 1
    assert catalog.stock(SKU).on_hand == 2


def test_a_second_writer_of_a_shard_waits_for_the_first_to_commit(
    catalog: StockClient, engine: Engine
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    _receive(catalog, "waiting")
    entered = threading.Event()
    with engine.begin() as first:
        claim = claim_batch(psycopg_of(first), shard, 7, "first", 16)
        assert claim.now is not None
        thread = threading.Thread(
            target=lambda: (_writer(engine, "second").apply_batch(shard, epoch=8), entered.set())
        )
        thread.start()
        # While the first transaction is open the second cannot get past the fence row.
        assert not entered.wait(0.5)
    thread.join(timeout=10)
    assert entered.is_set()
    assert catalog.stock(SKU).on_hand == 1
