"""A bounded stream of real commands for the fault tests, and waiting for it to be applied."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text

from producers import StockClient

SKUS = ["GRS-60x60-GREY", "WALL-20x50-WHITE", "MOSAIC-30", "GROUT-5KG"]


def stock_up(client: StockClient, pieces: int = 100_000) -> None:
    for sku in SKUS:
        client.receive(
            idempotency_key=f"stock-{sku}", warehouse="BUC1", sku=sku, quantity=str(pieces), lot="BIG"
        ).wait(timeout=30)


def flow(client: StockClient, count: int, *, at_half: Callable[[], None], threads: int = 8) -> list[str]:
    """Send `count` one-line holds from `threads` producers; call `at_half` once half are acknowledged.

    Returns the idempotency keys of every acknowledged command (a ticket came back).
    """
    acked: list[str] = []
    lock = threading.Lock()
    fired = threading.Event()

    def send(i: int) -> None:
        key = f"flow-{i}-{uuid.uuid4().hex[:8]}"
        client.reserve(
            idempotency_key=key, lines=[{"sku": SKUS[i % len(SKUS)], "quantity": "1", "unit": "piece"}]
        )
        with lock:
            acked.append(key)
            half = len(acked) == count // 2
        if half and not fired.is_set():
            fired.set()
            at_half()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(send, range(count)))
    return acked


def within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether `condition()` holds within `seconds` (asked every 10 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def wait_all_applied(engine: Engine, timeout: float = 90.0) -> None:
    """Block until no command waits in the inbox (every recorded command has been applied)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text("SELECT count(*) FROM commands WHERE status = 'recorded'")).scalar()
            conn.commit()
            if waiting == 0:
                return
            time.sleep(0.1)
    raise AssertionError(f"{waiting} commands still not applied after {timeout}s")


def assert_applied_exactly_once(engine: Engine, keys: list[str]) -> None:
    with engine.connect() as conn:
        holds = conn.execute(
            text("SELECT idempotency_key, status FROM holds WHERE idempotency_key = ANY(:k)"), {"k": keys}
        ).all()
        doubled = conn.execute(
            text(
                "SELECT hold_id, line_no, kind, count(*) FROM movements WHERE hold_id IS NOT NULL "
                "GROUP BY 1, 2, 3 HAVING count(*) > 1"
            )
        ).all()
        reservations = conn.execute(
            text("SELECT count(*) FROM movements WHERE kind = 'reservation'")
        ).scalar()
    assert len(holds) == len(keys), "every acknowledged hold is recorded"
    assert {status for _, status in holds} == {"reserved"}, "every acknowledged hold was applied"
    assert doubled == [], "no line was moved twice"
    assert reservations == len(keys)
