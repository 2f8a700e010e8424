"""What one line command does to one product's stock: the product shard writer's decisions.

Each function mutates the in-memory line and lot balances of the writer's batch (so a later
command in the same batch sees what an earlier one took) and returns the ledger movements that
explain the change. A rejection is an outcome, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.allocation import LotStock, Pick, WarehouseRoute, allocate_line
from domain.errors import InvariantBroken
from domain.movements import Movement, MovementKind, move
from domain.outcomes import Outcome
from domain.states import MOVES, HoldLine, LineAction, LineStatus


@dataclass(slots=True)
class LineOutcome:
    outcome: Outcome
    note: str = ""
    movements: list[Movement] = field(default_factory=list)


def _held_stock(line: HoldLine, stocks: list[LotStock]) -> LotStock:
    for stock in stocks:
        if stock.warehouse_id == line.warehouse_id and stock.lot_id == line.lot_id:
            return stock
    raise InvariantBroken(f"hold {line.hold_id} line {line.line_no}: its lot balance is gone")


def _allocate(line: HoldLine, stocks: list[LotStock], routes: list[WarehouseRoute]) -> Pick | None:
    result = allocate_line(line.pieces, stocks, routes, requested_warehouse_id=line.requested_warehouse_id)
    if isinstance(result, Pick):
        line.warehouse_id, line.lot_id = result.stock.warehouse_id, result.stock.lot_id
        line.reason, line.available, line.largest_lot = None, None, None
        return result
    line.reason = result.message(line.pieces)
    line.available = result.available
    line.largest_lot = (
        {
            "lot": result.largest_lot.lot_code,
            "warehouse": result.largest_lot.warehouse_code,
            "available": str(result.largest_lot.available),
        }
        if result.largest_lot
        else None
    )
    return None


def apply_line(
    action: LineAction, line: HoldLine, stocks: list[LotStock], routes: list[WarehouseRoute]
) -> LineOutcome:
    """Apply one line command to the product's lot balances."""
    if action is LineAction.RESERVE:
        if line.status is not LineStatus.PENDING:
            return LineOutcome(Outcome.NOOP, f"line already {line.status.value}")
        return _reserve(line, stocks, routes, refused=LineStatus.REJECTED)
    if action is LineAction.REALLOCATE:
        if line.status is LineStatus.RESERVED:  # its release or expiry never applied: still held
            return LineOutcome(Outcome.RESERVED, "still held")
        if line.status not in (LineStatus.EXPIRED, LineStatus.RELEASED):
            return LineOutcome(Outcome.NOOP, f"line is {line.status.value}")
        return _reserve(line, stocks, routes, refused=LineStatus.UNFULFILLED)
    acts_on, leaves = MOVES[action]
    if line.status is not acts_on:
        return LineOutcome(Outcome.NOOP, f"line is {line.status.value}")
    stock, qty = _held_stock(line, stocks), line.allocated
    line.status = leaves
    if action is LineAction.CONFIRM:
        movement = move(MovementKind.SALE, stock, on_hand=-qty, reserved=-qty)
    elif action is LineAction.RETURN:
        # A refunded sale comes back to the lot it left: what the customer has not returned yet
        # (a line returned in full is `returned`, which a refund does not act on).
        rest, line.returned = qty - line.returned, qty
        movement = move(MovementKind.RETURN, stock, on_hand=rest)
    else:
        kind = MovementKind.EXPIRY if action is LineAction.EXPIRE else MovementKind.RELEASE
        movement = move(kind, stock, reserved=-qty)
    return LineOutcome(Outcome(leaves.value), movements=[movement])


def _reserve(
    line: HoldLine, stocks: list[LotStock], routes: list[WarehouseRoute], *, refused: LineStatus
) -> LineOutcome:
    pick = _allocate(line, stocks, routes)
    if pick is None:
        line.status = refused
        return LineOutcome(Outcome(refused.value), line.reason or "")
    line.status, line.allocated = LineStatus.RESERVED, pick.quantity
    return LineOutcome(
        Outcome.RESERVED, movements=[move(MovementKind.RESERVATION, pick.stock, reserved=pick.quantity)]
    )


def fail_line(action: LineAction, line: HoldLine, error: str) -> LineOutcome:
    """A line command that could not be applied at all (parked as a dead letter).

    An allocation the hold waits for still answers, as a refusal that says why, so that the saga
    settles (an all-or-nothing cart is rejected and its other lines given back) and no checkout is
    left waiting. Any other line command changes nothing: the line keeps what it holds.
    """
    why = f"could not be applied: {error}"
    if action is LineAction.RESERVE and line.status is LineStatus.PENDING:
        line.status, line.reason = LineStatus.REJECTED, why
    elif action is LineAction.REALLOCATE and line.status in (LineStatus.EXPIRED, LineStatus.RELEASED):
        line.status, line.reason = LineStatus.UNFULFILLED, why
    elif not (action is LineAction.REALLOCATE and line.status is LineStatus.RESERVED):  # that one: still held
        return LineOutcome(Outcome.NOOP, why)
    return LineOutcome(Outcome(line.status.value), why)
