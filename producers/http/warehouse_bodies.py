"""The warehouse's request bodies and answers as the HTTP API documents them (OpenAPI); their values
are checked by `producers.warehouse_requests`, here only their shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from producers.http.bodies import Body, Quantity, Recorded

Unit = Literal["piece", "box", "sqm"]


class TransferBody(Body):
    from_warehouse: str = Field(examples=["BUC1"])
    to_warehouse: str = Field(examples=["CLJ1"])
    sku: str
    lot: str
    quantity: Quantity
    unit: Unit = "piece"
    idempotency_key: str | None = None


class TransferReceiptBody(Body):
    received: Quantity | None = Field(None, description="pieces in good condition (default: all sent)")
    damaged: Quantity = "0"
    reason: str | None = Field(None, description="required when pieces are damaged or missing")
    idempotency_key: str | None = None


class CancelBody(Body):
    idempotency_key: str | None = None


class CountLineBody(Body):
    warehouse: str
    sku: str
    lot: str
    counted: Quantity
    unit: Unit = "piece"


class CountBody(Body):
    lines: list[CountLineBody]
    reason: str | None = None
    idempotency_key: str | None = None


class AdjustmentBody(Body):
    warehouse: str
    sku: str
    lot: str
    quantity: Quantity = Field(description="signed: + pieces found, - pieces lost")
    unit: Unit = "piece"
    reason: str
    idempotency_key: str | None = None


class DecisionBody(Body):
    note: str | None = None
    idempotency_key: str | None = None


class ReturnLineBody(Body):
    line_no: int
    quantity: Quantity
    unit: Unit = "piece"
    condition: Literal["resellable", "damaged"] = "resellable"
    reason: str | None = None


class ReturnBody(Body):
    hold_id: str
    lines: list[ReturnLineBody]
    idempotency_key: str | None = None


class TransferRecorded(Recorded):
    transfer_id: str


class AdjustmentRecorded(Recorded):
    adjustment_id: str


class LinesRecorded(BaseModel):
    """A request of several lines, a command each: `applied` once every line is (each result in
    order), `recorded` before."""

    idempotency_key: str
    status: Literal["recorded", "applied"]
    lines: list[Recorded]
