"""What the producers were told: every acknowledged command, and their problems; and how a call is
sent through faults (resent with the same key, its answer awaited)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from domain.errors import IdempotencyConflict, InvalidCommand, ResultTimeout

T = TypeVar("T")
RETRY_FOR_SECONDS = 60.0
ANSWER_WITHIN_SECONDS = 30.0


def say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged command: the call returned a ticket. Times on the database clock."""

    key: str
    """The inbox key: the hold's idempotency key, the release's, or payment:<event id>."""
    kind: str
    """hold.place, paid, failed, refunded, release, stock.receive."""
    hold_id: str | None
    sent: float
    acked: float
    attempts: int
    resend: bool = False
    bucket: str | None = None
    planned_offset_ms: float | None = None
    seen: str | None = None
    """The hold's status as the producer last saw it before sending (payments, releases)."""


class Journal:
    """Acknowledged commands and the producers' problems, from every producer thread."""

    def __init__(self) -> None:
        self.acks: list[Ack] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def ack(self, ack: Ack) -> None:
        with self._lock:
            self.acks.append(ack)

    def problem(self, message: str) -> None:
        with self._lock:
            self.problems.append(message)
        say(f"  producer problem: {message}")

    def firsts(self) -> list[Ack]:
        with self._lock:
            return [a for a in self.acks if not a.resend]


def persist(call: Callable[[], T]) -> tuple[T, int]:
    """Call until it returns, as a client resends a failed call with the same key: (result, attempts).

    A refused command (InvalidCommand, IdempotencyConflict) is raised at once; anything else (a
    server down) is retried with a backoff from 50 ms to 1 s, for up to RETRY_FOR_SECONDS.
    """
    deadline = time.monotonic() + RETRY_FOR_SECONDS
    pause, attempts = 0.05, 0
    while True:
        attempts += 1
        try:
            return call(), attempts
        except (InvalidCommand, IdempotencyConflict):
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def await_result(wait: Callable[[float], T]) -> T | None:
    """A ticket's result (`wait(timeout)`), waiting through faults; None after ANSWER_WITHIN_SECONDS."""
    deadline = time.monotonic() + ANSWER_WITHIN_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            return wait(min(5.0, remaining))
        except ResultTimeout:
            continue
        except (InvalidCommand, IdempotencyConflict):
            raise
        except Exception:
            time.sleep(0.1)
    return None
