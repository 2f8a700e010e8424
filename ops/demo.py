"""`tessera demo`: the whole system in one process, with no servers installed.

An embedded PostgreSQL (the ``pgserver`` package: real PostgreSQL binaries, started on a Unix
socket in a temporary directory) and an in-memory Redis (one ``fakeredis`` server, whose Lua
support runs Dramatiq's broker scripts and the lease scripts) stand in for the production stack.
The demo migrates, starts a shard worker and the recovery sweep in threads, seeds a small tile
catalogue through the producer client, and plays a checkout → payment → expiry story, printing
what happens. Everything it starts it stops, and the temporary directory is removed.

``--database-url`` / ``--redis-url`` run the same story against real servers instead (the
database must hold no products yet; Redis keys go under a namespace of their own, removed after).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from redis import Redis
from sqlalchemy import Engine, text

from db.engine import make_engine, normalize_url
from db.migrate import upgrade
from db.reconcile import reconcile
from domain.errors import TesseraError
from domain.quantities import decimal_str
from producers import StockClient
from producers.views import HoldResult, StockView
from tessera.logs import configure_logging
from tessera.settings import Settings
from workers.broker import Doorbells, make_broker
from workers.runtime import ShardWorker
from workers.scheduler import run_sweeper

T = TypeVar("T")
SHARDS = 4
WAIT_SECONDS = 15.0
"""Longest the demo waits for any one step; every step normally takes well under a second."""


class DemoFailed(TesseraError):
    """A step of the story did not end as it should (the demo then exits 1)."""


# -- the servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_postgres(say: Callable[[str], None]) -> Iterator[str]:
    """Start a throwaway PostgreSQL in a temporary directory; yield its SQLAlchemy URL."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

    workdir = Path(tempfile.mkdtemp(prefix="tessera-demo-"))
    started = time.monotonic()
    server = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(workdir / "pgdata", cleanup_mode="delete")
        # pgserver listens on a Unix socket only: postgresql://postgres:@/postgres?host=/tmp/…/pgdata
        url = normalize_url(server.get_uri())
        say(f"  postgres  embedded PostgreSQL (pgserver) on a socket in {workdir}, up in {_since(started)}")
        yield url
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def in_memory_redis() -> Redis:
    """One fakeredis server shared by the worker, the client and the sweeper (Lua via lupa)."""
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    if client.eval("return redis.call('PING')", 0) not in (b"PONG", "PONG"):  # Dramatiq needs Lua
        raise DemoFailed("fakeredis cannot run Lua scripts: install fakeredis[lua]")
    return client


# -- the story -----------------------------------------------------------------------------------


def run_demo(
    *, database_url: str | None = None, redis_url: str | None = None, say: Callable[[str], None] = print
) -> int:
    """Play the story; 0 when every step ended as expected, 1 otherwise."""
    configure_logging("WARNING")  # the story is the output; worker logs only warnings and errors
    started = time.monotonic()
    say("Tessera demo: the whole system in one process, no servers installed")
    try:
        with contextlib.ExitStack() as stack:
            url = normalize_url(database_url) if database_url else stack.enter_context(embedded_postgres(say))
            if database_url:
                say(f"  postgres  {_redact(url)}")
            if redis_url:
                redis, namespace = Redis.from_url(redis_url), f"tessera-demo-{uuid.uuid4().hex[:8]}"
                stack.callback(_delete_namespace, redis, namespace)
                say(f"  redis     {redis_url} (keys under {namespace}:)")
            else:
                redis, namespace = in_memory_redis(), "tessera"
                say(
                    "  redis     in-memory fakeredis, shared by worker, client and sweeper (Lua scripts on lupa)"
                )
            settings = Settings(
                database_url=url,
                redis_url=redis_url or "redis://fakeredis/0",
                redis_namespace=namespace,
                shards=SHARDS,
                lease_ttl_seconds=2.0,
                sweep_interval_seconds=0.5,
                sweep_grace_seconds=2.0,
                worker_threads=2,
                log_level="WARNING",
            )
            upgrade(url)
            say("  schema    migrated to head")
            engine = make_engine(url, pool_size=4, max_overflow=16)
            stack.callback(engine.dispose)
            _require_empty(engine)
            _start_system(stack, settings, redis, engine, say)
            client = stack.enter_context(StockClient(settings, engine=engine, redis_client=redis))
            _story(client, engine, say)
    except TesseraError as failure:  # DemoFailed, or a ticket that timed out
        say(f"demo FAILED: {failure}")
        return 1
    cleaned = "" if database_url else "embedded PostgreSQL stopped and its temporary directory removed"
    if not redis_url:
        cleaned += ", in-memory Redis dropped" if cleaned else "in-memory Redis dropped"
    say(f"\ndemo finished in {_since(started)}" + (f": {cleaned}" if cleaned else ""))
    return 0


def _start_system(
    stack: contextlib.ExitStack, settings: Settings, redis: Redis, engine: Engine, say: Callable[[str], None]
) -> None:
    worker = ShardWorker(
        settings, range(settings.shards), name="demo-worker", redis_client=redis, engine=engine
    )
    worker.start()
    stack.callback(worker.stop)
    epochs = ", ".join(f"{shard}:{lease.epoch}" for shard, lease in sorted(worker.held.items()))
    say(f"  worker    demo-worker leases shards 0-{settings.shards - 1} (shard:epoch {epochs})")
    stop = threading.Event()
    doorbells = Doorbells(make_broker(redis, settings.redis_namespace), settings.shards)
    sweeper = threading.Thread(
        target=run_sweeper,
        args=(engine, doorbells),
        kwargs={
            "interval": settings.sweep_interval_seconds,
            "grace_seconds": settings.sweep_grace_seconds,
            "stop": stop,
        },
        name="sweeper",
        daemon=True,
    )
    sweeper.start()
    stack.callback(sweeper.join, 5)
    stack.callback(stop.set)
    say(
        f"  sweeper   every {settings.sweep_interval_seconds:g} s rings shards with due expiries or with "
        f"commands waiting over {settings.sweep_grace_seconds:g} s"
    )


def _story(client: StockClient, engine: Engine, say: Callable[[str], None]) -> None:
    run = uuid.uuid4().hex[:6]  # idempotency keys of this run

    say("\n1. A small tile catalogue")
    client.upsert_warehouse(code="BUC1", name="Bucharest", can_ship=True, priority=1)
    client.upsert_warehouse(code="CLJ1", name="Cluj", can_ship=True, priority=2)
    client.upsert_warehouse(code="SHOW", name="Showroom", can_ship=False, priority=9, type="showroom")
    say(
        "  warehouses  BUC1 Bucharest (ships, priority 1), CLJ1 Cluj (ships, priority 2), SHOW showroom (no shipping)"
    )
    products = [
        ("GRS-60x60-GREY", "Grès 60x60 grey", 4, "1.44"),
        ("WALL-20x50-WHITE", "Wall tile 20x50 white", 10, "1.00"),
        ("MOSAIC-30", "Mosaic sheet 30x30", 11, "0.99"),
    ]
    for sku, name, pieces, sqm in products:
        client.upsert_product(sku=sku, name=name, pieces_per_box=pieces, sqm_per_box=sqm)
        say(f"  product     {sku:<17} {name:<22} {pieces} pieces/box, {sqm} m²/box")
    lots = [
        ("GRS-60x60-GREY", "BUC1", 100, "L2311", "A", "9"),
        ("GRS-60x60-GREY", "CLJ1", 40, "L2402", "B", "9"),
        ("WALL-20x50-WHITE", "BUC1", 60, "W2309", "1", "7.8"),
        ("MOSAIC-30", "BUC1", 20, "M2401", "A", "3"),
        ("MOSAIC-30", "CLJ1", 15, "M2404", "C", "3"),
    ]
    for sku, warehouse, boxes, lot, shade, caliber in lots:
        result = client.receive(
            idempotency_key=f"demo-{run}-rcv-{lot}",
            warehouse=warehouse,
            sku=sku,
            quantity=boxes,
            unit="box",
            lot=lot,
            shade=shade,
            caliber=caliber,
        ).wait(timeout=WAIT_SECONDS)
        say(
            f"  received    {boxes:>3} boxes = {result['pieces']:>3} pieces of {sku} into {warehouse}, "
            f"lot {lot} (shade {shade}, caliber {caliber})"
        )

    say("\n2. Checkout reserves 12.5 m² of GRS-60x60-GREY (1.44 m² and 4 pieces per box)")
    ticket = client.reserve(
        idempotency_key=f"demo-{run}-cart-A",
        lines=[{"sku": "GRS-60x60-GREY", "quantity": "12.5", "unit": "sqm"}],
    )
    hold = ticket.wait(timeout=WAIT_SECONDS)
    _expect(hold, "reserved")
    line = hold.lines[0]
    say(
        f"  12.5 m² / 1.44 m² per box = {Decimal('12.5') / Decimal('1.44'):.2f} boxes, {line.rounding}: "
        f"{decimal_str(line.reserved_boxes)} boxes = {decimal_str(line.pieces)} pieces "
        f"= {decimal_str(line.reserved_sqm)} m²"
    )
    say(
        f"  hold {_short(hold)}: {hold.status}, {decimal_str(line.reserved_pieces)} pieces from lot {line.lot} "
        f"(shade {line.shade}, caliber {line.caliber}) in {line.warehouse}, "
        f"expires at {hold.expires_at:%H:%M:%S} UTC"
    )
    before = client.stock("GRS-60x60-GREY")
    _show(say, before)

    event = f"ntp-{run}-1001"
    say(f"\n3. The payment relay confirms it (provider event {event}: paid)")
    paid = client.confirm_payment(event_id=event, hold_id=hold.hold_id, status="paid").wait(
        timeout=WAIT_SECONDS
    )
    say(f"  payment {event}: {paid['outcome']} → hold {_short(hold)} is {client.hold(hold.hold_id).status}")
    after = _until(
        lambda: _stock_if(client, "GRS-60x60-GREY", lambda s: s.on_hand < before.on_hand),
        "the sale to reach the stock",
    )
    _show(
        say,
        after,
        note=f"a sale movement took {decimal_str(before.on_hand - after.on_hand)} pieces off on_hand",
    )
    _expect(client.hold(hold.hold_id), "confirmed")
    again = client.confirm_payment(event_id=event, hold_id=hold.hold_id, status="paid").wait(
        timeout=WAIT_SECONDS
    )
    resent = client.stock("GRS-60x60-GREY")
    if again != paid or resent.on_hand != after.on_hand:
        raise DemoFailed(f"a resent payment changed something: {again} vs {paid}")
    say(
        f"  the relay resends {event}: same recorded result ({again['outcome']}), on_hand still "
        f"{decimal_str(resent.on_hand)} (idempotency key payment:{event})"
    )

    say("\n4. A second cart holds 2 boxes of WALL-20x50-WHITE for 2 seconds, then walks away")
    wall_before = client.stock("WALL-20x50-WHITE")
    placed = time.monotonic()
    short = client.reserve(
        idempotency_key=f"demo-{run}-cart-B",
        lines=[{"sku": "WALL-20x50-WHITE", "quantity": "2", "unit": "box"}],
        ttl_seconds=2,
    ).wait(timeout=WAIT_SECONDS)
    _expect(short, "reserved")
    held = client.stock("WALL-20x50-WHITE")
    say(
        f"  hold {_short(short)}: {short.status}, {decimal_str(short.lines[0].reserved_pieces)} pieces "
        f"from lot {short.lines[0].lot}; expiry scheduled as a delayed message (Dramatiq delay=)"
    )
    _show(say, held)
    expired = _until(
        lambda: _hold_if(client, short.hold_id, lambda h: h.status != "reserved"), "the short hold to expire"
    )
    _expect(expired, "expired")
    late = (dt.datetime.now(dt.UTC) - expired.expires_at).total_seconds()
    say(
        f"  hold {_short(short)}: {expired.status} {_since(placed)} after it was placed, {late:.1f} s past "
        "expires_at (rung by its delayed doorbell or by the sweep, whichever came first; the database "
        "clock decides)"
    )
    back = _until(
        lambda: _stock_if(client, "WALL-20x50-WHITE", lambda s: s.reserved == wall_before.reserved),
        "the expired stock to come back",
    )
    _show(say, back, note="the expiry movement gave the reservation back")

    say("\n5. A third cart wants 30 boxes of MOSAIC-30: more than any single lot holds")
    mosaic = client.stock("MOSAIC-30")
    say(
        "  lots: "
        + ", ".join(
            f"{lot.lot} in {lot.warehouse} (shade {lot.shade}) {decimal_str(lot.available)} pieces"
            for lot in mosaic.lots
        )
    )
    rejected = client.reserve(
        idempotency_key=f"demo-{run}-cart-C", lines=[{"sku": "MOSAIC-30", "quantity": "30", "unit": "box"}]
    ).wait(timeout=WAIT_SECONDS)
    _expect(rejected, "rejected")
    bad = rejected.lines[0]
    largest = bad.largest_lot or {}
    if not largest:
        raise DemoFailed(f"the rejection names no largest lot: {bad.reason}")
    say(
        f"  hold {_short(rejected)}: {rejected.status}: no single lot holds {decimal_str(bad.pieces)} pieces; "
        f"{decimal_str(bad.available)} available in all, largest lot {largest['lot']} in {largest['warehouse']} "
        f"has {decimal_str(Decimal(largest['available']))}"
    )
    say("  (one floor, one shade: a tile line is served from a single lot, never mixed)")
    _show(say, client.stock("MOSAIC-30"), note="nothing was reserved")

    say("\n6. Reconcile: Σ ledger movements = balances, reserved = active hold lines")
    with engine.connect() as conn:
        differences = reconcile(conn)
    if differences:
        raise DemoFailed("reconcile found differences: " + "; ".join(map(str, differences)))
    say("  reconcile: clean (ledger = balances, reserved = active hold lines)")


# -- helpers -------------------------------------------------------------------------------------


def _expect(hold: HoldResult, status: str) -> None:
    if hold.status != status:
        reasons = "; ".join(f"line {ln.line_no}: {ln.status} {ln.reason or ''}" for ln in hold.lines)
        raise DemoFailed(f"hold {hold.hold_id} is {hold.status}, expected {status} ({reasons})")


def _until(read: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = read()
        if value is not None:
            return value
        time.sleep(0.05)
    raise DemoFailed(f"waited {WAIT_SECONDS:g} s for {what}")


def _stock_if(client: StockClient, sku: str, ok: Callable[[StockView], bool]) -> StockView | None:
    stock = client.stock(sku)
    return stock if ok(stock) else None


def _hold_if(client: StockClient, hold_id: str, ok: Callable[[HoldResult], bool]) -> HoldResult | None:
    hold = client.hold(hold_id)
    return hold if ok(hold) else None


def _show(say: Callable[[str], None], stock: StockView, *, note: str = "") -> None:
    say(
        f"  stock {stock.sku}: on_hand {decimal_str(stock.on_hand)}, reserved {decimal_str(stock.reserved)}, "
        f"available {decimal_str(stock.available)}" + (f"  ({note})" if note else "")
    )


def _short(hold: HoldResult) -> str:
    return hold.hold_id[:8]


def _since(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _require_empty(engine: Engine) -> None:
    with engine.connect() as conn:
        if conn.execute(text("SELECT count(*) FROM products")).scalar():
            raise DemoFailed("the database already holds products: run the demo against an empty database")


def _delete_namespace(redis: Redis, namespace: str) -> None:
    keys = list(redis.scan_iter(f"{namespace}:*", count=1000))
    if keys:
        redis.delete(*keys)
