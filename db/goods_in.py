"""What recording goods in, quarantine and damage reads: warehouses that take no goods, what is left
of a quarantined line, what is available in a lot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from db.sql import Pg
from domain.allocation import available
from domain.catalog import ProductRef
from domain.quantities import Packaging


def refusing_warehouses(pg: Pg, codes: Sequence[str]) -> set[str]:
    """The active warehouses among `codes` that goods may not arrive at."""
    rows = pg.execute(
        "SELECT code FROM warehouses WHERE code = ANY(%(c)s) AND active AND NOT can_receive",
        {"c": list(codes)},
    ).fetchall()
    return {code for (code,) in rows}


@dataclass(frozen=True, slots=True)
class QuarantineFacts:
    product: ProductRef
    left: Decimal
    """Pieces still in quarantine (quantity − released − written off)."""


def quarantine_facts(pg: Pg, quarantine_id: str) -> QuarantineFacts | None:
    """A quarantined receipt line's product and what is left of it (None: no such line)."""
    row = pg.execute(
        """
        SELECT p.id, p.sku, p.pieces_per_box, p.sqm_per_box, p.allow_partial_boxes,
               q.quantity - q.released - q.written_off
        FROM quarantines q JOIN products p ON p.id = q.product_id WHERE q.id = %(id)s
        """,
        {"id": quarantine_id},
    ).fetchone()
    if row is None:
        return None
    product_id, sku, pieces_per_box, sqm_per_box, partial, left = row
    return QuarantineFacts(ProductRef(product_id, sku, Packaging(pieces_per_box, sqm_per_box, partial)), left)


def lot_available(pg: Pg, product_id: int, warehouse_id: int, lot_code: str) -> Decimal | None:
    """What can be sold (so damaged) of a product's lot in a warehouse (None: no such balance)."""
    row = pg.execute(
        """
        SELECT b.on_hand, b.reserved, b.damaged, b.quarantine
        FROM stock_balances b JOIN lots l ON l.id = b.lot_id
        WHERE b.product_id = %(p)s AND b.warehouse_id = %(w)s AND l.lot_code = %(lot)s
        """,
        {"p": product_id, "w": warehouse_id, "lot": lot_code},
    ).fetchone()
    return None if row is None else available(*row)
