"""The demo's story: a tile catalogue, a checkout, a payment, an expiry and a rejection, told as
it happens, each step checked (`DemoFailed` when the system does not do what the story says)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import Engine

from db.reconcile import reconcile
from domain.errors import TesseraError
from domain.quantities import decimal_str
from domain.results import HoldResult, StockView
from producers import StockClient

T = TypeVar("T")
WAIT_SECONDS = 15.0
"""Longest the demo waits for any one step; every step normally takes well under a second."""


class DemoFailed(TesseraError):
    """A step of the story did not end as it should (the demo then exits 1)."""


def tell_story(client: StockClient, engine: Engine, say: Callable[[str], None]) -> None:
    run = uuid.uuid4().hex[:6]  # idempotency keys of this run
    _catalogue(client, run, say)
    hold, before = _checkout_reserves(client, run, say)
    _relay_pays(client, run, say, hold, before)
    _short_hold_expires(client, run, say)
    _no_single_lot(client, run, say)
    _warehouse_day(client, run, say)
    _reconciled(engine, say)


def _catalogue(client: StockClient, run: str, say: Callable[[str], None]) -> None:
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


def _checkout_reserves(
    client: StockClient, run: str, say: Callable[[str], None]
) -> tuple[HoldResult, StockView]:
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
    return hold, before


def _relay_pays(
    client: StockClient, run: str, say: Callable[[str], None], hold: HoldResult, before: StockView
) -> None:
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


def _short_hold_expires(client: StockClient, run: str, say: Callable[[str], None]) -> None:
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
        f"  hold {_short(short)}: {expired.status} {since(placed)} after it was placed, {late:.1f} s past "
        "expires_at (rung by its delayed doorbell or by the sweep, whichever came first; the database "
        "clock decides)"
    )
    back = _until(
        lambda: _stock_if(client, "WALL-20x50-WHITE", lambda s: s.reserved == wall_before.reserved),
        "the expired stock to come back",
    )
    _show(say, back, note="the expiry movement gave the reservation back")


def _no_single_lot(client: StockClient, run: str, say: Callable[[str], None]) -> None:
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


def _warehouse_day(client: StockClient, run: str, say: Callable[[str], None]) -> None:
    wall = "WALL-20x50-WHITE"
    say(f"\n6. The warehouse's day: {wall} arrives in two lots, one goes to Cluj, a shelf is counted")
    lines = [
        {
            "warehouse": "BUC1",
            "sku": wall,
            "quantity": 10,
            "unit": "box",
            "lot": lot,
            "shade": shade,
            "caliber": "7.8",
            "unit_cost": "2.40",
        }
        for lot, shade in (("W2405", "2"), ("W2406", "3"))
    ]
    results = client.receive_goods(
        idempotency_key=f"demo-{run}-rcv-W24", lines=lines, supplier="Cesarom", invoice="F-2024-118"
    ).wait(timeout=WAIT_SECONDS)
    for line, result in zip(lines, results, strict=True):
        say(
            f"  received    10 boxes = {result['pieces']} pieces into BUC1, lot {line['lot']} "
            f"(shade {line['shade']}) at 2.40 a piece, one receipt of two lots"
        )
    ticket = client.transfer(
        idempotency_key=f"demo-{run}-tr-1",
        from_warehouse="BUC1",
        to_warehouse="CLJ1",
        sku=wall,
        lot="W2405",
        quantity=5,
        unit="box",
    )
    sent = ticket.wait(timeout=WAIT_SECONDS)
    if sent["outcome"] != "in_transit":
        raise DemoFailed(f"the transfer was not sent: {sent}")
    say(f"  transfer {ticket.operation_id[:8]}: 50 pieces of lot W2405 leave BUC1, in transit to CLJ1")
    arrived = client.receive_transfer(
        ticket.operation_id,
        idempotency_key=f"demo-{run}-tr-1-in",
        received=48,
        damaged=2,
        reason="two cracked in the van",
    ).wait(timeout=WAIT_SECONDS)
    say(
        f"  transfer {ticket.operation_id[:8]}: {arrived['outcome']} in CLJ1, {arrived['received']} good, "
        f"{arrived['damaged']} damaged (two cracked in the van)"
    )
    [counted] = client.count(
        idempotency_key=f"demo-{run}-count-1",
        lines=[{"warehouse": "BUC1", "sku": wall, "lot": "W2309", "counted": "598"}],
        reason="monthly count",
    )
    count = counted.wait(timeout=WAIT_SECONDS)
    say(f"  count of W2309 in BUC1: 598 found, a count_adjustment of {count['difference']} pieces")
    for balance in client.stock(wall).lots:
        say(
            f"  lot {balance.lot} in {balance.warehouse}: on_hand {decimal_str(balance.on_hand)}, "
            f"in transit {decimal_str(balance.in_transit)}, damaged {decimal_str(balance.damaged)}, "
            f"available {decimal_str(balance.available)}"
        )


def _reconciled(engine: Engine, say: Callable[[str], None]) -> None:
    say("\n7. Reconcile: Σ ledger movements = balances in every bucket, and what explains them")
    with engine.connect() as conn:
        differences = reconcile(conn)
    if differences:
        raise DemoFailed("reconcile found differences: " + "; ".join(map(str, differences)))
    say(
        "  reconcile: clean (ledger = balances, reserved = active hold lines, in transit = open transfers, "
        "quarantine = quarantined lines, valuations = on hand)"
    )


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


def since(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"
