"""What ops watch, read from PostgreSQL: each shard's inbox (pending work, its oldest age, dead
letters), its batch log (last batch, commands per minute) and a product's open holds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Connection, text

from domain.states import HoldStatus

RATE_MINUTES = 10
"""How many minutes of commands per minute the shard view gives."""


@dataclass(slots=True)
class ShardInbox:
    pending: int = 0
    """Commands recorded and not applied, and scheduled ones now due."""
    oldest_pending_at: dt.datetime | None = None
    """When the oldest of them was recorded (a due one: when it fell due)."""
    dead_letters: int = 0
    last_batch_at: dt.datetime | None = None
    per_minute: list[int] = field(default_factory=lambda: [0] * RATE_MINUTES)
    """Commands applied in each of the last RATE_MINUTES minutes, oldest first (the last one is the
    minute under way)."""


def shard_inboxes(conn: Connection, shards: int) -> tuple[dt.datetime, dict[int, ShardInbox]]:
    """The database's clock and every shard's inbox and batch log, in one statement. The clock is
    read as the statement ends (not its transaction's start, which can be older than a pending
    command it sees), so an age is never negative."""
    rows = conn.execute(
        text(
            """
            WITH pending AS (
                SELECT shard, count(*) AS n, min(recorded_at) AS oldest FROM commands
                WHERE status = 'recorded' GROUP BY shard
                UNION ALL
                SELECT shard, count(*), min(not_before) FROM commands
                WHERE status = 'scheduled' AND not_before <= now() GROUP BY shard
            ), dead AS (
                SELECT shard, count(*) AS n FROM commands WHERE status = 'dead' GROUP BY shard
            ), rates AS (
                SELECT b.shard, array_agg(coalesce(m.n, 0) ORDER BY g.i) AS per_minute, max(b.last) AS last
                FROM (SELECT s AS shard, (SELECT max(finished_at) FROM apply_batches a WHERE a.shard = s) AS last
                      FROM generate_series(0, :shards - 1) AS s) AS b
                CROSS JOIN generate_series(0, :minutes - 1) AS g(i)
                LEFT JOIN LATERAL (
                    SELECT sum(a.commands) AS n FROM apply_batches a
                    WHERE a.shard = b.shard
                      AND a.finished_at >= date_trunc('minute', now()) - make_interval(mins => :minutes - 1 - g.i)
                      AND a.finished_at < date_trunc('minute', now()) - make_interval(mins => :minutes - 2 - g.i)
                ) AS m ON true
                GROUP BY b.shard
            )
            SELECT clock_timestamp(), r.shard, coalesce((SELECT sum(n) FROM pending p WHERE p.shard = r.shard), 0),
                   (SELECT min(oldest) FROM pending p WHERE p.shard = r.shard),
                   coalesce((SELECT n FROM dead d WHERE d.shard = r.shard), 0), r.last, r.per_minute
            FROM rates r ORDER BY r.shard
            """
        ),
        {"shards": shards, "minutes": RATE_MINUTES},
    ).all()
    now = rows[0][0] if rows else conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return now, {
        shard: ShardInbox(int(pending), oldest, int(dead), last, list(per_minute))
        for _, shard, pending, oldest, dead, last, per_minute in rows
    }


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A line of an open hold on the product: what it asks for and what it holds, where."""

    hold_id: str
    status: str
    """The hold's status: pending, reserved or reallocating."""
    line_no: int
    line_status: str
    """pending (not allocated yet) or reserved."""
    pieces: Decimal
    """What the line asks for."""
    reserved: Decimal
    """What it holds of the lot below (0 while pending)."""
    warehouse: str | None
    lot: str | None
    expires_at: dt.datetime
    seconds_left: float


def open_holds(conn: Connection, sku: str, limit: int = 50) -> list[OpenHold]:
    """The product's lines in open holds, soonest to expire first.

    Found by the line's status (pending or reserved: the lines' index by product and status), not
    by the hold's: a busy product has had far more lines than it has open. A reallocating hold's
    line (paid after it expired) shows again once it is re-reserved.
    """
    rows = conn.execute(
        text(
            """
            SELECT h.id::text, h.status, l.line_no, l.status, l.pieces,
                   CASE WHEN l.status = 'reserved' THEN l.allocated ELSE 0 END, w.code, lt.lot_code, h.expires_at,
                   greatest(extract(epoch FROM h.expires_at - clock_timestamp()), 0)::float8
            FROM products p
            JOIN hold_lines l ON l.product_id = p.id AND l.status IN ('pending', 'reserved')
            JOIN holds h ON h.id = l.hold_id AND h.status IN ('pending', 'reserved', 'reallocating')
            LEFT JOIN warehouses w ON w.id = l.warehouse_id
            LEFT JOIN lots lt ON lt.id = l.lot_id
            WHERE p.sku = :sku
            ORDER BY h.expires_at, h.id, l.line_no LIMIT :limit
            """
        ),
        {"sku": sku, "limit": limit},
    )
    return [OpenHold(*row) for row in rows]


def holds_by_status(conn: Connection) -> dict[str, int]:
    """How many holds are in each status (every status, zero when none)."""
    rows = conn.execute(text("SELECT status, count(*) FROM holds GROUP BY status"))
    counts = {status.value: 0 for status in HoldStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts
