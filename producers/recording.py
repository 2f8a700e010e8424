"""Recording commands: the one path every request takes into the inbox, from any front door.

A command is recorded durably (PostgreSQL's clock stamps it) before its caller gets a ticket, then
its shard is rung. The same key with the same command again is a resend: nothing more is recorded
and the caller gets the same ticket; the key with another command is refused
(`IdempotencyConflict`). Holds are recorded in groups by a thread of their own (`HoldGroups`);
hold commands one statement each; warehouse commands (`stock_commands`) a request's all in one
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from db.inbox import NewCommand, insert_commands, record_hold_command, recorded_commands
from db.sql import Pg, psycopg_of
from domain.commands import StockCommand, payload_digest, shard_of
from domain.errors import IdempotencyConflict, UnknownHold
from producers.hold_groups import HoldGroups
from producers.requests import HoldRequest, PaymentEvent, ReleaseRequest

Ring = Callable[..., None]
"""ring(shards, nudge=True): doorbells for the shards that got commands."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a warehouse operation: a token's name (and id, over HTTP), put into the
    command's payload and so onto its ledger rows."""

    name: str
    token_id: int | None = None

    def payload(self) -> dict[str, Any]:
        return {"actor": self.name, "actor_token_id": self.token_id}


def stock_command(
    key: str, kind: StockCommand, payload: dict[str, Any], sku: str, actor: Actor | None, *, shards: int
) -> NewCommand:
    """A warehouse command on its product's shard, saying who asked (no actor: the system)."""
    return NewCommand.of(
        key, kind.value, {**payload, **(actor.payload() if actor else {})}, shard_of(sku, shards)
    )


def is_recorded(pg: Pg, key: str) -> bool:
    """Whether a request's command is recorded already: its resend is then answered as recorded (or
    refused as another request under its key), never judged again against the stock as it is now
    (goods returned are no longer returnable, a quarantine released is empty, damaged pieces are no
    longer available)."""
    return key in recorded_commands([key]).run(pg)


def check_resend(pg: Pg, key: str, kind: str, digest: str) -> None:
    """A key recorded before: the same command is a resend; another one under the key is refused."""
    if not recorded_commands([key]).run(pg)[key].same_as(kind, digest):
        raise IdempotencyConflict(key)


class Recorder:
    """Records a client's commands and rings their shards.

    Parameters:
      engine: the Postgres engine.
      shards: the shard count (routing).
      ring: the doorbells, `ring(shards, nudge=True)`.
      reply_to: the client id whose answer channel its holds' answers go to.
    """

    def __init__(self, engine: Engine, *, shards: int, ring: Ring, reply_to: str | None = None) -> None:
        self.engine = engine
        self.shards = shards
        self.ring = ring
        # `self.ring` is looked up on each ring, so that a test can silence a client's doorbells.
        self.holds = HoldGroups(  # the hold path: a thread of its own
            engine, shards=shards, ring=lambda s, nudge=True: self.ring(s, nudge=nudge), reply_to=reply_to
        )

    def close(self) -> None:
        self.holds.close()

    def hold(self, request: HoldRequest) -> tuple[str, bool]:
        """Record a hold request (in the next group): its hold id, and whether it is new."""
        return self.holds.record(request)

    async def hold_async(self, request: HoldRequest, timeout: float = 30.0) -> tuple[str, bool]:
        """`hold` for a coroutine: the event loop waits for the group's commit (RecordingTimeout
        after `timeout` seconds)."""
        return await self.holds.record_async(request, timeout)

    def stock_commands(self, build: Callable[[Pg], Sequence[NewCommand]]) -> Sequence[NewCommand]:
        """Record warehouse commands, all or none, in one transaction: `build` reads what it needs
        on that transaction (products, warehouses, lots) and returns the commands, or raises an
        `InvalidCommand` and nothing is recorded. A key recorded before is a resend (the same
        command) or refused (`IdempotencyConflict`). Returns the commands."""
        with self.engine.connect() as conn:
            recording = conn.begin()
            try:
                pg = psycopg_of(conn)
                commands = build(pg)
                # A concurrent first request with the same key makes this wait until that one commits
                # (the unique index), so a resend never sees a half-recorded command.
                fresh = {row[0] for row in insert_commands(pg, commands).fetchall()}
                for command in commands:
                    if command.key not in fresh:
                        check_resend(pg, command.key, command.kind, command.payload_hash)
            except Exception:
                recording.rollback()
                raise
            except BaseException:
                # An interrupt (Ctrl-C, the demo's SIGTERM) inside a statement leaves the session
                # unable to roll back ("another command is already in progress"): closing it rolls
                # back, and the interrupt goes on as itself.
                conn.invalidate()
                raise
            recording.commit()
        shards = {command.shard for command in commands if command.key in fresh}
        if shards:
            self.ring(shards)  # a lost doorbell only delays: the sweep rings again
        return commands

    def hold_command(self, request: ReleaseRequest | PaymentEvent) -> None:
        """Record a command about an existing hold, on the hold's home shard."""
        payload = request.payload()
        digest = payload_digest(request.kind.value, payload)
        # One statement in autocommit: the hold's existence is checked and the command recorded together.
        with self.engine.connect() as conn:
            pg = psycopg_of(conn.execution_options(isolation_level="AUTOCOMMIT"))
            home, fresh = record_hold_command(
                pg,
                uuid.UUID(request.hold_id),
                key=request.key,
                kind=request.kind.value,
                payload=payload,
                digest=digest,
            )
            if home is None:
                raise UnknownHold(request.hold_id)
            if not fresh:
                check_resend(pg, request.key, request.kind.value, digest)
        if fresh:
            self.ring({home})
