"""Waking a producer that waits for its answer, without polling Postgres in a loop.

After the writer commits, it pushes a token onto a short-lived Redis list per ticket; the waiting
ticket blocks on it (BLPOP). A lost token costs at most one re-read interval: the answer itself is
always read from Postgres.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis import Redis

TOKEN_TTL_SECONDS = 15
"""Long enough for a waiter between two reads; short, since most decided holds have no waiter left."""


class Wakeups:
    def __init__(self, redis_client: Redis, namespace: str) -> None:
        self.redis = redis_client
        self.namespace = namespace

    def key(self, ticket: str) -> str:
        return f"{self.namespace}:wake:{ticket}"

    def wake(self, tokens: Mapping[str, str]) -> None:
        """Push each ticket's token (the answer itself, where the writer has it)."""
        pipe = self.redis.pipeline(transaction=False)
        for ticket, token in tokens.items():
            key = self.key(ticket)
            pipe.lpush(key, token)
            pipe.expire(key, TOKEN_TTL_SECONDS)
        pipe.execute()

    def wait(self, ticket: str, timeout: float) -> bytes | None:
        """Block up to `timeout` seconds for the ticket's token; the token, or None if none came."""
        popped = self.redis.blpop([self.key(ticket)], timeout=max(timeout, 0.01))
        return None if popped is None else popped[1]
