"""The Dramatiq Redis broker, one queue per shard, and the doorbell actor.

A Dramatiq message here is a doorbell — "shard S has work" — not the command itself: the command
is in the Postgres inbox, and the writer applies the shard's pending commands in inbox order.
One worker process has one work queue shared by all its threads, and Dramatiq's retries re-enqueue
behind later messages, so order cannot come from Redis; doorbells can be lost, duplicated or
reordered without harm. The Retries middleware is left out: a failed doorbell is never re-run
late (the sweep rings again if work is left).
"""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit
from redis import Redis

RING_ACTOR = "ring_shard"


def queue_name(shard: int) -> str:
    return f"shard-{shard}"


class Doorbells:
    """Rings shards: enqueues a doorbell message on the shard's queue, now or after a delay."""

    def __init__(self, broker: RedisBroker, shards: int) -> None:
        self.broker = broker
        self.shards = shards
        for shard in range(shards):
            broker.declare_queue(queue_name(shard))
        self._actor: dramatiq.Actor[[int], None] = dramatiq.Actor(
            _unbound_ring,
            broker=broker,
            actor_name=RING_ACTOR,
            queue_name=queue_name(0),
            priority=0,
            options={},
        )

    @property
    def nudge_channel(self) -> str:
        return f"{self.broker.namespace}:nudge"

    def ring(self, shard: int, *, delay_ms: int | None = None) -> None:
        """Enqueue the shard's doorbell; an immediate one is also published as a nudge.

        Dramatiq's Redis consumer polls an idle queue with exponential backoff up to the worker
        timeout, so a doorbell on a quiet queue can wait that long; a producer waiting for its
        answer would pay it on every request. The pub/sub nudge wakes the shard's writer at once;
        the Dramatiq message is what makes delivery at-least-once when a nudge is missed.
        """
        message = self._actor.message(shard).copy(queue_name=queue_name(shard))
        self.broker.enqueue(message, delay=delay_ms)
        if delay_ms is None:
            self.broker.client.publish(self.nudge_channel, str(shard))

    def bind(self, handler: Callable[[int], None]) -> None:
        """Make the doorbell actor call `handler(shard)` in this (worker) process."""
        self._actor.fn = handler


def _unbound_ring(shard: int) -> None:
    raise RuntimeError("doorbell received by a process that is not a worker")


def make_broker(redis_client: Redis, namespace: str) -> RedisBroker:
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines()]
    return RedisBroker(client=redis_client, namespace=f"{namespace}:dramatiq", middleware=middleware)
