"""Warehouse requests (transfers, counts, adjustments, returns) as callers send them, validated once
for every front door by the rules of `producers.requests`.

Transfer and adjustment ids are drawn by the producer from the request's idempotency key
(:func:`operation_id`): a resend names the same transfer, and its payload the same digest.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from domain.errors import InvalidCommand, OperationRefused
from domain.quantities import Sign, Unit, parse_quantity
from domain.returns import Condition
from producers.requests import (
    MAX_LINES,
    IdempotencyKey,
    Quantity,
    Request,
    UnitName,
    choice_rule,
    text_rule,
    whole_rule,
)

_OPERATIONS = uuid.UUID("5b0e7a52-3c1e-4d55-9a57-7e55e2a0c0de")
REASON_LENGTH = 500

Reason = Annotated[str, text_rule("reason", max_len=REASON_LENGTH)]
OptionalReason = Annotated[str | None, text_rule("reason", max_len=REASON_LENGTH, required=False)]
Warehouse = Annotated[str, text_rule("warehouse", max_len=32)]
Sku = Annotated[str, text_rule("sku")]
Lot = Annotated[str, text_rule("lot")]


def _amount(field: str, sign: Sign, *, required: bool = True) -> BeforeValidator:
    return BeforeValidator(
        lambda v: None if v is None and not required else parse_quantity(v, field=field, sign=sign)
    )


def operation_id(kind: str, idempotency_key: str) -> str:
    """The id of the transfer or adjustment a request creates: the same for a resend of it."""
    return str(uuid.uuid5(_OPERATIONS, f"{kind}:{idempotency_key}"))


def parse_operation_id(value: object, *, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidCommand("must be a UUID", field=field) from None


TransferId = Annotated[str, BeforeValidator(lambda v: parse_operation_id(v, field="transfer_id"))]
AdjustmentId = Annotated[str, BeforeValidator(lambda v: parse_operation_id(v, field="adjustment_id"))]


def _lines(what: str) -> BeforeValidator:
    def check(value: object) -> list[Any]:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
            raise InvalidCommand(f"{what} needs at least one line", field="lines")
        if len(value) > MAX_LINES:
            raise InvalidCommand(f"at most {MAX_LINES} lines per {what.split()[-1]}", field="lines")
        return list(value)

    return BeforeValidator(check)


class _Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            raise InvalidCommand(f"must be an object with {', '.join(cls.model_fields)}")
        return value


class TransferRequest(Request):
    """Send pieces of a lot from one warehouse to another."""

    idempotency_key: IdempotencyKey
    from_warehouse: Annotated[str, text_rule("from_warehouse", max_len=32)]
    to_warehouse: Annotated[str, text_rule("to_warehouse", max_len=32)]
    sku: Sku
    lot: Lot
    quantity: Quantity
    unit: UnitName = Unit.PIECE

    @model_validator(mode="after")
    def _two_warehouses(self) -> TransferRequest:
        if self.from_warehouse == self.to_warehouse:
            raise OperationRefused(
                "same_warehouse", "a transfer goes to another warehouse than it leaves", field="to_warehouse"
            )
        return self

    @property
    def transfer_id(self) -> str:
        return operation_id("transfer", self.idempotency_key)


class TransferReceiptRequest(Request):
    """The transfer's pieces arrive: `received` in good condition (all of them when not said),
    `damaged`; what is missing is written off. Damaged or missing pieces need a reason."""

    transfer_id: TransferId
    idempotency_key: IdempotencyKey
    received: Annotated[Decimal | None, _amount("received", Sign.NOT_NEGATIVE, required=False)] = None
    damaged: Annotated[Decimal, _amount("damaged", Sign.NOT_NEGATIVE)] = Decimal(0)
    reason: OptionalReason = None


class TransferCancelRequest(Request):
    transfer_id: TransferId
    idempotency_key: IdempotencyKey


class CountLine(_Line):
    warehouse: Warehouse
    sku: Sku
    lot: Lot
    counted: Annotated[Decimal, _amount("counted", Sign.NOT_NEGATIVE)]
    unit: UnitName = Unit.PIECE


class CountRequest(Request):
    """What was physically found, per (warehouse, SKU, lot)."""

    idempotency_key: IdempotencyKey
    lines: Annotated[tuple[CountLine, ...], _lines("a count")]
    reason: OptionalReason = None


class AdjustmentRequest(Request):
    """A signed correction of a lot's on_hand, with its reason."""

    idempotency_key: IdempotencyKey
    warehouse: Warehouse
    sku: Sku
    lot: Lot
    quantity: Annotated[Decimal, _amount("quantity", Sign.NOT_ZERO)]
    unit: UnitName = Unit.PIECE
    reason: Reason

    @property
    def adjustment_id(self) -> str:
        return operation_id("adjustment", self.idempotency_key)


class AdjustmentDecisionRequest(Request):
    """Approve or reject an adjustment waiting for approval."""

    adjustment_id: AdjustmentId
    idempotency_key: IdempotencyKey
    note: Annotated[str | None, text_rule("note", max_len=REASON_LENGTH, required=False)] = None


class ReturnLine(_Line):
    line_no: Annotated[
        int, whole_rule("line_no", 1, MAX_LINES, f"must be a line number from 1 to {MAX_LINES}")
    ]
    quantity: Quantity
    unit: UnitName = Unit.PIECE
    condition: Annotated[
        Condition, choice_rule("condition", list(Condition), "must be 'resellable' or 'damaged'")
    ] = Condition.RESELLABLE
    reason: OptionalReason = None

    @model_validator(mode="after")
    def _damage_has_a_reason(self) -> ReturnLine:
        if self.condition is Condition.DAMAGED and self.reason is None:
            raise InvalidCommand("damaged goods need a reason", field="reason")
        return self


class ReturnRequest(Request):
    """Goods brought back against a confirmed hold, per line."""

    idempotency_key: IdempotencyKey
    hold_id: Annotated[str, BeforeValidator(lambda v: parse_operation_id(v, field="hold_id"))]
    lines: Annotated[tuple[ReturnLine, ...], _lines("a return")]

    @model_validator(mode="after")
    def _each_line_once(self) -> ReturnRequest:
        numbers = [line.line_no for line in self.lines]
        if len(set(numbers)) != len(numbers):
            raise InvalidCommand("each hold line at most once per return", field="lines")
        return self
