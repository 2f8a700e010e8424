"""Ledger = balances, and reserved = Σ active hold lines, per (product, warehouse, lot); no stock
held for a hold that has ended with nothing on its way to give it back; and each valuation's
quantity = the on_hand of its product at its warehouse.

Checked for a range of product ids at a time (every product by default): each statement sees all
the rows of its products, written together by their writer, and a long check over many products
can say how far it has come (`tessera reconcile` draws a bar over `product_ranges`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, text

PRODUCTS_PER_RANGE = 500

_LEDGER = """
    WITH ledger AS (
        SELECT product_id, warehouse_id, lot_id, sum(d_on_hand) AS on_hand, sum(d_reserved) AS reserved,
               sum(d_in_transit) AS in_transit, sum(d_damaged) AS damaged, sum(d_quarantine) AS quarantine
        FROM movements WHERE product_id BETWEEN :first AND :last GROUP BY 1, 2, 3
    )
    SELECT p.sku, w.code AS warehouse, l.lot_code AS lot, bucket, balance, ledger
    FROM (SELECT * FROM stock_balances WHERE product_id BETWEEN :first AND :last) AS b
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
"""

_HOLDS = """
    WITH held AS (
        SELECT product_id, warehouse_id, lot_id, sum(allocated) AS reserved
        FROM hold_lines WHERE status = 'reserved' AND product_id BETWEEN :first AND :last GROUP BY 1, 2, 3
    )
    SELECT p.sku, w.code AS warehouse, l.lot_code AS lot, 'reserved_vs_holds' AS bucket,
           coalesce(b.reserved, 0) AS balance, coalesce(h.reserved, 0) AS ledger
    FROM (SELECT * FROM stock_balances WHERE product_id BETWEEN :first AND :last) AS b
    FULL JOIN held h USING (product_id, warehouse_id, lot_id)
    JOIN products p ON p.id = coalesce(b.product_id, h.product_id)
    JOIN warehouses w ON w.id = coalesce(b.warehouse_id, h.warehouse_id)
    JOIN lots l ON l.id = coalesce(b.lot_id, h.lot_id)
    WHERE coalesce(b.reserved, 0) <> coalesce(h.reserved, 0)
"""


# A line still reserved while its hold has ended is given back by a line command on its way; one
# with none pending (lost, or parked as a dead letter) holds stock that nobody will free.
_ENDED = """
    SELECT p.sku, w.code AS warehouse, lot.lot_code AS lot, 'held_by_ended_hold' AS bucket,
           l.allocated AS balance, 0 AS ledger, h.id::text || ' (' || h.status || ')' AS hold
    FROM hold_lines l JOIN holds h ON h.id = l.hold_id JOIN products p ON p.id = l.product_id
    JOIN warehouses w ON w.id = l.warehouse_id JOIN lots lot ON lot.id = l.lot_id
    WHERE l.status = 'reserved' AND l.product_id BETWEEN :first AND :last
      AND h.status NOT IN ('pending', 'reserved', 'reallocating')
      AND NOT EXISTS (
          SELECT 1 FROM commands c
          WHERE c.status = 'recorded' AND c.payload->>'hold_id' = l.hold_id::text
            AND (c.payload->>'line_no') = l.line_no::text AND c.kind LIKE 'line.%'
      )
"""

# A valuation's quantity is the product's on_hand at its warehouse (every lot), however it moved.
_VALUATIONS = """
    SELECT p.sku, w.code AS warehouse, '*' AS lot, 'valuation_quantity' AS bucket, v.quantity AS balance,
           coalesce(b.on_hand, 0) AS ledger
    FROM stock_valuations v JOIN products p ON p.id = v.product_id JOIN warehouses w ON w.id = v.warehouse_id
    LEFT JOIN LATERAL (
        SELECT sum(on_hand) AS on_hand FROM stock_balances
        WHERE product_id = v.product_id AND warehouse_id = v.warehouse_id
    ) AS b ON true
    WHERE v.product_id BETWEEN :first AND :last AND v.quantity <> coalesce(b.on_hand, 0)
"""


# Pieces on their way are the transfers still in transit (on the destination's balance, in the
# transfer's lot); pieces in quarantine are what the quarantined receipt lines still hold.
_OPEN_OPERATIONS = """
    WITH open AS (
        SELECT product_id, to_warehouse_id AS warehouse_id, lot_id, 'in_transit_vs_transfers' AS bucket,
               sum(quantity) AS expected
        FROM transfers WHERE status = 'in_transit' AND product_id BETWEEN :first AND :last GROUP BY 1, 2, 3
        UNION ALL
        SELECT product_id, warehouse_id, lot_id, 'quarantine_vs_lines', sum(quantity - released - written_off)
        FROM quarantines WHERE product_id BETWEEN :first AND :last GROUP BY 1, 2, 3
    ), held AS (
        SELECT b.product_id, b.warehouse_id, b.lot_id, v.bucket, v.balance
        FROM stock_balances b
        CROSS JOIN LATERAL (VALUES ('in_transit_vs_transfers', b.in_transit), ('quarantine_vs_lines', b.quarantine))
            AS v(bucket, balance)
        WHERE b.product_id BETWEEN :first AND :last
    )
    SELECT p.sku, w.code AS warehouse, l.lot_code AS lot, bucket, coalesce(h.balance, 0) AS balance,
           coalesce(o.expected, 0) AS ledger
    FROM held h FULL JOIN open o USING (product_id, warehouse_id, lot_id, bucket)
    JOIN products p ON p.id = product_id JOIN warehouses w ON w.id = warehouse_id JOIN lots l ON l.id = lot_id
    WHERE coalesce(h.balance, 0) <> coalesce(o.expected, 0)
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
        source = {
            "reserved_vs_holds": "active hold lines",
            "valuation_quantity": "on_hand there",
            "in_transit_vs_transfers": "transfers in transit",
            "quarantine_vs_lines": "quarantined lines",
        }.get(self.bucket, "ledger")
        return f"{where}: {self.bucket} balance {self.balance} ≠ {source} {self.expected}"


CHECKS = {
    "ledger = balances": _LEDGER,
    "reserved = active hold lines": _HOLDS,
    "nothing held for ended holds": _ENDED,
    "valuation quantity = on_hand": _VALUATIONS,
    "in_transit = open transfers, quarantine = quarantined lines": _OPEN_OPERATIONS,
}


@dataclass(frozen=True, slots=True)
class ProductRange:
    """Products whose id is between `first` and `last` (inclusive); `count` of them at the cut."""

    first: int
    last: int
    count: int


EVERY_PRODUCT = ProductRange(0, 2**31 - 1, 0)  # product ids are positive int4


def product_ranges(conn: Connection, size: int = PRODUCTS_PER_RANGE) -> list[ProductRange]:
    """Every product id, cut into contiguous ranges of `size` products in id order; the last range
    is open-ended, so a product created meanwhile is checked too."""
    ids = conn.execute(text("SELECT id FROM products ORDER BY id")).scalars().all()
    ranges, first = [], EVERY_PRODUCT.first
    for start in range(0, len(ids), size):
        cut = ids[start : start + size]
        last = cut[-1] if start + size < len(ids) else EVERY_PRODUCT.last
        ranges.append(ProductRange(first, last, len(cut)))
        first = last + 1
    return ranges


def reconcile(conn: Connection, ranges: Iterable[ProductRange] = (EVERY_PRODUCT,)) -> list[Difference]:
    """Every disagreement between balances and the ledger or the active holds, and every line
    holding stock for an ended hold with nothing pending to free it (empty = clean), check by
    check, each sorted by SKU, warehouse and lot. `ranges` (every product by default) lets a caller
    follow the products as they are checked."""
    found: dict[str, list[Difference]] = {check: [] for check in CHECKS}
    for products in ranges:
        bounds = {"first": products.first, "last": products.last}
        for check, statement in CHECKS.items():
            found[check] += [Difference(*row) for row in conn.execute(text(statement), bounds)]
    return [
        difference
        for check in CHECKS
        for difference in sorted(found[check], key=lambda d: (d.sku, d.warehouse, d.lot, d.bucket))
    ]
