"""The rows of warehouse operations that outlive their command (a transfer on its way, an adjustment
waiting for approval, a quarantined receipt line): loaded with a batch's claim when a due command's
payload names one, and upserted with the batch's writes.

Each table is declared once here, with the columns the writer reads and writes: the claim's part
that loads its rows and the writes' part that saves them are built from the declaration, so a new
operation adds a table here and touches neither statement. Rows travel as dicts of the column
values; numbers come back as text (read them into Decimal), ids as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordTable:
    """A table of operation rows keyed by a UUID the producer drew.

    Parameters:
      name: the table.
      payload_key: the field of a command's payload that names a row of it (``transfer_id``).
      columns: column → SQL type, the writer's columns (`id` first; `created_at` and `updated_at`
        are the statement's).
    """

    name: str
    payload_key: str
    columns: Mapping[str, str]

    def load(self) -> str:
        """The rows whose ids are given (parameter named after the table), as JSON objects with
        numbers as text."""
        values = ", ".join(
            f"'{column}', t.{column}" + ("::text" if kind == "numeric" else "")
            for column, kind in self.columns.items()
        )
        return (
            f"(SELECT json_agg(json_build_object({values})) FROM {self.name} AS t "
            f"WHERE t.id = ANY(%({self.name})s::uuid[]))"
        )

    def upsert(self) -> str:
        """The writes' part: insert the batch's rows, or update them, all at the batch's clock."""
        names = ", ".join(self.columns)
        typed = ", ".join(f"{column} {kind}" for column, kind in self.columns.items())
        changed = ", ".join(f"{column} = EXCLUDED.{column}" for column in self.columns if column != "id")
        return (
            f"{self.name} AS (INSERT INTO {self.name} ({names}, updated_at) "
            f"SELECT v.*, (SELECT at FROM clock) FROM jsonb_to_recordset(%({self.name})s::jsonb) AS v({typed}) "
            f"ON CONFLICT (id) DO UPDATE SET {changed}, updated_at = EXCLUDED.updated_at RETURNING 1), "
        )


_PEOPLE = {
    "requested_by_token_id": "int",
    "requested_by": "text",
    "decided_by_token_id": "int",
    "decided_by": "text",
}


def asked(seq: int, payload: Mapping[str, Any]) -> Row:
    """The people columns of a row its command creates: who asked (the payload's actor), no decision yet."""
    return {
        "requested_by_token_id": payload.get("actor_token_id"),
        "requested_by": payload.get("actor"),
        "decided_by_token_id": None,
        "decided_by": None,
        "command_seq": seq,
        "decided_seq": None,
    }


def decided(seq: int, payload: Mapping[str, Any]) -> Row:
    """The columns a deciding command (a transfer's receipt, an approval) sets: who, and which command."""
    return {
        "decided_by_token_id": payload.get("actor_token_id"),
        "decided_by": payload.get("actor"),
        "decided_seq": seq,
    }


TRANSFERS = RecordTable(
    "transfers",
    "transfer_id",
    {
        "id": "uuid",
        "product_id": "int",
        "lot_id": "int",
        "from_warehouse_id": "int",
        "to_warehouse_id": "int",
        "quantity": "numeric",
        "received": "numeric",
        "damaged": "numeric",
        "status": "text",
        "unit_cost": "numeric",
        "reason": "text",
        **_PEOPLE,
        "command_seq": "bigint",
        "decided_seq": "bigint",
    },
)
ADJUSTMENTS = RecordTable(
    "adjustments",
    "adjustment_id",
    {
        "id": "uuid",
        "product_id": "int",
        "warehouse_id": "int",
        "lot_id": "int",
        "quantity": "numeric",
        "status": "text",
        "unit_cost": "numeric",
        "reason": "text",
        "note": "text",
        **_PEOPLE,
        "command_seq": "bigint",
        "decided_seq": "bigint",
    },
)
QUARANTINES = RecordTable(
    "quarantines",
    "quarantine_id",
    {
        "id": "uuid",
        "product_id": "int",
        "warehouse_id": "int",
        "lot_id": "int",
        "quantity": "numeric",
        "released": "numeric",
        "written_off": "numeric",
        "status": "text",
        "command_seq": "bigint",
    },
)
RECORD_TABLES = {table.name: table for table in (TRANSFERS, ADJUSTMENTS, QUARANTINES)}
