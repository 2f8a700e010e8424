"""Ops' JSON: every shard's queue and lease, a product's stock page, and the dead letters with
their requeue. The dashboard shows only these; `tessera status` reads through the same views."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from db.dead_letters import DeadLetter
from ops import views
from producers.http.auth import OPS, allow
from producers.http.bodies import KeyPath, SkuPath
from producers.http.problems import Problem, documented, sku_in_path

MAX_BIGINT = 2**63 - 1
"""Movement ids are BIGINT: a larger cursor would not even cast (a 500, not an answer)."""
router = APIRouter(
    tags=["ops"], responses=documented(400, 401, 403, 404, 422), dependencies=[Depends(allow(OPS))]
)


@router.get("/v1/ops/shards", response_model=views.ShardsView)
async def shards(request: Request) -> views.ShardsView:
    """Per shard: lease holder and epoch, pending commands and the oldest one's age, dead letters,
    Dramatiq's queued / delayed / dead-lettered doorbells, last batch, commands per minute."""
    state = request.app.state
    return await run_in_threadpool(views.shards_view, state.engine, state.redis, state.settings)


@router.get("/v1/ops/stock/{sku}", response_model=views.StockPage)
async def stock(
    request: Request,
    sku: SkuPath,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_BIGINT, description="the `next_before` of the previous page (a movement id)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
) -> views.StockPage:
    """The product by warehouse and lot, its open holds with their time left, and a page of its
    ledger (newest first). 404: no such SKU."""
    with sku_in_path():
        return await run_in_threadpool(
            views.stock_page, request.app.state.engine, sku, before=before, limit=limit
        )


@router.get("/v1/ops/dead-letters", response_model=list[DeadLetter])
async def dead_letters(request: Request) -> list[DeadLetter]:
    """The parked commands, oldest first."""
    return await run_in_threadpool(views.dead_letters, request.app.state.engine)


@router.post(
    "/v1/ops/dead-letters/{key}/requeue",
    response_model=views.Requeued,
    responses=documented(409),
)
async def requeue(request: Request, key: KeyPath) -> views.Requeued:
    """Make the parked command pending again: it is applied once, before what its shard has
    pending then. 404: no such command; 409: the command is not parked."""
    state = request.app.state
    requeued = await run_in_threadpool(views.requeue_dead, state.engine, state.redis, state.settings, [key])
    if key in requeued:
        return views.Requeued(key=key, shard=requeued[key])
    status = await run_in_threadpool(views.command_status, state.engine, key)
    if status is None:
        raise Problem(404, "unknown_command", f"no command with key {key!r}", field="key")
    raise Problem(409, "not_dead", f"the command {key!r} is {status}, not parked", field="key")
