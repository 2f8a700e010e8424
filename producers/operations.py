"""Warehouse operations into the inbox: each request read against what it names (products, warehouses,
lots, the transfer or adjustment or hold it follows up), refused before anything is recorded when it
cannot be done (`OperationRefused`, `UnknownOperation`, `NotEnoughStock`), else turned into commands
on the product's shard and recorded on the one recording path (`Recorder.stock_commands`). A resend
of a recorded request is not judged again against the stock: it gets what was recorded.

What the writer decides against the stock as it is when the command applies (enough available to
send, what is held when counting, the threshold, what is still returnable when several returns
race) it decides again there: a refusal there is a recorded result that changes nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from db.goods_in import lot_available
from db.inbox import NewCommand
from db.operation_reads import (
    Origin,
    adjustment_thresholds,
    hold_lines,
    lot_id,
    operation_origin,
    warehouse_routes,
)
from db.reads import load_references
from db.sql import Pg
from domain import returns
from domain.adjustments import asked_by, same_approver
from domain.catalog import ProductRef
from domain.commands import StockCommand
from domain.errors import NotEnoughStock, OperationRefused, UnknownHold, UnknownOperation, UnknownSku
from domain.quantities import decimal_str, to_pieces
from domain.transfers import route_refusal
from producers.recording import Actor, Recorder, is_recorded, stock_command
from producers.warehouse_requests import (
    AdjustmentDecisionRequest,
    AdjustmentRequest,
    CountRequest,
    ReturnRequest,
    TransferCancelRequest,
    TransferReceiptRequest,
    TransferRequest,
)
from tessera.settings import Settings


def line_key(key: str, line_no: int, lines: int) -> str:
    """The key of one line's command: the request's own for a single line, `{key}:{n}` for several."""
    return key if lines == 1 else f"{key}:{line_no}"


class OperationRecorder:
    """Records the warehouse's operations.

    Parameters:
      recorder: the one recording path.
      settings: the global adjustment approval thresholds.
    """

    def __init__(self, recorder: Recorder, settings: Settings) -> None:
        self.recorder, self.settings = recorder, settings

    @property
    def shards(self) -> int:
        return self.recorder.shards

    def _command(
        self, key: str, kind: StockCommand, sku: str, payload: dict[str, Any], actor: Actor | None
    ) -> NewCommand:
        return stock_command(key, kind, payload, sku, actor, shards=self.shards)

    # -- transfers ------------------------------------------------------------------------------

    def transfer(self, request: TransferRequest, actor: Actor | None) -> str:
        """Send pieces to another warehouse; returns the transfer's id."""

        def build(pg: Pg) -> list[NewCommand]:
            product = _product(pg, request.sku)
            routes = warehouse_routes(pg, [request.from_warehouse, request.to_warehouse])
            source, destination = routes.get(request.from_warehouse), routes.get(request.to_warehouse)
            resend = is_recorded(pg, request.idempotency_key)
            if not resend and (refusal := route_refusal(source, destination)):
                code, message = refusal
                raise OperationRefused(
                    code.value, message, field="to_warehouse" if source else "from_warehouse"
                )
            assert source is not None and destination is not None
            pieces = to_pieces(request.quantity, request.unit, product.packaging).pieces
            lot = _lot(pg, product, request.lot)
            # Reserved, damaged and quarantined pieces never move: refused now if it shows already
            # (the writer decides again, against the stock as its command applies).
            available = lot_available(pg, product.id, source.warehouse_id, request.lot)
            if not resend and (available is None or pieces > available):
                raise NotEnoughStock(
                    f"{decimal_str(pieces)} pieces to send, {decimal_str(available or Decimal(0))} available "
                    f"in lot {request.lot} in {request.from_warehouse}",
                    available=available or Decimal(0),
                )
            payload = {
                "transfer_id": request.transfer_id,
                "product_id": product.id,
                "sku": product.sku,
                "lot_id": lot,
                "lot": request.lot,
                "from_warehouse_id": source.warehouse_id,
                "to_warehouse_id": destination.warehouse_id,
                "quantity": decimal_str(request.quantity),
                "unit": request.unit.value,
                "pieces": decimal_str(pieces),
            }
            return [
                self._command(request.idempotency_key, StockCommand.TRANSFER, product.sku, payload, actor)
            ]

        self.recorder.stock_commands(build)
        return request.transfer_id

    def receive_transfer(self, request: TransferReceiptRequest, actor: Actor | None) -> None:
        def build(pg: Pg) -> list[NewCommand]:
            origin = _origin(pg, "transfer", request.transfer_id)
            payload = {
                "transfer_id": request.transfer_id,
                "product_id": origin.product_id,
                "received": decimal_str(request.received),
                "damaged": decimal_str(request.damaged),
                "reason": request.reason,
            }
            return [
                self._command(
                    request.idempotency_key, StockCommand.TRANSFER_RECEIVE, origin.sku, payload, actor
                )
            ]

        self.recorder.stock_commands(build)

    def cancel_transfer(self, request: TransferCancelRequest, actor: Actor | None) -> None:
        def build(pg: Pg) -> list[NewCommand]:
            origin = _origin(pg, "transfer", request.transfer_id)
            payload = {"transfer_id": request.transfer_id, "product_id": origin.product_id}
            return [
                self._command(
                    request.idempotency_key, StockCommand.TRANSFER_CANCEL, origin.sku, payload, actor
                )
            ]

        self.recorder.stock_commands(build)

    # -- counts and adjustments ---------------------------------------------------------------------

    def count(self, request: CountRequest, actor: Actor | None) -> list[str]:
        """What was found, one command per (warehouse, SKU, lot); returns their keys."""

        def build(pg: Pg) -> list[NewCommand]:
            products, warehouses = load_references(
                [line.sku for line in request.lines], [line.warehouse for line in request.lines]
            ).run(pg)
            commands = []
            for n, line in enumerate(request.lines, start=1):
                field = f"lines[{n - 1}]"
                product = _known(products, line.sku, field)
                if line.warehouse not in warehouses:
                    raise OperationRefused(
                        "warehouse_inactive",
                        f"unknown or inactive warehouse {line.warehouse!r}",
                        field=f"{field}.warehouse",
                    )
                lot = _lot(pg, product, line.lot, field=f"{field}.lot")
                counted = to_pieces(
                    line.counted, line.unit, product.packaging, field=f"{field}.counted"
                ).pieces
                payload = {
                    "product_id": product.id,
                    "sku": product.sku,
                    "warehouse_id": warehouses[line.warehouse],
                    "lot_id": lot,
                    "lot": line.lot,
                    "counted": decimal_str(counted),
                    "reason": request.reason,
                }
                key = line_key(request.idempotency_key, n, len(request.lines))
                commands.append(self._command(key, StockCommand.COUNT, product.sku, payload, actor))
            return commands

        self.recorder.stock_commands(build)
        return [
            line_key(request.idempotency_key, n, len(request.lines)) for n in range(1, len(request.lines) + 1)
        ]

    def adjust(self, request: AdjustmentRequest, actor: Actor | None) -> str:
        """A correction with its reason; returns the adjustment's id. The approval threshold in force
        as it is asked (the product's own, else the global one) is recorded with it."""

        def build(pg: Pg) -> list[NewCommand]:
            product = _product(pg, request.sku)
            routes = warehouse_routes(pg, [request.warehouse])
            if request.warehouse not in routes or not routes[request.warehouse].active:
                raise OperationRefused(
                    "warehouse_inactive",
                    f"unknown or inactive warehouse {request.warehouse!r}",
                    field="warehouse",
                )
            lot = _lot(pg, product, request.lot)
            size = to_pieces(abs(request.quantity), request.unit, product.packaging).pieces
            pieces = size if request.quantity > 0 else -size
            pieces_limit, value_limit = adjustment_thresholds(pg, product.id)
            payload = {
                "adjustment_id": request.adjustment_id,
                "product_id": product.id,
                "sku": product.sku,
                "warehouse_id": routes[request.warehouse].warehouse_id,
                "lot_id": lot,
                "lot": request.lot,
                "pieces": decimal_str(pieces),
                "reason": request.reason,
                "approval_pieces": decimal_str(
                    pieces_limit if pieces_limit is not None else self.settings.adjustment_approval_pieces
                ),
                "approval_value": decimal_str(
                    value_limit if value_limit is not None else self.settings.adjustment_approval_value
                ),
            }
            return [self._command(request.idempotency_key, StockCommand.ADJUST, product.sku, payload, actor)]

        self.recorder.stock_commands(build)
        return request.adjustment_id

    def decide_adjustment(
        self, request: AdjustmentDecisionRequest, actor: Actor | None, *, approve: bool
    ) -> None:
        """Approve or reject: by another actor than the one who asked (`same_approver` otherwise)."""

        def build(pg: Pg) -> list[NewCommand]:
            origin = _origin(pg, "adjustment", request.adjustment_id)
            approver = asked_by(actor.token_id, actor.name) if actor is not None else None
            if same_approver(asked_by(origin.requested_by_token_id, origin.requested_by), approver):
                raise OperationRefused(
                    "same_approver",
                    "an adjustment is approved or rejected by another token (or named actor) than the one "
                    "that asked for it",
                )
            kind = StockCommand.ADJUST_APPROVE if approve else StockCommand.ADJUST_REJECT
            payload = {
                "adjustment_id": request.adjustment_id,
                "product_id": origin.product_id,
                "note": request.note,
            }
            return [self._command(request.idempotency_key, kind, origin.sku, payload, actor)]

        self.recorder.stock_commands(build)

    # -- returns -------------------------------------------------------------------------------

    def take_back(self, request: ReturnRequest, actor: Actor | None) -> list[str]:
        """Goods brought back against a confirmed hold, one command per line; returns their keys."""

        def build(pg: Pg) -> list[NewCommand]:
            lines = hold_lines(pg, request.hold_id)
            if not lines:
                raise UnknownHold(request.hold_id)
            resend = is_recorded(pg, line_key(request.idempotency_key, 1, len(request.lines)))
            commands = []
            for n, asked in enumerate(request.lines, start=1):
                field = f"lines[{n - 1}]"
                sold = lines.get(asked.line_no)
                if sold is None:
                    raise OperationRefused(
                        "not_sold", f"the hold has no line {asked.line_no}", field=f"{field}.line_no"
                    )
                pieces = to_pieces(
                    asked.quantity, asked.unit, sold.packaging, field=f"{field}.quantity"
                ).pieces
                if not resend and (
                    refusal := returns.refusal(sold.line, pieces, asked.condition, asked.reason)
                ):
                    code, message = refusal
                    raise OperationRefused(code.value, message, field=f"{field}.quantity")
                payload = {
                    "hold_id": request.hold_id,
                    "line_no": asked.line_no,
                    "product_id": sold.line.product_id,
                    "pieces": decimal_str(pieces),
                    "condition": asked.condition.value,
                    "reason": asked.reason,
                }
                key = line_key(request.idempotency_key, n, len(request.lines))
                commands.append(self._command(key, StockCommand.RETURN, sold.line.sku, payload, actor))
            return commands

        self.recorder.stock_commands(build)
        return [
            line_key(request.idempotency_key, n, len(request.lines)) for n in range(1, len(request.lines) + 1)
        ]


def _product(pg: Pg, sku: str) -> ProductRef:
    products, _ = load_references([sku], []).run(pg)
    return _known(products, sku, "")


def _known(products: dict[str, ProductRef], sku: str, field: str) -> ProductRef:
    if sku not in products:
        raise UnknownSku(sku, field=f"{field}.sku" if field else "sku")
    return products[sku]


def _lot(pg: Pg, product: ProductRef, code: str, *, field: str = "lot") -> int:
    found = lot_id(pg, product.id, code)
    if found is None:
        raise OperationRefused("unknown_lot", f"product {product.sku} has no lot {code!r}", field=field)
    return found


def _origin(pg: Pg, what: str, operation_id: str) -> Origin:
    origin = operation_origin(pg, what, operation_id)
    if origin is None or origin.status == "refused":
        raise UnknownOperation(what, operation_id)
    return origin
