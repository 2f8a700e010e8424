"""Request bodies and path parameters as the HTTP API documents them (OpenAPI). Their values are checked by the same
request models as the Python client's (`producers.requests`); here only their shape: the fields a
body may have (no others), and quantities as decimal strings or exact JSON numbers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

Quantity = str | int | Decimal
# What a path may name: PostgreSQL's text has no NUL, so a NUL names nothing (and psycopg refuses to
# send one: a 500, not an answer). Longer than the column, it names nothing either.
SkuPath = Annotated[str, Path(max_length=64, pattern=r"^[^\x00]+$", examples=["GRS-60x60-GREY"])]
KeyPath = Annotated[str, Path(max_length=200, pattern=r"^[^\x00]+$", description="an idempotency key")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineBody(Body):
    sku: str = Field(examples=["GRS-60x60-GREY"])
    quantity: Quantity = Field(examples=["12.5"])
    unit: Literal["piece", "box", "sqm"] = "piece"
    warehouse: str | None = None


class HoldBody(Body):
    lines: list[LineBody]
    ttl_seconds: int | None = None
    mode: Literal["all_or_nothing", "partial"] = "all_or_nothing"
    idempotency_key: str | None = None


class ReceiptBody(Body):
    warehouse: str
    sku: str
    quantity: Quantity
    unit: Literal["piece", "box", "sqm"] = "piece"
    lot: str
    shade: str | None = None
    caliber: str | None = None
    expiry: dt.date | None = None
    idempotency_key: str | None = None


class PaymentBody(Body):
    event_id: str
    hold_id: str
    status: Literal["paid", "failed", "refunded"]


class Pending(BaseModel):
    hold_id: str
    status: Literal["pending"] = "pending"


class Recorded(BaseModel):
    """A command recorded durably; its result once applied (None before)."""

    idempotency_key: str
    status: Literal["recorded", "applied"]
    result: dict[str, object] | None = None


def model_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A model as the JSON answer, serialized by pydantic's own encoder (not to a dict and then
    through the standard library's: that was a tenth of the API's time per hold)."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")
