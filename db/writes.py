"""The end of every batch: everything it decided, written in one statement, set-based.

The writer sends `send_writes` inside its own pipeline, then its COMMIT: a batch's writes and
commit are one round trip, whatever its size. No business rule lives here.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from db.batch_state import InboxCommand
from db.inbox import INSERT_COMMANDS, NewCommand, command_rows
from db.records import RECORD_TABLES, Row
from db.sql import Pg, array_param, compact, json_param, number_array
from domain.allocation import LotStock
from domain.movements import Movement
from domain.receipts import LotFacts
from domain.states import UNSETTLED, Hold, HoldLine
from domain.valuation import Valuation


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    movement: Movement
    command_seq: int
    hold_id: str | None = None
    line_no: int | None = None
    actor: str | None = None
    """Who asked (a token's name); None: the system."""


@dataclass(frozen=True, slots=True)
class HoldAlert:
    """A hold's `paid_without_stock` alert, raised (or, refunded in the same batch, resolved at once)."""

    hold_id: str
    detail: dict[str, Any]
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class StockAlert:
    """An alert about a product in a warehouse (`count_below_reserved`, …): raised, or if one is
    open already, its details added to."""

    kind: str
    severity: str
    product_id: int
    warehouse_id: int | None
    details: list[dict[str, Any]]


@dataclass(slots=True)
class BatchWrites:
    stocks: Sequence[LotStock]
    """Every balance the batch changed or created (those in `new_stocks` are inserted)."""
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
    new_lots: Sequence[LotStock] = ()
    """The lots the batch created (one balance each, with the lot's facts), by their drawn ids."""
    new_stocks: set[int] = field(default_factory=set)
    """The balance ids, among `stocks`, that the batch created."""
    lot_facts: Mapping[int, LotFacts] = field(default_factory=dict)
    """Known lots whose missing facts a receipt stated: lot id → the facts to fill in."""
    valuations: Sequence[Valuation] | None = None
    """The valuations the batch changed, written whole; None: the batch loaded none (no stock
    command), and its ledger's on_hand changes are added to the valuations' quantities in SQL."""
    stock_alerts: Sequence[StockAlert] = ()
    records: Mapping[str, Sequence[Row]] = field(default_factory=dict)
    """table → the operation rows the batch wrote (`db.records`), upserted whole."""
    warehouse_ledger: bool = False
    """Whether a movement changes in_transit, damaged or quarantine, or has a cost, a reason or an
    actor (else the ledger's rows are written without those columns, which keep their defaults)."""


# A batch's writes are one statement, each table a data-modifying part of it (a part with no rows
# does nothing): one parse, plan and execution instead of seven.
# Each part also names its keys in an "= ANY(array)" condition: the planner then looks them up by
# index. Joined only to a function's rows, it may hash the whole table instead, on fast growing
# tables whose statistics lag behind, and each batch gets slower than the last.
# Every row the batch writes carries one time, taken as the batch is written: when its commands were
# applied (never before a command was recorded, as the transaction's start can be).
# One open alert per (kind, product, warehouse, hold): the unique index alerts' upserts conflict on.
BUCKETS = ("on_hand", "reserved", "in_transit", "damaged", "quarantine")
_OPEN_ALERT = (
    "kind, coalesce(product_id, 0), coalesce(warehouse_id, 0), "
    "coalesce(hold_id, '00000000-0000-0000-0000-000000000000'::uuid)"
)
_SAVE_BATCH_TEMPLATE = f"""
    WITH clock AS (SELECT clock_timestamp() AS at), {{parts}}stocks AS (
        UPDATE stock_balances b SET on_hand = v.on_hand, reserved = v.reserved, in_transit = v.in_transit,
               damaged = v.damaged, quarantine = v.quarantine, updated_at = (SELECT at FROM clock)
        FROM unnest(%(stock_ids)s::bigint[], %(stock_on_hand)s::numeric[], %(stock_reserved)s::numeric[],
                    %(stock_in_transit)s::numeric[], %(stock_damaged)s::numeric[], %(stock_quarantine)s::numeric[])
             AS v(id, on_hand, reserved, in_transit, damaged, quarantine)
        WHERE b.id = v.id AND b.id = ANY(%(stock_ids)s::bigint[])
        RETURNING 1
    ), {{ledger}}, lines AS (
        UPDATE hold_lines h SET status = v.status, warehouse_id = v.warehouse_id, lot_id = v.lot_id,
               allocated = v.allocated, returned = v.returned, reason = v.reason, available = v.available,
               largest_lot = v.largest_lot
        FROM jsonb_to_recordset(%(lines)s::jsonb)
             AS v(hold_id uuid, line_no int, status text, warehouse_id int, lot_id int, allocated numeric,
                  returned numeric, reason text, available numeric, largest_lot jsonb)
        WHERE h.hold_id = v.hold_id AND h.line_no = v.line_no AND h.hold_id = ANY(%(line_hold_ids)s::uuid[])
        RETURNING 1
    ), holds AS (
        UPDATE holds h SET status = v.status, payment = v.payment, lines_pending = v.lines_pending,
               updated_at = (SELECT at FROM clock),
               settled_at = CASE WHEN v.status = ANY(%(unsettled)s::text[]) THEN h.settled_at
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
        ON CONFLICT ({_OPEN_ALERT}) WHERE status <> 'resolved'
        DO UPDATE SET details = alerts.details || EXCLUDED.details, occurrences = alerts.occurrences + 1,
                      updated_at = EXCLUDED.updated_at
        RETURNING 1
    ), alerts_resolved AS (
        UPDATE alerts a SET status = 'resolved', resolved_at = (SELECT at FROM clock), updated_at = (SELECT at FROM clock)
        WHERE a.hold_id = ANY(%(resolved_alerts)s::uuid[]) AND a.kind = 'paid_without_stock' AND a.status <> 'resolved'
        RETURNING 1
    ), follow_ups AS ({INSERT_COMMANDS}), events AS (
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

# The parts a batch sends only when it has their rows, written before the others (each ends in ", ").
# A batch that received goods into a lot it creates, or completed a known lot's facts, writes those;
# the others (nearly all) send the statement without them.
_LOT_PARTS = """new_lots AS (
        INSERT INTO lots (id, product_id, lot_code, shade, caliber, expiry, received_at)
        SELECT v.*, (SELECT at FROM clock)
        FROM jsonb_to_recordset(%(new_lots)s::jsonb)
             AS v(id int, product_id int, lot_code text, shade text, caliber text, expiry date)
        RETURNING 1
    ), lot_facts AS (
        -- a fact a known lot had not stated yet, stated by a receipt (see domain.receipts)
        UPDATE lots l SET shade = coalesce(l.shade, v.shade), caliber = coalesce(l.caliber, v.caliber),
               expiry = coalesce(l.expiry, v.expiry)
        FROM jsonb_to_recordset(%(lot_facts)s::jsonb) AS v(id int, shade text, caliber text, expiry date)
        WHERE l.id = v.id AND l.id = ANY(%(lot_fact_ids)s::int[])
        RETURNING 1
    ), new_stocks AS (
        INSERT INTO stock_balances (id, product_id, warehouse_id, lot_id, on_hand, reserved, in_transit, damaged,
                                    quarantine, updated_at)
        SELECT v.*, (SELECT at FROM clock)
        FROM jsonb_to_recordset(%(new_stocks)s::jsonb)
             AS v(id bigint, product_id int, warehouse_id int, lot_id int, on_hand numeric, reserved numeric,
                  in_transit numeric, damaged numeric, quarantine numeric)
        RETURNING 1), """
# A batch of stock commands loaded the valuations of its products and writes those it changed, whole.
_VALUATIONS = """valuations AS (
        INSERT INTO stock_valuations AS s (product_id, warehouse_id, quantity, average_cost, updated_at)
        SELECT v.*, (SELECT at FROM clock)
        FROM jsonb_to_recordset(%(valuations)s::jsonb)
             AS v(product_id int, warehouse_id int, quantity numeric, average_cost numeric)
        ON CONFLICT (product_id, warehouse_id) DO UPDATE SET quantity = EXCLUDED.quantity,
            average_cost = EXCLUDED.average_cost, updated_at = EXCLUDED.updated_at
        RETURNING 1), """
# Any other batch (holds: a sale, a refund) loaded none: what its ledger moved in or out of on_hand
# is added to the quantity of the valuations there are, from the ledger's own parameters.
_VALUATION_QUANTITIES = """valuation_quantities AS (
        UPDATE stock_valuations s SET quantity = s.quantity + v.on_hand, updated_at = (SELECT at FROM clock)
        FROM (SELECT product_id, warehouse_id, sum(on_hand) AS on_hand
              FROM unnest(%(move_product_ids)s::int[], %(move_warehouse_ids)s::int[], %(move_on_hand)s::numeric[])
                   AS m(product_id, warehouse_id, on_hand)
              GROUP BY 1, 2 HAVING sum(on_hand) <> 0) AS v
        WHERE s.product_id = v.product_id AND s.warehouse_id = v.warehouse_id
          AND s.product_id = ANY(%(move_product_ids)s::int[])
        RETURNING 1), """
_STOCK_ALERTS = f"""stock_alerts AS (
        INSERT INTO alerts (kind, severity, product_id, warehouse_id, details, raised_at, updated_at)
        SELECT v.*, (SELECT at FROM clock), (SELECT at FROM clock)
        FROM jsonb_to_recordset(%(stock_alerts)s::jsonb)
             AS v(kind text, severity text, product_id int, warehouse_id int, details jsonb)
        ON CONFLICT ({_OPEN_ALERT}) WHERE status <> 'resolved'
        DO UPDATE SET details = alerts.details || EXCLUDED.details, occurrences = alerts.occurrences + 1,
                      updated_at = EXCLUDED.updated_at
        RETURNING 1), """
_PARTS = {
    "lots": _LOT_PARTS,
    "valuations": _VALUATIONS,
    "valuation_quantities": _VALUATION_QUANTITIES,
    "stock_alerts": _STOCK_ALERTS,
    **{name: table.upsert() for name, table in RECORD_TABLES.items()},
}


# The ledger's columns, each with its parameter and type. A batch whose movements change only on_hand
# and reserved and carry no cost, reason or actor (a batch of holds: nearly all of them) sends the
# first group alone, and the others take their defaults (0, NULL): seven arrays of zeros and NULLs
# fewer per batch, a third of its ledger's parameters.
_LEDGER_COLUMNS = (
    ("product_id", "move_product_ids", "int"),
    ("warehouse_id", "move_warehouse_ids", "int"),
    ("lot_id", "move_lot_ids", "int"),
    ("kind", "move_kinds", "text"),
    ("d_on_hand", "move_on_hand", "numeric"),
    ("d_reserved", "move_reserved", "numeric"),
    *((f"{bucket}_after", f"{bucket}_after", "numeric") for bucket in BUCKETS),
    ("command_seq", "move_seqs", "bigint"),
    ("hold_id", "move_hold_ids", "uuid"),
    ("line_no", "move_line_nos", "int"),
)
_WAREHOUSE_LEDGER_COLUMNS = (
    ("d_in_transit", "move_in_transit", "numeric"),
    ("d_damaged", "move_damaged", "numeric"),
    ("d_quarantine", "move_quarantine", "numeric"),
    ("unit_cost", "move_unit_costs", "numeric"),
    ("total_cost", "move_total_costs", "numeric"),
    ("reason", "move_reasons", "text"),
    ("actor", "move_actors", "text"),
)


def _ledger_part(every_column: bool) -> str:
    """The ledger's part: every column, or the holds' (see _LEDGER_COLUMNS). A hold's line command
    decides no cost (a batch of holds loads no valuations), so a sale or a refund's return without
    one takes the average cost of its product at its warehouse here; the lateral lookup keeps the
    rows in their order."""
    columns = _LEDGER_COLUMNS + (_WAREHOUSE_LEDGER_COLUMNS if every_column else ())
    names = [column for column, _, _ in columns]
    arrays = ", ".join(f"%({param})s::{kind}[]" for _, param, kind in columns)
    costed = {
        "unit_cost": "coalesce(m.unit_cost, v.average_cost)" if every_column else "v.average_cost",
        "total_cost": (
            "coalesce(m.total_cost, round(abs(m.d_on_hand) * v.average_cost, 4))"
            if every_column
            else "round(abs(m.d_on_hand) * v.average_cost, 4)"
        ),
    }
    values = [f"m.{name}" for name in names if name not in costed] + list(costed.values())
    inserted = [name for name in names if name not in costed] + list(costed)
    return (
        f"ledger AS (INSERT INTO movements ({', '.join(inserted)}, created_at) "
        f"SELECT {', '.join(values)}, (SELECT at FROM clock) FROM unnest({arrays}) AS m({', '.join(names)}) "
        "LEFT JOIN LATERAL (SELECT average_cost FROM stock_valuations v WHERE m.kind IN ('sale', 'return') "
        "AND v.product_id = m.product_id AND v.warehouse_id = m.warehouse_id) AS v ON true RETURNING 1)"
    )


@functools.cache
def _statement(parts: tuple[str, ...], every_column: bool) -> str:
    """The batch's statement with these optional parts, and its ledger with every column or the
    holds' (a few texts in all, each made once)."""
    ledger = _ledger_part(every_column)
    return compact(
        _SAVE_BATCH_TEMPLATE.replace("{parts}", "".join(_PARTS[part] for part in parts)).replace(
            "{ledger}", ledger
        )
    )


def send_writes(
    pg: Pg, writes: BatchWrites, *, leases: Mapping[int, int], holder: str, started_at: dt.datetime
) -> None:
    """Send every write of the batch, one statement (in the caller's pipeline and transaction)."""
    parts, params = _optional_parts(writes)
    pg.execute(
        _statement(parts, writes.warehouse_ledger),
        {
            **params,
            **_stock_params(writes),
            **_ledger_params(writes),
            **_hold_params(writes),
            "commands": command_rows(writes.commands),
            "events": json_param([{"topic": t, "payload": p} for t, p in writes.events]),
            "holder": holder,
            "started_at": started_at,
            "shards": json_param(
                [
                    {"shard": shard, "epoch": leases[shard], "commands": count}
                    for shard, count in Counter(c.shard for c, _ in writes.results).items()
                ]
            ),
            "results": json_param(
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
            "seqs": array_param(c.seq for c, _ in writes.results),
        },
    )


def _optional_parts(writes: BatchWrites) -> tuple[tuple[str, ...], dict[str, str]]:
    """The optional parts this batch needs, and their parameters."""
    parts: list[str] = []
    params: dict[str, str] = {}
    if writes.new_lots or writes.new_stocks or writes.lot_facts:
        parts.append("lots")
        params.update(_lot_params(writes))
    if writes.valuations is None:
        parts.append("valuation_quantities")
    elif writes.valuations:
        parts.append("valuations")
        params["valuations"] = json_param(
            [
                {
                    "product_id": v.product_id,
                    "warehouse_id": v.warehouse_id,
                    "quantity": v.quantity,
                    "average_cost": v.average_cost,
                }
                for v in writes.valuations
            ]
        )
    if writes.stock_alerts:
        parts.append("stock_alerts")
        params["stock_alerts"] = json_param(
            [
                {
                    "kind": a.kind,
                    "severity": a.severity,
                    "product_id": a.product_id,
                    "warehouse_id": a.warehouse_id,
                    "details": a.details,
                }
                for a in writes.stock_alerts
            ]
        )
    for table, rows in writes.records.items():
        if rows:
            parts.append(table)
            params[table] = json_param(list(rows))
    return tuple(parts), params


def _stock_params(writes: BatchWrites) -> dict[str, str]:
    changed = [s for s in writes.stocks if s.balance_id not in writes.new_stocks]
    return {
        "stock_ids": number_array([s.balance_id for s in changed]),
        "stock_on_hand": number_array([s.on_hand for s in changed]),
        "stock_reserved": number_array([s.reserved for s in changed]),
        "stock_in_transit": number_array([s.in_transit for s in changed]),
        "stock_damaged": number_array([s.damaged for s in changed]),
        "stock_quarantine": number_array([s.quarantine for s in changed]),
    }


def _lot_params(writes: BatchWrites) -> dict[str, str]:
    created = [s for s in writes.stocks if s.balance_id in writes.new_stocks]
    return {
        "new_stocks": json_param(
            [
                {
                    "id": s.balance_id,
                    "product_id": s.product_id,
                    "warehouse_id": s.warehouse_id,
                    "lot_id": s.lot_id,
                    "on_hand": s.on_hand,
                    "reserved": s.reserved,
                    "in_transit": s.in_transit,
                    "damaged": s.damaged,
                    "quarantine": s.quarantine,
                }
                for s in created
            ]
        ),
        "new_lots": json_param(
            [
                {
                    "id": s.lot_id,
                    "product_id": s.product_id,
                    "lot_code": s.lot_code,
                    "shade": s.shade,
                    "caliber": s.caliber,
                    "expiry": s.expiry,
                }
                for s in writes.new_lots
            ]
        ),
        "lot_facts": json_param(
            [
                {"id": lot_id, "shade": f.shade, "caliber": f.caliber, "expiry": f.expiry}
                for lot_id, f in writes.lot_facts.items()
            ]
        ),
        "lot_fact_ids": array_param(writes.lot_facts),
    }


def _ledger_params(writes: BatchWrites) -> dict[str, str]:
    moves = [e.movement for e in writes.ledger]
    after = list(zip(*(m.after for m in moves), strict=True)) or [()] * len(BUCKETS)
    params = {
        "move_product_ids": number_array([m.stock.product_id for m in moves]),
        "move_warehouse_ids": number_array([m.stock.warehouse_id for m in moves]),
        "move_lot_ids": number_array([m.stock.lot_id for m in moves]),
        "move_kinds": array_param(m.kind.value for m in moves),
        "move_on_hand": number_array([m.on_hand for m in moves]),
        "move_reserved": number_array([m.reserved for m in moves]),
        **{f"{bucket}_after": number_array(values) for bucket, values in zip(BUCKETS, after, strict=True)},
        "move_seqs": number_array([e.command_seq for e in writes.ledger]),
        "move_hold_ids": array_param(e.hold_id for e in writes.ledger),
        "move_line_nos": array_param(e.line_no for e in writes.ledger),
    }
    if not writes.warehouse_ledger:
        return params
    return {
        **params,
        "move_in_transit": number_array([m.in_transit for m in moves]),
        "move_damaged": number_array([m.damaged for m in moves]),
        "move_quarantine": number_array([m.quarantine for m in moves]),
        "move_unit_costs": array_param(m.unit_cost for m in moves),
        "move_total_costs": array_param(m.total_cost for m in moves),
        "move_reasons": array_param(m.reason for m in moves),
        "move_actors": array_param(e.actor for e in writes.ledger),
    }


def _hold_params(writes: BatchWrites) -> dict[str, str]:
    return {
        "lines": json_param(
            [
                {
                    "hold_id": line.hold_id,
                    "line_no": line.line_no,
                    "status": line.status.value,
                    "warehouse_id": line.warehouse_id,
                    "lot_id": line.lot_id,
                    "allocated": line.allocated,
                    "returned": line.returned,
                    "reason": line.reason,
                    "available": line.available,
                    "largest_lot": line.largest_lot or None,
                }
                for line in writes.lines
            ]
        ),
        "line_hold_ids": array_param(line.hold_id for line in writes.lines),
        "hold_ids": array_param(h.id for h in writes.holds),
        "hold_statuses": array_param(h.status.value for h in writes.holds),
        "hold_payments": array_param(h.payment.value for h in writes.holds),
        "hold_pending": array_param(h.lines_pending for h in writes.holds),
        "unsettled": array_param(status.value for status in UNSETTLED),
        "alerts": json_param(
            [
                {"hold_id": a.hold_id, "detail": a.detail, "status": "resolved" if a.resolved else "open"}
                for a in writes.alerts
            ]
        ),
        "resolved_alerts": array_param(writes.resolved_alerts),
    }


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
