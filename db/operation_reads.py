"""What recording a warehouse operation reads first: the warehouses it names (open or not), the
lot it names, the operation a follow-up names (a transfer to receive, an adjustment to approve) and
the sold lines a return names, a product's approval thresholds. One statement each, on the recorder's connection."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from db.sql import Pg
from domain.allocation import WarehouseRoute
from domain.quantities import Packaging
from domain.states import HoldLine, LineStatus


def warehouse_routes(pg: Pg, codes: Sequence[str]) -> dict[str, WarehouseRoute]:
    """The named warehouses by code, closed ones too (a transfer says which end is closed)."""
    rows = pg.execute(
        "SELECT id, code, can_ship, priority, active, can_receive FROM warehouses WHERE code = ANY(%(c)s)",
        {"c": list(codes)},
    ).fetchall()
    return {row[1]: WarehouseRoute(*row) for row in rows}


def lot_id(pg: Pg, product_id: int, lot_code: str) -> int | None:
    row = pg.execute(
        "SELECT id FROM lots WHERE product_id = %(p)s AND lot_code = %(lot)s",
        {"p": product_id, "lot": lot_code},
    ).fetchone()
    return int(row[0]) if row else None


def adjustment_thresholds(pg: Pg, product_id: int) -> tuple[Decimal | None, Decimal | None]:
    """The product's own adjustment approval thresholds (pieces, value); None: the global one."""
    row = pg.execute(
        "SELECT adjustment_approval_pieces, adjustment_approval_value FROM products WHERE id = %(p)s",
        {"p": product_id},
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a transfer or adjustment lives (its product, hence its shard), who asked for it, and
    its status (`recorded`: its creation is not applied yet; `refused`: it was refused)."""

    product_id: int
    sku: str
    status: str
    requested_by: str | None
    requested_by_token_id: int | None


# The operation's row once its creation applied; before that, the recorded command that creates it,
# found by the id in its payload (the kind and key written out, as the partial index on that
# expression is declared: migration 0011); a creation refused left no row.
_ORIGIN = """
    SELECT t.product_id, p.sku, t.status, t.requested_by, t.requested_by_token_id
    FROM {table} t JOIN products p ON p.id = t.product_id WHERE t.id = %(id)s
    UNION ALL
    SELECT (c.payload->>'product_id')::int, c.payload->>'sku',
           CASE WHEN c.status = 'applied' THEN 'refused' ELSE c.status END,
           c.payload->>'actor', (c.payload->>'actor_token_id')::int
    FROM commands c WHERE c.kind = '{kind}' AND c.payload->>'{key}' = %(id_text)s
      AND NOT EXISTS (SELECT 1 FROM {table} WHERE id = %(id)s)
    LIMIT 1
"""
ORIGINS = {
    "transfer": _ORIGIN.format(table="transfers", kind="stock.transfer", key="transfer_id"),
    "adjustment": _ORIGIN.format(table="adjustments", kind="stock.adjust", key="adjustment_id"),
}


def operation_origin(pg: Pg, what: str, operation_id: str) -> Origin | None:
    """Where the transfer or adjustment (`what`) with this id lives, and who asked for it."""
    row = pg.execute(ORIGINS[what], {"id": uuid.UUID(operation_id), "id_text": operation_id}).fetchone()
    return Origin(*row) if row else None


@dataclass(frozen=True, slots=True)
class SoldLine:
    line: HoldLine
    packaging: Packaging


def hold_lines(pg: Pg, hold_id: str) -> dict[int, SoldLine]:
    """A hold's lines by number (none: no such hold), with what each sold and got back."""
    rows = pg.execute(
        """
        SELECT l.line_no, l.product_id, p.sku, l.pieces, l.status, l.warehouse_id, l.lot_id, l.allocated,
               l.returned, p.pieces_per_box, p.sqm_per_box, p.allow_partial_boxes
        FROM hold_lines l JOIN products p ON p.id = l.product_id WHERE l.hold_id = %(h)s ORDER BY l.line_no
        """,
        {"h": uuid.UUID(hold_id)},
    ).fetchall()
    return {
        row[0]: SoldLine(
            HoldLine(
                hold_id,
                row[0],
                row[1],
                row[2],
                Decimal(row[3]),
                LineStatus(row[4]),
                warehouse_id=row[5],
                lot_id=row[6],
                allocated=Decimal(row[7]),
                returned=Decimal(row[8]),
            ),
            Packaging(row[9], row[10], row[11]),
        )
        for row in rows
    }
