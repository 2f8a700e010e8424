"""Set-based loads and saves for one shard writer's batch. No business rule lives here.

The writer's statements go through the psycopg 3 connection under the SQLAlchemy transaction, in
pipeline mode: a batch costs two round trips to PostgreSQL, whatever its size (the fence, the due
commands and their state in one pipeline; every write and the commit in the other).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from psycopg import Connection as PgConnection
from psycopg import Cursor, Pipeline
from sqlalchemy import Connection

from domain.allocation import LotStock, WarehouseRoute
from domain.commands import payload_digest
from domain.holds import Hold, HoldLine, HoldMode, HoldStatus, LineStatus, Payment
from domain.lines import Movement
from domain.quantities import Packaging
from domain.receipts import LotFacts

Pg = PgConnection[Any]
NUDGE_CHANNEL = "tessera_nudge"
"""The channel a hold recording notifies, as it commits, with the shards it gave new line commands
("3,5,7"); workers LISTEN on it (see `record_holds`)."""


def psycopg_of(conn: Connection) -> Pg:
    """The psycopg connection under a SQLAlchemy one, inside the same transaction."""
    return conn.connection.driver_connection  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class InboxCommand:
    seq: int
    key: str
    kind: str
    payload: dict[str, Any]
    recorded_at: dt.datetime
    shard: int
    attempts: int = 0
    """Failed tries so far (a poison command is parked after TESSERA_MAX_ATTEMPTS)."""
    last_error: str | None = None


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


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    movement: Movement
    command_seq: int
    hold_id: str | None = None
    line_no: int | None = None


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
_DEFERRING = """
    SELECT array(
        SELECT DISTINCT h.id FROM commands c JOIN holds h ON h.id = CASE
            WHEN c.payload->>'hold_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
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


def claim_batch(
    pg: Pg, leases: Mapping[int, int], holder: str, limit: int, meanwhile: Callable[[], None] = lambda: None
) -> Claim:
    """Prove the leases (shard → epoch), take the due commands and load their state: one round trip.

    The fence upsert locks each due shard's fence row until commit, so two writers of one shard
    can never apply at once; a writer whose epoch is older than the newest one that applied is
    fenced out of that shard (its commands are not taken). The clock returned is the database's,
    which every decision of the batch uses.

    The due commands and their state (holds, lines, lot balances, warehouse routes) come from one
    statement, run after the fence rows are locked: one snapshot, so a command's state is always there.
    """
    shards = sorted(leases)
    params = {
        "shards": _array(shards),
        "epochs": _array(leases[s] for s in shards),
        "holder": holder,
        "limit": limit,
    }
    with pg.pipeline() as pipeline:
        if pg.autocommit:  # the writer's session: it opens its transactions itself, inside its pipelines
            pg.execute("BEGIN")
        fence = pg.execute(_PROVE_LEASES, params)
        # A statement of its own, after the fence rows are locked: its snapshot sees every command
        # that an earlier holder of the lease applied.
        loaded = pg.execute(_STATE, params)
        deferring = pg.execute(_DEFERRING, params)
        meanwhile()  # the statements are on their way: work done here overlaps PostgreSQL's
        _sync(pipeline)
    row = fence.fetchone()
    assert row is not None
    commands, state = _state(loaded)
    deferred = deferring.fetchone()
    state.deferring = {str(hold_id) for hold_id in deferred[0]} if deferred else set()
    return Claim(due=set(row[0]), proved=set(row[1]), now=row[2], commands=commands, state=state)


@dataclass(frozen=True, slots=True)
class LineShown:
    """What a line's answer shows beyond the domain's line: the request as made, and packaging."""

    requested: Decimal
    unit: str
    rounding: str
    packaging: Packaging


@dataclass(slots=True)
class BatchState:
    holds: dict[str, Hold]
    lines: dict[str, list[HoldLine]]
    stocks: dict[int, list[LotStock]]
    routes: list[WarehouseRoute]
    created_at: dict[str, dt.datetime] = field(default_factory=dict)
    home_shards: dict[str, int] = field(default_factory=dict)
    """hold → its home shard, whose writer applies the hold's own commands."""
    locked: set[str] = field(default_factory=set)
    """The holds this batch locked, whose home shard it leases: the only ones it may write."""
    shown: dict[tuple[str, int], LineShown] = field(default_factory=dict)
    lot_names: dict[int, tuple[str, str | None, str | None]] = field(default_factory=dict)
    """lot id → (code, shade, caliber), for the lots the batch's lines and products hold."""
    deferring: set[str] = field(default_factory=set)
    """Holds with a payment or release recorded before their expires_at still to apply."""


# The due commands and their state in one statement: the due commands are found once (they name
# the holds and products to load), and every part comes back as one JSON document (numbers and
# times as text, read into Decimal and datetime).
# Each part reads its rows key by key (a lateral lookup per key), whatever the planner believes of
# table sizes: on tables that grow fast its statistics lag behind, and it would rather hash the
# whole table, slower with every batch.
# A hold row is written only by the writer of its home shard: the holds whose home shard this
# writer leases are locked, in id order (writers never deadlock); the others are read, unlocked, for
# their lines (the writer of a line on another process's shard sends its answer home).
_HOLD_COLUMNS = "id, status, mode, expires_at, payment, lines_pending, created_at, home_shard"
_STATE = f"""
    WITH due AS MATERIALIZED ({_PENDING}),
    -- A payload that names no valid hold or product loads nothing for it, rather than failing the
    -- claim: its command fails alone, in the writer, and is parked (a poison cannot stop a shard).
    asked_holds AS (
        SELECT DISTINCT (payload->>'hold_id')::uuid AS id FROM due
        WHERE payload->>'hold_id' ~* '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$'
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
        (SELECT json_agg(json_build_array(id, status, mode, expires_at, payment, lines_pending, created_at,
                                          home_shard, locked))
         FROM hold_rows),
        (SELECT json_agg(json_build_array(
                    l.hold_id, l.line_no, l.product_id, p.sku, l.pieces::text, l.status, l.requested_warehouse_id,
                    l.warehouse_id, l.lot_id, l.allocated::text, l.reason, l.available::text, l.largest_lot,
                    l.requested_quantity::text, l.requested_unit, l.rounding,
                    p.pieces_per_box, p.sqm_per_box::text, p.allow_partial_boxes, lot.lot_code, lot.shade, lot.caliber
                ) ORDER BY l.hold_id, l.line_no)
         FROM asked_holds AS k CROSS JOIN LATERAL (SELECT * FROM hold_lines WHERE hold_lines.hold_id = k.id) AS l
         JOIN products p ON p.id = l.product_id LEFT JOIN lots lot ON lot.id = l.lot_id),
        -- every asked product comes back, with no balance if it has no lot yet
        (SELECT json_agg(json_build_array(
                    asked.id, b.id, b.product_id, b.warehouse_id, b.lot_id, l.lot_code, l.received_at, l.expiry,
                    b.on_hand::text, b.reserved::text, b.damaged::text, b.quarantine::text, l.shade, l.caliber))
         FROM asked_products AS asked
         LEFT JOIN LATERAL (SELECT * FROM stock_balances WHERE stock_balances.product_id = asked.id) AS b ON true
         LEFT JOIN lots l ON l.id = b.lot_id),
        (SELECT json_agg(json_build_array(id, code, can_ship, priority, active)) FROM warehouses)
"""


def _state(loaded: Cursor[Any]) -> tuple[list[InboxCommand], BatchState]:
    row = loaded.fetchone()
    assert row is not None
    commands_json, holds, lines, stocks, routes = (part or [] for part in row)
    commands = [
        InboxCommand(seq, key, kind, payload, _time(at), shard, attempts, error)
        for seq, key, kind, payload, at, shard, attempts, error in commands_json
    ]
    state = BatchState(holds={}, lines={}, stocks={}, routes=[])
    for hid, status, mode, expires_at, payment, pending, created_at, home, locked in holds:
        state.holds[hid] = Hold(
            hid, HoldStatus(status), HoldMode(mode), _time(expires_at), Payment(payment), pending
        )
        state.created_at[hid] = _time(created_at)
        state.home_shards[hid] = home
        if locked:
            state.locked.add(hid)
    for (
        hid,
        line_no,
        product_id,
        sku,
        pieces,
        status,
        requested_wh,
        wh,
        lot_id,
        allocated,
        reason,
        available,
        largest_lot,
        requested,
        unit,
        rounding,
        per_box,
        sqm_per_box,
        partial,
        lot_code,
        shade,
        caliber,
    ) in lines:
        state.lines.setdefault(hid, []).append(
            HoldLine(
                hid,
                line_no,
                product_id,
                sku,
                Decimal(pieces),
                LineStatus(status),
                requested_wh,
                wh,
                lot_id,
                Decimal(allocated),
                reason,
                _decimal(available),
                largest_lot,
            )
        )
        state.shown[(hid, line_no)] = LineShown(
            Decimal(requested), unit, rounding, Packaging(per_box, _decimal(sqm_per_box), partial)
        )
        if lot_id is not None:
            state.lot_names[lot_id] = (lot_code, shade, caliber)
    for (
        product,
        balance_id,
        product_id,
        warehouse_id,
        lot_id,
        lot_code,
        received_at,
        expiry,
        on_hand,
        reserved,
        damaged,
        quarantine,
        shade,
        caliber,
    ) in stocks:
        lots = state.stocks.setdefault(product, [])
        if balance_id is not None:
            lots.append(
                LotStock(
                    balance_id,
                    product_id,
                    warehouse_id,
                    lot_id,
                    lot_code,
                    _time(received_at),
                    dt.date.fromisoformat(expiry) if expiry else None,
                    Decimal(on_hand),
                    Decimal(reserved),
                    Decimal(damaged),
                    Decimal(quarantine),
                    shade,
                    caliber,
                )
            )
            state.lot_names[lot_id] = (lot_code, shade, caliber)
    state.routes = [WarehouseRoute(*r) for r in routes]
    return commands, state


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def ensure_lot_stock(
    pg: Pg,
    *,
    product_id: int,
    warehouse_id: int,
    lot_code: str,
    shade: str | None,
    caliber: str | None,
    expiry: dt.date | None,
) -> LotStock:
    """The balance row of (product, warehouse, lot), creating the lot and the row on first receipt."""
    row = pg.execute(
        """
        WITH lot AS (
            INSERT INTO lots (product_id, lot_code, shade, caliber, expiry)
            VALUES (%(p)s, %(lot)s, %(shade)s, %(caliber)s, %(expiry)s)
            ON CONFLICT (product_id, lot_code) DO UPDATE
                SET shade = coalesce(lots.shade, EXCLUDED.shade), caliber = coalesce(lots.caliber, EXCLUDED.caliber),
                    expiry = coalesce(lots.expiry, EXCLUDED.expiry)
            RETURNING id, lot_code, received_at, expiry, shade, caliber
        ), balance AS (
            INSERT INTO stock_balances (product_id, warehouse_id, lot_id) SELECT %(p)s, %(w)s, id FROM lot
            ON CONFLICT (product_id, warehouse_id, lot_id) DO UPDATE SET updated_at = now()
            RETURNING id, product_id, warehouse_id, lot_id, on_hand, reserved, damaged, quarantine
        )
        SELECT b.id, b.product_id, b.warehouse_id, b.lot_id, lot.lot_code, lot.received_at, lot.expiry,
               b.on_hand, b.reserved, b.damaged, b.quarantine, lot.shade, lot.caliber
        FROM balance b, lot
        """,
        {
            "p": product_id,
            "w": warehouse_id,
            "lot": lot_code,
            "shade": shade,
            "caliber": caliber,
            "expiry": expiry,
        },
    ).fetchone()
    assert row is not None
    return LotStock(*row)


@dataclass(frozen=True, slots=True)
class HoldAlert:
    """A hold's `paid_without_stock` alert, raised (or, refunded in the same batch, resolved at once)."""

    hold_id: str
    detail: dict[str, Any]
    resolved: bool = False


@dataclass(slots=True)
class BatchWrites:
    stocks: Sequence[LotStock]
    ledger: Sequence[LedgerEntry]
    lines: Sequence[HoldLine]
    holds: Sequence[Hold]
    commands: Sequence[NewCommand]
    events: Sequence[tuple[str, dict[str, Any]]]
    results: Sequence[tuple[InboxCommand, dict[str, Any]]]
    """Each applied (or parked) command with its result, in the order applied."""
    parked: set[int] = field(default_factory=set)
    """The seqs of the results that are dead letters, not applied."""
    alerts: Sequence[HoldAlert] = ()
    resolved_alerts: Sequence[str] = ()
    """Holds whose open `paid_without_stock` alert a refund resolves."""


# A batch's writes are one statement, each table a data-modifying part of it (a part with no rows
# does nothing): one parse, plan and execution instead of seven.
# Each part also names its keys in an "= ANY(array)" condition: the planner then looks them up by
# index. Joined only to a function's rows, it may hash the whole table instead, on fast growing
# tables whose statistics lag behind, and each batch gets slower than the last.
# New commands; a key already recorded (a resend, a replayed batch) is left as it is.
_INSERT_COMMANDS = """
    INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status, not_before)
    SELECT key, kind, payload, digest, shard, status, not_before
    FROM jsonb_to_recordset(%(commands)s::jsonb)
         AS v(key text, kind text, payload jsonb, digest text, shard int, status text, not_before timestamptz)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
"""

# Every row the batch writes carries one time, taken as the batch is written: when its commands were
# applied (never before a command was recorded, as the transaction's start can be).
_SAVE_BATCH = f"""
    WITH clock AS (SELECT clock_timestamp() AS at), stocks AS (
        UPDATE stock_balances b SET on_hand = v.on_hand, reserved = v.reserved, updated_at = (SELECT at FROM clock)
        FROM unnest(%(stock_ids)s::bigint[], %(stock_on_hand)s::numeric[], %(stock_reserved)s::numeric[])
             AS v(id, on_hand, reserved)
        WHERE b.id = v.id AND b.id = ANY(%(stock_ids)s::bigint[])
        RETURNING 1
    ), ledger AS (
        INSERT INTO movements (product_id, warehouse_id, lot_id, kind, d_on_hand, d_reserved, command_seq, hold_id,
                               line_no, created_at)
        SELECT m.*, (SELECT at FROM clock)
        FROM unnest(%(move_product_ids)s::int[], %(move_warehouse_ids)s::int[], %(move_lot_ids)s::int[],
                    %(move_kinds)s::text[], %(move_on_hand)s::numeric[], %(move_reserved)s::numeric[],
                    %(move_seqs)s::bigint[], %(move_hold_ids)s::uuid[], %(move_line_nos)s::int[]) AS m
        RETURNING 1
    ), lines AS (
        UPDATE hold_lines h SET status = v.status, warehouse_id = v.warehouse_id, lot_id = v.lot_id,
               allocated = v.allocated, reason = v.reason, available = v.available, largest_lot = v.largest_lot
        FROM jsonb_to_recordset(%(lines)s::jsonb)
             AS v(hold_id uuid, line_no int, status text, warehouse_id int, lot_id int, allocated numeric,
                  reason text, available numeric, largest_lot jsonb)
        WHERE h.hold_id = v.hold_id AND h.line_no = v.line_no AND h.hold_id = ANY(%(line_hold_ids)s::uuid[])
        RETURNING 1
    ), holds AS (
        UPDATE holds h SET status = v.status, payment = v.payment, lines_pending = v.lines_pending,
               updated_at = (SELECT at FROM clock),
               settled_at = CASE WHEN v.status IN ('pending', 'reallocating') THEN h.settled_at
                                 ELSE coalesce(h.settled_at, (SELECT at FROM clock)) END
        FROM unnest(%(hold_ids)s::uuid[], %(hold_statuses)s::text[], %(hold_payments)s::text[],
                    %(hold_pending)s::int[]) AS v(id, status, payment, lines_pending)
        WHERE h.id = v.id AND h.id = ANY(%(hold_ids)s::uuid[])
        RETURNING 1
    ), alerts_raised AS (
        INSERT INTO alerts (kind, severity, hold_id, details, status, raised_at, updated_at, resolved_at)
        SELECT 'paid_without_stock', 'critical', v.hold_id, jsonb_build_array(v.detail), v.status,
               (SELECT at FROM clock), (SELECT at FROM clock),
               CASE WHEN v.status = 'resolved' THEN (SELECT at FROM clock) END
        FROM jsonb_to_recordset(%(alerts)s::jsonb) AS v(hold_id uuid, detail jsonb, status text)
        ON CONFLICT (kind, coalesce(product_id, 0), coalesce(warehouse_id, 0),
                     coalesce(hold_id, '00000000-0000-0000-0000-000000000000'::uuid)) WHERE status <> 'resolved'
        DO UPDATE SET details = alerts.details || EXCLUDED.details, occurrences = alerts.occurrences + 1,
                      updated_at = EXCLUDED.updated_at
        RETURNING 1
    ), alerts_resolved AS (
        UPDATE alerts a SET status = 'resolved', resolved_at = (SELECT at FROM clock), updated_at = (SELECT at FROM clock)
        WHERE a.hold_id = ANY(%(resolved_alerts)s::uuid[]) AND a.kind = 'paid_without_stock' AND a.status <> 'resolved'
        RETURNING 1
    ), follow_ups AS ({_INSERT_COMMANDS}), events AS (
        INSERT INTO outbox (topic, payload)
        SELECT topic, payload FROM jsonb_to_recordset(%(events)s::jsonb) AS v(topic text, payload jsonb)
        RETURNING 1
    ), batch AS (
        -- the batch's log: a row per shard
        INSERT INTO apply_batches (shard, epoch, holder, commands, started_at, finished_at)
        SELECT shard, epoch, %(holder)s, commands, %(started_at)s, clock_timestamp()
        FROM jsonb_to_recordset(%(shards)s::jsonb) AS s(shard int, epoch bigint, commands int)
        RETURNING id, shard
    )
    UPDATE commands c SET status = v.status, result = v.result, applied_at = (SELECT at FROM clock), batch_id = b.id
    FROM jsonb_to_recordset(%(results)s::jsonb) AS v(seq bigint, shard int, status text, result jsonb)
    JOIN batch b ON b.shard = v.shard
    WHERE c.seq = v.seq AND c.seq = ANY(%(seqs)s::bigint[])
"""


def _json(value: Any) -> str:
    """JSON for PostgreSQL; Decimal, UUID and datetime as their text, which jsonb_to_recordset
    turns back into numeric, uuid and timestamptz. Set-based statements take their rows as one
    JSON document: psycopg would quote a jsonb[] array element by element, in Python. orjson
    writes them in a fraction of the standard library's time (a batch's parameters and a recorded
    group's are the writer's and the recorder's largest Python cost)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal (cast in the statement, e.g. ``%(ids)s::bigint[]``) of numbers,
    UUIDs or text, text quoted. psycopg would dump a list element by element, in Python."""
    return "{" + ",".join(_element(v) for v in values) + "}"


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    return _quoted(value) if isinstance(value, str) else str(value)  # numbers and UUIDs need no quotes


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def insert_commands(pg: Pg, commands: Sequence[NewCommand]) -> Cursor[Any]:
    """Record commands in one statement; a key recorded before is left as it is. The cursor
    returns the keys that were new (read it outside a pipeline, or after it)."""
    return pg.execute(_INSERT_COMMANDS, {"commands": _command_rows(commands)})


def _command_rows(commands: Sequence[NewCommand]) -> str:
    return _json(
        [
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
    )


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
        {"hold_id": hold_id, "key": key, "kind": kind, "payload": _json(payload), "digest": digest},
    ).fetchone()
    assert row is not None
    return row[0], bool(row[1])


def recorded_commands(pg: Pg, keys: Sequence[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """key → (kind, payload digest, payload) of commands recorded earlier."""
    rows = pg.execute(
        "SELECT idempotency_key, kind, payload_hash, payload FROM commands WHERE idempotency_key = ANY(%(k)s)",
        {"k": list(keys)},
    )
    return {key: (kind, digest, payload) for key, kind, digest, payload in rows.fetchall()}


@dataclass(frozen=True, slots=True)
class ProductRef:
    id: int
    sku: str
    packaging: Packaging


def lot_facts(pg: Pg, product_id: int, lot_code: str) -> LotFacts | None:
    """The shade, caliber and expiry of a product's lot, if the product has that lot."""
    row = pg.execute(
        "SELECT shade, caliber, expiry FROM lots WHERE product_id = %(p)s AND lot_code = %(lot)s",
        {"p": product_id, "lot": lot_code},
    ).fetchone()
    return LotFacts(*row) if row else None


def load_references(
    pg: Pg, skus: Sequence[str], codes: Sequence[str]
) -> tuple[dict[str, ProductRef], dict[str, int]]:
    """Active products by SKU and active warehouses by code: one round trip."""
    with pg.pipeline():
        products = pg.execute(
            "SELECT id, sku, pieces_per_box, sqm_per_box, allow_partial_boxes FROM products "
            "WHERE sku = ANY(%(s)s) AND active",
            {"s": list(skus)},
        )
        warehouses = pg.execute(
            "SELECT code, id FROM warehouses WHERE code = ANY(%(c)s) AND active", {"c": list(codes)}
        )
    refs = {r[1]: ProductRef(r[0], r[1], Packaging(r[2], r[3], r[4])) for r in products.fetchall()}
    return refs, {code: wid for code, wid in warehouses.fetchall()}


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
        HAVING count(*) > 0
    )
    -- nudge is selected from so that it runs (a SELECT in WITH runs only if read); its count is unused
    SELECT (SELECT current FROM refs), array(SELECT idempotency_key FROM placed), (SELECT count(*) FROM nudge)
"""


def record_holds(
    pg: Pg,
    holds: Sequence[NewHold],
    line_commands: Sequence[NewCommand],
    products: Sequence[ProductRef],
    warehouse_ids: Sequence[int],
) -> set[str] | None:
    """Record hold requests in one statement (see `_RECORD_HOLDS`); run it in autocommit.

    The statement also notifies `NUDGE_CHANNEL` with the shards of the line commands it recorded:
    PostgreSQL delivers it as the statement commits, so the writers start with no round trip of the
    recorder's (a Redis publish after the commit cost it a sixth of its time).

    Returns the keys recorded now (the others were recorded before), or None when a product or
    warehouse changed since the references were read: then nothing was written.
    """
    products = list({p.id: p for p in products}.values())
    row = pg.execute(
        _RECORD_HOLDS,
        {
            "products": _json(
                [
                    {
                        "id": p.id,
                        "pieces_per_box": p.packaging.pieces_per_box,
                        "sqm_per_box": p.packaging.sqm_per_box,
                        "allow_partial_boxes": p.packaging.allow_partial_boxes,
                    }
                    for p in products
                ]
            ),
            "product_ids": sorted(p.id for p in products),
            "product_count": len(products),
            "warehouse_ids": sorted(set(warehouse_ids)),
            "warehouse_count": len(set(warehouse_ids)),
            "holds": _json(
                [
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
                ]
            ),
            "lines": _json([{"hold_id": h.id, **line} for h in holds for line in h.lines]),
            "commands": _command_rows(line_commands),
            "nudge_channel": NUDGE_CHANNEL,
        },
    ).fetchone()
    assert row is not None
    current, placed, _ = row
    return set(placed) if current else None


def record_failure(pg: Pg, seq: int, error: str) -> int:
    """Count a failed try of a command (run outside the failed transaction); returns its tries so far."""
    row = pg.execute(
        """
        UPDATE commands SET attempts = attempts + 1, last_error = %(error)s,
               first_failed_at = coalesce(first_failed_at, clock_timestamp()), last_failed_at = clock_timestamp()
        WHERE seq = %(seq)s AND status IN ('recorded', 'scheduled')
        RETURNING attempts
        """,
        {"seq": seq, "error": error[:2000]},
    ).fetchone()
    return int(row[0]) if row else 0


def save_batch(
    pg: Pg,
    writes: BatchWrites,
    *,
    leases: Mapping[int, int],
    holder: str,
    started_at: dt.datetime,
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """Every write of the batch (one statement) and the commit: one round trip."""
    moves = [e.movement for e in writes.ledger]
    with pg.pipeline() as pipeline:
        pg.execute(
            _SAVE_BATCH,
            {
                "stock_ids": _array(s.balance_id for s in writes.stocks),
                "stock_on_hand": _array(s.on_hand for s in writes.stocks),
                "stock_reserved": _array(s.reserved for s in writes.stocks),
                "move_product_ids": _array(m.stock.product_id for m in moves),
                "move_warehouse_ids": _array(m.stock.warehouse_id for m in moves),
                "move_lot_ids": _array(m.stock.lot_id for m in moves),
                "move_kinds": _array(m.kind.value for m in moves),
                "move_on_hand": _array(m.on_hand for m in moves),
                "move_reserved": _array(m.reserved for m in moves),
                "move_seqs": _array(e.command_seq for e in writes.ledger),
                "move_hold_ids": _array(e.hold_id for e in writes.ledger),
                "move_line_nos": _array(e.line_no for e in writes.ledger),
                "lines": _json(
                    [
                        {
                            "hold_id": line.hold_id,
                            "line_no": line.line_no,
                            "status": line.status.value,
                            "warehouse_id": line.warehouse_id,
                            "lot_id": line.lot_id,
                            "allocated": line.allocated,
                            "reason": line.reason,
                            "available": line.available,
                            "largest_lot": line.largest_lot or None,
                        }
                        for line in writes.lines
                    ]
                ),
                "line_hold_ids": _array(line.hold_id for line in writes.lines),
                "hold_ids": _array(h.id for h in writes.holds),
                "hold_statuses": _array(h.status.value for h in writes.holds),
                "hold_payments": _array(h.payment.value for h in writes.holds),
                "hold_pending": _array(h.lines_pending for h in writes.holds),
                "commands": _command_rows(writes.commands),
                "events": _json([{"topic": t, "payload": p} for t, p in writes.events]),
                "holder": holder,
                "started_at": started_at,
                "shards": _json(
                    [
                        {"shard": shard, "epoch": leases[shard], "commands": count}
                        for shard, count in Counter(c.shard for c, _ in writes.results).items()
                    ]
                ),
                "alerts": _json(
                    [
                        {
                            "hold_id": a.hold_id,
                            "detail": a.detail,
                            "status": "resolved" if a.resolved else "open",
                        }
                        for a in writes.alerts
                    ]
                ),
                "resolved_alerts": _array(writes.resolved_alerts),
                "results": _json(
                    [
                        {
                            "seq": c.seq,
                            "shard": c.shard,
                            "status": "dead" if c.seq in writes.parked else "applied",
                            "result": r,
                        }
                        for c, r in writes.results
                    ]
                ),
                "seqs": _array(c.seq for c, _ in writes.results),
            },
        )
        pg.execute("COMMIT")  # a statement in the pipeline, not commit(): no round trip of its own
        meanwhile()  # the statements are on their way: work done here overlaps PostgreSQL's
        _sync(pipeline)


def _sync(pipeline: Pipeline) -> None:
    """End the pipeline with its Sync now, then read its results.

    psycopg sends a pipeline's Sync only after it has read the results, and PostgreSQL arms
    `idle_in_transaction_session_timeout` only when a Sync has come: a writer stopped (SIGSTOP, a
    VM pause) while waiting for its claim's results would keep its transaction, and its shards'
    fence rows, for as long as it stayed stopped. With the Sync sent first, the session is ended
    after the timeout (see `workers.runtime.writer_session_options`)."""
    pipeline.sync()
