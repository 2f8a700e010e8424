"""The checkout service's routes: place a hold (waiting for its answer up to `?wait=`), read it,
release it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from domain.errors import ResultTimeout
from domain.results import HoldResult
from domain.states import HoldStatus
from producers.client import StockClient
from producers.http.auth import CHECKOUT, OPS, allow
from producers.http.bodies import HoldBody, Pending, Recorded, model_response
from producers.http.exact import exact_json, idempotency_key
from producers.http.problems import Problem, documented
from producers.tickets import CommandTicket, HoldTicket

router = APIRouter(tags=["holds"], responses=documented(400, 401, 403, 404, 413, 422))
Wait = Annotated[float, Query(ge=0, le=30, description="seconds to wait for the answer")]
KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


def client_of(request: Request) -> StockClient:
    """The process's `StockClient` (every route goes through it)."""
    client: StockClient = request.app.state.client
    return client


@router.post(
    "/v1/holds",
    status_code=201,
    response_model=HoldResult,
    responses={200: {"model": HoldResult}, 202: {"model": Pending}, **documented(409, 503)},
    dependencies=[Depends(allow(CHECKOUT))],
)
async def place_hold(request: Request, body: HoldBody, key: KeyHeader = None, wait: Wait = 0) -> Response:
    """Hold cart lines. 201: decided within `wait`; 202: not yet (see `Location`); 200: this key was
    sent before with this cart (the same hold)."""
    data = await exact_json(request)
    key = idempotency_key(key, body.idempotency_key)
    in_flight: set[str] = request.app.state.in_flight
    if key in in_flight:
        raise Problem(
            409, "in_progress", "a request with this key is still being recorded", field="idempotency_key"
        )
    in_flight.add(key)
    try:
        ticket = await client_of(request).reserve_async(
            idempotency_key=key,
            lines=data["lines"],
            ttl_seconds=data.get("ttl_seconds"),
            mode=data.get("mode", "all_or_nothing"),
        )
    finally:
        in_flight.discard(key)
    return await _hold_answer(ticket, wait)


async def _hold_answer(ticket: HoldTicket, wait: float) -> Response:
    try:
        hold = await ticket.wait_async(wait) if wait > 0 else await run_in_threadpool(ticket.result)
    except ResultTimeout:
        hold = None
    if hold is None or not HoldStatus(hold.status).settled:
        return model_response(
            Pending(hold_id=ticket.hold_id), 202, headers={"Location": f"/v1/holds/{ticket.hold_id}"}
        )
    return model_response(hold, 201 if ticket.fresh else 200)


@router.get("/v1/holds/{hold_id}", response_model=HoldResult, dependencies=[Depends(allow(CHECKOUT, OPS))])
async def read_hold(request: Request, hold_id: str) -> HoldResult:
    return await run_in_threadpool(client_of(request).hold, hold_id)


@router.post(
    "/v1/holds/{hold_id}/release",
    status_code=202,
    response_model=Recorded,
    responses={200: {"model": Recorded}},
    dependencies=[Depends(allow(CHECKOUT))],
)
async def release_hold(request: Request, hold_id: str, key: KeyHeader = None, wait: Wait = 0) -> Response:
    """Give the hold back. 202: recorded; 200: applied within `wait` (its result)."""
    ticket = await run_in_threadpool(
        client_of(request).release, hold_id, idempotency_key=idempotency_key(key, None)
    )
    return await command_answer(ticket, wait)


async def command_answer(ticket: CommandTicket, wait: float) -> Response:
    """A recorded command's answer: its result if applied within `wait`, else 202."""
    recorded = await recorded_within(ticket, wait)
    return model_response(recorded, 200 if recorded.status == "applied" else 202)


async def recorded_within(ticket: CommandTicket, wait: float) -> Recorded:
    """The command as it stands after waiting up to `wait` seconds for it to apply."""
    result: dict[str, Any] | None
    try:
        result = (
            await run_in_threadpool(ticket.wait, wait) if wait > 0 else await run_in_threadpool(ticket.result)
        )
    except ResultTimeout:
        result = None
    if result is None:
        return Recorded(idempotency_key=ticket.key, status="recorded")
    return Recorded(idempotency_key=ticket.key, status="applied", result=result)


async def lines_within(tickets: Sequence[CommandTicket], wait: float) -> list[Recorded]:
    """Each line's command as it stands, each waited for within what is left of `wait`."""
    deadline = time.monotonic() + wait
    return [await recorded_within(t, max(0.0, deadline - time.monotonic())) for t in tickets]
