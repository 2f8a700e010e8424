"""The apply transaction proves the lease epoch in Postgres: an older epoch can never apply; and
when a writer's drain stops."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text

from db.claims import claim_batch
from db.sql import psycopg_of
from domain.commands import shard_of
from producers import StockClient
from workers.writer import ShardWriter

SKU = "GRS-60x60-GREY"


def _writer(engine: Engine, holder: str) -> ShardWriter:
    return ShardWriter(engine, shards=4, batch_max=16, holder=holder, announce=lambda report: None)


def _receive(client: StockClient, key: str) -> None:
    client.receive(idempotency_key=key, warehouse="BUC1", sku=SKU, quantity="1", lot="L1")


def test_a_writer_with_an_older_epoch_is_fenced_out(catalog: StockClient, engine: Engine) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    _receive(catalog, "first")
    assert _writer(engine, "new").apply_batch({shard: 5}).applied == 1
    _receive(catalog, "second")
    stale = _writer(engine, "stale").apply_batch({shard: 4})
    assert (stale.applied, stale.fenced) == (0, {shard})
    newer = _writer(engine, "newer").apply_batch({shard: 6})
    assert (newer.applied, newer.fenced) == (1, set())
    assert catalog.stock(SKU).on_hand == 2


def test_a_draining_writer_fenced_out_stops_and_reports_the_shard(
    catalog: StockClient, engine: Engine
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    _receive(catalog, "first")
    assert _writer(engine, "new").apply_batch({shard: 5}).applied == 1
    _receive(catalog, "second")
    # The stale writer still believes it holds the shard: its drain must return, not claim forever,
    # even while producers keep ringing for the shard.
    stale = _writer(engine, "stale").drain(lambda: {shard: 4})
    assert (stale.applied, stale.fenced) == (0, {shard})
    rung_forever = _writer(engine, "stale").drain(lambda: {shard: 4}, rung=lambda: True)
    assert (rung_forever.applied, rung_forever.fenced) == (0, {shard})
    assert catalog.stock(SKU).on_hand == 1


def test_a_drain_goes_on_while_doorbells_ring(catalog: StockClient, engine: Engine) -> None:
    """A batch that took all that was due ends the drain, unless a doorbell rang meanwhile: then what
    was recorded since is applied in the same drain."""
    shard = shard_of(SKU, catalog.settings.shards)
    _receive(catalog, "first")
    asked: list[bool] = []

    def rung() -> bool:  # a producer records a receipt while the first batch is applied, and rings
        if not asked:
            _receive(catalog, "second")
        asked.append(not asked)
        return asked[-1]

    report = _writer(engine, "only").drain(lambda: {shard: 1}, rung)
    assert report.applied == 2
    assert asked == [True, False]
    assert catalog.stock(SKU).on_hand == 2


def test_a_second_writer_of_a_shard_waits_for_the_first_to_commit(
    catalog: StockClient, engine: Engine
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    _receive(catalog, "waiting")
    entered = threading.Event()
    with engine.begin() as first:
        claim = claim_batch(psycopg_of(first), {shard: 7}, "first", 16)
        assert claim.proved == {shard}
        thread = threading.Thread(
            target=lambda: (_writer(engine, "second").apply_batch({shard: 8}), entered.set())
        )
        thread.start()
        # While the first transaction is open the second cannot get past the fence row.
        assert not entered.wait(0.5)
    thread.join(timeout=10)
    assert entered.is_set()
    assert catalog.stock(SKU).on_hand == 1


def test_a_batch_over_several_shards_applies_those_it_holds_and_reports_the_fenced_one(
    catalog: StockClient, engine: Engine
) -> None:
    other_sku = "WALL-20x50-WHITE"
    grey, wall = shard_of(SKU, catalog.settings.shards), shard_of(other_sku, catalog.settings.shards)
    assert grey != wall
    _receive(catalog, "grey-1")
    assert _writer(engine, "newer").apply_batch({grey: 9}).applied == 1  # shard `grey` is at epoch 9 now
    _receive(catalog, "grey-2")
    catalog.receive(idempotency_key="wall-1", warehouse="BUC1", sku=other_sku, quantity="5", lot="W1")
    report = _writer(engine, "older").apply_batch({grey: 3, wall: 3})
    assert (report.applied, report.fenced) == (1, {grey})
    assert catalog.stock(other_sku).on_hand == 5
    assert catalog.stock(SKU).on_hand == 1  # grey-2 waits for the holder of epoch 9
    assert _writer(engine, "newer").apply_batch({grey: 9}).applied == 1
    assert catalog.stock(SKU).on_hand == 2


def test_a_drain_applies_the_follow_ups_on_its_own_shards_before_it_returns(
    catalog: StockClient, engine: Engine
) -> None:
    """A batch that took all that was due ends the drain, unless it sent commands to the writer's
    own shards: nobody else rings for those."""
    wall = "WALL-20x50-WHITE"
    shards = {shard_of(SKU, catalog.settings.shards): 1, shard_of(wall, catalog.settings.shards): 1}
    assert len(shards) == 2
    _receive(catalog, "grey-in")
    catalog.receive(idempotency_key="wall-in", warehouse="BUC1", sku=wall, quantity="1", lot="L1")
    lines = [{"sku": SKU, "quantity": "1"}, {"sku": wall, "quantity": "1"}]
    hold = catalog.reserve(idempotency_key="cart", lines=lines)
    writer = _writer(engine, "only")
    writer.drain(lambda: shards)
    assert catalog.hold(hold.hold_id).status == "reserved"

    catalog.confirm_payment(event_id="paid", hold_id=hold.hold_id, status="paid")
    report = writer.drain(lambda: shards)

    with engine.connect() as conn:
        kinds = dict(
            conn.execute(
                text("SELECT kind, count(*) FROM commands WHERE status = 'recorded' GROUP BY kind")
            ).all()
        )
    assert kinds == {}, f"left for a later drain: {kinds}"
    assert report.applied == 3  # the payment, then the two line commands it sent
    assert catalog.hold(hold.hold_id).status == "confirmed"


def test_a_drain_with_nothing_due_returns_however_often_doorbells_ring(
    catalog: StockClient, engine: Engine
) -> None:
    shard = shard_of(SKU, catalog.settings.shards)
    reports = []
    drain = threading.Thread(
        target=lambda: reports.append(_writer(engine, "idle").drain(lambda: {shard: 1}, rung=lambda: True)),
        daemon=True,
    )
    drain.start()
    drain.join(timeout=10)
    assert not drain.is_alive(), "the drain kept claiming an empty inbox"
    assert [r.applied for r in reports] == [0]
