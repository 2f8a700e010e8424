"""The checkout service's routes: place a hold (waiting for its answer up to `?wait=`), read it,
release it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.requests import Request as StarletteRequest
from starlette.types import Message, Scope, Send

from domain.errors import ResultTimeout
from domain.results import HoldResult
from domain.states import HoldStatus
from producers.client import StockClient
from producers.http.auth import CHECKOUT, OPS, allow
from producers.http.bodies import HoldBody, Pending, Recorded, model_response
from producers.http.exact import exact_body, exact_json, idempotency_key
from producers.http.problems import Problem, Shortcut, documented, problem_for
from producers.tickets import CommandTicket, HoldTicket

router = APIRouter(tags=["holds"], responses=documented(400, 401, 403, 404, 413, 422))
Wait = Annotated[float, Query(ge=0, le=30, description="seconds to wait for the answer")]
RECORD_WITHIN_SECONDS = 5.0
"""The least a hold request waits for its hold to be recorded, however short its `wait`: then 503
`not_recorded` (PostgreSQL not answering). A hold recorded after all is found by a resend of the key."""
KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]
APPLIED: dict[int | str, dict[str, Any]] = {200: {"model": Recorded}}
"""A command route's other answer: 200, applied within `wait` (202: recorded)."""


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
    return await hold_response(request.app.state, idempotency_key(key, body.idempotency_key), data, wait)


_WAIT_QUERY = re.compile(rb"(?:wait=([0-9]{1,2}(?:\.[0-9]{1,6})?))?")


def place_hold_directly(app: FastAPI) -> Shortcut:
    """`place_hold` without FastAPI's routing, dependencies and validation layers, for the request
    a checkout sends nearly always: a cached checkout token, an `Idempotency-Key` header, a JSON
    body of the route's shape, `?wait=` alone. It takes the same steps (the same body model, the
    same `hold_response`) and its errors get the app's own problem documents; any other request is
    left to the route (measured: FastAPI's layers were a quarter of an API process's time per hold).
    """

    async def shortcut(scope: Scope, body: bytes, send: Send) -> bool:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _DIRECT_HEADERS:
                if name in headers:
                    return False  # a header sent twice: the route's to judge
                headers[name] = value
        wait = _WAIT_QUERY.fullmatch(scope["query_string"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        key = headers.get(b"idempotency-key")
        if wait is None or content_type != b"application/json" or key is None or scheme.lower() != "bearer":
            return False
        found = app.state.tokens.cached(token.strip())
        seconds = float(wait.group(1) or 0)
        if found is None or found.role != CHECKOUT or seconds > 30:
            return False
        try:  # parsed and validated as FastAPI does (python mode, JSON numbers as floats)
            parsed = HoldBody.model_validate(json.loads(body))
        except (ValueError, ValidationError):  # not JSON (ValueError), or not the route's shape
            return False
        key_text = key.decode("latin-1")
        if parsed.idempotency_key is not None or key_text in app.state.in_flight:
            return False
        try:
            response = await hold_response(app.state, key_text, exact_body(body), seconds)
        except Exception as error:  # answered as the route's would be
            response = await problem_for(app, StarletteRequest(scope), error)
        await response(scope, _no_body, send)
        return True

    return shortcut


_DIRECT_HEADERS = {b"authorization", b"idempotency-key", b"content-type"}


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


async def hold_response(state: State, key: str, data: dict[str, Any], wait: float) -> Response:
    """Record (or hand over) the hold of a checked request and answer it (`place_hold`)."""
    in_flight: set[str] = state.in_flight
    if key in in_flight:
        raise Problem(
            409, "in_progress", "a request with this key is still being recorded", field="idempotency_key"
        )
    in_flight.add(key)
    client: StockClient = state.client
    deadline = time.monotonic() + wait
    try:
        ticket = await client.reserve_async(
            idempotency_key=key,
            lines=data["lines"],
            ttl_seconds=data.get("ttl_seconds"),
            mode=data.get("mode", "all_or_nothing"),
            hand_over_within=min(client.settings.hand_over_seconds, wait / 2),
            record_within=max(wait, RECORD_WITHIN_SECONDS),
        )
    finally:
        in_flight.discard(key)
    # What is left of the wait (a hold handed over and then recorded here spent some of it).
    return await _hold_answer(ticket, wait and max(deadline - time.monotonic(), 0.001))


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
    responses=APPLIED,
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
