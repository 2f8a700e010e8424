"""Everyone's stock route: where a product stands, every bucket per warehouse and lot."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from domain.results import StockView
from producers.client import StockClient
from producers.http.auth import CHECKOUT, OPS, WAREHOUSE, allow
from producers.http.bodies import SkuPath
from producers.http.problems import documented, sku_in_path

router = APIRouter(tags=["stock"], responses=documented(400, 401, 403, 404, 413, 422))


@router.get(
    "/v1/stock/{sku}", response_model=StockView, dependencies=[Depends(allow(CHECKOUT, WAREHOUSE, OPS))]
)
async def read_stock(request: Request, sku: SkuPath) -> StockView:
    client: StockClient = request.app.state.client
    with sku_in_path():
        return await run_in_threadpool(client.stock, sku)
