"""Ops' live feed: Server-Sent Events of `stock.changed`, `hold.*` and `command.*` from the outbox.

Each event's id is its place in commit order (`db.events`): a subscriber that reconnects with
`Last-Event-ID` gets everything after it, none missed and none twice, however the writers' commits
interleave. Filter by `?sku=` (a SKU the catalogue has) and `?types=hold,stock.changed` (topic
prefixes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from db.events import Event, events_after
from db.reads import product_id_of
from producers.http.auth import OPS, allow
from producers.http.problems import documented

router = APIRouter(tags=["events"], responses=documented(400, 401, 403, 404, 413, 422))
POLL_SECONDS = 0.2


def _read(request: Request, cursor: str | None, topics: list[str] | None, sku: str | None) -> list[Event]:
    with request.app.state.engine.connect() as conn:
        return events_after(conn, cursor, topics=topics, sku=sku)


def _known_sku(request: Request, sku: str) -> None:
    with request.app.state.engine.connect() as conn:
        product_id_of(conn, sku)


@router.get("/v1/events", dependencies=[Depends(allow(OPS))], response_class=EventSourceResponse)
async def events(
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    sku: Annotated[str | None, Query()] = None,
    types: Annotated[str | None, Query(description="topic prefixes, comma-separated")] = None,
) -> EventSourceResponse:
    topics = [t.strip() for t in types.split(",") if t.strip()] if types else None
    if sku is not None:  # a SKU nobody has would give a feed that stays empty: refused (422)
        await run_in_threadpool(_known_sku, request, sku)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        cursor = last_event_id
        while not await request.is_disconnected():
            batch = await run_in_threadpool(_read, request, cursor, topics, sku)
            for event in batch:
                cursor = event.cursor
                yield ServerSentEvent(
                    id=event.cursor, event=event.topic, data=json.dumps(event.payload, default=str)
                )
            if not batch:
                await asyncio.sleep(POLL_SECONDS)

    return EventSourceResponse(stream(), ping=15)
