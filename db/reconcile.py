"""Ledger = balances, and reserved = Σ active hold lines, per (product, warehouse, lot)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, text

_LEDGER = """
    WITH ledger AS (
        SELECT product_id, warehouse_id, lot_id, sum(d_on_hand) AS on_hand, sum(d_reserved) AS reserved,
               sum(d_in_transit) AS in_transit, sum(d_damaged) AS damaged, sum(d_quarantine) AS quarantine
        FROM movements GROUP BY 1, 2, 3
    )
    SELECT p.sku, w.code AS warehouse, l.lot_code AS lot, bucket, balance, ledger
    FROM stock_balances b
    FULL JOIN ledger m USING (product_id, warehouse_id, lot_id)
    JOIN products p ON p.id = coalesce(b.product_id, m.product_id)
    JOIN warehouses w ON w.id = coalesce(b.warehouse_id, m.warehouse_id)
    JOIN lots l ON l.id = coalesce(b.lot_id, m.lot_id)
    CROSS JOIN LATERAL (VALUES
        ('on_hand', coalesce(b.on_hand, 0), coalesce(m.on_hand, 0)),
        ('reserved', coalesce(b.reserved, 0), coalesce(m.reserved, 0)),
        ('in_transit', coalesce(b.in_transit, 0), coalesce(m.in_transit, 0)),
        ('damaged', coalesce(b.damaged, 0), coalesce(m.damaged, 0)),
        ('quarantine', coalesce(b.quarantine, 0), coalesce(m.quarantine, 0))
    ) AS v(bucket, balance, ledger)
    WHERE balance <> ledger
    ORDER BY 1, 2, 3, 4
"""

_HOLDS = """
    WITH held AS (
        SELECT product_id, warehouse_id, lot_id, sum(allocated) AS reserved
        FROM hold_lines WHERE status = 'reserved' GROUP BY 1, 2, 3
    )
    SELECT p.sku, w.code AS warehouse, l.lot_code AS lot, 'reserved_vs_holds' AS bucket,
           coalesce(b.reserved, 0) AS balance, coalesce(h.reserved, 0) AS ledger
    FROM stock_balances b
    FULL JOIN held h USING (product_id, warehouse_id, lot_id)
    JOIN products p ON p.id = coalesce(b.product_id, h.product_id)
    JOIN warehouses w ON w.id = coalesce(b.warehouse_id, h.warehouse_id)
    JOIN lots l ON l.id = coalesce(b.lot_id, h.lot_id)
    WHERE coalesce(b.reserved, 0) <> coalesce(h.reserved, 0)
    ORDER BY 1, 2, 3
"""


@dataclass(frozen=True, slots=True)
class Difference:
    sku: str
    warehouse: str
    lot: str
    bucket: str
    balance: Decimal
    expected: Decimal

    def __str__(self) -> str:
        source = "active hold lines" if self.bucket == "reserved_vs_holds" else "ledger"
        return (
            f"{self.sku} @ {self.warehouse} lot {self.lot}: {self.bucket} balance {self.balance} "
            f"≠ {source} {self.expected}"
        )


def reconcile(conn: Connection) -> list[Difference]:
    """Every disagreement between balances and the ledger or the active holds (empty = clean)."""
    rows = list(conn.execute(text(_LEDGER))) + list(conn.execute(text(_HOLDS)))
    return [Difference(*row) for row in rows]
