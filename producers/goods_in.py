"""Goods in, quarantine and damage as commands: each request checked against what PostgreSQL holds
(products, warehouses, lots, what is left in quarantine, what is available) and turned into the
`stock.…` commands that `Recorder.stock_commands` records, all or none."""

from __future__ import annotations

import uuid
from decimal import Decimal

from db.goods_in import lot_available, quarantine_facts, refusing_warehouses
from db.inbox import NewCommand
from db.reads import load_references, lot_facts
from db.sql import Pg
from domain.catalog import Resolved, resolve
from domain.commands import StockCommand
from domain.errors import CannotReceive, LotMismatch, NotEnoughStock, UnknownQuarantine
from domain.quantities import decimal_str, to_pieces
from domain.receipts import LotFacts, lot_conflict, merged_facts
from producers.recording import Actor, is_recorded, stock_command
from producers.requests import (
    DamageRequest,
    GoodsReceiptRequest,
    QuarantineRequest,
    QuarantineWriteOffRequest,
)

QUARANTINE_IDS = uuid.UUID("6f1d3c1e-8a4b-4c35-9b1e-2f6c3f0a9d21")
"""The namespace of quarantine ids: a quarantined line's id is drawn from its command's key (uuid5),
so that a resend of the receipt names the same quarantine."""


def quarantine_id(line_key: str) -> str:
    return str(uuid.uuid5(QUARANTINE_IDS, line_key))


def receipt_commands(
    pg: Pg, request: GoodsReceiptRequest, actor: Actor | None, shards: int
) -> list[NewCommand]:
    """One `stock.receive` per line. A lot code the product has, or that an earlier line of this
    receipt names, must carry the same shade, caliber and expiry (else `LotMismatch`)."""
    lines = request.lines
    products, warehouses = load_references(
        [line.sku for line in lines], [line.warehouse for line in lines]
    ).run(pg)
    closed = refusing_warehouses(pg, [line.warehouse for line in lines])
    seen: dict[tuple[int, str], LotFacts] = {}
    commands = []
    for line_no, line in enumerate(lines, start=1):
        where = f"lines[{line_no - 1}]" if request.numbered else ""
        found = resolve(line.sku, line.warehouse, line.quantity, line.unit, products, warehouses, field=where)
        if line.warehouse in closed:
            raise CannotReceive(line.warehouse, field=_at(where, "warehouse"))
        facts = LotFacts(line.shade, line.caliber, line.expiry)
        lot = (found.product.id, line.lot)
        known = seen.get(lot) or lot_facts(pg, found.product.id, line.lot)
        if known is not None:
            if why := lot_conflict(line.lot, known, facts):
                raise LotMismatch(why, lot=line.lot, field=_at(where, "lot"))
            facts = merged_facts(known, facts)
        seen[lot] = facts
        key = request.line_key(line_no)
        payload = {
            "product_id": found.product.id,
            "sku": line.sku,
            "warehouse_id": found.warehouse_id,
            "lot": line.lot,
            "shade": line.shade,
            "caliber": line.caliber,
            "expiry": line.expiry.isoformat() if line.expiry else None,
            "quantity": decimal_str(line.quantity),
            "unit": line.unit.value,
            "pieces": decimal_str(found.conversion.pieces),
        }
        # Only what a line says: a one-line receipt sent the old way keeps its old payload (and digest).
        extra = {
            "line_no": line_no if request.numbered else None,
            "unit_cost": decimal_str(line.unit_cost),
            "quarantine_id": quarantine_id(key) if line.quarantine else None,
            "supplier": request.supplier,
            "purchase_order": request.purchase_order,
            "invoice": request.invoice,
            "reason": request.reason(),
        }
        payload.update({name: value for name, value in extra.items() if value is not None})
        commands.append(stock_command(key, StockCommand.RECEIVE, payload, line.sku, actor, shards=shards))
    return commands


def quarantine_commands(
    pg: Pg, request: QuarantineRequest, actor: Actor | None, shards: int
) -> list[NewCommand]:
    """A release (`QuarantineRequest`) or a write-off as damaged (`QuarantineWriteOffRequest`) of a
    quarantined line: never more than is left of it."""
    facts = quarantine_facts(pg, request.quarantine_id)
    if facts is None:
        raise UnknownQuarantine(request.quarantine_id)
    pieces = None
    if request.quantity is not None:
        pieces = to_pieces(request.quantity, request.unit, facts.product.packaging).pieces
    resend = is_recorded(pg, request.idempotency_key)
    if not resend and pieces is not None and pieces > facts.left:
        raise NotEnoughStock(
            f"{decimal_str(pieces)} pieces asked, {decimal_str(facts.left)} left in quarantine",
            available=facts.left,
        )
    if not resend and pieces is None and facts.left <= 0:
        raise NotEnoughStock(f"nothing is left in quarantine {request.quarantine_id}", available=facts.left)
    payload = {
        "product_id": facts.product.id,
        "quarantine_id": request.quarantine_id,
        "pieces": decimal_str(pieces),
    }
    kind = StockCommand.QUARANTINE_RELEASE
    if isinstance(request, QuarantineWriteOffRequest):
        kind, payload["reason"] = StockCommand.DAMAGE, request.reason
    return [stock_command(request.idempotency_key, kind, payload, facts.product.sku, actor, shards=shards)]


def damage_commands(pg: Pg, request: DamageRequest, actor: Actor | None, shards: int) -> list[NewCommand]:
    """Pieces of a lot's available stock marked damaged: never more than are available."""
    products, warehouses = load_references([request.sku], [request.warehouse]).run(pg)
    found = resolve(request.sku, request.warehouse, request.quantity, request.unit, products, warehouses)
    assert found.warehouse_id is not None
    pieces = found.conversion.pieces
    # A resend is answered as recorded, whatever is available now (its own damage took it).
    available = None if is_recorded(pg, request.idempotency_key) else _available(pg, found, request)
    if available is not None and pieces > available:
        raise NotEnoughStock(
            f"{decimal_str(pieces)} pieces to damage, {decimal_str(available)} available in lot {request.lot}",
            available=available,
        )
    payload = {
        "product_id": found.product.id,
        "warehouse_id": found.warehouse_id,
        "lot": request.lot,
        "pieces": decimal_str(pieces),
        "reason": request.reason,
    }
    return [
        stock_command(
            request.idempotency_key, StockCommand.DAMAGE, payload, request.sku, actor, shards=shards
        )
    ]


def _available(pg: Pg, found: Resolved, request: DamageRequest) -> Decimal:
    assert found.warehouse_id is not None
    available = lot_available(pg, found.product.id, found.warehouse_id, request.lot)
    if available is None:
        raise NotEnoughStock(
            f"lot {request.lot} has no stock in {request.warehouse}", available=Decimal(0), field="lot"
        )
    return available


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field
