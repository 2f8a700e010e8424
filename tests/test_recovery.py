"""Faults while commands flow: a worker killed with SIGKILL, a stalled worker and its rival."""

from __future__ import annotations

import itertools
import signal
import time

from sqlalchemy import Engine, text

from producers import StockClient
from tests.conftest import Processes
from tests.flow import assert_applied_exactly_once, flow, stock_up, wait_all_applied


def test_kill_9_of_a_worker_mid_flow_loses_nothing_and_doubles_nothing(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    victim = processes.worker(name="victim")
    processes.start("scheduler")
    stock_up(catalog)

    def kill_and_replace() -> None:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        processes.start("worker", "--name", "successor")

    keys = flow(catalog, 2000, at_half=kill_and_replace)
    processes.wait_for_leases(None, "successor")
    wait_all_applied(engine)

    assert_applied_exactly_once(engine, keys)
    with engine.connect() as conn:
        holders = {h for (h,) in conn.execute(text("SELECT DISTINCT holder FROM apply_batches"))}
    assert holders == {"victim", "successor"}
    assert_consistent()


def test_a_standby_takes_a_killed_workers_shards_without_waiting_for_its_lease_to_lapse(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    # A lease this long would keep the shards, and every expiry due on them, waiting a minute if
    # only the TTL could free them: the standby sees the dead worker's Redis connection is gone.
    long_lease = {"TESSERA_LEASE_TTL_SECONDS": "60"}
    victim = processes.worker(name="victim", **long_lease)
    processes.start("worker", "--name", "standby", env=long_lease)
    stock_up(catalog)

    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    processes.wait_for_leases(None, "standby", timeout=30)
    took_over_in = time.monotonic() - killed_at

    answer = catalog.reserve(
        idempotency_key="after-the-kill", lines=[{"sku": "MOSAIC-30", "quantity": "3", "unit": "piece"}]
    ).wait(timeout=15)
    assert took_over_in < 30, f"the standby waited {took_over_in:.1f}s, as if for the lease TTL"
    assert answer.status == "reserved"
    assert_consistent()


def test_two_workers_on_the_same_shards_never_apply_at_once(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    first = processes.worker(name="first")
    processes.start("worker", "--name", "second")  # started by mistake: it must wait for the leases
    processes.start("scheduler")
    stock_up(catalog)

    def stall_first() -> None:
        # A stop-the-world stall past the lease: the second worker takes over; when the first wakes
        # up it still believes it owns the shards, and must be fenced out by the epoch in Postgres.
        first.send_signal(signal.SIGSTOP)
        processes.wait_for_leases(None, "second")
        first.send_signal(signal.SIGCONT)

    keys = flow(catalog, 2000, at_half=stall_first)
    wait_all_applied(engine)

    assert_applied_exactly_once(engine, keys)
    with engine.connect() as conn:
        batches = conn.execute(
            text(
                "SELECT shard, holder, epoch, started_at, finished_at FROM apply_batches ORDER BY shard, started_at"
            )
        ).all()
    assert {b.holder for b in batches} == {"first", "second"}
    by_shard: dict[int, list] = {}
    for b in batches:
        by_shard.setdefault(b.shard, []).append(b)
    for shard, rows in by_shard.items():
        for earlier, later in itertools.pairwise(rows):
            assert earlier.finished_at <= later.started_at, (
                f"shard {shard}: batches overlap {earlier} {later}"
            )
            assert earlier.epoch <= later.epoch, f"shard {shard}: an older epoch applied after a newer one"
    assert_consistent()
