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


class ReceiptLineBody(Body):
    warehouse: str = Field(examples=["BUC1"])
    sku: str = Field(examples=["GRS-60x60-GREY"])
    quantity: Quantity = Field(examples=["40"])
    unit: Literal["piece", "box", "sqm"] = "piece"
    lot: str = Field(examples=["L2026-11"])
    shade: str | None = None
    caliber: str | None = None
    expiry: dt.date | None = None
    unit_cost: Quantity | None = Field(default=None, examples=["12.5"], description="per piece")
    quarantine: bool = Field(default=False, description="arrives in quarantine, not sellable until released")


class ReceiptBody(Body):
    """Goods in: `lines` (each one `stock.receive`, keyed `{key}:{n}`), or one line at the top level
    (the original contract, recorded under the key itself). The supplier's documents are the
    receipt's."""

    lines: list[ReceiptLineBody] | None = None
    warehouse: str | None = None
    sku: str | None = None
    quantity: Quantity | None = None
    unit: Literal["piece", "box", "sqm"] = "piece"
    lot: str | None = None
    shade: str | None = None
    caliber: str | None = None
    expiry: dt.date | None = None
    unit_cost: Quantity | None = None
    quarantine: bool = False
    supplier: str | None = None
    purchase_order: str | None = None
    invoice: str | None = None
    idempotency_key: str | None = None


class QuarantineBody(Body):
    """How much of the quarantined line (all that is left if no quantity)."""

    quantity: Quantity | None = None
    unit: Literal["piece", "box", "sqm"] = "piece"
    idempotency_key: str | None = None


class WriteOffBody(QuarantineBody):
    reason: str = Field(examples=["cracked in transport"])


class DamageBody(Body):
    """Pieces of a lot found damaged: from its available stock (warehouse, sku, lot, quantity), or
    from a quarantined receipt line (quarantine_id, quantity or all that is left)."""

    reason: str = Field(examples=["dropped by the forklift"])
    warehouse: str | None = None
    sku: str | None = None
    lot: str | None = None
    quarantine_id: str | None = None
    quantity: Quantity | None = None
    unit: Literal["piece", "box", "sqm"] = "piece"
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


class ReceiptLineRecorded(Recorded):
    line_no: int
    quarantine_id: str | None = None
    """The id to release or write off the line by, if it arrives in quarantine."""


class ReceiptRecorded(BaseModel):
    """A receipt's lines recorded (all or none); `applied` once every line is."""

    idempotency_key: str
    status: Literal["recorded", "applied"]
    lines: list[ReceiptLineRecorded]


def model_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A model as the JSON answer, serialized by pydantic's own encoder (not to a dict and then
    through the standard library's: that was a tenth of the API's time per hold)."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")
