"""Stock value per warehouse and product: on hand × moving-average unit cost (`stock_valuations`)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection, text

from db.reads import warehouse_id_of
from domain.results import ProductValue, ValuationView, WarehouseValue

CENTS = Decimal("0.01")


def read_valuation(conn: Connection, warehouse: str | None = None) -> ValuationView:
    """Every valued (product, warehouse), by warehouse; one warehouse's (by code) if given."""
    only = warehouse_id_of(conn, warehouse) if warehouse is not None else None
    rows = conn.execute(
        text(
            """
            SELECT w.code, p.sku, v.quantity, v.average_cost
            FROM stock_valuations v JOIN products p ON p.id = v.product_id JOIN warehouses w ON w.id = v.warehouse_id
            WHERE CAST(:w AS int) IS NULL OR v.warehouse_id = :w
            ORDER BY w.priority, w.code, p.sku
            """
        ),
        {"w": only},
    )
    warehouses: dict[str, list[ProductValue]] = {}
    for code, sku, quantity, average in rows:
        warehouses.setdefault(code, []).append(
            ProductValue(
                sku=sku, quantity=quantity, average_cost=average, value=(quantity * average).quantize(CENTS)
            )
        )
    shown = [
        WarehouseValue(warehouse=code, value=sum((p.value for p in products), Decimal(0)), products=products)
        for code, products in warehouses.items()
    ]
    return ValuationView(value=sum((w.value for w in shown), Decimal(0)), warehouses=shown)
