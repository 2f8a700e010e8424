"""What a request names: a product by SKU and a warehouse by code, as the caller's quantity becomes
the pieces the inbox records."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.errors import UnknownSku, UnknownWarehouse
from domain.quantities import Conversion, Packaging, Unit, to_pieces


@dataclass(frozen=True, slots=True)
class ProductRef:
    id: int
    sku: str
    packaging: Packaging


@dataclass(frozen=True, slots=True)
class Resolved:
    """A quantity of a named product, in a named warehouse, as the inbox records it."""

    product: ProductRef
    warehouse_id: int | None
    conversion: Conversion


def resolve(
    sku: str,
    warehouse: str | None,
    quantity: Decimal,
    unit: Unit,
    products: dict[str, ProductRef],
    warehouses: dict[str, int],
    field: str = "",
) -> Resolved:
    """Look up the product and warehouse (the active ones are given) and convert the quantity to
    pieces. `field`: where the request names them (``lines[2]``), for the errors."""
    prefix = f"{field}." if field else ""
    product = products.get(sku)
    if product is None:
        raise UnknownSku(sku, field=f"{prefix}sku")
    if warehouse is not None and warehouse not in warehouses:
        raise UnknownWarehouse(warehouse, field=f"{prefix}warehouse")
    conversion = to_pieces(quantity, unit, product.packaging, field=f"{prefix}quantity")
    return Resolved(product, warehouses[warehouse] if warehouse is not None else None, conversion)
