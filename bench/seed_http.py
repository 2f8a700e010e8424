"""The seed's design behind the same HTTP stack, for `bench.http_flash_sale`: FastAPI on uvicorn
(served by `producers.http.serve`, as `tessera api` is), each request its own `SELECT … FOR UPDATE` transaction on the product's row, through a connection
pool (`SEED_DATABASE_URL`, `SEED_POOL_SIZE`)."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine

from bench.flash_sale import seed_reserve

app = FastAPI(title="seed")
engine = create_engine(
    os.environ.get("SEED_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    pool_size=int(os.environ.get("SEED_POOL_SIZE", "20")),
    max_overflow=0,
)


@app.post("/v1/holds")
def hold(
    body: Annotated[dict[str, Any], Body()], key: Annotated[str, Header(alias="Idempotency-Key")]
) -> JSONResponse:
    line = body["lines"][0]
    raw = engine.raw_connection()
    try:
        status = seed_reserve(raw.driver_connection, key, line["sku"], Decimal(line["quantity"]), 900)  # type: ignore[arg-type]
    finally:
        raw.close()
    return JSONResponse({"status": status}, status_code=201)


def app_factory() -> FastAPI:
    """For `producers.http.serve`: the seed on the server stack `tessera api` runs on."""
    return app
