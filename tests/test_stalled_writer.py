"""A worker stopped (SIGSTOP) inside its batch transaction cannot hold its shard.

The moment is made deterministic without any hook in the worker: the test holds the hold's row
lock, so the writer's claim of the hold's due expiry waits inside its transaction after it has
locked its shard's fence row; the worker is stopped while it waits there, and the test lets go of
the row. The stopped worker's transaction now holds the fence row and the hold, idle. PostgreSQL
ends it after half the lease TTL; the lease passes on; the standby worker applies the expiry within
the lease TTL and a batch. When the stopped worker wakes, its session is gone and its epoch
fenced: it applies nothing.
"""

from __future__ import annotations

import datetime as dt
import signal
import time

from sqlalchemy import Engine, text

from producers import StockClient
from tessera.settings import Settings
from tests.conftest import Processes
from tests.flow import wait_all_applied
from tests.test_holds import SKU, hold_of, receive, settled
from tests.test_recorded_time import db_now, wait_until


def _waiting_on_a_lock(engine: Engine, worker: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :app AND wait_event_type = 'Lock'"
                ),
                {"app": f"tessera-worker {worker}"},
            ).scalar_one()
        )


def test_a_worker_stopped_inside_its_transaction_does_not_delay_expiry_past_the_lease(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings, assert_consistent
) -> None:
    stalled = processes.worker(name="stalled")
    processes.start("worker", "--name", "standby")  # started second: it waits for the leases
    processes.start("scheduler")
    receive(catalog, SKU, "10", lot="L1")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "4", "unit": "piece"}], ttl=3).wait(timeout=15)
    assert hold.status == "reserved"

    with engine.connect() as blocker:
        blocker.execute(text("SELECT 1 FROM holds WHERE id = :h FOR UPDATE"), {"h": hold.hold_id})
        wait_until(engine, hold.expires_at)
        # The expiry is due: the writer claims it and waits for the hold's row inside its transaction
        # (a lock_timeout may end a wait: it claims again, and waits again).
        deadline = time.monotonic() + 15
        while not _waiting_on_a_lock(engine, "stalled"):
            assert time.monotonic() < deadline, "the writer never waited for the hold's row"
            time.sleep(0.005)
        stalled.send_signal(signal.SIGSTOP)
        stopped_at = db_now(engine)
        still_waiting = _waiting_on_a_lock(engine, "stalled")
        blocker.rollback()  # the stopped writer's claim now completes and idles, holding its rows
    try:
        if not still_waiting:  # its wait had just timed out: not stopped inside the transaction
            raise AssertionError("stopped between two claims; the test's moment was missed")
        expired = catalog.wait_for(
            hold.hold_id, lambda: settled(catalog, hold.hold_id, "expired"), timeout=15
        )
        with engine.connect() as conn:
            applied_at = conn.execute(
                text("SELECT applied_at FROM commands WHERE idempotency_key = :k"),
                {"k": f"hold.expire:{hold.hold_id}"},
            ).scalar_one()
            holder = conn.execute(
                text(
                    "SELECT holder FROM apply_batches WHERE id = (SELECT batch_id FROM commands WHERE idempotency_key = :k)"
                ),
                {"k": f"hold.expire:{hold.hold_id}"},
            ).scalar_one()
        # Within the lease TTL of the stop (the lease passes on) and a batch; a second of slack.
        bound = dt.timedelta(seconds=settings.lease_ttl_seconds + 1.0)
        assert expired.status == "expired"
        assert holder == "standby"
        assert applied_at - stopped_at < bound, f"applied {applied_at - stopped_at} after the stop"
    finally:
        stalled.send_signal(signal.SIGCONT)

    # The stalled worker wakes: its transaction was ended, its leases are gone; it applies nothing.
    receive(catalog, SKU, "1", lot="L1")
    wait_all_applied(engine)
    with engine.connect() as conn:
        late = conn.execute(
            text("SELECT count(*) FROM apply_batches WHERE holder = 'stalled' AND finished_at > :t"),
            {"t": stopped_at},
        ).scalar_one()
        expiries = conn.execute(
            text("SELECT count(*) FROM movements WHERE hold_id = :h AND kind = 'expiry'"), {"h": hold.hold_id}
        ).scalar_one()
    assert late == 0, "the stopped worker applied a batch after it woke"
    assert expiries == 1
    assert catalog.stock(SKU).reserved == 0
    assert stalled.poll() is None, "the woken worker should live on, as a standby"
    assert_consistent()
