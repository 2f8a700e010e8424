"""A hold recording nudges the writers itself: its statement notifies PostgreSQL's `tessera_nudge`
channel, delivered as it commits; the worker listens, and listens again when its session is cut."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from redis import Redis
from sqlalchemy import Engine, text

from db.engine import libpq_url
from db.inbox import NUDGE_CHANNEL
from domain.commands import shard_of
from producers import StockClient
from tessera.doorbells import queue_name
from tessera.settings import Settings
from tests.conftest import Processes
from tests.flow import within
from tests.test_holds import SKU, hold_of, receive

OTHER_SKU = "WALL-20x50-WHITE"


@pytest.fixture
def listener(engine: Engine) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(engine), autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NUDGE_CHANNEL)))
        yield conn


def _next_nudge(listener: psycopg.Connection) -> str:
    notes = list(listener.notifies(timeout=10, stop_after=1))
    assert notes, "no nudge within 10 s"
    return notes[0].payload


def _silent(client: StockClient, settings: Settings) -> StockClient:
    """The client sends neither Dramatiq doorbells nor Redis nudges for the holds it records, once
    every doorbell it sent before (the stock's receipt) is delivered and acknowledged."""
    client.recorder.ring = lambda shards, nudge=True: None
    redis = Redis.from_url(settings.redis_url)
    messages = f"{settings.redis_namespace}:dramatiq:{queue_name(shard_of(SKU, settings.shards))}.msgs"
    assert within(15, lambda: not redis.hlen(messages)), "a doorbell is still pending"
    return client


def _assert_a_silent_hold_is_reserved(catalog: StockClient, settings: Settings, pieces: str) -> None:
    """No doorbell, no Redis nudge and no scheduler: only the recording's notification can start
    the writer."""
    line = [{"sku": SKU, "quantity": pieces, "unit": "piece"}]
    assert hold_of(_silent(catalog, settings), line).wait(timeout=15).status == "reserved"


@pytest.fixture
def stocked_worker(catalog: StockClient, processes: Processes) -> None:
    """A worker serving every shard, and 10 pieces of SKU in stock."""
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")


def test_a_recorded_hold_nudges_its_shard_and_a_resend_nudges_nothing(
    catalog: StockClient, settings: Settings, listener: psycopg.Connection
) -> None:
    shards = settings.shards
    assert shard_of(SKU, shards) != shard_of(OTHER_SKU, shards)  # the two nudges tell apart
    line = [{"sku": SKU, "quantity": "1", "unit": "piece"}]
    hold_of(catalog, line, key="nudge-1")
    assert _next_nudge(listener) == str(shard_of(SKU, shards))
    hold_of(catalog, line, key="nudge-1")  # a resend records nothing
    hold_of(catalog, [{"sku": OTHER_SKU, "quantity": "1", "unit": "piece"}], key="nudge-2")
    # Notifications arrive in commit order: had the resend nudged, its nudge would come first.
    assert _next_nudge(listener) == str(shard_of(OTHER_SKU, shards))


def test_a_cart_over_two_shards_nudges_both_in_one_notification(
    catalog: StockClient, settings: Settings, listener: psycopg.Connection
) -> None:
    hold_of(
        catalog,
        [
            {"sku": SKU, "quantity": "1", "unit": "piece"},
            {"sku": OTHER_SKU, "quantity": "1", "unit": "piece"},
        ],
    )
    expected = sorted({shard_of(SKU, settings.shards), shard_of(OTHER_SKU, settings.shards)})
    assert _next_nudge(listener) == ",".join(map(str, expected))


def test_a_worker_decides_holds_that_rang_no_doorbell(
    catalog: StockClient, stocked_worker: None, settings: Settings, assert_consistent
) -> None:
    _assert_a_silent_hold_is_reserved(catalog, settings, "3")
    assert_consistent()


def _listening_backends(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE application_name LIKE 'tessera-nudges %' AND datname = current_database()"
                )
            ).scalars()
        )


def _wait_for_listener(engine: Engine, other_than: set[int]) -> int:
    """The pid of a listening session of the worker's, other than those given (within 15 s)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if found := set(_listening_backends(engine)) - other_than:
            return found.pop()
        time.sleep(0.05)
    raise AssertionError("the worker did not listen within 15 s")


def test_the_worker_listens_again_after_postgres_cuts_its_session(
    catalog: StockClient, stocked_worker: None, settings: Settings, engine: Engine, assert_consistent
) -> None:
    first = _wait_for_listener(engine, set())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
    _wait_for_listener(engine, {first})
    _assert_a_silent_hold_is_reserved(catalog, settings, "2")
    assert_consistent()


def test_a_notification_that_names_no_shard_is_passed_over(
    catalog: StockClient, stocked_worker: None, settings: Settings, engine: Engine, assert_consistent
) -> None:
    listening = _wait_for_listener(engine, set())
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_notify(:c, 'not,a shard,')"), {"c": NUDGE_CHANNEL})
        conn.commit()
    _assert_a_silent_hold_is_reserved(catalog, settings, "1")
    assert _listening_backends(engine) == [listening]  # the same session: it was never dropped
    assert_consistent()
