"""Waking a producer that waits for its answer, without polling Postgres in a loop.

After the writer commits, it pushes a token onto a short-lived Redis list per ticket; the waiting
ticket blocks on it (BLPOP). The answers to holds a client recorded itself go to that client's own
pub/sub channel instead, all of a batch in one message (`AnswerChannel`). A lost token or answer
costs at most one re-read interval: the answer itself is always readable from Postgres.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping

from redis import Redis
from redis.client import PubSub

from tessera.handoff import Handoff, HandoffTimeout, handed
from tessera.redis_clients import BLOCKING_SLICE_SECONDS

TOKEN_TTL_SECONDS = 15
"""Long enough for a waiter between two reads; short, since most decided holds have no waiter left."""


class Wakeups:
    def __init__(self, redis_client: Redis, namespace: str) -> None:
        self.redis = redis_client
        self.namespace = namespace

    def key(self, ticket: str) -> str:
        return f"{self.namespace}:wake:{ticket}"

    def wake(self, tokens: Mapping[str, str], answers: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Push each ticket's token (the answer itself, where the writer has it), and publish each
        client's answers (client id → hold id → answer JSON) in one message per client
        (see AnswerChannel): one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for ticket, token in tokens.items():
            key = self.key(ticket)
            pipe.lpush(key, token)
            pipe.expire(key, TOKEN_TTL_SECONDS)
        for client_id, by_hold in (answers or {}).items():
            pipe.publish(
                answer_channel(self.namespace, client_id), "\n".join(f"{h}\t{a}" for h, a in by_hold.items())
            )
        pipe.execute()

    def wait(self, ticket: str, timeout: float) -> bytes | None:
        """Block up to `timeout` seconds for the ticket's token; the token, or None if none came.
        Popped in slices: a blocking pop longer than the client's socket timeout would fail. (Never
        under 10 ms: Redis counts in milliseconds, and a pop of 0 ms waits for ever.)"""
        deadline = time.monotonic() + max(timeout, 0.01)
        while (left := deadline - time.monotonic()) > 0:
            popped = self.redis.blpop(
                [self.key(ticket)], timeout=max(min(left, BLOCKING_SLICE_SECONDS), 0.01)
            )
            if popped is not None:
                return popped[1]
        return None


class AnswerChannel:
    """Answers for the holds one client recorded: one pub/sub message per batch, not a list per hold.

    A client that records holds subscribes to its own channel (`{namespace}:answers:{client_id}`)
    and names it in the holds' line commands. A writer that decides such holds publishes their
    answers together, one line each (`hold_id TAB answer-JSON`), and a listener thread in the client
    hands each to the waiting ticket. A publish while the client is not subscribed is lost: the
    ticket then re-reads PostgreSQL, as with a lost token.
    """

    EARLY_TTL_SECONDS = 30.0

    def __init__(self, redis_client: Redis, namespace: str, client_id: str) -> None:
        self.redis = redis_client
        self.channel = answer_channel(namespace, client_id)
        self._lock = threading.Lock()
        self._waiting: dict[str, Handoff[bytes]] = {}
        self._early: dict[str, tuple[bytes, float]] = {}  # answers that came before their waiter
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop listening (the listener thread ends within a second)."""
        self._closed.set()

    def listen(self) -> None:
        """Subscribe (once; returns when subscribed, so no answer to a later hold is missed)."""
        with self._lock:
            if self._closed.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.channel)
            pubsub.get_message(timeout=1.0)  # the subscription's confirmation
            self._thread = threading.Thread(target=self._run, args=(pubsub,), name="answers", daemon=True)
            self._thread.start()

    def wait(self, hold_id: str, timeout: float) -> bytes | None:
        """The hold's answer (JSON), or None if none came within `timeout` seconds."""
        early, handoff = self._expect(hold_id)
        if handoff is None:
            return early
        try:
            return handoff.result(timeout=max(timeout, 0.01))
        except HandoffTimeout:
            return None
        finally:
            self._forget(hold_id, handoff)

    async def wait_async(self, hold_id: str, timeout: float) -> bytes | None:
        """`wait` for a coroutine: the event loop waits, not a thread."""
        early, handoff = self._expect(hold_id)
        if handoff is None:
            return early
        try:
            return await handed(handoff, max(timeout, 0.01))
        except HandoffTimeout:
            return None
        finally:
            self._forget(hold_id, handoff)

    def _expect(self, hold_id: str) -> tuple[bytes | None, Handoff[bytes] | None]:
        """The answer if it came already, else the hand-off it will come by."""
        with self._lock:
            early = self._early.pop(hold_id, None)
            if early is not None:
                return early[0], None
            return None, self._waiting.setdefault(hold_id, Handoff())

    def _forget(self, hold_id: str, handoff: Handoff[bytes]) -> None:
        with self._lock:
            if self._waiting.get(hold_id) is handoff:
                del self._waiting[hold_id]

    def _run(self, pubsub: PubSub) -> None:
        pruned = time.monotonic()
        while not self._closed.is_set():
            try:
                message = pubsub.get_message(timeout=1.0)
            except Exception:  # Redis restarting: answers are lost meanwhile; tickets re-read PostgreSQL
                time.sleep(1.0)
                with contextlib.suppress(Exception):
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                continue
            now = time.monotonic()
            if message is not None:
                self._deliver(message["data"], now)
            if now - pruned > self.EARLY_TTL_SECONDS:
                with self._lock:
                    self._early = {
                        h: a for h, a in self._early.items() if now - a[1] < self.EARLY_TTL_SECONDS
                    }
                pruned = now
        with contextlib.suppress(Exception):
            pubsub.close()

    def _deliver(self, data: bytes, now: float) -> None:
        for line in data.split(b"\n"):
            hold_id, _, answer = line.partition(b"\t")
            key = hold_id.decode()
            with self._lock:
                handoff = self._waiting.pop(key, None)
                if handoff is None:
                    self._early[key] = (answer, now)
            if handoff is not None and not handoff.done():
                handoff.set_result(answer)


def answer_channel(namespace: str, client_id: str) -> str:
    return f"{namespace}:answers:{client_id}"
