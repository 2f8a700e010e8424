"""Returns, applied by the writer of the product's shard (`domain.returns`): a sold line's goods back
into the lot they were sold from, what came back counted on the line (`hold_lines.returned`)."""

from __future__ import annotations

from decimal import Decimal

from db.batch_state import InboxCommand
from domain import returns
from domain.commands import StockCommand
from domain.errors import InvariantBroken
from domain.outcomes import Outcome
from domain.quantities import decimal_str
from domain.returns import Condition
from workers.batch import Batch, Result
from workers.handlers.registry import handles


@handles(StockCommand.RETURN)
def take_back(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    hold, line = batch.line(command)
    stock = (
        batch.balance(line.product_id, line.warehouse_id, line.lot_id)
        if line.warehouse_id is not None and line.lot_id is not None
        else None
    )
    if stock is None:
        if line.lot_id is None:  # never allocated: nothing was sold
            return {
                "outcome": Outcome.REJECTED,
                "reason": "not_sold",
                "hold_id": hold.id,
                "line_no": line.line_no,
            }
        raise InvariantBroken(f"hold {hold.id} line {line.line_no}: its lot balance is gone")
    decision = returns.take_back(
        line,
        stock,
        Decimal(p["pieces"]),
        Condition(p["condition"]),
        p.get("reason"),
        unit_cost=batch.average_cost(line.product_id, stock.warehouse_id),
    )
    for movement in decision.movements:
        batch.record(movement, command, hold.id, line.line_no)
    if decision.movements:
        batch.line_changed(hold, line)
    result: Result = {
        "outcome": decision.outcome,
        "hold_id": hold.id,
        "line_no": line.line_no,
        "returned": decimal_str(line.returned),
        "line_status": line.status.value,
    }
    if decision.refusal is not None:
        result |= {"reason": decision.refusal.value, "note": decision.note}
    return result
