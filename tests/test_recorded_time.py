"""What counts for a payment or release is when it was recorded, not when a writer got to it.

Each test records its commands while no worker runs, waits until the hold's expiry is due, then
starts a worker: it finds the expiry (recorded when the hold was placed, so earlier in the inbox)
and the command together, late, and must still give the outcome the recorded times give.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

from sqlalchemy import Engine, text

from producers import StockClient
from tests.conftest import Processes
from tests.flow import wait_all_applied
from tests.test_holds import SKU, hold_of, receive, settled


def db_now(engine: Engine) -> dt.datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def wait_until(engine: Engine, moment: dt.datetime, timeout: float = 30.0) -> None:
    """Block until PostgreSQL's clock has reached `moment` (time itself is what these tests test)."""
    deadline = time.monotonic() + timeout
    while (left := (moment - db_now(engine)).total_seconds()) > 0:
        assert time.monotonic() < deadline, f"the clock did not reach {moment}"
        time.sleep(min(left, 0.05))


def recorded_at(engine: Engine, key: str) -> dt.datetime:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT recorded_at FROM commands WHERE idempotency_key = :k"), {"k": key}
        ).scalar_one()


def expiry_movements(engine: Engine, hold_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM movements WHERE hold_id = :h AND kind = 'expiry'"), {"h": hold_id}
        ).scalar_one()


def test_a_payment_and_a_release_recorded_in_the_last_second_before_expires_at_win_over_the_expiry(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    first = processes.worker(name="first")
    receive(catalog, SKU, "20", lot="L1")
    line = [{"sku": SKU, "quantity": "4", "unit": "piece"}]
    paid = hold_of(catalog, line, ttl=3).wait(timeout=15)
    released = hold_of(catalog, line, ttl=3).wait(timeout=15)
    assert (paid.status, released.status) == ("reserved", "reserved")
    processes.stop(first)  # no worker runs from here until well after expires_at

    wait_until(engine, paid.expires_at - dt.timedelta(seconds=0.8))
    payment = catalog.confirm_payment(event_id=f"ntp-{uuid.uuid4().hex}", hold_id=paid.hold_id, status="paid")
    release = catalog.release(released.hold_id, idempotency_key=f"rel-{uuid.uuid4().hex}")
    assert recorded_at(engine, payment.key) < paid.expires_at
    assert recorded_at(engine, release.key) < released.expires_at
    wait_until(engine, max(paid.expires_at, released.expires_at) + dt.timedelta(seconds=1))

    processes.worker(name="late")
    processes.start("scheduler")
    assert payment.wait(timeout=15)["hold_status"] == "confirmed"
    assert release.wait(timeout=15)["hold_status"] == "released"
    wait_all_applied(engine)
    assert catalog.hold(paid.hold_id).status == "confirmed"
    assert catalog.hold(released.hold_id).status == "released"
    assert expiry_movements(engine, paid.hold_id) == expiry_movements(engine, released.hold_id) == 0
    stock = catalog.stock(SKU)
    assert (stock.on_hand, stock.reserved) == (16, 0)
    assert_consistent()


def test_a_payment_recorded_after_expires_at_finds_the_hold_expired_before_its_expiry_has_run(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    first = processes.worker(name="first")
    receive(catalog, SKU, "20", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=2).wait(timeout=15)
    processes.stop(first)

    wait_until(engine, hold.expires_at + dt.timedelta(seconds=0.2))
    payment = catalog.confirm_payment(event_id=f"ntp-{uuid.uuid4().hex}", hold_id=hold.hold_id, status="paid")
    assert recorded_at(engine, payment.key) >= hold.expires_at

    processes.worker(name="late")
    assert payment.wait(timeout=15)["outcome"] in ("expired", "reallocating")
    done = catalog.wait_for(hold.hold_id, lambda: settled(catalog, hold.hold_id, "confirmed"), timeout=15)
    wait_all_applied(engine)
    # Expired first (the clock had run out when the payment was recorded), then re-reserved and sold.
    with engine.connect() as conn:
        kinds = conn.execute(
            text("SELECT kind FROM movements WHERE hold_id = :h ORDER BY id"), {"h": hold.hold_id}
        ).scalars()
        assert list(kinds) == ["reservation", "expiry", "reservation", "sale"]
    assert done.lines[0].status == "confirmed"
    assert_consistent()


def test_a_ledger_row_is_timed_when_its_command_was_applied_and_leads_back_to_it(
    catalog: StockClient, processes: Processes, engine: Engine
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "3", "unit": "piece"}]).wait(timeout=15)
    catalog.confirm_payment(event_id=f"ntp-{uuid.uuid4().hex}", hold_id=hold.hold_id, status="paid").wait(
        timeout=15
    )
    wait_all_applied(engine)

    movements = catalog.movements(SKU)

    assert [m.kind for m in movements] == ["sale", "reservation", "receipt"]
    assert [m.command_kind for m in movements] == ["line.confirm", "line.reserve", "stock.receive"]
    for m in movements:
        assert m.applied_at is not None and m.recorded_at <= m.at == m.applied_at
    assert movements[0].command_key == f"line.confirm:{hold.hold_id}:1"
    assert catalog.movements(SKU, limit=1, before_id=movements[0].id)[0].id == movements[1].id
