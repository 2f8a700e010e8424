"""What a batch of stock commands loads besides its claim: the valuations of its products and the
operation rows its commands name (`db.records`). One statement, in the claim's transaction, sent
only when the claim took a stock command: a batch of holds needs none of it and its claim is
unchanged.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from db.batch_state import BatchState, InboxCommand
from db.records import RECORD_TABLES
from db.sql import Pg, array_param, compact
from domain.valuation import Valuation

STOCK_KINDS = "stock."
"""The prefix of the warehouse's command kinds (`domain.commands.StockCommand`)."""

_LOAD = compact(f"""
    SELECT
        (SELECT json_agg(json_build_array(v.product_id, v.warehouse_id, v.quantity::text, v.average_cost::text))
         FROM stock_valuations v WHERE v.product_id = ANY(%(products)s::int[])),
        json_build_object({", ".join(f"'{name}', {table.load()}" for name, table in RECORD_TABLES.items())})
""")


def load_warehouse_state(pg: Pg, commands: list[InboxCommand], state: BatchState) -> None:
    """Load into `state` the valuations of the products the batch loaded and the operation rows
    its commands' payloads name (a payload's id that is no UUID names none)."""
    named: dict[str, set[str]] = {table: set() for table in RECORD_TABLES}
    for command in commands:
        for table, declared in RECORD_TABLES.items():
            if (row_id := _uuid(command.payload.get(declared.payload_key))) is not None:
                named[table].add(row_id)
    row = pg.execute(
        _LOAD,
        {"products": array_param(state.stocks), **{table: array_param(ids) for table, ids in named.items()}},
    ).fetchone()
    assert row is not None
    valuations, records = row
    state.valuations = {
        (product_id, warehouse_id): Valuation(product_id, warehouse_id, Decimal(quantity), Decimal(cost))
        for product_id, warehouse_id, quantity, cost in valuations or []
    }
    state.records = {table: {r["id"]: r for r in rows or []} for table, rows in records.items()}


def _uuid(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value is not None else None
    except ValueError:
        return None
