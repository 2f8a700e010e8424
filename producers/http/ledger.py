"""The warehouse's and ops' reads of the books: the movement history, a page at a time, and the
stock's value at moving-average cost."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from domain.movements import MovementKind
from domain.results import MovementPage, ValuationView
from producers.http.auth import OPS, WAREHOUSE, allow
from producers.http.holds import client_of
from producers.http.problems import Problem, documented

router = APIRouter(
    tags=["ledger"],
    responses=documented(400, 401, 403, 413, 422),
    dependencies=[Depends(allow(WAREHOUSE, OPS))],
)
MAX_ID = 2**63 - 1
Text = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]+$")]


def encode_cursor(before_id: int) -> str:
    return base64.urlsafe_b64encode(f"before:{before_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The movement id a cursor continues before (422 for anything this API did not give out)."""
    try:
        kind, _, number = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
        before_id = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        before_id, kind = 0, ""
    if kind != "before" or not 0 < before_id <= MAX_ID:
        raise Problem(422, "invalid_cursor", "not a cursor this API gave out", field="cursor")
    return before_id


def _aware(at: dt.datetime | None) -> dt.datetime | None:
    """A time without a zone is UTC."""
    return at.replace(tzinfo=dt.UTC) if at is not None and at.tzinfo is None else at


@router.get("/v1/movements", response_model=MovementPage)
async def movements(
    request: Request,
    sku: Text = None,
    warehouse: Text = None,
    lot: Text = None,
    kind: MovementKind | None = None,
    since: Annotated[dt.datetime | None, Query(description="at or after (ISO 8601; UTC if no zone)")] = None,
    until: Annotated[dt.datetime | None, Query(description="before (ISO 8601; UTC if no zone)")] = None,
    hold: uuid.UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MovementPage:
    """The ledger, newest first: each row says what (kind, the change to each bucket), who (a
    token's name, or "system"), why (reason, command key), what it cost and the balance it left.
    Every filter is optional; `next_cursor` fetches the next (older) page."""
    found = await run_in_threadpool(
        client_of(request).movements,
        sku,
        warehouse=warehouse,
        lot=lot,
        kind=kind.value if kind else None,
        since=_aware(since),
        until=_aware(until),
        hold_id=str(hold) if hold else None,
        limit=limit + 1,
        before_id=decode_cursor(cursor) if cursor else None,
    )
    page = found[:limit]
    return MovementPage(
        movements=page, next_cursor=encode_cursor(page[-1].id) if len(found) > limit else None
    )


@router.get("/v1/valuation", response_model=ValuationView)
async def valuation(request: Request, warehouse: Text = None) -> ValuationView:
    """Stock value per warehouse and product: on hand × moving-average unit cost."""
    return await run_in_threadpool(client_of(request).valuation, warehouse)
