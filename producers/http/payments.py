"""The payment webhook relay's route: a provider event, signed with HMAC-SHA256 of the raw body.

It answers 2xx only once the event is durably recorded; a duplicate event (same `event_id`)
answers what the first did. A missing or bad signature is refused (401) and records nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from producers.client import StockClient
from producers.http.auth import PAYMENTS, allow
from producers.http.bodies import PaymentBody, Recorded, model_response
from producers.http.exact import exact_body
from producers.http.problems import Problem, documented
from tessera.settings import Settings

router = APIRouter(tags=["payments"], responses=documented(400, 401, 403, 404, 413, 422))


def signature_ok(secrets: list[str], body: bytes, header: str | None) -> bool:
    """`sha256=<hex>` of the body, under any of the secrets (the first signs, the others are being
    rotated out)."""
    if not header or not header.startswith("sha256="):
        return False
    given = header.removeprefix("sha256=").strip().lower()
    return any(
        hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), given)
        for secret in secrets
    )


@router.post(
    "/v1/payments/webhook",
    response_model=Recorded,
    dependencies=[Depends(allow(PAYMENTS))],
    responses={401: {"description": "missing or bad signature"}},
    # The body is read by the route, after its signature (see `signed_event`): documented here.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PaymentBody.model_json_schema()}},
        }
    },
)
async def payment_webhook(
    request: Request, signature: Annotated[str | None, Header(alias="X-Signature")] = None
) -> Response:
    settings: Settings = request.app.state.settings
    body = signed_event(settings.webhook_secrets, await request.body(), signature)
    client: StockClient = request.app.state.client
    ticket = await run_in_threadpool(
        client.confirm_payment, event_id=body.event_id, hold_id=body.hold_id, status=body.status
    )
    return model_response(Recorded(idempotency_key=ticket.key, status="recorded"))


def signed_event(secrets: list[str], raw: bytes, signature: str | None) -> PaymentBody:
    """The event, read only once its signature is proved: whatever it sent, a sender without the
    secret gets 401 and learns nothing of what a body must be. Then the body's problems as on every
    route (400 not JSON, 422 not an event, a member named twice)."""
    if not signature_ok(secrets, raw, signature):
        raise Problem(401, "bad_signature", "X-Signature is not the HMAC-SHA256 of this body")
    try:
        event = PaymentBody.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
    exact_body(raw)
    return event
