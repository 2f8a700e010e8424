"""Goods in, quarantine and damage, applied by the writer of the product's shard
(docs/warehouse.md): each handler finds the lot balance and the quarantined line its command names,
lets the domain decide and records the movement, the valuation and the quarantine row."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from db.batch_state import InboxCommand
from db.records import QUARANTINES, Row
from domain import damage as damage_rules
from domain import quarantine as quarantine_rules
from domain.allocation import LotStock
from domain.commands import StockCommand
from domain.errors import InvariantBroken
from domain.movements import Movement, MovementKind, move
from domain.outcomes import Outcome, Refused
from domain.quantities import decimal_str
from domain.quarantine import QuarantinedLine
from domain.receipts import LotFacts, lot_conflict, merged_facts
from domain.valuation import averaged_in, on_hand_at
from workers.batch import Batch, Result
from workers.handlers.registry import handles


@handles(StockCommand.RECEIVE)
def receive(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    stock = _receiving_balance(batch, p)
    if isinstance(stock, Refused):
        # The recording checked the lot too; two receipts recorded at once can still differ.
        return {"outcome": Outcome.REJECTED, "reason": stock.reason, "lot": p["lot"]}
    pieces, unit_cost, quarantine_id = (
        Decimal(p["pieces"]),
        _decimal(p.get("unit_cost")),
        p.get("quarantine_id"),
    )
    if unit_cost is not None:
        _average_in(batch, stock, pieces, unit_cost)
    quarantined = pieces if quarantine_id else Decimal(0)
    movement = move(
        MovementKind.RECEIPT,
        stock,
        on_hand=pieces,
        quarantine=quarantined,
        unit_cost=unit_cost,
        reason=p.get("reason"),
    )
    batch.record(movement, command)
    result: Result = {
        "outcome": Outcome.RECEIVED,
        "pieces": p["pieces"],
        "lot": p["lot"],
        "on_hand": decimal_str(stock.on_hand),
    }
    if quarantine_id:
        _save_quarantine(batch, QuarantinedLine(quarantine_id, pieces), stock, command.seq)
        result["quarantine_id"] = quarantine_id
    return result


def _receiving_balance(batch: Batch, p: dict[str, Any]) -> LotStock | Refused:
    """The balance a receipt goes into: of its lot (created, or its missing facts completed) at its
    warehouse (created if none); refused if the lot is known with other facts."""
    product_id, warehouse_id, lot_code = p["product_id"], p["warehouse_id"], p["lot"]
    stocks = batch.stocks(product_id)
    received = LotFacts(
        p.get("shade"), p.get("caliber"), dt.date.fromisoformat(p["expiry"]) if p.get("expiry") else None
    )
    known = next((s for s in stocks if s.lot_code == lot_code), None)
    facts = received
    if known is not None:
        lot = LotFacts(known.shade, known.caliber, known.expiry)
        if why := lot_conflict(lot_code, lot, received):
            return Refused(why, available=Decimal(0))
        facts = merged_facts(lot, received)
        if facts != lot:
            batch.complete_lot_facts(product_id, known.lot_id, facts)
    here = next((s for s in stocks if s.warehouse_id == warehouse_id and s.lot_code == lot_code), None)
    return here or batch.new_stock(product_id, warehouse_id, lot_code, facts, known)


def _average_in(batch: Batch, stock: LotStock, pieces: Decimal, unit_cost: Decimal) -> None:
    """Pieces received at a cost join the warehouse's average (`domain.valuation`)."""
    average = batch.average_cost(stock.product_id, stock.warehouse_id)
    on_hand = on_hand_at(batch.stocks(stock.product_id), stock.warehouse_id)
    batch.set_average_cost(
        stock.product_id, stock.warehouse_id, averaged_in(average, on_hand, pieces, unit_cost)
    )


@handles(StockCommand.QUARANTINE_RELEASE)
def release_quarantine(batch: Batch, command: InboxCommand) -> Result:
    found = _quarantined(batch, command)
    if isinstance(found, Refused):
        return _refused(found)
    line, stock, seq = found
    decided = quarantine_rules.release(
        line, stock, _pieces(command), unit_cost=batch.average_cost(stock.product_id, stock.warehouse_id)
    )
    return _quarantine_moved(batch, command, line, stock, seq, decided, Outcome.RELEASED)


@handles(StockCommand.DAMAGE)
def damage(batch: Batch, command: InboxCommand) -> Result:
    """From quarantine when the payload names a quarantined line, else from the lot's available stock."""
    if command.payload.get("quarantine_id"):
        return _write_off_quarantined(batch, command)
    p = command.payload
    stock = next(
        (
            s
            for s in batch.stocks(p["product_id"])
            if s.warehouse_id == p["warehouse_id"] and s.lot_code == p["lot"]
        ),
        None,
    )
    if stock is None:
        return _refused(Refused(f"lot {p['lot']} has no stock in this warehouse", available=Decimal(0)))
    decided = damage_rules.damage(
        stock,
        Decimal(p["pieces"]),
        reason=p["reason"],
        unit_cost=batch.average_cost(stock.product_id, stock.warehouse_id),
    )
    if isinstance(decided, Refused):
        return _refused(decided)
    batch.record(decided, command)
    return _moved(Outcome.DAMAGED, decided)


def _write_off_quarantined(batch: Batch, command: InboxCommand) -> Result:
    found = _quarantined(batch, command)
    if isinstance(found, Refused):
        return _refused(found)
    line, stock, seq = found
    decided = quarantine_rules.write_off(
        line,
        stock,
        _pieces(command),
        reason=command.payload["reason"],
        unit_cost=batch.average_cost(stock.product_id, stock.warehouse_id),
    )
    return _quarantine_moved(batch, command, line, stock, seq, decided, Outcome.DAMAGED)


def _quarantined(batch: Batch, command: InboxCommand) -> tuple[QuarantinedLine, LotStock, int] | Refused:
    """The quarantined line a command names, its lot balance and the seq of its receipt."""
    quarantine_id = command.payload["quarantine_id"]
    row = batch.operation(QUARANTINES.name, quarantine_id)
    if row is None:
        return Refused(f"no quarantine {quarantine_id}", available=Decimal(0))
    line = QuarantinedLine(
        quarantine_id, Decimal(row["quantity"]), Decimal(row["released"]), Decimal(row["written_off"])
    )
    stock = batch.balance(row["product_id"], row["warehouse_id"], row["lot_id"])
    if stock is None:
        raise InvariantBroken(f"quarantine {quarantine_id}: its lot balance is gone")
    return line, stock, row["command_seq"]


def _quarantine_moved(
    batch: Batch,
    command: InboxCommand,
    line: QuarantinedLine,
    stock: LotStock,
    seq: int,
    decided: Movement | Refused,
    outcome: Outcome,
) -> Result:
    if isinstance(decided, Refused):
        return _refused(decided)
    batch.record(decided, command)
    _save_quarantine(batch, line, stock, seq)
    return {
        **_moved(outcome, decided),
        "quarantine_id": line.id,
        "left": decimal_str(line.left),
        "status": line.status,
    }


def _save_quarantine(batch: Batch, line: QuarantinedLine, stock: LotStock, seq: int) -> None:
    row: Row = {
        "id": line.id,
        "product_id": stock.product_id,
        "warehouse_id": stock.warehouse_id,
        "lot_id": stock.lot_id,
        "quantity": line.quantity,
        "released": line.released,
        "written_off": line.written_off,
        "status": line.status,
        "command_seq": seq,
    }
    batch.save(QUARANTINES.name, row)


def _moved(outcome: Outcome, movement: Movement) -> Result:
    return {"outcome": outcome, "pieces": decimal_str(movement.quantity), "lot": movement.stock.lot_code}


def _refused(refused: Refused) -> Result:
    return {
        "outcome": Outcome.REJECTED,
        "reason": refused.reason,
        "available": decimal_str(refused.available),
    }


def _pieces(command: InboxCommand) -> Decimal | None:
    return _decimal(command.payload.get("pieces"))


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)
