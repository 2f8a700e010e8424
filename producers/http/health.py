"""Is the API up (`/healthz`), can it serve (`/readyz`: PostgreSQL and Redis answer within
`READY_TIMEOUT_SECONDS`), and its metrics (`/metrics`, Prometheus; one registry across `--workers`
processes when PROMETHEUS_MULTIPROC_DIR is set, and the holds by status counted as it is scraped)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from functools import partial

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from db.engine import libpq_url
from db.ops_reads import holds_by_status
from tessera.metrics import HoldsByStatus

HOLDS_COUNT_TIMEOUT = "5s"
"""Longest a scrape waits for the holds' count (a scan of the holds table); past it, the scrape
answers without them."""

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


READY_TIMEOUT_SECONDS = 2
"""Longest `/readyz` waits for PostgreSQL or for Redis: one that stopped answering is not ready."""


def _postgresql(request: Request) -> None:
    """A session of its own, which connects within the timeout or fails: a pooled one would wait
    for a stopped server for ever, and hold its thread."""
    with psycopg.connect(
        libpq_url(request.app.state.engine),
        connect_timeout=READY_TIMEOUT_SECONDS,
        application_name="tessera-api readyz",
    ) as conn:
        conn.execute("SELECT 1")


def _redis(request: Request) -> None:
    request.app.state.redis.ping()  # its client's socket timeout bounds the thread


async def _check(probe: Callable[[Request], None], request: Request) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(probe, request), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        return "timeout"
    except Exception as error:
        return type(error).__name__
    return "ok"


@router.get("/readyz", responses={503: {"description": "PostgreSQL or Redis out of reach"}})
async def readyz(request: Request) -> JSONResponse:
    postgresql, redis = await asyncio.gather(_check(_postgresql, request), _check(_redis, request))
    checks = {"postgresql": postgresql, "redis": redis}
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
