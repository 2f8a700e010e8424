"""Transfers, applied by the writer of the product's shard: send, receive, cancel (`domain.transfers`).

A transfer's row (`transfers`) is written by the writer with its balances: created when it is sent
(a refused one leaves none), updated when it is received or cancelled. It carries the source's
average cost, which the destination averages in on receipt (`domain.valuation`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from db.batch_state import InboxCommand
from db.records import TRANSFERS, Row, asked, decided
from domain import transfers
from domain.allocation import LotStock
from domain.commands import StockCommand
from domain.errors import InvariantBroken
from domain.outcomes import Outcome
from domain.quantities import decimal_str
from domain.transfers import Transfer, TransferDecision, TransferStatus
from domain.valuation import averaged_in
from workers.batch import Batch, Result
from workers.handlers.registry import handles


def _of_row(row: Row) -> Transfer:
    quantity = Decimal(row["quantity"])
    received, damaged = Decimal(row["received"]), Decimal(row["damaged"])
    status = TransferStatus(row["status"])
    return Transfer(
        str(row["id"]),
        int(row["product_id"]),
        int(row["lot_id"]),
        int(row["from_warehouse_id"]),
        int(row["to_warehouse_id"]),
        quantity,
        status,
        received,
        damaged,
        quantity - received - damaged if status is TransferStatus.RECEIVED else Decimal(0),
        row["reason"],
    )


def _cost(row: Row) -> Decimal | None:
    """The source's average cost the transfer carries (None: none was known)."""
    return Decimal(row["unit_cost"]) if row.get("unit_cost") is not None else None


def _result(decision: TransferDecision, transfer: Transfer, *, exists: bool = True) -> Result:
    """The command's result: the transfer as it stands (`status`), unless it was refused when sent."""
    result: dict[str, Any] = {
        "outcome": decision.outcome,
        "transfer_id": transfer.id,
        "quantity": decimal_str(transfer.quantity),
    }
    if exists:
        result["status"] = transfer.status.value
    if decision.refusal is not None:
        result |= {"reason": decision.refusal.value, "note": decision.note}
    elif decision.note:
        result["note"] = decision.note
    if transfer.status is TransferStatus.RECEIVED:
        result |= {
            "received": decimal_str(transfer.received),
            "damaged": decimal_str(transfer.damaged),
            "written_off": decimal_str(transfer.written_off),
        }
    return result


def _record(batch: Batch, decision: TransferDecision, command: InboxCommand) -> None:
    for movement in decision.movements:
        batch.record(movement, command)


@handles(StockCommand.TRANSFER)
def send(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    product_id, lot_id = p["product_id"], p["lot_id"]
    source_id, destination_id = p["from_warehouse_id"], p["to_warehouse_id"]
    transfer = Transfer(p["transfer_id"], product_id, lot_id, source_id, destination_id, Decimal(p["pieces"]))
    source = batch.balance(product_id, source_id, lot_id)
    routes = {route.warehouse_id: route for route in batch.state.routes}

    def destination() -> LotStock:
        assert source is not None  # called only once the transfer is accepted
        return batch.balance_in(source, destination_id)

    unit_cost = batch.average_cost(product_id, source_id)
    decision = transfers.create(transfer, source, routes, destination, unit_cost=unit_cost)
    if decision.changed:
        _record(batch, decision, command)
        batch.save(
            TRANSFERS.name,
            {
                "id": transfer.id,
                "product_id": product_id,
                "lot_id": lot_id,
                "from_warehouse_id": source_id,
                "to_warehouse_id": destination_id,
                "quantity": transfer.quantity,
                "received": Decimal(0),
                "damaged": Decimal(0),
                "status": transfer.status.value,
                "unit_cost": unit_cost,
                "reason": None,
                **asked(command.seq, p),
            },
        )
    return _result(decision, transfer, exists=decision.changed)


def _sent(batch: Batch, command: InboxCommand) -> tuple[Row, Transfer] | None:
    row = batch.operation(TRANSFERS.name, command.payload["transfer_id"])
    return (row, _of_row(row)) if row is not None else None


def _unknown(command: InboxCommand) -> Result:
    # The producer records a follow-up only for a transfer it finds; one recorded meanwhile is not.
    return {
        "outcome": Outcome.REJECTED,
        "reason": "unknown_transfer",
        "transfer_id": command.payload["transfer_id"],
    }


def _ends(batch: Batch, transfer: Transfer) -> tuple[LotStock, LotStock]:
    source = batch.balance(transfer.product_id, transfer.source_id, transfer.lot_id)
    destination = batch.balance(transfer.product_id, transfer.destination_id, transfer.lot_id)
    if source is None or destination is None:
        raise InvariantBroken(f"transfer {transfer.id}: a balance it moved is gone")
    return source, destination


def _decided(row: Row, transfer: Transfer, command: InboxCommand) -> Row:
    return {
        **row,
        "status": transfer.status.value,
        "received": transfer.received,
        "damaged": transfer.damaged,
        "reason": transfer.reason,
        **decided(command.seq, command.payload),
    }


@handles(StockCommand.TRANSFER_RECEIVE)
def receive(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    sent = _sent(batch, command)
    if sent is None:
        return _unknown(command)
    row, transfer = sent
    _, destination = _ends(batch, transfer)
    arriving_on = sum(
        (s.on_hand for s in batch.stocks(transfer.product_id) if s.warehouse_id == transfer.destination_id),
        Decimal(0),
    )
    decision = transfers.receive(
        transfer,
        destination,
        good=Decimal(p["received"]) if p.get("received") is not None else None,
        damaged=Decimal(p.get("damaged") or 0),
        reason=p.get("reason"),
        unit_cost=_cost(row),
    )
    if decision.changed:
        _record(batch, decision, command)
        batch.save(TRANSFERS.name, _decided(row, transfer, command))
        arrived = transfer.received + transfer.damaged
        if (unit_cost := _cost(row)) is not None and arrived:
            average = batch.average_cost(transfer.product_id, transfer.destination_id)
            batch.set_average_cost(
                transfer.product_id,
                transfer.destination_id,
                averaged_in(average, arriving_on, arrived, unit_cost),
            )
    return _result(decision, transfer)


@handles(StockCommand.TRANSFER_CANCEL)
def cancel(batch: Batch, command: InboxCommand) -> Result:
    sent = _sent(batch, command)
    if sent is None:
        return _unknown(command)
    row, transfer = sent
    source, destination = _ends(batch, transfer)
    decision = transfers.cancel(transfer, source, destination, unit_cost=_cost(row))
    if decision.changed:
        _record(batch, decision, command)
        batch.save(TRANSFERS.name, _decided(row, transfer, command))
    return _result(decision, transfer)
