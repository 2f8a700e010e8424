"""Tickets: what a recorded command gives back, and waiting for its result.

A ticket waits on its wake-up (a token the writer pushes after commit, or the hold's answer on the
client's own channel) and re-reads PostgreSQL at least every `WAIT_SLICE_SECONDS`, in case a wake-up
was lost: the answer itself is always readable there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import text

from domain.errors import CommandDead, ResultTimeout
from domain.results import HoldResult
from domain.states import HoldStatus

if TYPE_CHECKING:
    from producers.client import StockClient

T = TypeVar("T")
WAIT_SLICE_SECONDS = 0.5
"""A ticket re-reads Postgres at least this often, in case a wake-up token was lost."""


class CommandTicket:
    """The receipt for a recorded command; `wait()` returns its result once applied."""

    def __init__(self, client: StockClient, key: str) -> None:
        self.client, self.key = client, key

    def __repr__(self) -> str:
        return f"CommandTicket({self.key!r})"

    def result(self) -> dict[str, Any] | None:
        """The command's result once applied (None before); raises CommandDead if it was parked."""
        with self.client.reader.connect() as conn:
            row = conn.execute(
                text("SELECT status, result, last_error, attempts FROM commands WHERE idempotency_key = :k"),
                {"k": self.key},
            ).one()
        if row.status == "dead":
            raise CommandDead(self.key, row.last_error, row.attempts)
        return row.result if row.status == "applied" else None

    def wait(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.client.wait_for(self.key, self.result, timeout)


@dataclass(frozen=True, slots=True)
class ReceiptLineTicket:
    line_no: int
    ticket: CommandTicket
    quarantine_id: str | None
    """The id of the line's quarantine, if it arrives in quarantine (to release or write off)."""


@dataclass(frozen=True, slots=True)
class ReceiptTicket:
    """A receipt's lines, each a command with its own ticket; `wait()` returns their results."""

    key: str
    lines: list[ReceiptLineTicket]

    def wait(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [line.ticket.wait(max(deadline - time.monotonic(), 0.0)) for line in self.lines]


class HoldTicket:
    """The receipt for a hold request; `wait()` returns the HoldResult once the hold is decided."""

    def __init__(
        self,
        client: StockClient,
        hold_id: str,
        key: str,
        *,
        fresh: bool = False,
        answer: HoldResult | None = None,
    ) -> None:
        self.client, self.hold_id, self.key = client, hold_id, key
        self._fresh = fresh  # recorded by this call: its answer cannot be there before the wake-up
        self._recorded_now = fresh
        self._answer = answer  # decided already (by the writer the hold was handed to)

    def __repr__(self) -> str:
        return f"HoldTicket(hold_id={self.hold_id!r})"

    @property
    def fresh(self) -> bool:
        """Recorded by the call that made this ticket (False: the key was sent before)."""
        return self._recorded_now

    def result(self) -> HoldResult | None:
        hold = self.client.hold(self.hold_id)
        return hold if HoldStatus(hold.status).settled else None

    def wait(self, timeout: float = 5.0) -> HoldResult:
        if self._answer is not None:
            return self._answer
        read_first, self._fresh = not self._fresh, False
        return self.client.wait_for(
            self.hold_id,
            self.result,
            timeout,
            read_first=read_first,
            from_token=HoldResult.model_validate_json,
            # Recorded by this client: its answer comes on the client's channel; a resend's may not.
            wake=self.client.answers.wait if not read_first else None,
        )

    async def wait_async(self, timeout: float = 5.0) -> HoldResult:
        """`wait` for a coroutine (the HTTP API). The answer to a hold this ticket recorded comes on
        the client's channel and the event loop waits for it; PostgreSQL is read (in a thread) every
        slice it does not come. A resend's ticket waits in a thread as `wait` does."""
        if self._answer is not None:
            return self._answer
        if not self._fresh:
            return await asyncio.to_thread(self.wait, timeout)
        self._fresh = False
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            answer = await self.client.answers.wait_async(self.hold_id, min(remaining, WAIT_SLICE_SECONDS))
            if answer is not None and answer != b"1":
                return HoldResult.model_validate_json(answer)
            hold = await asyncio.to_thread(self.result)
            if hold is not None:
                return hold
            if deadline <= time.monotonic():
                raise _no_result(self.hold_id, timeout)


def wait_for(
    ticket: str,
    read: Callable[[], T | None],
    timeout: float,
    *,
    read_first: bool = True,
    from_token: Callable[[bytes], T] | None = None,
    wake: Callable[[str, float], bytes | None],
) -> T:
    """Block on the ticket's wake-up until its result is there; re-read PostgreSQL at least
    every slice, in case a wake-up was lost. A token that carries the answer is the answer."""
    deadline = time.monotonic() + timeout
    token = None
    if not read_first:  # just recorded: the answer cannot be there yet, so wait for the wake-up first
        token = wake(ticket, min(timeout, WAIT_SLICE_SECONDS))
    while True:
        if token is not None and from_token is not None and token != b"1":
            return from_token(token)
        result = read()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _no_result(ticket, timeout)
        token = wake(ticket, min(remaining, WAIT_SLICE_SECONDS))


def _no_result(ticket: str, timeout: float) -> ResultTimeout:
    return ResultTimeout(f"no result for {ticket} after {timeout}s; it stays recorded and will apply")


class OperationTicket(CommandTicket):
    """The receipt for a command that creates a transfer or an adjustment: its id, drawn by the
    producer, known at once."""

    def __init__(self, client: StockClient, key: str, operation_id: str) -> None:
        super().__init__(client, key)
        self.operation_id = operation_id

    def __repr__(self) -> str:
        return f"OperationTicket({self.key!r}, {self.operation_id!r})"
