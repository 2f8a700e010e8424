"""Waking a producer that waits for its answer, without polling Postgres in a loop.

After the writer commits, it pushes a token onto a short-lived Redis list per ticket; the waiting
ticket blocks on it (BLPOP). A lost token costs at most one re-read interval: the answer itself is
always read from Postgres.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis

TOKEN_TTL_SECONDS = 15
"""Long enough for a waiter between two reads; short, since most decided holds have no waiter left."""


class Wakeups:
    def __init__(self, redis_client: Redis, namespace: str) -> None:
        self.redis = redis_client
        self.namespace = namespace

    def key(self, ticket: str) -> str:
        return f"{self.namespace}:wake:{ticket}"

    def wake(self, tickets: Iterable[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for ticket in tickets:
            key = self.key(ticket)
            pipe.lpush(key, 1)
            pipe.expire(key, TOKEN_TTL_SECONDS)
        pipe.execute()

    def wait(self, ticket: str, timeout: float) -> bool:
        """Block up to `timeout` seconds for the ticket's token; True if it came."""
        return self.redis.blpop([self.key(ticket)], timeout=max(timeout, 0.01)) is not None
