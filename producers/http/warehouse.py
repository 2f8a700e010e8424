"""The warehouse's routes: transfers, counts, adjustments (approved or rejected by ops), returns.

Each is answered like a receipt: 202 once recorded, 200 with its result if it applied within
`?wait=`. A transfer's or adjustment's id, drawn by the producer, is in the answer at once. The
caller's token says who asks (ledger rows name it; an adjustment is decided by another token).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from db.tokens import ApiToken
from producers.http.auth import CHECKOUT, OPS, WAREHOUSE, Warehouse, actor_of, allow
from producers.http.bodies import Recorded, model_response
from producers.http.exact import exact_json, idempotency_key
from producers.http.holds import (
    APPLIED,
    KeyHeader,
    Wait,
    client_of,
    command_answer,
    lines_within,
    recorded_within,
)
from producers.http.problems import documented
from producers.http.warehouse_bodies import (
    AdjustmentBody,
    AdjustmentRecorded,
    CancelBody,
    CountBody,
    DecisionBody,
    LinesRecorded,
    ReturnBody,
    TransferBody,
    TransferReceiptBody,
    TransferRecorded,
)
from producers.tickets import CommandTicket, OperationTicket

router = APIRouter(tags=["warehouse"], responses=documented(400, 401, 403, 404, 409, 413, 422))
Adjusts = Annotated[ApiToken, Depends(allow(WAREHOUSE, OPS))]
Ops = Annotated[ApiToken, Depends(allow(OPS))]
Returns = Annotated[ApiToken, Depends(allow(WAREHOUSE, CHECKOUT))]


async def _created(ticket: OperationTicket, wait: float, answer: Callable[..., Recorded]) -> Response:
    """A command that creates a transfer or an adjustment: answered with its id at once."""
    recorded = await recorded_within(ticket, wait)
    return model_response(answer(**recorded.model_dump()), 200 if recorded.status == "applied" else 202)


async def _lines_answer(key: str, tickets: list[CommandTicket], wait: float) -> Response:
    """Every line's command, each waited for within what is left of `wait`."""
    lines = await lines_within(tickets, wait)
    applied = all(line.status == "applied" for line in lines)
    answer = LinesRecorded(idempotency_key=key, status="applied" if applied else "recorded", lines=lines)
    return model_response(answer, 200 if applied else 202)


# -- transfers ----------------------------------------------------------------------------------


@router.post(
    "/v1/transfers",
    status_code=202,
    response_model=TransferRecorded,
    responses={200: {"model": TransferRecorded}},
)
async def send_transfer(
    request: Request, body: TransferBody, caller: Warehouse, key: KeyHeader = None, wait: Wait = 0
) -> Response:
    """Send pieces of a lot to another warehouse: out of its available stock (reserved stock never
    moves) into the destination's in_transit."""
    data = await exact_json(request)
    ticket = await run_in_threadpool(
        client_of(request).transfer,
        idempotency_key=idempotency_key(key, body.idempotency_key),
        from_warehouse=data["from_warehouse"],
        to_warehouse=data["to_warehouse"],
        sku=data["sku"],
        lot=data["lot"],
        quantity=data["quantity"],
        unit=data.get("unit", "piece"),
        actor=actor_of(caller),
    )
    return await _created(ticket, wait, partial(TransferRecorded, transfer_id=ticket.operation_id))


@router.post(
    "/v1/transfers/{transfer_id}/receive", status_code=202, response_model=Recorded, responses=APPLIED
)
async def receive_transfer(
    request: Request,
    transfer_id: str,
    body: TransferReceiptBody,
    caller: Warehouse,
    key: KeyHeader = None,
    wait: Wait = 0,
) -> Response:
    """The pieces arrive: `received` good, `damaged` into damaged; what is missing is written off
    (damage and shortfall need a reason)."""
    data = await exact_json(request)
    ticket = await run_in_threadpool(
        client_of(request).receive_transfer,
        transfer_id,
        idempotency_key=idempotency_key(key, body.idempotency_key),
        received=data.get("received"),
        damaged=data.get("damaged", "0"),
        reason=data.get("reason"),
        actor=actor_of(caller),
    )
    return await command_answer(ticket, wait)


@router.post(
    "/v1/transfers/{transfer_id}/cancel", status_code=202, response_model=Recorded, responses=APPLIED
)
async def cancel_transfer(
    request: Request,
    transfer_id: str,
    caller: Warehouse,
    body: CancelBody | None = None,
    key: KeyHeader = None,
    wait: Wait = 0,
) -> Response:
    """Call the transfer back before it is received: its pieces return to the source lot."""
    ticket = await run_in_threadpool(
        client_of(request).cancel_transfer,
        transfer_id,
        idempotency_key=idempotency_key(key, body.idempotency_key if body else None),
        actor=actor_of(caller),
    )
    return await command_answer(ticket, wait)


# -- counts and adjustments ---------------------------------------------------------------------


@router.post(
    "/v1/counts", status_code=202, response_model=LinesRecorded, responses={200: {"model": LinesRecorded}}
)
async def count(
    request: Request, body: CountBody, caller: Warehouse, key: KeyHeader = None, wait: Wait = 0
) -> Response:
    """What was physically found per (warehouse, SKU, lot): each difference becomes a
    count_adjustment; a count below what is held keeps the holds and raises count_below_reserved."""
    data = await exact_json(request)
    key = idempotency_key(key, body.idempotency_key)
    tickets = await run_in_threadpool(
        client_of(request).count,
        idempotency_key=key,
        lines=data["lines"],
        reason=data.get("reason"),
        actor=actor_of(caller),
    )
    return await _lines_answer(key, tickets, wait)


@router.post(
    "/v1/adjustments",
    status_code=202,
    response_model=AdjustmentRecorded,
    responses={200: {"model": AdjustmentRecorded}},
)
async def adjust(
    request: Request, body: AdjustmentBody, caller: Adjusts, key: KeyHeader = None, wait: Wait = 0
) -> Response:
    """Correct a lot's on_hand by a signed quantity with a reason; above the approval threshold it
    waits for another token's approval (status `awaiting_approval`). Ops may adjust too (and then
    not approve their own)."""
    data = await exact_json(request)
    ticket = await run_in_threadpool(
        client_of(request).adjust,
        idempotency_key=idempotency_key(key, body.idempotency_key),
        warehouse=data["warehouse"],
        sku=data["sku"],
        lot=data["lot"],
        quantity=data["quantity"],
        unit=data.get("unit", "piece"),
        reason=data["reason"],
        actor=actor_of(caller),
    )
    return await _created(ticket, wait, partial(AdjustmentRecorded, adjustment_id=ticket.operation_id))


async def _decide(
    request: Request,
    adjustment_id: str,
    body: DecisionBody | None,
    caller: ApiToken,
    key: str | None,
    wait: float,
    *,
    approve: bool,
) -> Response:
    client = client_of(request)
    decide = client.approve_adjustment if approve else client.reject_adjustment
    ticket = await run_in_threadpool(
        decide,
        adjustment_id,
        idempotency_key=idempotency_key(key, body.idempotency_key if body else None),
        note=body.note if body else None,
        actor=actor_of(caller),
    )
    return await command_answer(ticket, wait)


@router.post(
    "/v1/adjustments/{adjustment_id}/approve", status_code=202, response_model=Recorded, responses=APPLIED
)
async def approve_adjustment(
    request: Request,
    adjustment_id: str,
    caller: Ops,
    body: DecisionBody | None = None,
    key: KeyHeader = None,
    wait: Wait = 0,
) -> Response:
    """Approve an adjustment waiting for approval: it changes stock now, once. Refused (403
    `same_approver`) to the token that asked for it."""
    return await _decide(request, adjustment_id, body, caller, key, wait, approve=True)


@router.post(
    "/v1/adjustments/{adjustment_id}/reject", status_code=202, response_model=Recorded, responses=APPLIED
)
async def reject_adjustment(
    request: Request,
    adjustment_id: str,
    caller: Ops,
    body: DecisionBody | None = None,
    key: KeyHeader = None,
    wait: Wait = 0,
) -> Response:
    """Reject an adjustment waiting for approval: it never changes stock."""
    return await _decide(request, adjustment_id, body, caller, key, wait, approve=False)


# -- returns ------------------------------------------------------------------------------------


@router.post(
    "/v1/returns", status_code=202, response_model=LinesRecorded, responses={200: {"model": LinesRecorded}}
)
async def take_back(
    request: Request, body: ReturnBody, caller: Returns, key: KeyHeader = None, wait: Wait = 0
) -> Response:
    """Goods brought back against a confirmed hold, per line: resellable into the lot they were sold
    from, damaged into its damaged (with a reason); never more than was sold and not yet returned."""
    data = await exact_json(request)
    key = idempotency_key(key, body.idempotency_key)
    tickets = await run_in_threadpool(
        client_of(request).return_goods,
        data["hold_id"],
        idempotency_key=key,
        lines=data["lines"],
        actor=actor_of(caller),
    )
    return await _lines_answer(key, tickets, wait)
