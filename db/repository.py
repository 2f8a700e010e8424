"""Set-based loads and saves for one shard writer's batch. No business rule lives here."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from db import models
from domain.allocation import LotStock, WarehouseRoute
from domain.holds import Hold, HoldLine, HoldMode, HoldStatus, LineStatus, Payment
from domain.lines import Movement


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

    @property
    def status(self) -> str:
        return "scheduled" if self.not_before else "recorded"


def prove_lease(conn: Connection, shard: int, epoch: int, holder: str) -> dt.datetime | None:
    """Prove in Postgres that this epoch still owns the shard, and serialise with any other writer.

    The upsert locks the shard's fence row until commit, so two writers of one shard can never
    apply at once; a writer whose epoch is older than the newest one that applied is fenced out
    (no row comes back). Returns the database clock, which every decision of the batch uses.
    """
    row = conn.execute(
        text(
            """
            INSERT INTO shard_fences AS f (shard, epoch, holder) VALUES (:shard, :epoch, :holder)
            ON CONFLICT (shard) DO UPDATE
                SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, updated_at = now()
                WHERE f.epoch <= EXCLUDED.epoch
            RETURNING clock_timestamp()
            """
        ),
        {"shard": shard, "epoch": epoch, "holder": holder},
    ).first()
    return row[0] if row else None


def pending_commands(conn: Connection, shard: int, now: dt.datetime, limit: int) -> list[InboxCommand]:
    """The shard's commands still to apply, in inbox order: found by state, never by a cursor."""
    rows = conn.execute(
        text(
            """
            SELECT seq, idempotency_key, kind, payload, recorded_at FROM (
                (SELECT seq, idempotency_key, kind, payload, recorded_at FROM commands
                  WHERE shard = :shard AND status = 'recorded' ORDER BY seq LIMIT :limit)
                UNION ALL
                (SELECT seq, idempotency_key, kind, payload, recorded_at FROM commands
                  WHERE shard = :shard AND status = 'scheduled' AND not_before <= :now
                  ORDER BY not_before LIMIT :limit)
            ) due ORDER BY seq LIMIT :limit
            """
        ),
        {"shard": shard, "now": now, "limit": limit},
    )
    return [InboxCommand(*row) for row in rows]


def lock_holds(conn: Connection, hold_ids: Iterable[str]) -> dict[str, Hold]:
    """Load and lock the batch's holds in id order, so that writers never deadlock on them."""
    ids = sorted({uuid.UUID(h) for h in hold_ids})
    if not ids:
        return {}
    rows = conn.execute(
        text(
            """
            SELECT id, status, mode, expires_at, payment, lines_pending FROM holds
            WHERE id = ANY(:ids) ORDER BY id FOR UPDATE
            """
        ),
        {"ids": ids},
    )
    return {
        str(r.id): Hold(
            id=str(r.id),
            status=HoldStatus(r.status),
            mode=HoldMode(r.mode),
            expires_at=r.expires_at,
            payment=Payment(r.payment),
            lines_pending=r.lines_pending,
        )
        for r in rows
    }


def load_lines(conn: Connection, hold_ids: Iterable[str]) -> dict[str, list[HoldLine]]:
    ids = [uuid.UUID(h) for h in set(hold_ids)]
    lines: dict[str, list[HoldLine]] = {}
    if not ids:
        return lines
    rows = conn.execute(
        text(
            """
            SELECT l.hold_id, l.line_no, l.product_id, p.sku, l.pieces, l.status, l.requested_warehouse_id,
                   l.warehouse_id, l.lot_id, l.allocated, l.reason, l.available, l.largest_lot
            FROM hold_lines l JOIN products p ON p.id = l.product_id
            WHERE l.hold_id = ANY(:ids) ORDER BY l.hold_id, l.line_no
            """
        ),
        {"ids": ids},
    )
    for r in rows:
        lines.setdefault(str(r.hold_id), []).append(
            HoldLine(
                hold_id=str(r.hold_id),
                line_no=r.line_no,
                product_id=r.product_id,
                sku=r.sku,
                pieces=r.pieces,
                status=LineStatus(r.status),
                requested_warehouse_id=r.requested_warehouse_id,
                warehouse_id=r.warehouse_id,
                lot_id=r.lot_id,
                allocated=r.allocated,
                reason=r.reason,
                available=r.available,
                largest_lot=r.largest_lot,
            )
        )
    return lines


_STOCK_SELECT = """
    SELECT b.id, b.product_id, b.warehouse_id, b.lot_id, l.lot_code, l.received_at, l.expiry,
           b.on_hand, b.reserved, b.damaged, b.quarantine
    FROM stock_balances b JOIN lots l ON l.id = b.lot_id
"""


def load_stocks(conn: Connection, product_ids: Iterable[int]) -> dict[int, list[LotStock]]:
    ids = sorted(set(product_ids))
    stocks: dict[int, list[LotStock]] = {pid: [] for pid in ids}
    if ids:
        for row in conn.execute(text(_STOCK_SELECT + " WHERE b.product_id = ANY(:ids)"), {"ids": ids}):
            stocks[row.product_id].append(LotStock(*row))
    return stocks


def load_routes(conn: Connection) -> list[WarehouseRoute]:
    rows = conn.execute(text("SELECT id, code, can_ship, priority, active FROM warehouses"))
    return [WarehouseRoute(*row) for row in rows]


def ensure_lot_stock(
    conn: Connection,
    *,
    product_id: int,
    warehouse_id: int,
    lot_code: str,
    shade: str | None,
    caliber: str | None,
    expiry: dt.date | None,
) -> LotStock:
    """The balance row of (product, warehouse, lot), creating the lot and the row on first receipt."""
    lot_id = conn.execute(
        text(
            """
            INSERT INTO lots (product_id, lot_code, shade, caliber, expiry)
            VALUES (:product_id, :lot_code, :shade, :caliber, :expiry)
            ON CONFLICT (product_id, lot_code) DO UPDATE
                SET shade = coalesce(lots.shade, EXCLUDED.shade), caliber = coalesce(lots.caliber, EXCLUDED.caliber),
                    expiry = coalesce(lots.expiry, EXCLUDED.expiry)
            RETURNING id
            """
        ),
        {
            "product_id": product_id,
            "lot_code": lot_code,
            "shade": shade,
            "caliber": caliber,
            "expiry": expiry,
        },
    ).scalar_one()
    conn.execute(
        text(
            """
            INSERT INTO stock_balances (product_id, warehouse_id, lot_id) VALUES (:p, :w, :l)
            ON CONFLICT (product_id, warehouse_id, lot_id) DO NOTHING
            """
        ),
        {"p": product_id, "w": warehouse_id, "l": lot_id},
    )
    row = conn.execute(
        text(_STOCK_SELECT + " WHERE b.product_id = :p AND b.warehouse_id = :w AND b.lot_id = :l"),
        {"p": product_id, "w": warehouse_id, "l": lot_id},
    ).one()
    return LotStock(*row)


def save_stocks(conn: Connection, stocks: Sequence[LotStock]) -> None:
    if not stocks:
        return
    conn.execute(
        text(
            """
            UPDATE stock_balances b SET on_hand = v.on_hand, reserved = v.reserved, updated_at = now()
            FROM unnest(CAST(:ids AS bigint[]), CAST(:on_hand AS numeric[]), CAST(:reserved AS numeric[]))
                 AS v(id, on_hand, reserved)
            WHERE b.id = v.id
            """
        ),
        {
            "ids": [s.balance_id for s in stocks],
            "on_hand": [s.on_hand for s in stocks],
            "reserved": [s.reserved for s in stocks],
        },
    )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    movement: Movement
    command_seq: int
    hold_id: str | None = None
    line_no: int | None = None


def insert_movements(conn: Connection, entries: Sequence[LedgerEntry]) -> None:
    if not entries:
        return
    conn.execute(
        insert(models.Movement),
        [
            {
                "product_id": e.movement.stock.product_id,
                "warehouse_id": e.movement.stock.warehouse_id,
                "lot_id": e.movement.stock.lot_id,
                "kind": e.movement.kind.value,
                "d_on_hand": e.movement.on_hand,
                "d_reserved": e.movement.reserved,
                "command_seq": e.command_seq,
                "hold_id": uuid.UUID(e.hold_id) if e.hold_id else None,
                "line_no": e.line_no,
            }
            for e in entries
        ],
    )


def save_lines(conn: Connection, lines: Sequence[HoldLine]) -> None:
    if not lines:
        return
    conn.execute(
        text(
            """
            UPDATE hold_lines h SET status = v.status, warehouse_id = v.warehouse_id, lot_id = v.lot_id,
                   allocated = v.allocated, reason = v.reason, available = v.available,
                   largest_lot = v.largest_lot
            FROM unnest(CAST(:hold_ids AS uuid[]), CAST(:line_nos AS int[]), CAST(:statuses AS text[]),
                        CAST(:warehouse_ids AS int[]), CAST(:lot_ids AS int[]), CAST(:allocated AS numeric[]),
                        CAST(:reasons AS text[]), CAST(:available AS numeric[]), CAST(:largest AS jsonb[]))
                 AS v(hold_id, line_no, status, warehouse_id, lot_id, allocated, reason, available, largest_lot)
            WHERE h.hold_id = v.hold_id AND h.line_no = v.line_no
            """
        ),
        {
            "hold_ids": [uuid.UUID(line.hold_id) for line in lines],
            "line_nos": [line.line_no for line in lines],
            "statuses": [line.status.value for line in lines],
            "warehouse_ids": [line.warehouse_id for line in lines],
            "lot_ids": [line.lot_id for line in lines],
            "allocated": [line.allocated for line in lines],
            "reasons": [line.reason for line in lines],
            "available": [line.available for line in lines],
            "largest": [json.dumps(line.largest_lot) if line.largest_lot else None for line in lines],
        },
    )


def save_holds(conn: Connection, holds: Sequence[Hold]) -> None:
    if not holds:
        return
    conn.execute(
        text(
            """
            UPDATE holds h SET status = v.status, payment = v.payment, lines_pending = v.lines_pending,
                   updated_at = now(),
                   settled_at = CASE WHEN v.status IN ('pending', 'reallocating') THEN h.settled_at
                                     ELSE coalesce(h.settled_at, now()) END
            FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:payments AS text[]),
                        CAST(:pending AS int[])) AS v(id, status, payment, lines_pending)
            WHERE h.id = v.id
            """
        ),
        {
            "ids": [uuid.UUID(h.id) for h in holds],
            "statuses": [h.status.value for h in holds],
            "payments": [h.payment.value for h in holds],
            "pending": [h.lines_pending for h in holds],
        },
    )


def insert_commands(conn: Connection, commands: Sequence[NewCommand]) -> None:
    """Follow-up commands; a key already recorded (a replayed batch) is left as it is."""
    if not commands:
        return
    conn.execute(
        pg_insert(models.Command).on_conflict_do_nothing(index_elements=["idempotency_key"]),
        [
            {
                "idempotency_key": c.key,
                "kind": c.kind,
                "payload": c.payload,
                "payload_hash": c.payload_hash,
                "shard": c.shard,
                "status": c.status,
                "not_before": c.not_before,
            }
            for c in commands
        ],
    )


def finish_batch(
    conn: Connection,
    *,
    shard: int,
    epoch: int,
    holder: str,
    started_at: dt.datetime,
    results: dict[int, dict[str, Any]],
) -> int:
    """Mark the batch's commands applied with their results, and log the batch; returns its id."""
    return int(
        conn.execute(
            text(
                """
                WITH batch AS (
                    INSERT INTO apply_batches (shard, epoch, holder, commands, started_at, finished_at)
                    VALUES (:shard, :epoch, :holder, :count, :started_at, clock_timestamp())
                    RETURNING id
                ), applied AS (
                    UPDATE commands c SET status = 'applied', result = v.result, applied_at = clock_timestamp(),
                           batch_id = (SELECT id FROM batch)
                    FROM unnest(CAST(:seqs AS bigint[]), CAST(:results AS jsonb[])) AS v(seq, result)
                    WHERE c.seq = v.seq
                )
                SELECT id FROM batch
                """
            ),
            {
                "shard": shard,
                "epoch": epoch,
                "holder": holder,
                "count": len(results),
                "started_at": started_at,
                "seqs": list(results),
                "results": [json.dumps(r, default=str) for r in results.values()],
            },
        ).scalar_one()
    )


def insert_events(conn: Connection, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    if events:
        conn.execute(
            insert(models.OutboxEvent),
            [{"topic": topic, "payload": json.loads(json.dumps(p, default=str))} for topic, p in events],
        )


def raise_alert(
    conn: Connection,
    *,
    kind: str,
    severity: str,
    product_id: int | None,
    warehouse_id: int | None,
    detail: dict[str, Any],
) -> None:
    """Open the alert, or add this occurrence to the one already open for (kind, product, warehouse)."""
    conn.execute(
        text(
            """
            INSERT INTO alerts (kind, severity, product_id, warehouse_id, details)
            VALUES (:kind, :severity, :product_id, :warehouse_id, jsonb_build_array(CAST(:detail AS jsonb)))
            ON CONFLICT (kind, coalesce(product_id, 0), coalesce(warehouse_id, 0)) WHERE status <> 'resolved'
            DO UPDATE SET details = alerts.details || EXCLUDED.details, occurrences = alerts.occurrences + 1,
                          updated_at = now()
            """
        ),
        {
            "kind": kind,
            "severity": severity,
            "product_id": product_id,
            "warehouse_id": warehouse_id,
            "detail": json.dumps(detail, default=str),
        },
    )
