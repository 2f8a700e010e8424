"""The warehouse's calls of `StockClient`: transfers, counts, adjustments and their approval, returns.

Each validates its request (`producers.warehouse_requests`), records it (`producers.operations`) and
returns a ticket; a transfer's or an adjustment's ticket carries its id at once. `actor` names who
asks (the client's own `actor` when not given): ledger rows say who, and an adjustment is approved
only by another actor than the one who asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from producers.operations import OperationRecorder
from producers.recording import Actor
from producers.tickets import CommandTicket, OperationTicket
from producers.warehouse_requests import (
    AdjustmentDecisionRequest,
    AdjustmentRequest,
    CountRequest,
    ReturnRequest,
    TransferCancelRequest,
    TransferReceiptRequest,
    TransferRequest,
)

if TYPE_CHECKING:
    from producers.client import StockClient

Amount = str | int | Decimal


class WarehouseCalls:
    """Mixed into `StockClient`, which gives `operations` and `actor`."""

    operations: OperationRecorder

    @property
    def _client(self) -> StockClient:
        return cast("StockClient", self)  # the tickets read through the client this is part of

    def transfer(
        self,
        *,
        idempotency_key: str,
        from_warehouse: str,
        to_warehouse: str,
        sku: str,
        lot: str,
        quantity: Amount,
        unit: str = "piece",
        actor: str | Actor | None = None,
    ) -> OperationTicket:
        """Send pieces of a lot to another warehouse (out of its available stock, into in_transit)."""
        request = TransferRequest.parse(
            idempotency_key=idempotency_key,
            from_warehouse=from_warehouse,
            to_warehouse=to_warehouse,
            sku=sku,
            lot=lot,
            quantity=quantity,
            unit=unit,
        )
        transfer_id = self.operations.transfer(request, self._client.actor_of(actor))
        return OperationTicket(self._client, request.idempotency_key, transfer_id)

    def receive_transfer(
        self,
        transfer_id: str,
        *,
        idempotency_key: str,
        received: Amount | None = None,
        damaged: Amount = 0,
        reason: str | None = None,
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        """The transfer arrives: `received` good (all when not said), `damaged`; the rest is written off."""
        request = TransferReceiptRequest.parse(
            transfer_id=transfer_id,
            idempotency_key=idempotency_key,
            received=received,
            damaged=damaged,
            reason=reason,
        )
        self.operations.receive_transfer(request, self._client.actor_of(actor))
        return CommandTicket(self._client, request.idempotency_key)

    def cancel_transfer(
        self, transfer_id: str, *, idempotency_key: str, actor: str | Actor | None = None
    ) -> CommandTicket:
        """Call a transfer back before it is received."""
        request = TransferCancelRequest.parse(transfer_id=transfer_id, idempotency_key=idempotency_key)
        self.operations.cancel_transfer(request, self._client.actor_of(actor))
        return CommandTicket(self._client, request.idempotency_key)

    def count(
        self,
        *,
        idempotency_key: str,
        lines: Sequence[Mapping[str, Any]],
        reason: str | None = None,
        actor: str | Actor | None = None,
    ) -> list[CommandTicket]:
        """What was found per (warehouse, sku, lot, counted, unit?): a ticket per line."""
        request = CountRequest.parse(idempotency_key=idempotency_key, lines=lines, reason=reason)
        keys = self.operations.count(request, self._client.actor_of(actor))
        return [CommandTicket(self._client, key) for key in keys]

    def adjust(
        self,
        *,
        idempotency_key: str,
        warehouse: str,
        sku: str,
        lot: str,
        quantity: Amount,
        reason: str,
        unit: str = "piece",
        actor: str | Actor | None = None,
    ) -> OperationTicket:
        """Correct a lot's on_hand by a signed quantity, with a reason (above the threshold it waits
        for approval)."""
        request = AdjustmentRequest.parse(
            idempotency_key=idempotency_key,
            warehouse=warehouse,
            sku=sku,
            lot=lot,
            quantity=quantity,
            unit=unit,
            reason=reason,
        )
        adjustment_id = self.operations.adjust(request, self._client.actor_of(actor))
        return OperationTicket(self._client, request.idempotency_key, adjustment_id)

    def approve_adjustment(
        self,
        adjustment_id: str,
        *,
        idempotency_key: str,
        note: str | None = None,
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        return self._decide(adjustment_id, idempotency_key, note, actor, approve=True)

    def reject_adjustment(
        self,
        adjustment_id: str,
        *,
        idempotency_key: str,
        note: str | None = None,
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        return self._decide(adjustment_id, idempotency_key, note, actor, approve=False)

    def _decide(
        self,
        adjustment_id: str,
        key: str,
        note: str | None,
        actor: str | Actor | None,
        *,
        approve: bool,
    ) -> CommandTicket:
        request = AdjustmentDecisionRequest.parse(adjustment_id=adjustment_id, idempotency_key=key, note=note)
        self.operations.decide_adjustment(request, self._client.actor_of(actor), approve=approve)
        return CommandTicket(self._client, request.idempotency_key)

    def return_goods(
        self,
        hold_id: str,
        *,
        idempotency_key: str,
        lines: Sequence[Mapping[str, Any]],
        actor: str | Actor | None = None,
    ) -> list[CommandTicket]:
        """Goods brought back against a confirmed hold: per line (line_no, quantity, unit?,
        condition resellable | damaged, reason?), a ticket each."""
        request = ReturnRequest.parse(idempotency_key=idempotency_key, hold_id=hold_id, lines=lines)
        keys = self.operations.take_back(request, self._client.actor_of(actor))
        return [CommandTicket(self._client, key) for key in keys]
