"""Ledger = balances, and reserved = Σ active hold lines, per (product, warehouse, lot); and no
stock held for a hold that has ended with nothing on its way to give it back."""

from __future__ import annotations

from collections.abc import Iterable
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


# A line still reserved while its hold has ended is given back by a line command on its way; one
# with none pending (lost, or parked as a dead letter) holds stock that nobody will free.
_ENDED = """
    SELECT p.sku, w.code AS warehouse, lot.lot_code AS lot, 'held_by_ended_hold' AS bucket,
           l.allocated AS balance, 0 AS ledger, h.id::text || ' (' || h.status || ')' AS hold
    FROM hold_lines l JOIN holds h ON h.id = l.hold_id JOIN products p ON p.id = l.product_id
    JOIN warehouses w ON w.id = l.warehouse_id JOIN lots lot ON lot.id = l.lot_id
    WHERE l.status = 'reserved' AND h.status NOT IN ('pending', 'reserved', 'reallocating')
      AND NOT EXISTS (
          SELECT 1 FROM commands c
          WHERE c.status = 'recorded' AND c.payload->>'hold_id' = l.hold_id::text
            AND (c.payload->>'line_no') = l.line_no::text AND c.kind LIKE 'line.%'
      )
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
    hold: str | None = None

    def __str__(self) -> str:
        where = f"{self.sku} @ {self.warehouse} lot {self.lot}"
        if self.bucket == "held_by_ended_hold":
            return f"{where}: {self.balance} pieces reserved for hold {self.hold}, with nothing pending to free them"
        source = "active hold lines" if self.bucket == "reserved_vs_holds" else "ledger"
        return f"{where}: {self.bucket} balance {self.balance} ≠ {source} {self.expected}"


CHECKS = {
    "ledger = balances": _LEDGER,
    "reserved = active hold lines": _HOLDS,
    "nothing held for ended holds": _ENDED,
}


def reconcile(conn: Connection, checks: Iterable[str] = CHECKS) -> list[Difference]:
    """Every disagreement between balances and the ledger or the active holds, and every line
    holding stock for an ended hold with nothing pending to free it (empty = clean). `checks`
    (the CHECKS' names, in order) lets a caller follow them one by one."""
    return [Difference(*row) for check in checks for row in conn.execute(text(CHECKS[check]))]
