"""The warehouse's goods-in routes: receipts (several lines, or the original one), quarantine
release and write-off, damage. Each records `stock.…` commands that name the token's holder as
their actor, and answers like a receipt: 202 once recorded, 200 with the results within `?wait=`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from producers.http.auth import Warehouse, actor_of
from producers.http.bodies import (
    DamageBody,
    QuarantineBody,
    ReceiptBody,
    ReceiptLineRecorded,
    ReceiptRecorded,
    Recorded,
    WriteOffBody,
    model_response,
)
from producers.http.exact import exact_json, idempotency_key
from producers.http.holds import APPLIED, KeyHeader, Wait, client_of, command_answer, lines_within
from producers.http.problems import Problem, documented
from producers.requests import GoodsReceiptRequest
from producers.tickets import ReceiptTicket

router = APIRouter(tags=["goods in"], responses=documented(400, 401, 403, 404, 413, 422))
DOCUMENTS = ("supplier", "purchase_order", "invoice")
LINE_FIELDS = tuple(
    name for name in ReceiptBody.model_fields if name not in ("lines", "idempotency_key", *DOCUMENTS)
)
"""The fields of the one line a receipt without `lines` has at its top level."""


async def _body(request: Request) -> dict[str, Any]:
    """The body with exact numbers; none at all is an empty one (every field optional)."""
    return await exact_json(request) if await request.body() else {}


@router.post(
    "/v1/receipts",
    status_code=202,
    response_model=ReceiptRecorded | Recorded,
    responses={200: {"model": ReceiptRecorded | Recorded}},
)
async def receive(
    request: Request, body: ReceiptBody, caller: Warehouse, key: KeyHeader = None, wait: Wait = 0
) -> Response:
    """Goods in. With `lines`: each line a command keyed `{key}:{n}`, all recorded or none; the
    answer lists each line (a quarantined one with its id). Without: the original one-line receipt.
    202 once recorded, 200 with the results if applied within `wait`."""
    data = await exact_json(request)
    key = idempotency_key(key, body.idempotency_key)
    documents = {name: data[name] for name in DOCUMENTS if name in data}
    if "lines" in data:
        if stray := [name for name in LINE_FIELDS if name in data]:
            raise Problem(
                422, "invalid_request", "a receipt with lines has its line fields in them", field=stray[0]
            )
        parsed = GoodsReceiptRequest.parse(idempotency_key=key, lines=data["lines"], **documents)
    else:
        line = {name: data[name] for name in LINE_FIELDS if name in data}
        parsed = GoodsReceiptRequest.parse(idempotency_key=key, lines=[line], numbered=False, **documents)
    ticket = await run_in_threadpool(client_of(request).record_receipt, parsed, actor_of(caller))
    if not parsed.numbered:
        return await command_answer(ticket.lines[0].ticket, wait)
    return await _receipt_answer(ticket, wait)


async def _receipt_answer(ticket: ReceiptTicket, wait: float) -> Response:
    recorded = await lines_within([line.ticket for line in ticket.lines], wait)
    lines = [
        ReceiptLineRecorded(**r.model_dump(), line_no=line.line_no, quarantine_id=line.quarantine_id)
        for line, r in zip(ticket.lines, recorded, strict=True)
    ]
    applied = all(line.status == "applied" for line in lines)
    answer = ReceiptRecorded(
        idempotency_key=ticket.key, status="applied" if applied else "recorded", lines=lines
    )
    return model_response(answer, 200 if applied else 202)


@router.post(
    "/v1/quarantine/{quarantine_id}/release",
    status_code=202,
    response_model=Recorded,
    responses=APPLIED,
)
async def release_quarantine(
    request: Request,
    quarantine_id: str,
    caller: Warehouse,
    body: QuarantineBody | None = None,
    key: KeyHeader = None,
    wait: Wait = 0,
) -> Response:
    """Release a quarantined receipt line to sellable stock: `quantity` of it, or all that is left."""
    data = await _body(request)
    ticket = await run_in_threadpool(
        client_of(request).release_quarantine,
        quarantine_id,
        idempotency_key=idempotency_key(key, body.idempotency_key if body else None),
        quantity=data.get("quantity"),
        unit=data.get("unit", "piece"),
        actor=actor_of(caller),
    )
    return await command_answer(ticket, wait)


@router.post(
    "/v1/quarantine/{quarantine_id}/write-off",
    status_code=202,
    response_model=Recorded,
    responses=APPLIED,
)
async def write_off_quarantine(
    request: Request,
    quarantine_id: str,
    body: WriteOffBody,
    caller: Warehouse,
    key: KeyHeader = None,
    wait: Wait = 0,
) -> Response:
    """Write a quarantined receipt line (`quantity` of it, or all that is left) off as damaged."""
    data = await exact_json(request)
    ticket = await run_in_threadpool(
        client_of(request).write_off_quarantine,
        quarantine_id,
        idempotency_key=idempotency_key(key, body.idempotency_key),
        reason=data["reason"],
        quantity=data.get("quantity"),
        unit=data.get("unit", "piece"),
        actor=actor_of(caller),
    )
    return await command_answer(ticket, wait)


@router.post("/v1/damage", status_code=202, response_model=Recorded, responses=APPLIED)
async def damage(
    request: Request, body: DamageBody, caller: Warehouse, key: KeyHeader = None, wait: Wait = 0
) -> Response:
    """Pieces found damaged, with why: of a lot's available stock (warehouse, sku, lot, quantity),
    or of a quarantined receipt line (quarantine_id; quantity, or all that is left)."""
    data = await exact_json(request)
    client, key = client_of(request), idempotency_key(key, body.idempotency_key)
    if body.quarantine_id is not None:
        if stray := [name for name in ("warehouse", "sku", "lot") if name in data]:
            raise Problem(422, "invalid_request", "a quarantined line names its own lot", field=stray[0])
        ticket = await run_in_threadpool(
            client.write_off_quarantine,
            body.quarantine_id,
            idempotency_key=key,
            reason=data["reason"],
            quantity=data.get("quantity"),
            unit=data.get("unit", "piece"),
            actor=actor_of(caller),
        )
    else:
        if missing := [name for name in ("warehouse", "sku", "lot", "quantity") if data.get(name) is None]:
            raise Problem(
                422,
                "invalid_request",
                "name the lot (warehouse, sku, lot) and the quantity",
                field=missing[0],
            )
        ticket = await run_in_threadpool(
            client.damage,
            idempotency_key=key,
            warehouse=data["warehouse"],
            sku=data["sku"],
            lot=data["lot"],
            quantity=data["quantity"],
            unit=data.get("unit", "piece"),
            reason=data["reason"],
            actor=actor_of(caller),
        )
    return await command_answer(ticket, wait)
