"""Is the API up (`/healthz`), can it serve (`/readyz`: PostgreSQL and Redis reachable), and its
metrics (`/metrics`, Prometheus; one registry across `--workers` processes when
PROMETHEUS_MULTIPROC_DIR is set, and the holds by status counted as it is scraped)."""

from __future__ import annotations

import os
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from db.ops_reads import holds_by_status
from tessera.metrics import HoldsByStatus

HOLDS_COUNT_TIMEOUT = "5s"
"""Longest a scrape waits for the holds' count (a scan of the holds table); past it, the scrape
answers without them."""

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _ready(request: Request) -> dict[str, str]:
    checks = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["postgresql"] = "ok"
    except Exception as error:
        checks["postgresql"] = type(error).__name__
    try:
        request.app.state.redis.ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = type(error).__name__
    return checks


@router.get("/readyz", responses={503: {"description": "PostgreSQL or Redis out of reach"}})
async def readyz(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(_ready, request)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(HoldsByStatus(partial(_count_holds, request.app.state.engine)))
    return Response(await run_in_threadpool(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)


def _count_holds(engine: Engine) -> dict[str, int]:
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL statement_timeout = '{HOLDS_COUNT_TIMEOUT}'"))
        return holds_by_status(conn)
