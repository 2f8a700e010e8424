"""Set-based loads and saves for one shard writer's batch. No business rule lives here.

The writer's statements go through the psycopg 3 connection under the SQLAlchemy transaction, in
pipeline mode where they do not depend on each other: a batch costs a handful of round trips to
PostgreSQL, whatever its size (loads in one pipeline, every write in another, then the commit).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg import Connection as PgConnection
from psycopg import Cursor
from sqlalchemy import Connection

from domain.allocation import LotStock, WarehouseRoute
from domain.holds import Hold, HoldLine, HoldMode, HoldStatus, LineStatus, Payment
from domain.lines import Movement
from domain.quantities import Packaging

Pg = PgConnection[Any]


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


@dataclass(frozen=True, slots=True)
class NewCommand:
    key: str
    kind: str
    payload: dict[str, Any]
    payload_hash: str
    shard: int
    not_before: dt.datetime | None = None
    applied: bool = False
    """Recorded as already applied: its effect is written in the same transaction (a hold placement)."""

    @property
    def status(self) -> str:
        return "applied" if self.applied else "scheduled" if self.not_before else "recorded"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    movement: Movement
    command_seq: int
    hold_id: str | None = None
    line_no: int | None = None


_PROVE_LEASE = """
    INSERT INTO shard_fences AS f (shard, epoch, holder) VALUES (%(shard)s, %(epoch)s, %(holder)s)
    ON CONFLICT (shard) DO UPDATE
        SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, updated_at = now()
        WHERE f.epoch <= EXCLUDED.epoch
    RETURNING clock_timestamp()
"""

# Found by state, never by a cursor: a sequence number is drawn before commit, so a row that
# commits late would be skipped by "seq > last seen".
_PENDING = """
    SELECT seq, idempotency_key, kind, payload, recorded_at FROM (
        (SELECT seq, idempotency_key, kind, payload, recorded_at FROM commands
          WHERE shard = %(shard)s AND status = 'recorded' ORDER BY seq LIMIT %(limit)s)
        UNION ALL
        (SELECT seq, idempotency_key, kind, payload, recorded_at FROM commands
          WHERE shard = %(shard)s AND status = 'scheduled' AND not_before <= clock_timestamp()
          ORDER BY not_before LIMIT %(limit)s)
    ) due ORDER BY seq LIMIT %(limit)s
"""


_HAS_DUE = """
    SELECT EXISTS (SELECT 1 FROM commands WHERE shard = %(shard)s AND status = 'recorded')
        OR EXISTS (SELECT 1 FROM commands WHERE shard = %(shard)s AND status = 'scheduled'
                                               AND not_before <= clock_timestamp())
"""


def has_due(pg: Pg, shard: int) -> bool:
    """Whether the shard has anything to apply: a read, so that a doorbell for work already done
    (most of them, since doorbells are coalesced and duplicated) writes nothing and flushes no WAL."""
    row = pg.execute(_HAS_DUE, {"shard": shard}).fetchone()
    return bool(row and row[0])


def claim_batch(
    pg: Pg, shard: int, epoch: int, holder: str, limit: int
) -> tuple[dt.datetime | None, list[InboxCommand]]:
    """Prove the lease and take the shard's due commands, in one round trip.

    The fence upsert locks the shard's fence row until commit, so two writers of one shard can
    never apply at once; a writer whose epoch is older than the newest one that applied is fenced
    out (no clock comes back, and the caller must not apply what it read). The clock returned is
    the database's, which every decision of the batch uses.
    """
    with pg.pipeline():
        fence = pg.execute(_PROVE_LEASE, {"shard": shard, "epoch": epoch, "holder": holder})
        due = pg.execute(_PENDING, {"shard": shard, "limit": limit})
    row = fence.fetchone()
    if row is None:
        return None, []
    return row[0], [InboxCommand(*r) for r in due.fetchall()]


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
    shown: dict[tuple[str, int], LineShown] = field(default_factory=dict)
    lot_names: dict[int, tuple[str, str | None, str | None]] = field(default_factory=dict)
    """lot id → (code, shade, caliber), for the lots the batch's lines and products hold."""


_STOCK_SELECT = """
    SELECT b.id, b.product_id, b.warehouse_id, b.lot_id, l.lot_code, l.received_at, l.expiry,
           b.on_hand, b.reserved, b.damaged, b.quarantine, l.shade, l.caliber
    FROM stock_balances b JOIN lots l ON l.id = b.lot_id
"""


def load_state(pg: Pg, hold_ids: Iterable[str], product_ids: Iterable[int]) -> BatchState:
    """Lock the batch's holds (in id order, so writers never deadlock), load their lines, the
    lot balances of the batch's products and the warehouse routes: one round trip."""
    ids = sorted({uuid.UUID(h) for h in hold_ids})
    products = sorted(set(product_ids))
    with pg.pipeline():
        holds = pg.execute(
            "SELECT id, status, mode, expires_at, payment, lines_pending, created_at FROM holds "
            "WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE",
            {"ids": ids},
        )
        lines = pg.execute(
            """
            SELECT l.hold_id, l.line_no, l.product_id, p.sku, l.pieces, l.status, l.requested_warehouse_id,
                   l.warehouse_id, l.lot_id, l.allocated, l.reason, l.available, l.largest_lot,
                   l.requested_quantity, l.requested_unit, l.rounding,
                   p.pieces_per_box, p.sqm_per_box, p.allow_partial_boxes, lot.lot_code, lot.shade, lot.caliber
            FROM hold_lines l JOIN products p ON p.id = l.product_id LEFT JOIN lots lot ON lot.id = l.lot_id
            WHERE l.hold_id = ANY(%(ids)s) ORDER BY l.hold_id, l.line_no
            """,
            {"ids": ids},
        )
        stocks = pg.execute(_STOCK_SELECT + " WHERE b.product_id = ANY(%(ids)s)", {"ids": products})
        routes = pg.execute("SELECT id, code, can_ship, priority, active FROM warehouses")
    state = BatchState(holds={}, lines={}, stocks={pid: [] for pid in products}, routes=[])
    for hid, status, mode, expires_at, payment, pending, created_at in holds.fetchall():
        state.holds[str(hid)] = Hold(
            str(hid), HoldStatus(status), HoldMode(mode), expires_at, Payment(payment), pending
        )
        state.created_at[str(hid)] = created_at
    for r in lines.fetchall():
        hold_id = str(r[0])
        state.lines.setdefault(hold_id, []).append(
            HoldLine(hold_id, r[1], r[2], r[3], r[4], LineStatus(r[5]), *r[6:13])
        )
        state.shown[(hold_id, r[1])] = LineShown(r[13], r[14], r[15], Packaging(r[16], r[17], r[18]))
        if r[8] is not None:
            state.lot_names[r[8]] = (r[19], r[20], r[21])
    for r in stocks.fetchall():
        stock = LotStock(*r)
        state.stocks[stock.product_id].append(stock)
        state.lot_names[stock.lot_id] = (stock.lot_code, stock.shade, stock.caliber)
    state.routes = [WarehouseRoute(*r) for r in routes.fetchall()]
    return state


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


def raise_alert(
    pg: Pg,
    *,
    kind: str,
    severity: str,
    product_id: int | None,
    warehouse_id: int | None,
    detail: dict[str, Any],
) -> None:
    """Open the alert, or add this occurrence to the one already open for (kind, product, warehouse)."""
    pg.execute(
        """
        INSERT INTO alerts (kind, severity, product_id, warehouse_id, details)
        VALUES (%(kind)s, %(severity)s, %(product_id)s, %(warehouse_id)s, jsonb_build_array(%(detail)s::jsonb))
        ON CONFLICT (kind, coalesce(product_id, 0), coalesce(warehouse_id, 0)) WHERE status <> 'resolved'
        DO UPDATE SET details = alerts.details || EXCLUDED.details, occurrences = alerts.occurrences + 1,
                      updated_at = now()
        """,
        {
            "kind": kind,
            "severity": severity,
            "product_id": product_id,
            "warehouse_id": warehouse_id,
            "detail": json.dumps(detail, default=str),
        },
    )


@dataclass(slots=True)
class BatchWrites:
    stocks: Sequence[LotStock]
    ledger: Sequence[LedgerEntry]
    lines: Sequence[HoldLine]
    holds: Sequence[Hold]
    commands: Sequence[NewCommand]
    events: Sequence[tuple[str, dict[str, Any]]]
    results: dict[int, dict[str, Any]]


_SAVE_STOCKS = """
    UPDATE stock_balances b SET on_hand = v.on_hand, reserved = v.reserved, updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(on_hand)s::numeric[], %(reserved)s::numeric[]) AS v(id, on_hand, reserved)
    WHERE b.id = v.id
"""

_INSERT_MOVEMENTS = """
    INSERT INTO movements (product_id, warehouse_id, lot_id, kind, d_on_hand, d_reserved, command_seq, hold_id, line_no)
    SELECT * FROM unnest(%(product_ids)s::int[], %(warehouse_ids)s::int[], %(lot_ids)s::int[], %(kinds)s::text[],
                         %(on_hand)s::numeric[], %(reserved)s::numeric[], %(seqs)s::bigint[], %(hold_ids)s::uuid[],
                         %(line_nos)s::int[])
"""

_SAVE_LINES = """
    UPDATE hold_lines h SET status = v.status, warehouse_id = v.warehouse_id, lot_id = v.lot_id,
           allocated = v.allocated, reason = v.reason, available = v.available, largest_lot = v.largest_lot
    FROM unnest(%(hold_ids)s::uuid[], %(line_nos)s::int[], %(statuses)s::text[], %(warehouse_ids)s::int[],
                %(lot_ids)s::int[], %(allocated)s::numeric[], %(reasons)s::text[], %(available)s::numeric[],
                %(largest)s::jsonb[])
         AS v(hold_id, line_no, status, warehouse_id, lot_id, allocated, reason, available, largest_lot)
    WHERE h.hold_id = v.hold_id AND h.line_no = v.line_no
"""

_SAVE_HOLDS = """
    UPDATE holds h SET status = v.status, payment = v.payment, lines_pending = v.lines_pending, updated_at = now(),
           settled_at = CASE WHEN v.status IN ('pending', 'reallocating') THEN h.settled_at
                             ELSE coalesce(h.settled_at, now()) END
    FROM unnest(%(ids)s::uuid[], %(statuses)s::text[], %(payments)s::text[], %(pending)s::int[])
         AS v(id, status, payment, lines_pending)
    WHERE h.id = v.id
"""

# Follow-up commands; a key already recorded (a replayed batch) is left as it is.
_INSERT_COMMANDS = """
    INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status, not_before)
    SELECT * FROM unnest(%(keys)s::text[], %(kinds)s::text[], %(payloads)s::jsonb[], %(digests)s::text[],
                         %(shards)s::int[], %(statuses)s::text[], %(not_before)s::timestamptz[])
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
"""

_INSERT_EVENTS = """
    INSERT INTO outbox (topic, payload) SELECT * FROM unnest(%(topics)s::text[], %(payloads)s::jsonb[])
"""

# Mark the batch's commands applied with their results, and log the batch.
_FINISH_BATCH = """
    WITH batch AS (
        INSERT INTO apply_batches (shard, epoch, holder, commands, started_at, finished_at)
        VALUES (%(shard)s, %(epoch)s, %(holder)s, %(count)s, %(started_at)s, clock_timestamp())
        RETURNING id
    )
    UPDATE commands c SET status = 'applied', result = v.result, applied_at = clock_timestamp(),
           batch_id = (SELECT id FROM batch)
    FROM unnest(%(seqs)s::bigint[], %(results)s::jsonb[]) AS v(seq, result)
    WHERE c.seq = v.seq
"""


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def insert_commands(pg: Pg, commands: Sequence[NewCommand]) -> Cursor[Any]:
    """Record commands in one statement; a key recorded before is left as it is. The cursor
    returns the keys that were new (read it outside a pipeline, or after it)."""
    return pg.execute(
        _INSERT_COMMANDS,
        {
            "keys": [c.key for c in commands],
            "kinds": [c.kind for c in commands],
            "payloads": [_json(c.payload) for c in commands],
            "digests": [c.payload_hash for c in commands],
            "shards": [c.shard for c in commands],
            "statuses": [c.status for c in commands],
            "not_before": [c.not_before for c in commands],
        },
    )


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
    id: str
    key: str
    mode: str
    home_shard: int
    ttl_seconds: int
    lines: Sequence[dict[str, Any]]
    """line_no, product_id, quantity, unit, pieces, rounding, warehouse_id"""


_INSERT_HOLDS = """
    INSERT INTO holds (id, idempotency_key, status, mode, home_shard, ttl_seconds, expires_at, lines_pending)
    SELECT id, key, 'pending', mode, home, ttl, now() + make_interval(secs => ttl), n
    FROM unnest(%(ids)s::uuid[], %(keys)s::text[], %(modes)s::text[], %(homes)s::int[], %(ttls)s::int[],
                %(ns)s::int[]) AS v(id, key, mode, home, ttl, n)
"""

_INSERT_HOLD_LINES = """
    INSERT INTO hold_lines (hold_id, line_no, product_id, requested_quantity, requested_unit, pieces,
                            rounding, requested_warehouse_id, status)
    SELECT hold_id, line_no, product_id, quantity, unit, pieces, rounding, warehouse_id, 'pending'
    FROM unnest(%(hold_ids)s::uuid[], %(line_nos)s::int[], %(product_ids)s::int[], %(quantities)s::numeric[],
                %(units)s::text[], %(pieces)s::numeric[], %(roundings)s::text[], %(warehouse_ids)s::int[])
         AS v(hold_id, line_no, product_id, quantity, unit, pieces, rounding, warehouse_id)
"""


def insert_holds(pg: Pg, holds: Sequence[NewHold]) -> None:
    """New pending holds and their lines: two statements (pipelined by the caller)."""
    pg.execute(
        _INSERT_HOLDS,
        {
            "ids": [uuid.UUID(h.id) for h in holds],
            "keys": [h.key for h in holds],
            "modes": [h.mode for h in holds],
            "homes": [h.home_shard for h in holds],
            "ttls": [h.ttl_seconds for h in holds],
            "ns": [len(h.lines) for h in holds],
        },
    )
    lines = [(uuid.UUID(h.id), line) for h in holds for line in h.lines]
    pg.execute(
        _INSERT_HOLD_LINES,
        {
            "hold_ids": [hid for hid, _ in lines],
            "line_nos": [line["line_no"] for _, line in lines],
            "product_ids": [line["product_id"] for _, line in lines],
            "quantities": [line["quantity"] for _, line in lines],
            "units": [line["unit"] for _, line in lines],
            "pieces": [line["pieces"] for _, line in lines],
            "roundings": [line["rounding"] for _, line in lines],
            "warehouse_ids": [line["warehouse_id"] for _, line in lines],
        },
    )


def save_batch(
    pg: Pg, writes: BatchWrites, *, shard: int, epoch: int, holder: str, started_at: dt.datetime
) -> None:
    """Every write of the batch in one pipeline: one round trip before the commit."""
    with pg.pipeline():
        if writes.stocks:
            pg.execute(
                _SAVE_STOCKS,
                {
                    "ids": [s.balance_id for s in writes.stocks],
                    "on_hand": [s.on_hand for s in writes.stocks],
                    "reserved": [s.reserved for s in writes.stocks],
                },
            )
        if writes.ledger:
            moves = [e.movement for e in writes.ledger]
            pg.execute(
                _INSERT_MOVEMENTS,
                {
                    "product_ids": [m.stock.product_id for m in moves],
                    "warehouse_ids": [m.stock.warehouse_id for m in moves],
                    "lot_ids": [m.stock.lot_id for m in moves],
                    "kinds": [m.kind.value for m in moves],
                    "on_hand": [m.on_hand for m in moves],
                    "reserved": [m.reserved for m in moves],
                    "seqs": [e.command_seq for e in writes.ledger],
                    "hold_ids": [uuid.UUID(e.hold_id) if e.hold_id else None for e in writes.ledger],
                    "line_nos": [e.line_no for e in writes.ledger],
                },
            )
        if writes.lines:
            lines = writes.lines
            pg.execute(
                _SAVE_LINES,
                {
                    "hold_ids": [uuid.UUID(line.hold_id) for line in lines],
                    "line_nos": [line.line_no for line in lines],
                    "statuses": [line.status.value for line in lines],
                    "warehouse_ids": [line.warehouse_id for line in lines],
                    "lot_ids": [line.lot_id for line in lines],
                    "allocated": [line.allocated for line in lines],
                    "reasons": [line.reason for line in lines],
                    "available": [line.available for line in lines],
                    "largest": [_json(line.largest_lot) if line.largest_lot else None for line in lines],
                },
            )
        if writes.holds:
            pg.execute(
                _SAVE_HOLDS,
                {
                    "ids": [uuid.UUID(h.id) for h in writes.holds],
                    "statuses": [h.status.value for h in writes.holds],
                    "payments": [h.payment.value for h in writes.holds],
                    "pending": [h.lines_pending for h in writes.holds],
                },
            )
        if writes.commands:
            insert_commands(pg, writes.commands)
        if writes.events:
            pg.execute(
                _INSERT_EVENTS,
                {"topics": [t for t, _ in writes.events], "payloads": [_json(p) for _, p in writes.events]},
            )
        pg.execute(
            _FINISH_BATCH,
            {
                "shard": shard,
                "epoch": epoch,
                "holder": holder,
                "count": len(writes.results),
                "started_at": started_at,
                "seqs": list(writes.results),
                "results": [_json(r) for r in writes.results.values()],
            },
        )
