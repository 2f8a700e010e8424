"""A client's threads (the recorder, the doorbells, the answer listener) end with `close()`, and
leave nothing owed: a doorbell still waiting for its round is sent as the client closes."""

from __future__ import annotations

import threading

from redis import Redis
from sqlalchemy import Engine

from producers import StockClient
from tessera.doorbells import CoalescingDoorbells, Doorbells, make_broker, queue_name
from tessera.settings import Settings
from tests.flow import within

SKU = "GRS-60x60-GREY"


def _doorbells_queued(redis: Redis, settings: Settings, shard: int) -> int:
    return int(redis.llen(f"{settings.redis_namespace}:dramatiq:{queue_name(shard)}"))


def _started_since(before: set[threading.Thread], *names: str) -> list[threading.Thread]:
    return [t for t in set(threading.enumerate()) - before if t.name in names]


def test_closing_sends_the_doorbell_a_ring_is_still_owed(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis_url)
    bells = CoalescingDoorbells(Doorbells(make_broker(redis, settings.redis_namespace), settings.shards))
    before = set(threading.enumerate())
    bells.ring({1})  # the first doorbell goes at once
    assert within(5, lambda: _doorbells_queued(redis, settings, 1) == 1)
    bells.ring({1})  # the second waits for the next round, a second later
    [thread] = _started_since(before, "doorbells")
    bells.close()
    assert _doorbells_queued(redis, settings, 1) == 2
    assert not thread.is_alive()


def test_closing_a_client_ends_its_threads_and_a_request_after_it_is_still_recorded(
    settings: Settings, engine: Engine, catalog: StockClient
) -> None:
    before = set(threading.enumerate())
    client = StockClient(settings, engine=engine)
    client.reserve(idempotency_key="first", lines=[{"sku": SKU, "quantity": "1"}])
    started = _started_since(before, "hold-recorder", "doorbells", "answers")
    assert sorted(t.name for t in started) == ["answers", "doorbells", "hold-recorder"]

    client.close()
    for thread in started:
        thread.join(timeout=2)  # the answer listener notices within a second
    assert [t.name for t in started if t.is_alive()] == []

    again = client.reserve(idempotency_key="second", lines=[{"sku": SKU, "quantity": "1"}])
    assert client.hold(again.hold_id).status == "pending"  # recorded; no worker runs here
    client.close()
