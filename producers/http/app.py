"""`tessera api`: the HTTP front door for the checkout service, the payment relay, the warehouse
and ops. One `StockClient` per process (its recorder groups the holds of concurrent requests);
every route is a few lines over the producer core (`producers.requests`, `producers.recording`).
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from redis import Redis
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.engine import get_engine
from ops import dashboard
from producers.client import StockClient
from producers.http import events, goods_in, health, holds, ledger, ops, payments, problems, stock, warehouse
from producers.http.auth import TokenCache
from tessera.metrics import HTTP_LATENCY, HTTP_REQUESTS
from tessera.redis_clients import connect_redis
from tessera.settings import Settings, get_settings

MAX_BODY_BYTES = 64 * 1024


class FrontDoor:
    """Every request gets an id (`X-Request-Id`, echoed when the caller sent one), is refused with
    413 if its body is over 64 KiB, and is counted and timed by route. A request a route has a
    `Shortcut` for is read whole and offered to it first; if declined, the app gets it as sent."""

    def __init__(
        self, app: ASGIApp, shortcuts: dict[tuple[str, str], problems.Shortcut] | None = None
    ) -> None:
        self.app = app
        self.shortcuts = shortcuts or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode()[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        if int(headers.get(b"content-length", b"0") or 0) > MAX_BODY_BYTES:
            await _too_large(send, request_id)
            return
        started, status = time.perf_counter(), [500]
        received = [0]

        async def limited() -> Message:
            message = await receive()
            received[0] += len(message.get("body", b""))
            if received[0] > MAX_BODY_BYTES:
                raise _TooLarge
            return message

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            shortcut = self.shortcuts.get((scope["method"], scope["path"]))
            if shortcut is None:
                await self.app(scope, limited, tagged)
            else:
                body = await _whole_body(limited)
                if await shortcut(scope, body, tagged):
                    scope["route"] = _Shortcut(scope["path"])
                else:
                    await self.app(scope, _replay(body, receive), tagged)
        except _TooLarge:
            await _too_large(send, request_id)
        except _Gone:
            return
        route = getattr(scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(route, scope["method"], str(status[0])).inc()
        HTTP_LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - started)


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Shortcut:
    """What a request a shortcut answered is counted under: its route's path."""

    path: str


async def _whole_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Gone(Exception):
    """The client went away before its body was read."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request's body as one message, then what the connection sends next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _too_large(send: Send, request_id: str) -> None:
    body = problems.problem(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes").body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", problems.PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _collect_rarely() -> None:
    """What startup made lives as long as the process: out of the collector's way (`gc.freeze`),
    and young collections less often. A request frees nearly all it makes by reference counting,
    yet at the default threshold the collector ran every few requests: measured (perf), 8 % of
    the API's CPU under a flash sale."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, redis_client: Redis | None = None
) -> FastAPI:
    """The API, on `settings` (the environment's by default); `engine` and `redis_client` are given
    by the demo, which serves it beside its own worker (its Redis is in memory)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = engine or get_engine(settings.database_url, pre_ping=True)
        app.state.redis = redis_client or connect_redis(settings.redis_url)
        app.state.client = StockClient(settings, engine=app.state.engine, redis_client=app.state.redis)
        app.state.client.answers.listen()  # now, not in the event loop of the first hold
        app.state.in_flight = set()
        app.state.tokens = TokenCache(app.state.engine)
        app.state.tokens.start()
        _collect_rarely()
        yield
        app.state.tokens.close()
        await app.state.client.recorder.holds.aclose()
        await app.state.client.handover.aclose()
        app.state.client.close()

    app = FastAPI(
        title="Tessera",
        version="0.1.0",
        description="Stock for a tile shop: holds, payments, receipts, stock and its events.",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (holds, payments, goods_in, stock, warehouse, ledger, events, ops, health, dashboard):
        app.include_router(module.router)
    app.add_middleware(FrontDoor, shortcuts={("POST", "/v1/holds"): holds.place_hold_directly(app)})
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Put the problem document's schema into the OpenAPI components the routes refer to."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["ProblemDocument"] = (
                problems.ProblemDocument.model_json_schema()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> Any:
    """For `uvicorn --factory`: the API on the environment's settings."""
    return create_app()
