"""The start of every batch: prove the shards' leases, take their due commands in order, load
their state. The writer sends these statements inside its own pipeline (`send_claim`) and reads
them back once it has synced (`ClaimSent.read`): a batch's claim is one round trip.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor

from db.batch_state import (
    BALANCE_SQL,
    HOLD_SQL,
    LINE_SQL,
    BalanceRow,
    BatchState,
    HoldRow,
    InboxCommand,
    LineRow,
    columns,
    read_state,
)
from db.sql import UUID_PATTERN, Pg, array_param, compact, send_sync
from db.warehouse_state import STOCK_KINDS, load_warehouse_state

# The shards whose lease this transaction proved: their fence rows, updated by this very transaction
# (now() is the transaction's start time). Only their commands are taken.
_PROVED = """
    SELECT f.shard FROM shard_fences f
    JOIN unnest(%(shards)s::int[], %(epochs)s::bigint[]) AS l(shard, epoch) ON l.shard = f.shard AND l.epoch = f.epoch
    WHERE f.holder = %(holder)s AND f.updated_at = now()
"""

# Found by state, never by a cursor: a sequence number is drawn before commit, so a row that
# commits late would be skipped by "seq > last seen". Each shard's first due commands in order,
# then the first `limit` of them all by seq: every shard gets a prefix of its own inbox.
# Scheduled commands are due by now(), the transaction's start: never later than the batch's clock
# (read by the fence, below), so what is taken as due is due for the domain too; and, unlike
# clock_timestamp(), stable within a statement, so the index on (shard, not_before) bounds the scan.
# `shard = ANY(ARRAY[s.shard]) ... ORDER BY shard, seq` asks for the pending index's own order, which
# no other index gives. Written `shard = s.shard ... ORDER BY seq`, the planner may read along the
# primary key (in seq order too) and filter: once statistics see a large backlog it expects to find
# pending rows at once, and every claim walks the applied history from its start instead (claims of
# 20-100 ms, a drain 2-5 times slower: tests/test_claim_plans.py). Due expiries need no such care:
# only their index on (shard, not_before) gives their order.
_COMMAND_COLUMNS = "seq, idempotency_key, kind, payload, recorded_at, shard, attempts, last_error"
# A due expiry `e` is not taken while a payment or release of its hold, recorded before its due time
# (the hold's expires_at), waits in the same (home) shard's inbox: that command wins, and is
# applied first. Left out of the claim, the expiry takes no place in a batch it could not use.
_WAITED_FOR = """
    SELECT 1 FROM commands AS w
    WHERE w.shard = e.shard AND w.status = 'recorded' AND w.kind IN ('hold.pay', 'hold.release')
      AND w.payload->>'hold_id' = e.payload->>'hold_id' AND w.recorded_at < e.not_before
"""
_PENDING = f"""
    SELECT {_COMMAND_COLUMNS} FROM (
        SELECT c.* FROM ({_PROVED}) AS s, LATERAL (
            (SELECT {_COMMAND_COLUMNS} FROM commands
              WHERE shard = ANY(ARRAY[s.shard]) AND status = 'recorded' ORDER BY shard, seq LIMIT %(limit)s)
            UNION ALL
            (SELECT {_COMMAND_COLUMNS} FROM commands AS e
              WHERE shard = s.shard AND status = 'scheduled' AND not_before <= now()
                AND NOT EXISTS ({_WAITED_FOR})
              ORDER BY not_before LIMIT %(limit)s)
        ) AS c
    ) due ORDER BY seq LIMIT %(limit)s
"""

# The holds with a payment or release still to apply that was recorded before the hold's
# expires_at: their expiry waits for it (it wins, however late it is applied). _PENDING leaves such
# expiries out already; this catches the payment that committed while the claim waited for its
# hold's lock. A statement of its own, run after _STATE has locked the batch's holds: a payment is
# recorded under a lock on its hold row (see _RECORD_HOLD_COMMAND), so one recorded while this batch
# waited for that lock is seen here, and one recorded after this batch took it is recorded after the
# batch's clock.
_DEFERRING = f"""
    SELECT array(
        SELECT DISTINCT h.id FROM commands c JOIN holds h ON h.id = CASE
            WHEN c.payload->>'hold_id' ~* '{UUID_PATTERN}'
            THEN (c.payload->>'hold_id')::uuid END
        WHERE c.shard = ANY(%(shards)s::int[]) AND c.status = 'recorded'
          AND c.kind IN ('hold.pay', 'hold.release') AND c.recorded_at < h.expires_at
    )
"""

# Prove the leases of the shards that have anything due, in shard order (two writers never lock
# fence rows in opposite orders): a doorbell for work already done (most of them, since doorbells
# are coalesced and duplicated) then writes nothing and flushes no WAL. A fence row holding a newer
# epoch is left alone: that shard is fenced out. Returns the due shards, the proved ones, the clock.
# Each shard's first due command is looked up in an index's order, for the reasons given above
# _PENDING; not with EXISTS, which drops an ORDER BY (it was planned as a filtered scan of the inbox).
_PROVE_LEASES = """
    WITH due AS (
        SELECT l.shard, l.epoch FROM unnest(%(shards)s::int[], %(epochs)s::bigint[]) AS l(shard, epoch)
        WHERE (SELECT seq FROM commands WHERE shard = ANY(ARRAY[l.shard]) AND status = 'recorded'
               ORDER BY shard, seq LIMIT 1) IS NOT NULL
           OR (SELECT seq FROM commands WHERE shard = l.shard AND status = 'scheduled' AND not_before <= now()
               ORDER BY not_before LIMIT 1) IS NOT NULL
    ), fence AS (
        INSERT INTO shard_fences AS f (shard, epoch, holder)
        SELECT shard, epoch, %(holder)s FROM due ORDER BY shard
        ON CONFLICT (shard) DO UPDATE
            SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, updated_at = now()
            WHERE f.epoch <= EXCLUDED.epoch
        RETURNING f.shard, clock_timestamp() AS now
    )
    SELECT array(SELECT shard FROM due), array(SELECT shard FROM fence), (SELECT max(now) FROM fence)
"""


@dataclass(slots=True)
class Claim:
    """What one batch starts from: the shards with anything due, those whose lease was proved (a
    due shard not proved is fenced out), the database clock (None if none was proved), the due
    commands of the proved shards in order, and their state."""

    due: set[int]
    proved: set[int]
    now: dt.datetime | None
    commands: list[InboxCommand]
    state: BatchState

    @property
    def fenced(self) -> set[int]:
        return self.due - self.proved


# The due commands and their state in one statement: the due commands are found once (they name
# the holds and products to load), and every part comes back as one JSON document (numbers and
# times as text, read into Decimal and datetime).
# Each part reads its rows key by key (a lateral lookup per key), whatever the planner believes of
# table sizes: on tables that grow fast its statistics lag behind, and it would rather hash the
# whole table, slower with every batch.
# A hold row is written only by the writer of its home shard: the holds whose home shard this
# writer leases are locked, in id order (writers never deadlock); the others are read, unlocked, for
# their lines (the writer of a line on another process's shard sends its answer home).
# A stock command (kind 'stock.…') may create a lot and a balance: ids are drawn for them here.
_HOLD_COLUMNS = "id, status, mode, expires_at, payment, lines_pending, created_at, home_shard"
_STATE = compact(f"""
    WITH due AS MATERIALIZED ({_PENDING}),
    -- A payload that names no valid hold or product loads nothing for it, rather than failing the
    -- claim: its command fails alone, in the writer, and is parked (a poison cannot stop a shard).
    asked_holds AS (
        SELECT DISTINCT (payload->>'hold_id')::uuid AS id FROM due WHERE payload->>'hold_id' ~* '{UUID_PATTERN}'
    ),
    asked_products AS (
        SELECT DISTINCT (payload->>'product_id')::int AS id FROM due WHERE payload->>'product_id' ~ '^[0-9]{{1,9}}$'
    ),
    locked AS (
        SELECT h.* FROM (SELECT id FROM asked_holds ORDER BY id) AS k CROSS JOIN LATERAL (
            SELECT {_HOLD_COLUMNS} FROM holds
            WHERE holds.id = k.id AND holds.home_shard = ANY(%(shards)s::int[]) FOR UPDATE
        ) AS h
    ), hold_rows AS (
        SELECT *, true AS locked FROM locked
        UNION ALL
        SELECT h.*, false FROM asked_holds AS k CROSS JOIN LATERAL (
            SELECT {_HOLD_COLUMNS} FROM holds WHERE holds.id = k.id AND holds.home_shard <> ALL(%(shards)s::int[])
        ) AS h
    )
    SELECT
        (SELECT json_agg(json_build_array({_COMMAND_COLUMNS}) ORDER BY seq) FROM due),
        (SELECT json_agg(json_build_array({columns(HoldRow, HOLD_SQL)})) FROM hold_rows),
        (SELECT json_agg(json_build_array({columns(LineRow, LINE_SQL)}) ORDER BY l.hold_id, l.line_no)
         FROM asked_holds AS k CROSS JOIN LATERAL (SELECT * FROM hold_lines WHERE hold_lines.hold_id = k.id) AS l
         JOIN products p ON p.id = l.product_id LEFT JOIN lots lot ON lot.id = l.lot_id),
        -- every asked product comes back, with no balance if it has no lot yet
        (SELECT json_agg(json_build_array({columns(BalanceRow, BALANCE_SQL)}))
         FROM asked_products AS asked
         LEFT JOIN LATERAL (SELECT * FROM stock_balances WHERE stock_balances.product_id = asked.id) AS b ON true
         LEFT JOIN lots l ON l.id = b.lot_id),
        (SELECT json_agg(json_build_array(id, code, can_ship, priority, active, can_receive)) FROM warehouses),
        (SELECT json_build_array(
            array(SELECT nextval(pg_get_serial_sequence('lots', 'id')) FROM due WHERE kind LIKE 'stock.%%'),
            array(SELECT nextval(pg_get_serial_sequence('stock_balances', 'id')) FROM due WHERE kind LIKE 'stock.%%')))
""")


@dataclass(frozen=True, slots=True)
class ClaimSent:
    """A claim's statements, on their way in the writer's pipeline; `read` once it has synced."""

    fence: Cursor[Any]
    loaded: Cursor[Any]
    deferring: Cursor[Any]

    def read(self) -> Claim:
        row = self.fence.fetchone()
        assert row is not None
        loaded = self.loaded.fetchone()
        assert loaded is not None
        commands, state = read_state(loaded)
        if any(command.kind.startswith(STOCK_KINDS) for command in commands):
            load_warehouse_state(self.loaded.connection, commands, state)
        deferred = self.deferring.fetchone()
        state.deferring = {str(hold_id) for hold_id in deferred[0]} if deferred else set()
        return Claim(due=set(row[0]), proved=set(row[1]), now=row[2], commands=commands, state=state)


def send_claim(pg: Pg, leases: Mapping[int, int], holder: str, limit: int) -> ClaimSent:
    """Send a batch's claim (in the caller's pipeline, in its transaction): prove the leases
    (shard → epoch), take the due commands and load their state.

    The fence upsert locks each due shard's fence row until commit, so two writers of one shard
    can never apply at once; a writer whose epoch is older than the newest one that applied is
    fenced out of that shard (its commands are not taken). The clock returned is the database's,
    which every decision of the batch uses.

    The due commands and their state (holds, lines, lot balances, warehouse routes) come from one
    statement, run after the fence rows are locked: one snapshot, so a command's state is always there.
    """
    shards = sorted(leases)
    params = {
        "shards": array_param(shards),
        "epochs": array_param(leases[s] for s in shards),
        "holder": holder,
        "limit": limit,
    }
    fence = pg.execute(_PROVE_LEASES, params)
    # A statement of its own, after the fence rows are locked: its snapshot sees every command
    # that an earlier holder of the lease applied.
    loaded = pg.execute(_STATE, params)
    return ClaimSent(fence, loaded, pg.execute(_DEFERRING, params))


def claim_batch(pg: Pg, leases: Mapping[int, int], holder: str, limit: int) -> Claim:
    """`send_claim` and its answer in one round trip, in the caller's transaction."""
    with pg.pipeline() as pipeline:
        sent = send_claim(pg, leases, holder, limit)
        send_sync(pipeline)
    return sent.read()
