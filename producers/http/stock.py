"""The warehouse's and everyone's stock routes: goods in, and where a product stands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from domain.results import StockView
from producers.client import StockClient
from producers.http.auth import CHECKOUT, OPS, WAREHOUSE, allow
from producers.http.bodies import ReceiptBody, Recorded, SkuPath
from producers.http.exact import exact_json, idempotency_key
from producers.http.holds import command_answer
from producers.http.problems import documented, sku_in_path

router = APIRouter(tags=["stock"], responses=documented(400, 401, 403, 404, 413, 422))


@router.post(
    "/v1/receipts",
    status_code=202,
    response_model=Recorded,
    responses={200: {"model": Recorded}},
    dependencies=[Depends(allow(WAREHOUSE))],
)
async def receive(
    request: Request,
    body: ReceiptBody,
    key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> Response:
    """Goods in: 202 once recorded, 200 with its result if applied within `wait`."""
    data = await exact_json(request)
    client: StockClient = request.app.state.client
    ticket = await run_in_threadpool(
        client.receive,
        idempotency_key=idempotency_key(key, body.idempotency_key),
        warehouse=data["warehouse"],
        sku=data["sku"],
        quantity=data["quantity"],
        unit=data.get("unit", "piece"),
        lot=data["lot"],
        shade=data.get("shade"),
        caliber=data.get("caliber"),
        expiry=data.get("expiry"),
    )
    return await command_answer(ticket, wait)


@router.get(
    "/v1/stock/{sku}", response_model=StockView, dependencies=[Depends(allow(CHECKOUT, WAREHOUSE, OPS))]
)
async def read_stock(request: Request, sku: SkuPath) -> StockView:
    client: StockClient = request.app.state.client
    with sku_in_path():
        return await run_in_threadpool(client.stock, sku)
