"""The inbox: recording commands, once per idempotency key.

Every statement here runs in autocommit (one statement, one transaction): a command is recorded,
with its time taken by PostgreSQL as the row is written, or recognised as recorded before.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor

from db.sql import Pg, Rows, Statement, array_param, json_param
from domain.catalog import ProductRef
from domain.commands import payload_digest

NUDGE_CHANNEL = "tessera_nudge"
"""The channel a hold recording notifies, as it commits, with the shards it gave new line commands
("3,5,7"); workers LISTEN on it (see `record_holds`)."""


@dataclass(frozen=True, slots=True)
class NewCommand:
    key: str
    kind: str
    payload: dict[str, Any]
    payload_hash: str
    shard: int
    not_before: dt.datetime | None = None

    @classmethod
    def of(
        cls, key: str, kind: str, payload: dict[str, Any], shard: int, not_before: dt.datetime | None = None
    ) -> NewCommand:
        """The command with its payload's digest (what tells a resend from a reused key)."""
        return cls(key, kind, payload, payload_digest(kind, payload), shard, not_before)

    @property
    def status(self) -> str:
        return "scheduled" if self.not_before else "recorded"


# New commands; a key already recorded (a resend, a replayed batch) is left as it is.
INSERT_COMMANDS = """
    INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status, not_before)
    SELECT key, kind, payload, digest, shard, status, not_before
    FROM jsonb_to_recordset(%(commands)s::jsonb)
         AS v(key text, kind text, payload jsonb, digest text, shard int, status text, not_before timestamptz)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
"""

# Every row the batch writes carries one time, taken as the batch is written: when its commands were


def insert_commands(pg: Pg, commands: Sequence[NewCommand]) -> Cursor[Any]:
    """Record commands in one statement; a key recorded before is left as it is. The cursor
    returns the keys that were new (read it outside a pipeline, or after it)."""
    return pg.execute(INSERT_COMMANDS, {"commands": command_rows(commands)})


def command_rows(commands: Sequence[NewCommand]) -> str:
    return json_param(command_dicts(commands))


def command_dicts(commands: Sequence[NewCommand]) -> list[dict[str, Any]]:
    return [
        {
            "key": c.key,
            "kind": c.kind,
            "payload": c.payload,
            "digest": c.payload_hash,
            "shard": c.shard,
            "status": c.status,
            "not_before": c.not_before,
        }
        for c in commands
    ]


# The command goes to the hold's home shard, read from the hold row: a payment relay knows only
# the hold id. The hold row is locked (FOR KEY SHARE, which only a writer's FOR UPDATE waits for)
# before the command's row, and so its recorded time, is made: a writer deciding the hold's expiry
# either waits for this recording to commit, and then sees it, or holds the lock first, and then
# this command is recorded after that writer's clock. Whether a payment came before expires_at is
# decided by one clock, with no window between its recorded time and its commit.
_RECORD_HOLD_COMMAND = """
    WITH hold AS (SELECT id, home_shard FROM holds WHERE id = %(hold_id)s FOR KEY SHARE), recorded AS (
        INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status)
        SELECT %(key)s, %(kind)s, %(payload)s::jsonb, %(digest)s, home_shard, 'recorded' FROM hold
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT home_shard FROM hold), EXISTS (SELECT 1 FROM recorded)
"""


def record_hold_command(
    pg: Pg, hold_id: uuid.UUID, *, key: str, kind: str, payload: dict[str, Any], digest: str
) -> tuple[int | None, bool]:
    """Record a command about an existing hold, in one statement (run it in autocommit).
    Returns the hold's home shard (None: there is no such hold, nothing was recorded), and whether
    the command was recorded now (not before)."""
    row = pg.execute(
        _RECORD_HOLD_COMMAND,
        {"hold_id": hold_id, "key": key, "kind": kind, "payload": json_param(payload), "digest": digest},
    ).fetchone()
    assert row is not None
    return row[0], bool(row[1])


@dataclass(frozen=True, slots=True)
class RecordedCommand:
    """A command recorded earlier under a key: what tells a resend from another command."""

    kind: str
    digest: str
    payload: dict[str, Any]

    def same_as(self, kind: str, digest: str) -> bool:
        return self.kind == kind and self.digest == digest


def recorded_commands(keys: Sequence[str]) -> Statement[dict[str, RecordedCommand]]:
    """key → the command recorded earlier under it."""
    return Statement(
        "SELECT idempotency_key, kind, payload_hash, payload FROM commands WHERE idempotency_key = ANY(%(k)s)",
        {"k": list(keys)},
        lambda rows: {key: RecordedCommand(kind, digest, payload) for key, kind, digest, payload in rows},
    )


@dataclass(frozen=True, slots=True)
class NewHold:
    placement: NewCommand
    """The hold.place command, recorded as applied: its effect is the hold row written with it."""
    id: str
    mode: str
    ttl_seconds: int
    lines: Sequence[dict[str, Any]]
    """line_no, product_id, quantity, unit, pieces, rounding, warehouse_id"""


# One statement, so one transaction in autocommit and one round trip, records a whole group of hold
# requests: placements, holds, lines and line commands. Only placements whose key is new get a hold
# (a resent key keeps its first hold). Nothing is written unless every product and warehouse the
# requests were converted with is still active and unchanged (the caller's references may be cached);
# those products are also named in "= ANY(array)", so they are read by key, not hashed whole (as in
# _SAVE_BATCH).
_RECORD_HOLDS = """
    WITH refs AS (
        SELECT (SELECT count(*) FROM jsonb_to_recordset(%(products)s::jsonb)
                    AS r(id int, pieces_per_box int, sqm_per_box numeric, allow_partial_boxes bool)
                JOIN products p ON p.id = r.id AND p.id = ANY(%(product_ids)s::int[]) AND p.active
                 AND p.pieces_per_box IS NOT DISTINCT FROM r.pieces_per_box
                 AND p.sqm_per_box IS NOT DISTINCT FROM r.sqm_per_box
                 AND p.allow_partial_boxes = r.allow_partial_boxes) = %(product_count)s
           AND (SELECT count(*) FROM warehouses w
                WHERE w.id = ANY(%(warehouse_ids)s::int[]) AND w.active) = %(warehouse_count)s AS current
    ), placements AS (
        SELECT * FROM jsonb_to_recordset(%(holds)s::jsonb)
            AS h(id uuid, key text, kind text, payload jsonb, digest text, shard int, mode text, ttl int, n int)
        WHERE (SELECT current FROM refs)
    ), placed AS (
        INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status)
        SELECT key, kind, payload, digest, shard, 'applied' FROM placements
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING idempotency_key
    ), new_holds AS (
        INSERT INTO holds (id, idempotency_key, status, mode, home_shard, ttl_seconds, created_at, expires_at,
                           lines_pending)
        SELECT id, key, 'pending', mode, shard, ttl, c.at, c.at + make_interval(secs => ttl), n
        FROM placements, (SELECT clock_timestamp() AS at) AS c
        WHERE key IN (SELECT idempotency_key FROM placed)
        RETURNING id
    ), new_lines AS (
        INSERT INTO hold_lines (hold_id, line_no, product_id, requested_quantity, requested_unit, pieces,
                                rounding, requested_warehouse_id, status)
        SELECT hold_id, line_no, product_id, quantity, unit, pieces, rounding, warehouse_id, 'pending'
        FROM jsonb_to_recordset(%(lines)s::jsonb)
            AS v(hold_id uuid, line_no int, product_id int, quantity numeric, unit text, pieces numeric,
                 rounding text, warehouse_id int)
        WHERE hold_id IN (SELECT id FROM new_holds)
    ), line_commands AS (
        INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status)
        SELECT key, kind, payload, digest, shard, 'recorded'
        FROM jsonb_to_recordset(%(commands)s::jsonb) AS c(key text, kind text, payload jsonb, digest text, shard int)
        WHERE (payload->>'hold_id')::uuid IN (SELECT id FROM new_holds)
        RETURNING shard
    ), nudge AS (
        SELECT pg_notify(%(nudge_channel)s, string_agg(DISTINCT shard::text, ',')) FROM line_commands
        WHERE shard <> ALL(%(quiet_shards)s::int[])
        HAVING count(*) > 0
    )
    -- nudge is selected from so that it runs (a SELECT in WITH runs only if read); its count is unused
    SELECT (SELECT current FROM refs), array(SELECT idempotency_key FROM placed), (SELECT count(*) FROM nudge)
"""


@dataclass(slots=True)
class HoldRows:
    """The rows `_RECORD_HOLDS` takes, as JSON-ready lists: built by a recorder from its group, or
    sent whole through Redis for a shard's writer to record (`tessera.handover`); rows of several
    senders are recorded together by adding them (`merged`)."""

    holds: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    commands: list[dict[str, Any]]
    products: list[dict[str, Any]]
    warehouse_ids: list[int]

    @classmethod
    def of(
        cls,
        holds: Sequence[NewHold],
        line_commands: Sequence[NewCommand],
        products: Sequence[ProductRef],
        warehouse_ids: Sequence[int],
    ) -> HoldRows:
        return cls(
            holds=[
                {
                    "id": h.id,
                    "key": h.placement.key,
                    "kind": h.placement.kind,
                    "payload": h.placement.payload,
                    "digest": h.placement.payload_hash,
                    "shard": h.placement.shard,
                    "mode": h.mode,
                    "ttl": h.ttl_seconds,
                    "n": len(h.lines),
                }
                for h in holds
            ],
            lines=[{"hold_id": h.id, **line} for h in holds for line in h.lines],
            commands=command_dicts(line_commands),
            products=[
                {
                    "id": p.id,
                    "pieces_per_box": p.packaging.pieces_per_box,
                    "sqm_per_box": p.packaging.sqm_per_box,
                    "allow_partial_boxes": p.packaging.allow_partial_boxes,
                }
                for p in {p.id: p for p in products}.values()
            ],
            warehouse_ids=sorted(set(warehouse_ids)),
        )

    @classmethod
    def merged(cls, parts: Sequence[HoldRows]) -> HoldRows:
        """One set of rows for all the parts (each product and warehouse checked once)."""
        return cls(
            holds=[h for part in parts for h in part.holds],
            lines=[line for part in parts for line in part.lines],
            commands=[c for part in parts for c in part.commands],
            products=list({p["id"]: p for part in parts for p in part.products}.values()),
            warehouse_ids=sorted({w for part in parts for w in part.warehouse_ids}),
        )


def record_holds(rows: HoldRows, quiet_shards: Sequence[int] = ()) -> Statement[set[str] | None]:
    """Record hold requests in one statement (see `_RECORD_HOLDS`); run it in autocommit, or first
    in a writer's batch transaction (`workers.writer`: the holds handed to it).

    The statement also notifies `NUDGE_CHANNEL` with the shards of the line commands it recorded:
    PostgreSQL delivers it as the statement commits, so the writers start with no round trip of the
    recorder's (a Redis publish after the commit cost it a sixth of its time). Not the
    `quiet_shards`: those of the writer that records, which claims the commands in the same batch.

    Its result: the keys recorded now (the others were recorded before), or None when a product or
    warehouse changed since the references were read: then nothing was written.
    """
    return Statement(
        _RECORD_HOLDS,
        {
            "products": json_param(rows.products),
            "product_ids": sorted(p["id"] for p in rows.products),
            "product_count": len(rows.products),
            "warehouse_ids": rows.warehouse_ids,
            "warehouse_count": len(rows.warehouse_ids),
            "holds": json_param(rows.holds),
            "lines": json_param(rows.lines),
            "commands": json_param(rows.commands),
            "nudge_channel": NUDGE_CHANNEL,
            "quiet_shards": array_param(sorted(quiet_shards)),
        },
        _recorded_keys,
    )


def _recorded_keys(rows: Rows) -> set[str] | None:
    ((current, placed, _),) = rows
    return set(placed) if current else None
