"""Dead letters: commands parked after failing `TESSERA_MAX_ATTEMPTS` times, listed and requeued.

A parked command has status 'dead', its last error, its tries and its first and last failure
times; its result says so (outcome "dead"). Requeued, it is pending again (recorded, or scheduled
if it had a due time) with its tries cleared, and it keeps its sequence number: the writer applies
it before whatever its shard has pending then, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: str
    kind: str
    shard: int
    sku: str | None
    hold_id: str | None
    error: str | None
    attempts: int
    first_failed_at: dt.datetime | None
    last_failed_at: dt.datetime | None
    parked_at: dt.datetime | None


def list_dead(conn: Connection) -> list[DeadLetter]:
    """Every parked command, oldest first, with the product it names (if any)."""
    rows = conn.execute(
        text(
            """
            SELECT c.idempotency_key, c.kind, c.shard, p.sku, c.payload->>'hold_id', c.last_error, c.attempts,
                   c.first_failed_at, c.last_failed_at, c.applied_at
            FROM commands c
            LEFT JOIN products p ON c.payload->>'product_id' ~ '^[0-9]{1,9}$'
                                AND p.id = CASE WHEN c.payload->>'product_id' ~ '^[0-9]{1,9}$'
                                                THEN (c.payload->>'product_id')::int END
            WHERE c.status = 'dead' ORDER BY c.seq
            """
        )
    )
    return [DeadLetter(*row) for row in rows]


def requeue(conn: Connection, keys: Sequence[str] | None) -> dict[str, int]:
    """Make parked commands pending again (`keys`, or all of them when None): key → its shard.
    Run it in a transaction of its own; the caller rings the shards once it has committed."""
    rows = conn.execute(
        text(
            """
            UPDATE commands SET status = CASE WHEN not_before IS NULL THEN 'recorded' ELSE 'scheduled' END,
                   attempts = 0, result = NULL, applied_at = NULL, batch_id = NULL
            WHERE status = 'dead' AND (CAST(:all AS boolean) OR idempotency_key = ANY(CAST(:keys AS text[])))
            RETURNING idempotency_key, shard
            """
        ),
        {"all": keys is None, "keys": list(keys or [])},
    )
    return {key: shard for key, shard in rows}
