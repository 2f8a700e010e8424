"""Errors as RFC 9457 problem details: `application/problem+json` with type, title, status,
detail, a stable `code` and the offending `field`. No stack trace reaches a client: a 5xx is logged
with the request id the response carries (`X-Request-Id`)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from db.sql import transient
from domain.errors import (
    IdempotencyConflict,
    InvalidCommand,
    OperationRefused,
    RecordingTimeout,
    UnknownHold,
    UnknownOperation,
    UnknownQuarantine,
    UnknownSku,
)
from producers.requests import field_path
from tessera.logs import first_line

log = structlog.get_logger("tessera.api")
PROBLEM = "application/problem+json"


class ProblemDocument(BaseModel):
    """RFC 9457 problem details, as every error of the API is answered."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses: each a problem document."""
    content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}}
    return {status: {"description": TITLES.get(status, "Error"), "content": content} for status in statuses}


class Problem(Exception):
    """An answer that is not a success, raised from a route."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field, self.headers = status, code, detail, field, headers

    def response(self) -> JSONResponse:
        """Its problem document."""
        return problem(self.status, self.code, self.detail, field=self.field, headers=self.headers)


TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal error",
    503: "Not ready",
}


@contextmanager
def sku_in_path() -> Iterator[None]:
    """An unknown SKU that the path names is a resource not found (404), not an invalid command."""
    try:
        yield
    except UnknownSku as error:
        raise Problem(404, "unknown_sku", str(error), field="sku") from None


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://tessera.example/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "field": field,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str | None:
    """('body', 'lines', 0, 'quantity') → 'lines[0].quantity' (the request part left out)."""
    return field_path(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc) or None


REFUSAL_STATUS = {"same_approver": 403, "not_sold": 409, "more_than_sold": 409}
"""A refused warehouse operation is 422 unless it is another's decision to make (403) or the goods'
state that refuses it (409)."""


def _invalid(error: InvalidCommand) -> JSONResponse:
    if isinstance(error, UnknownHold):
        return problem(404, "unknown_hold", str(error), field=error.field)
    if isinstance(error, UnknownQuarantine):
        return problem(404, "unknown_quarantine", error.message, field=error.field)
    if isinstance(error, UnknownOperation):
        return problem(404, f"unknown_{error.field}".removesuffix("_id"), error.message, field=error.field)
    if isinstance(error, OperationRefused):
        return problem(REFUSAL_STATUS.get(error.code, 422), error.code, error.message, field=error.field)
    code = "unknown_sku" if isinstance(error, UnknownSku) else type(error).__name__
    return problem(422, _snake(code), error.message, field=error.field)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


Shortcut = Callable[[Scope, bytes, Send], Awaitable[bool]]
"""A route's way around FastAPI's layers for its commonest request (`app.FrontDoor`): given the
request's scope and whole body, it answers and returns True, or returns False untouched (then the
route answers)."""


async def problem_for(app: FastAPI, request: Request, error: Exception) -> Response:
    """The answer the app's exception handlers give to `error` (see `install`)."""
    for kind in type(error).__mro__:
        handler = app.exception_handlers.get(kind)
        if handler is not None:
            response = handler(request, error)
            return await response if inspect.isawaitable(response) else response
    raise error


async def refused_caller(request: Request) -> JSONResponse | None:
    """The 401 or 403 the route's token check (`auth.RoleCheck`) gives this request, if any. FastAPI
    refuses a body that is not JSON before it runs a route's dependencies: this check is run then,
    so that a caller who may not call the route learns nothing of what it takes."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    for sub in dependant.dependencies if dependant is not None else ():
        if getattr(sub.call, "checks_caller", False):
            try:
                await sub.call(request)
            except Problem as refused:
                return refused.response()
    return None


def install(app: FastAPI) -> None:
    """Answer every error of the app as a problem document."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, error: Problem) -> JSONResponse:
        return error.response()

    @app.exception_handler(InvalidCommand)
    async def on_invalid(request: Request, error: InvalidCommand) -> JSONResponse:
        return _invalid(error)

    @app.exception_handler(IdempotencyConflict)
    async def on_conflict(request: Request, error: IdempotencyConflict) -> JSONResponse:
        return problem(422, "idempotency_conflict", str(error), field="idempotency_key")

    @app.exception_handler(RecordingTimeout)
    async def on_recording_timeout(request: Request, error: RecordingTimeout) -> JSONResponse:
        return problem(503, "not_recorded", str(error), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return await refused_caller(request) or problem(
                400, "malformed_json", "the body is not valid JSON"
            )
        return problem(422, "invalid_request", str(first.get("msg", "invalid")), field=_field(loc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return problem(error.status_code, code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def on_error(request: Request, error: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "")
        log.error("request.failed", request_id=request_id, path=request.url.path, error=repr(error))
        return problem(500, "internal_error", f"something went wrong (request {request_id})")

    async def on_database(request: Request, error: Exception) -> JSONResponse:
        """A session lost to a PostgreSQL restart, a lock or a timeout: worth trying again (with the
        same idempotency key, which makes it one command), not a fault of ours."""
        if not transient(error):
            return await on_error(request, error)
        log.warning("request.unavailable", path=request.url.path, error=first_line(error))
        return problem(
            503,
            "unavailable",
            "the database is out of reach for now; try again",
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(DBAPIError, on_database)
    app.add_exception_handler(psycopg.Error, on_database)
