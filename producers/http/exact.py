"""What every route that takes a command reads from its request: the body with its numbers exact,
and the idempotency key."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import Request

from producers.http.problems import Problem


async def exact_json(request: Request) -> dict[str, Any]:
    """The body parsed again with JSON numbers as Decimal (`exact_body`). FastAPI has checked its
    shape already."""
    return exact_body(await request.body())


def exact_body(body: bytes) -> dict[str, Any]:
    """A JSON object with its numbers as Decimal: a number is taken as written (2.50 is 2.5, 0.1 is
    0.1), never through a float; an object that names a member twice is refused (`single_members`)."""
    data = json.loads(body, parse_float=Decimal, object_pairs_hook=single_members)
    if not isinstance(data, dict):
        raise Problem(422, "invalid_request", "the body must be a JSON object")
    return data


def single_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose members are each named once. `{"quantity": "1", "quantity": "9"}` is
    ambiguous: parsers differ on which one counts, and the caller may have meant either."""
    data = dict(pairs)
    if len(data) < len(pairs):
        names = [name for name, _ in pairs]
        twice = next(name for at, name in enumerate(names) if name in names[:at])
        raise Problem(422, "duplicate_member", f"{twice!r} is given twice in one JSON object", field=twice)
    return data


def idempotency_key(header: str | None, body: str | None) -> str:
    """The request's key: the `Idempotency-Key` header, or the body's `idempotency_key`."""
    if header is not None and body is not None and header != body:
        raise Problem(
            422,
            "idempotency_key_mismatch",
            "the header and the body name different keys",
            field="idempotency_key",
        )
    key = header if header is not None else body
    if key is None:
        raise Problem(
            422,
            "idempotency_key_missing",
            "send an Idempotency-Key header (or idempotency_key)",
            field="idempotency_key",
        )
    return key
