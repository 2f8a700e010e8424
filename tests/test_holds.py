"""Cart holds end to end: real PostgreSQL, real Redis, real `tessera worker` processes."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from redis import Redis
from sqlalchemy import Engine, text

from domain.commands import shard_of
from producers import HoldResult, StockClient
from tessera.doorbells import queue_name
from tests.conftest import Processes
from tests.flow import wait_all_applied

SKU = "GRS-60x60-GREY"


def receive(
    client: StockClient, sku: str, quantity: str, *, lot: str, unit: str = "piece", warehouse: str = "BUC1"
) -> None:
    client.receive(
        idempotency_key=f"rcv-{uuid.uuid4().hex}",
        warehouse=warehouse,
        sku=sku,
        quantity=quantity,
        unit=unit,
        lot=lot,
        shade="A",
        caliber="9",
    ).wait(timeout=15)


def hold_of(client: StockClient, lines: list[dict[str, str]], ttl: int = 900, key: str | None = None):
    return client.reserve(idempotency_key=key or f"cart-{uuid.uuid4().hex}", lines=lines, ttl_seconds=ttl)


def test_300_concurrent_holds_of_3_pieces_against_100_reserve_exactly_33(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "100", lot="L1")

    def one(i: int):
        return hold_of(catalog, [{"sku": SKU, "quantity": "3", "unit": "piece"}]).wait(timeout=60)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(300)))

    reserved = [r for r in results if r.status == "reserved"]
    rejected = [r for r in results if r.status == "rejected"]
    assert len(reserved) == 33
    assert len(rejected) == 267
    assert all(r.lines[0].available == 1 for r in rejected)  # 100 - 33 * 3 left when the rest were decided
    assert catalog.stock(SKU).available == 1
    assert_consistent()


def test_two_workers_splitting_the_shards_decide_carts_whose_lines_span_both(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    # MOSAIC-30 is on shard 0 (worker "low"), WALL-20x50-WHITE on shard 3 (worker "high"); each hold's
    # home is its first line's shard (0), so the wall line's writer sends its answer to the other process.
    assert (shard_of("MOSAIC-30", 4), shard_of("WALL-20x50-WHITE", 4)) == (0, 3)
    processes.worker("0-1", name="low")
    processes.worker("2-3", name="high")
    receive(catalog, "MOSAIC-30", "1000", lot="M1")
    receive(catalog, "WALL-20x50-WHITE", "60", lot="W1")
    cart = [
        {"sku": "MOSAIC-30", "quantity": "1", "unit": "piece"},
        {"sku": "WALL-20x50-WHITE", "quantity": "2", "unit": "piece"},
    ]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: hold_of(catalog, cart).wait(timeout=60), range(60)))
    wait_all_applied(engine)  # the rejected carts' mosaic lines are released after their answer

    reserved = [r for r in results if r.status == "reserved"]
    assert len(reserved) == 30  # 60 wall tiles, 2 per cart
    assert all(r.status == "rejected" for r in results if r not in reserved)
    assert all(line.status == "reserved" for r in reserved for line in r.lines)
    assert catalog.stock("MOSAIC-30").reserved == 30
    assert catalog.stock("WALL-20x50-WHITE").available == 0
    with engine.connect() as conn:
        answered_home = conn.execute(
            text("SELECT count(*) FROM commands WHERE kind = 'hold.line_answered' AND status = 'applied'")
        ).scalar_one()
        holders = {h for (h,) in conn.execute(text("SELECT DISTINCT holder FROM apply_batches"))}
    assert answered_home > 0
    assert holders == {"low", "high"}
    assert_consistent()


def test_a_cart_with_one_short_product_is_rejected_and_holds_nothing(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, "GRS-60x60-GREY", "40", lot="G1")
    receive(catalog, "WALL-20x50-WHITE", "50", lot="W1")
    receive(catalog, "MOSAIC-30", "5", lot="M1")

    result = hold_of(
        catalog,
        [
            {"sku": "GRS-60x60-GREY", "quantity": "8", "unit": "piece"},
            {"sku": "WALL-20x50-WHITE", "quantity": "2", "unit": "box"},
            {"sku": "MOSAIC-30", "quantity": "6", "unit": "piece"},
        ],
    ).wait(timeout=15)

    assert result.status == "rejected"
    by_sku = {line.sku: line for line in result.lines}
    assert by_sku["MOSAIC-30"].status == "rejected"
    assert by_sku["MOSAIC-30"].available == 5
    # The compensating releases run after the hold is decided: wait on their commands.
    processes_done = catalog.hold(result.hold_id)
    for line in processes_done.lines:
        if line.sku != "MOSAIC-30":
            assert line.status in ("reserved", "released")
    _wait_released(catalog, result.hold_id)
    assert catalog.stock("GRS-60x60-GREY").reserved == 0
    assert catalog.stock("WALL-20x50-WHITE").reserved == 0
    assert catalog.stock("MOSAIC-30").reserved == 0
    assert_consistent()


def _wait_released(client: StockClient, hold_id: str) -> None:
    """Wait for the compensating release commands of a rejected hold to apply."""
    from producers.client import CommandTicket

    hold = client.hold(hold_id)
    for line in hold.lines:
        if line.status in ("reserved", "released"):
            CommandTicket(client, f"line.release:{hold_id}:{line.line_no}").wait(timeout=15)


def test_12_5_sqm_reserves_9_boxes_but_two_lots_of_5_boxes_cannot_serve_it(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "5", unit="box", lot="LOT-A")
    receive(catalog, SKU, "5", unit="box", lot="LOT-B")

    rejected = hold_of(catalog, [{"sku": SKU, "quantity": "12.5", "unit": "sqm"}]).wait(timeout=15)
    assert rejected.status == "rejected"
    line = rejected.lines[0]
    assert line.pieces == 36 and line.rounding == "rounded up to whole boxes"
    assert line.available == 40
    assert line.largest_lot is not None and line.largest_lot["available"] == "20.000"
    assert "not in any single lot" in (line.reason or "")

    receive(catalog, SKU, "10", unit="box", lot="LOT-C")
    reserved = hold_of(catalog, [{"sku": SKU, "quantity": "12.5", "unit": "sqm"}]).wait(timeout=15)
    assert reserved.status == "reserved"
    assert reserved.lines[0].reserved_pieces == 36
    assert reserved.lines[0].reserved_boxes == 9
    assert reserved.lines[0].lot == "LOT-C"
    assert_consistent()


def test_a_2_second_hold_expires_through_its_delayed_message(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=2).wait(timeout=15)
    assert hold.status == "reserved"

    expired = catalog.wait_for(hold.hold_id, lambda: settled(catalog, hold.hold_id, "expired"), timeout=15)
    assert expired.status == "expired"
    assert expired.lines[0].status in ("reserved", "expired")
    _wait_line(catalog, f"line.expire:{hold.hold_id}:1")
    with engine.connect() as conn:
        applied_at, expires_at = conn.execute(
            text(
                "SELECT c.applied_at, h.expires_at FROM commands c JOIN holds h ON h.id = CAST(c.payload->>'hold_id' AS uuid) "
                "WHERE c.idempotency_key = :k"
            ),
            {"k": f"hold.expire:{hold.hold_id}"},
        ).one()
    assert applied_at >= expires_at  # never before its time
    assert catalog.stock(SKU).reserved == 0
    assert_consistent()


def settled(client: StockClient, hold_id: str, status: str) -> HoldResult | None:
    """The hold, once it has `status` (None before): for `client.wait_for`."""
    hold = client.hold(hold_id)
    return hold if hold.status == status else None


def _wait_line(client: StockClient, key: str) -> dict:
    from producers.client import CommandTicket

    return CommandTicket(client, key).wait(timeout=15)


def test_with_its_delayed_message_deleted_the_sweep_expires_the_hold(
    catalog: StockClient, processes: Processes, settings, assert_consistent
) -> None:
    worker = processes.worker(name="first")
    receive(catalog, SKU, "10", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=2).wait(timeout=15)
    # The delayed message lives in Redis and, once fetched, in the worker's memory: kill the worker
    # and delete every broker key, so the message is gone from both.
    worker.kill()
    worker.wait()
    r = Redis.from_url(settings.redis_url)
    broker_keys = list(r.scan_iter(f"{settings.redis_namespace}:dramatiq:*"))
    home = queue_name(shard_of(SKU, settings.shards))  # a hold's home is its first line's shard
    assert any(home + ".DQ" in key.decode() for key in broker_keys), broker_keys
    r.delete(*broker_keys)

    processes.worker(name="second")
    processes.start("scheduler")
    expired = catalog.wait_for(hold.hold_id, lambda: settled(catalog, hold.hold_id, "expired"), timeout=20)
    assert expired.status == "expired"
    _wait_line(catalog, f"line.expire:{hold.hold_id}:1")
    assert catalog.stock(SKU).reserved == 0
    assert_consistent()


def test_payment_just_before_expiry_confirms_the_sale(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=3).wait(timeout=15)
    catalog.confirm_payment(event_id=f"evt-{uuid.uuid4().hex}", hold_id=hold.hold_id, status="paid").wait(
        timeout=15
    )
    _wait_line(catalog, f"line.confirm:{hold.hold_id}:1")
    after = catalog.hold(hold.hold_id)
    assert after.status == "confirmed"
    stock = catalog.stock(SKU)
    assert (stock.on_hand, stock.reserved) == (6, 0)
    # The expiry message still fires later and is a recorded no-op.
    result = _wait_line(catalog, f"hold.expire:{hold.hold_id}")
    assert result["outcome"] == "noop"
    assert catalog.hold(hold.hold_id).status == "confirmed"
    assert_consistent()


def test_payment_just_after_expiry_re_reserves_and_sells(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=1).wait(timeout=15)
    catalog.wait_for(hold.hold_id, lambda: settled(catalog, hold.hold_id, "expired"), timeout=15)
    catalog.confirm_payment(event_id=f"evt-{uuid.uuid4().hex}", hold_id=hold.hold_id, status="paid").wait(
        timeout=15
    )
    done = catalog.wait_for(hold.hold_id, lambda: settled(catalog, hold.hold_id, "confirmed"), timeout=15)
    assert done.lines[0].status == "confirmed"
    _wait_line(catalog, f"line.confirm:{hold.hold_id}:1")  # re-reserved, then sold
    stock = catalog.stock(SKU)
    assert (stock.on_hand, stock.reserved) == (6, 0)
    assert_consistent()


def test_payment_after_expiry_with_the_stock_gone_raises_paid_without_stock(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "4", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=1).wait(timeout=15)
    catalog.wait_for(hold.hold_id, lambda: settled(catalog, hold.hold_id, "expired"), timeout=15)
    _wait_line(catalog, f"line.expire:{hold.hold_id}:1")
    other = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}]).wait(timeout=15)
    assert other.status == "reserved"

    catalog.confirm_payment(event_id=f"evt-{uuid.uuid4().hex}", hold_id=hold.hold_id, status="paid").wait(
        timeout=15
    )
    done = catalog.wait_for(
        hold.hold_id, lambda: settled(catalog, hold.hold_id, "paid_without_stock"), timeout=15
    )
    assert done.lines[0].status == "unfulfilled"
    with engine.connect() as conn:
        alert = conn.execute(text("SELECT kind, severity, status, details FROM alerts")).one()
    assert (alert.kind, alert.severity, alert.status) == ("paid_without_stock", "critical", "open")
    assert alert.details[0]["hold_id"] == hold.hold_id
    assert catalog.stock(SKU).reserved == 4  # the other customer's hold is untouched
    assert_consistent()


def test_the_same_command_sent_5_times_and_redelivered_has_one_effect(
    catalog: StockClient, processes: Processes, engine: Engine, settings, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "20", lot="L1")
    tickets = [
        hold_of(catalog, [{"sku": SKU, "quantity": "5", "unit": "piece"}], key="cart-same") for _ in range(5)
    ]
    assert len({t.hold_id for t in tickets}) == 1
    result = tickets[0].wait(timeout=15)
    assert result.status == "reserved"
    pays = [
        catalog.confirm_payment(event_id="evt-same", hold_id=result.hold_id, status="paid") for _ in range(5)
    ]
    for p in pays:
        p.wait(timeout=15)
    _wait_line(catalog, f"line.confirm:{result.hold_id}:1")

    # Redis redelivers: ring every shard's doorbell again, many times.
    from tessera.doorbells import Doorbells, make_broker

    doorbells = Doorbells(
        make_broker(Redis.from_url(settings.redis_url), settings.redis_namespace), settings.shards
    )
    for _ in range(5):
        for shard in range(settings.shards):
            doorbells.ring(shard)
    # A receipt rung after the redeliveries applies only once everything before it on its shard has.
    receive(catalog, SKU, "1", lot="L1")

    with engine.connect() as conn:
        movements = conn.execute(
            text("SELECT kind, count(*) FROM movements GROUP BY kind ORDER BY kind")
        ).all()
        holds = conn.execute(text("SELECT count(*) FROM holds")).scalar()
    assert dict(movements) == {"receipt": 2, "reservation": 1, "sale": 1}
    assert holds == 1
    stock = catalog.stock(SKU)
    assert (stock.on_hand, stock.reserved) == (Decimal(16), Decimal(0))
    assert_consistent()
