"""Redis clients as Tessera's processes make them: a Redis that stops answering (stopped, cut off)
fails a call after `REDIS_TIMEOUT_SECONDS` instead of holding its thread, or its request, forever.
Redis holds no only copy of anything (DESIGN.md): a failed call is retried, replaced by PostgreSQL
(a hold handed over is recorded by its API), or left to the sweep (a doorbell)."""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

REDIS_TIMEOUT_SECONDS = 5.0
"""Longest a call waits for Redis to connect or answer. A blocking pop waits in shorter slices
(`BLOCKING_SLICE_SECONDS`), each well within it."""

BLOCKING_SLICE_SECONDS = 2.0


def connect_redis(url: str) -> Redis:
    return Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def connect_async_redis(url: str) -> AsyncRedis:
    return AsyncRedis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
