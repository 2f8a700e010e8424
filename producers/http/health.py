"""Is the API up (`/healthz`), can it serve (`/readyz`: PostgreSQL and Redis reachable), and its
metrics (`/metrics`, Prometheus; one registry across `--workers` processes when
PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

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
async def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
