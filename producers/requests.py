"""Requests as callers send them, validated once for every front door (`StockClient` today, the HTTP
API next): a pydantic model per request, each field checked by the same rule whatever sent it.

A refusal is an `InvalidCommand` naming the field at fault (``lines[2].quantity``), raised before
anything is recorded. Quantities are decimals given as strings or integers; units, modes and
statuses are their exact names; texts are trimmed and bounded.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from domain.commands import HoldCommand
from domain.errors import InvalidCommand, UnknownQuarantine
from domain.quantities import Sign, Unit, decimal_str, parse_quantity, parse_unit
from domain.states import HoldMode, Payment, parse_hold_id

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@#-]{0,127}$")
RESERVED_KEY_PREFIXES = ("line.", "hold.", "payment:")  # the keys the system makes for itself
SQM_PER_BOX_PLACES = 4  # products.sqm_per_box is NUMERIC(12, 4): 25 tiles of 15x15 make 0.5625 m²
MAX_LINES = 100
MAX_TTL_SECONDS = 7 * 24 * 3600


# -- the rules, one per kind of field ---------------------------------------------------------------


def key_rule(field: str) -> BeforeValidator:
    def check(value: object) -> str:
        if (
            not isinstance(value, str)
            or not KEY_PATTERN.fullmatch(value)
            or value.startswith(RESERVED_KEY_PREFIXES)
        ):
            raise InvalidCommand(
                "must be 1-128 characters of letters, digits and . _ : / @ # -, "
                "not starting with 'line.', 'hold.' or 'payment:'",
                field=field,
            )
        return value

    return BeforeValidator(check)


def text_rule(field: str, *, max_len: int = 64, required: bool = True) -> BeforeValidator:
    def check(value: object) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise InvalidCommand(f"must be a non-empty text of at most {max_len} characters", field=field)
        if "\x00" in value:  # PostgreSQL's text has none: it could name nothing, nor be stored
            raise InvalidCommand("must not contain a NUL character", field=field)
        return value.strip()

    return BeforeValidator(check)


def whole_rule(field: str, low: int, high: int, message: str, *, required: bool = True) -> BeforeValidator:
    def check(value: object) -> int | None:
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidCommand(message, field=field)
        return value

    return BeforeValidator(check)


def flag_rule(field: str) -> BeforeValidator:
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise InvalidCommand("must be true or false", field=field)
        return value

    return BeforeValidator(check)


def choice_rule(field: str, choices: Sequence[str], message: str) -> BeforeValidator:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidCommand(message, field=field)
        return value

    return BeforeValidator(check)


def date_rule(field: str) -> BeforeValidator:
    def check(value: object) -> dt.date | None:
        # Not a datetime (its isoformat is no date for the writer), not 20240101 or "2024-W01-1".
        if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            return value
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise InvalidCommand("must be a date (YYYY-MM-DD)", field=field)
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise InvalidCommand("must be a date (YYYY-MM-DD)", field=field) from None

    return BeforeValidator(check)


def _limit(field: str, *, places: int = 3) -> BeforeValidator:
    """An optional threshold: zero or more (None: not set)."""
    return BeforeValidator(
        lambda v: None if v is None else parse_quantity(v, field=field, places=places, sign=Sign.NOT_NEGATIVE)
    )


def _lines(value: object) -> list[Any]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise InvalidCommand("a hold needs at least one line", field="lines")
    if len(value) > MAX_LINES:
        raise InvalidCommand(f"at most {MAX_LINES} lines per hold", field="lines")
    return list(value)


Quantity = Annotated[Decimal, BeforeValidator(lambda v: parse_quantity(v))]
UnitName = Annotated[Unit, BeforeValidator(lambda v: parse_unit(v))]
IdempotencyKey = Annotated[str, key_rule("idempotency_key")]
HoldId = Annotated[str, BeforeValidator(parse_hold_id)]


class Request(BaseModel):
    """A request as validated: `parse` raises the first field's `InvalidCommand`."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @classmethod
    def parse(cls, **fields: Any) -> Self:
        try:
            return cls.model_validate(fields)
        except ValidationError as error:
            raise _refusal(error) from None


def _refusal(error: ValidationError) -> InvalidCommand:
    """The first error, as the InvalidCommand a validator raised (its field named in full)."""
    first = error.errors()[0]
    loc = tuple(first["loc"])
    cause = first.get("ctx", {}).get("error")
    if not isinstance(cause, InvalidCommand):
        return InvalidCommand(first["msg"], field=field_path(loc) or None)
    if cause.field and loc and loc[-1] == cause.field:
        loc = loc[:-1]
    field = ".".join(p for p in (field_path(loc), cause.field) if p) or None
    return cause if field == cause.field else InvalidCommand(cause.message, field=field)


def field_path(loc: tuple[int | str, ...]) -> str:
    """('lines', 2, 'quantity') → 'lines[2].quantity'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


# -- the requests ---------------------------------------------------------------------------------


class HoldLineRequest(BaseModel):
    model_config = ConfigDict(frozen=True, validate_default=True)

    sku: Annotated[str, text_rule("sku")]
    quantity: Quantity
    unit: UnitName = Unit.PIECE
    warehouse: Annotated[str | None, text_rule("warehouse", max_len=32, required=False)] = None

    @model_validator(mode="before")
    @classmethod
    def _an_object_of_known_fields(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            raise InvalidCommand("must be an object with sku, quantity and unit")
        unknown = set(value) - set(cls.model_fields)
        if unknown:
            raise InvalidCommand(f"unknown fields {sorted(map(str, unknown))}")
        return {"sku": None, "quantity": None, **value}

    def body(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "quantity": decimal_str(self.quantity),
            "unit": self.unit.value,
            "warehouse": self.warehouse,
        }


class HoldRequest(Request):
    """A cart to hold: lines (1-100), how long, all or nothing or partial."""

    idempotency_key: IdempotencyKey
    lines: Annotated[tuple[HoldLineRequest, ...], BeforeValidator(_lines)]
    ttl_seconds: Annotated[
        int,
        whole_rule("ttl_seconds", 1, MAX_TTL_SECONDS, "must be a whole number of seconds from 1 to 604800"),
    ]
    mode: Annotated[
        HoldMode, choice_rule("mode", list(HoldMode), "must be 'all_or_nothing' or 'partial'")
    ] = HoldMode.ALL_OR_NOTHING

    def body(self) -> dict[str, Any]:
        """The hold.place payload, canonical: its digest tells a resend from another cart."""
        return {
            "mode": self.mode.value,
            "ttl_seconds": self.ttl_seconds,
            "lines": [line.body() for line in self.lines],
        }


class ReleaseRequest(Request):
    """The checkout gives a hold back."""

    hold_id: HoldId
    idempotency_key: IdempotencyKey

    kind: ClassVar[HoldCommand] = HoldCommand.RELEASE

    @property
    def key(self) -> str:
        return self.idempotency_key

    def payload(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id}


class PaymentEvent(Request):
    """What the payment provider said about a hold: paid, failed or refunded."""

    event_id: Annotated[str, key_rule("event_id")]
    status: Annotated[
        Payment,
        choice_rule(
            "status",
            [Payment.PAID, Payment.FAILED, Payment.REFUNDED],
            "must be 'paid', 'failed' or 'refunded'",
        ),
    ]
    hold_id: HoldId

    kind: ClassVar[HoldCommand] = HoldCommand.PAY

    @property
    def key(self) -> str:
        """Payment events are deduplicated by the provider's event id."""
        return f"payment:{self.event_id}"

    def payload(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id, "status": self.status.value, "event_id": self.event_id}


class ProductRequest(Request):
    sku: Annotated[str, text_rule("sku")]
    name: Annotated[str, text_rule("name", max_len=200)]
    pieces_per_box: Annotated[
        int | None,
        whole_rule("pieces_per_box", 1, 10_000, "must be a whole number from 1 to 10000", required=False),
    ] = None  # None: sold by the piece only
    sqm_per_box: Annotated[
        Decimal | None,
        BeforeValidator(
            lambda v: None if v is None else parse_quantity(v, field="sqm_per_box", places=SQM_PER_BOX_PLACES)
        ),
    ] = None
    allow_partial_boxes: Annotated[bool, flag_rule("allow_partial_boxes")] = False
    adjustment_approval_pieces: Annotated[Decimal | None, _limit("adjustment_approval_pieces")] = None
    adjustment_approval_value: Annotated[Decimal | None, _limit("adjustment_approval_value", places=4)] = None

    @model_validator(mode="after")
    def _area_needs_boxes(self) -> Self:
        if self.sqm_per_box is not None and self.pieces_per_box is None:
            raise InvalidCommand("needs pieces_per_box", field="sqm_per_box")
        return self


class WarehouseRequest(Request):
    code: Annotated[str, text_rule("code", max_len=32)]
    name: Annotated[str, text_rule("name", max_len=200)]
    can_ship: Annotated[bool, flag_rule("can_ship")] = True
    priority: Annotated[
        int, whole_rule("priority", 0, 10_000, "must be a whole number from 0 (first) to 10000")
    ] = 100
    type: Annotated[
        str, choice_rule("type", ["warehouse", "showroom"], "must be 'warehouse' or 'showroom'")
    ] = "warehouse"
    active: Annotated[bool, flag_rule("active")] = True
    can_receive: Annotated[bool, flag_rule("can_receive")] = True


# -- warehouse operations ------------------------------------------------------------------------

MONEY_PLACES = 4  # costs are NUMERIC(18, 4)
MAX_UNIT_COST = Decimal("100000000")


def _money(field: str) -> BeforeValidator:
    def check(value: object) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise InvalidCommand("must be a decimal number given as a string or an integer", field=field)
        try:
            cost = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
        except ArithmeticError:
            raise InvalidCommand(f"{value!r} is not a number", field=field) from None
        if not cost.is_finite() or cost < 0 or cost > MAX_UNIT_COST:
            raise InvalidCommand(f"must be a number from 0 to {MAX_UNIT_COST}", field=field)
        if cost != cost.quantize(Decimal(1).scaleb(-MONEY_PLACES)):
            raise InvalidCommand(f"has more than {MONEY_PLACES} decimal places", field=field)
        return cost

    return BeforeValidator(check)


def _receipt_lines(value: object) -> list[Any]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise InvalidCommand("a receipt needs at least one line", field="lines")
    if len(value) > MAX_LINES:
        raise InvalidCommand(f"at most {MAX_LINES} lines per receipt", field="lines")
    return list(value)


Reason = Annotated[str, text_rule("reason", max_len=500)]
OptionalQuantity = Annotated[
    Decimal | None, BeforeValidator(lambda v: None if v is None else parse_quantity(v))
]


class ReceiptLine(BaseModel):
    """One line of goods in: a quantity of a product into a warehouse and a lot, maybe costed,
    maybe into quarantine."""

    model_config = ConfigDict(frozen=True, validate_default=True)

    warehouse: Annotated[str, text_rule("warehouse", max_len=32)]
    sku: Annotated[str, text_rule("sku")]
    quantity: Quantity
    unit: UnitName = Unit.PIECE
    lot: Annotated[str, text_rule("lot")]
    shade: Annotated[str | None, text_rule("shade", max_len=32, required=False)] = None
    caliber: Annotated[str | None, text_rule("caliber", max_len=32, required=False)] = None
    expiry: Annotated[dt.date | None, date_rule("expiry")] = None
    unit_cost: Annotated[Decimal | None, _money("unit_cost")] = None
    quarantine: Annotated[bool, flag_rule("quarantine")] = False

    @model_validator(mode="before")
    @classmethod
    def _an_object_of_known_fields(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            raise InvalidCommand("must be an object with warehouse, sku, quantity, unit and lot")
        unknown = set(value) - set(cls.model_fields)
        if unknown:
            raise InvalidCommand(f"unknown fields {sorted(map(str, unknown))}")
        return {"warehouse": None, "sku": None, "quantity": None, "lot": None, **value}


class GoodsReceiptRequest(Request):
    """Goods in: one or more lines, with the supplier's documents. Each line is one `stock.receive`
    command, keyed `{key}:{n}` (line n, from 1); a receipt of one line sent the old way (`numbered`
    False: `StockClient.receive`, the one-line body of POST /v1/receipts) keeps the key itself."""

    idempotency_key: IdempotencyKey
    lines: Annotated[tuple[ReceiptLine, ...], BeforeValidator(_receipt_lines)]
    supplier: Annotated[str | None, text_rule("supplier", max_len=200, required=False)] = None
    purchase_order: Annotated[str | None, text_rule("purchase_order", max_len=64, required=False)] = None
    invoice: Annotated[str | None, text_rule("invoice", max_len=64, required=False)] = None
    numbered: bool = True

    @classmethod
    def parse(cls, **fields: Any) -> Self:
        """As `Request.parse`; a one-line receipt sent the old way names its fields as it sent them
        (``quantity``, not ``lines[0].quantity``)."""
        try:
            return super().parse(**fields)
        except InvalidCommand as error:
            if fields.get("numbered") is not False or not (error.field or "").startswith("lines[0]"):
                raise
            field = (error.field or "").removeprefix("lines[0]").lstrip(".") or None
            raise InvalidCommand(error.message, field=field) from None

    def line_key(self, line_no: int) -> str:
        return f"{self.idempotency_key}:{line_no}" if self.numbered else self.idempotency_key

    def reason(self) -> str | None:
        """Why the goods came, as their ledger rows say it: the supplier's documents."""
        named = [
            f"{name} {value}"
            for name, value in (
                ("supplier", self.supplier),
                ("purchase order", self.purchase_order),
                ("invoice", self.invoice),
            )
            if value is not None
        ]
        return ", ".join(named) or None


class QuarantineRequest(Request):
    """Release a quarantined receipt line to stock: `quantity` of it (None: all that is left)."""

    quarantine_id: Annotated[str, BeforeValidator(parse_quarantine_id)]
    idempotency_key: IdempotencyKey
    quantity: OptionalQuantity = None
    unit: UnitName = Unit.PIECE


class QuarantineWriteOffRequest(QuarantineRequest):
    """Write a quarantined receipt line (or `quantity` of it) off as damaged, saying why."""

    reason: Reason


class DamageRequest(Request):
    """Pieces of a lot found damaged in a warehouse, from its available stock, saying why."""

    idempotency_key: IdempotencyKey
    warehouse: Annotated[str, text_rule("warehouse", max_len=32)]
    sku: Annotated[str, text_rule("sku")]
    lot: Annotated[str, text_rule("lot")]
    quantity: Quantity
    unit: UnitName = Unit.PIECE
    reason: Reason


def parse_quarantine_id(value: object) -> str:
    """A quarantine id in its canonical form; anything that is not a UUID names none."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise UnknownQuarantine(str(value)) from None
