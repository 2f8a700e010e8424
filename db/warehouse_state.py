"""What a batch of stock commands loads besides its claim: the valuations of its products, the
operation rows its commands name (`db.records`) and the hold lines reserved on the balances its
counts name (a count below what is held names them). One statement, in the claim's transaction, sent
only when the claim took a stock command: a batch of holds needs none of it and its claim is
unchanged.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from db.batch_state import BatchState, InboxCommand
from db.records import RECORD_TABLES
from db.sql import Pg, array_param, compact
from domain.commands import StockCommand
from domain.counts import HeldLine
from domain.valuation import Valuation

STOCK_KINDS = "stock."
"""The prefix of the warehouse's command kinds (`domain.commands.StockCommand`)."""

_LOAD = compact(f"""
    SELECT
        (SELECT json_agg(json_build_array(v.product_id, v.warehouse_id, v.quantity::text, v.average_cost::text))
         FROM stock_valuations v WHERE v.product_id = ANY(%(products)s::int[])),
        json_build_object({", ".join(f"'{name}', {table.load()}" for name, table in RECORD_TABLES.items())}),
        (SELECT json_agg(json_build_array(l.product_id, l.warehouse_id, l.lot_id, l.hold_id, l.line_no,
                                          l.allocated::text) ORDER BY l.hold_id, l.line_no)
         FROM unnest(%(counted_products)s::int[], %(counted_warehouses)s::int[], %(counted_lots)s::int[])
              AS c(product_id, warehouse_id, lot_id)
         JOIN hold_lines l ON l.product_id = c.product_id AND l.status = 'reserved'
          AND l.warehouse_id = c.warehouse_id AND l.lot_id = c.lot_id)
""")


def load_warehouse_state(pg: Pg, commands: list[InboxCommand], state: BatchState) -> None:
    """Load into `state` the valuations of the products the batch loaded and the operation rows
    its commands' payloads name (a payload's id that is no UUID names none)."""
    named: dict[str, set[str]] = {table: set() for table in RECORD_TABLES}
    for command in commands:
        for table, declared in RECORD_TABLES.items():
            if (row_id := _uuid(command.payload.get(declared.payload_key))) is not None:
                named[table].add(row_id)
    counted = [
        (p["product_id"], p["warehouse_id"], p["lot_id"])
        for p in (c.payload for c in commands if c.kind == StockCommand.COUNT)
    ]
    row = pg.execute(
        _LOAD,
        {
            "products": array_param(state.stocks),
            **{table: array_param(ids) for table, ids in named.items()},
            **{
                f"counted_{part}": array_param(balance[i] for balance in counted)
                for i, part in enumerate(("products", "warehouses", "lots"))
            },
        },
    ).fetchone()
    assert row is not None
    valuations, records, held = row
    state.valuations = {
        (product_id, warehouse_id): Valuation(product_id, warehouse_id, Decimal(quantity), Decimal(cost))
        for product_id, warehouse_id, quantity, cost in valuations or []
    }
    state.records = {table: {r["id"]: r for r in rows or []} for table, rows in records.items()}
    for product_id, warehouse_id, lot_id, hold_id, line_no, pieces in held or []:
        state.held.setdefault((product_id, warehouse_id, lot_id), []).append(
            HeldLine(str(hold_id), line_no, Decimal(pieces))
        )


def _uuid(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value is not None else None
    except ValueError:
        return None
