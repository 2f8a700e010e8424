"""Counts and adjustments, applied by the writer of the product's shard (`domain.counts`,
`domain.adjustments`): what was found on the shelf, and corrections approved by a second person.

An adjustment's row (`adjustments`) is written whatever became of it (applied, waiting for approval,
rejected), so that it can be approved or rejected later, once.
"""

from __future__ import annotations

from decimal import Decimal

from db.batch_state import InboxCommand
from db.records import ADJUSTMENTS, Row, asked, decided
from domain import adjustments, counts
from domain.adjustments import (
    Adjustment,
    AdjustmentDecision,
    AdjustmentRefusal,
    AdjustmentStatus,
    Threshold,
    asked_by,
)
from domain.allocation import LotStock
from domain.commands import StockCommand
from domain.errors import InvariantBroken
from domain.outcomes import Outcome
from domain.quantities import decimal_str
from workers.batch import Batch, Result
from workers.handlers.registry import handles

COUNT_BELOW_RESERVED = "count_below_reserved"


def _found_or_new(batch: Batch, product_id: int, warehouse_id: int, lot_id: int) -> LotStock:
    """The lot's balance at the warehouse, created empty if it has none there."""
    found = batch.balance(product_id, warehouse_id, lot_id)
    if found is not None:
        return found
    of_lot = next((s for s in batch.stocks(product_id) if s.lot_id == lot_id), None)
    if of_lot is None:  # a lot is created with its first balance
        raise InvariantBroken(f"lot {lot_id} of product {product_id} has no balance")
    return batch.balance_in(of_lot, warehouse_id)


@handles(StockCommand.COUNT)
def count(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    product_id, warehouse_id, lot_id = p["product_id"], p["warehouse_id"], p["lot_id"]
    counted = Decimal(p["counted"])
    stock = (
        _found_or_new(batch, product_id, warehouse_id, lot_id)
        if counted > 0
        else batch.balance(product_id, warehouse_id, lot_id)
    )
    if stock is None:  # nothing there, nothing found
        return {"outcome": Outcome.ADJUSTED, "lot": p["lot"], "difference": "0", "on_hand": "0"}
    decision = counts.count(
        stock,
        counted,
        batch.held_lines(product_id, warehouse_id, lot_id),
        reason=p.get("reason") or "count",
        unit_cost=batch.average_cost(product_id, warehouse_id),
    )
    for movement in decision.movements:
        batch.record(movement, command)
    result: Result = {
        "outcome": decision.outcome,
        "lot": p["lot"],
        "difference": decimal_str(decision.difference),
        "on_hand": decimal_str(stock.on_hand),
    }
    if decision.below_held is not None:
        detail = {"lot": p["lot"], "command": command.key, **decision.below_held.detail()}
        batch.raise_alert(COUNT_BELOW_RESERVED, product_id, warehouse_id, detail)
        result[COUNT_BELOW_RESERVED] = detail
    return result


def _threshold(p: dict[str, object]) -> Threshold:
    def limit(name: str) -> Decimal | None:
        value = p.get(name)
        return Decimal(str(value)) if value is not None else None

    return Threshold(limit("approval_pieces"), limit("approval_value"))


def _result(decision: AdjustmentDecision, adjustment: Adjustment) -> Result:
    result: Result = {
        "outcome": decision.outcome,
        "adjustment_id": adjustment.id,
        "status": adjustment.status.value,
        "quantity": decimal_str(adjustment.quantity),
    }
    if decision.refusal is not None:
        result["reason"] = decision.refusal.value
    if decision.note:
        result["note"] = decision.note
    return result


def _row(
    adjustment: Adjustment, decision: AdjustmentDecision, command: InboxCommand, unit_cost: Decimal | None
) -> Row:
    return {
        "id": adjustment.id,
        "product_id": adjustment.product_id,
        "warehouse_id": adjustment.warehouse_id,
        "lot_id": adjustment.lot_id,
        "quantity": adjustment.quantity,
        "status": adjustment.status.value,
        "unit_cost": unit_cost,
        "reason": adjustment.reason,
        "note": decision.note or None,
        **asked(command.seq, command.payload),
    }


@handles(StockCommand.ADJUST)
def adjust(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    product_id, warehouse_id, lot_id = p["product_id"], p["warehouse_id"], p["lot_id"]
    adjustment = Adjustment(
        p["adjustment_id"],
        product_id,
        warehouse_id,
        lot_id,
        Decimal(p["pieces"]),
        p["reason"],
        asked_by(p.get("actor_token_id"), p.get("actor")),
    )
    unit_cost = batch.average_cost(product_id, warehouse_id)
    stock = (
        _found_or_new(batch, product_id, warehouse_id, lot_id)
        if adjustment.quantity > 0
        else batch.balance(product_id, warehouse_id, lot_id)
    )
    if stock is None:
        adjustment.status = AdjustmentStatus.REJECTED
        decision = AdjustmentDecision(
            Outcome.REJECTED, "the lot has no stock in this warehouse", AdjustmentRefusal.INSUFFICIENT_STOCK
        )
    else:
        decision = adjustments.request(adjustment, stock, _threshold(p), unit_cost)
        for movement in decision.movements:
            batch.record(movement, command)
    batch.save(ADJUSTMENTS.name, _row(adjustment, decision, command, unit_cost))
    return _result(decision, adjustment)


def _asked(row: Row) -> Adjustment:
    return Adjustment(
        str(row["id"]),
        int(row["product_id"]),
        int(row["warehouse_id"]),
        int(row["lot_id"]),
        Decimal(row["quantity"]),
        row["reason"],
        asked_by(row["requested_by_token_id"], row["requested_by"]),
        AdjustmentStatus(row["status"]),
    )


def _decide(batch: Batch, command: InboxCommand, *, approve: bool) -> Result:
    p = command.payload
    row = batch.operation(ADJUSTMENTS.name, p["adjustment_id"])
    if row is None:  # the producer records a decision only for an adjustment it finds
        return {
            "outcome": Outcome.REJECTED,
            "reason": "unknown_adjustment",
            "adjustment_id": p["adjustment_id"],
        }
    adjustment = _asked(row)
    approver = asked_by(p.get("actor_token_id"), p.get("actor"))
    if approve:
        # It waits where the lot had a balance when asked, or to add stock there.
        stock = _found_or_new(batch, adjustment.product_id, adjustment.warehouse_id, adjustment.lot_id)
        unit_cost = batch.average_cost(adjustment.product_id, adjustment.warehouse_id)
        decision = adjustments.approve(adjustment, stock, approver, unit_cost)
        for movement in decision.movements:
            batch.record(movement, command)
    else:
        decision = adjustments.reject(adjustment, approver)
    if adjustment.status.value != row["status"]:
        batch.save(
            ADJUSTMENTS.name,
            {
                **row,
                "status": adjustment.status.value,
                "note": p.get("note") or decision.note or None,
                **decided(command.seq, p),
            },
        )
    return _result(decision, adjustment)


@handles(StockCommand.ADJUST_APPROVE)
def approve(batch: Batch, command: InboxCommand) -> Result:
    return _decide(batch, command, approve=True)


@handles(StockCommand.ADJUST_REJECT)
def reject(batch: Batch, command: InboxCommand) -> Result:
    return _decide(batch, command, approve=False)
