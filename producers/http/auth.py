"""Who is calling: a bearer token of a role. Missing, unknown or revoked → 401 (with
`WWW-Authenticate: Bearer`); a live token of a role that may not do this → 403."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from db.tokens import ApiToken, find_token
from producers.http.problems import Problem

CHECKOUT, PAYMENTS, WAREHOUSE, OPS = "checkout", "payments", "warehouse", "ops"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _lookup(request: Request, token: str) -> ApiToken | None:
    with request.app.state.engine.connect() as conn:
        return find_token(conn, token)


def allow(*roles: str) -> Callable[[Request], Coroutine[Any, Any, ApiToken]]:
    """A dependency: the caller's token, if its role is one of `roles`."""

    async def caller(request: Request) -> ApiToken:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "unauthenticated", "send Authorization: Bearer <token>", headers=_CHALLENGE)
        found = await run_in_threadpool(_lookup, request, token.strip())
        if found is None:
            raise Problem(401, "unauthenticated", "unknown or revoked token", headers=_CHALLENGE)
        if found.role not in roles:
            raise Problem(403, "forbidden", f"a {found.role} token may not do this")
        return found

    return caller
