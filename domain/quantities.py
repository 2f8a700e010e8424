"""Quantities and units: Decimal in the product's base unit (pieces), never float.

Every conversion states its rounding: boxes are whole unless the product allows partial boxes,
and a request in m² rounds *up* to the next whole box (or piece, for partial-box products),
because a customer who asks for 12.5 m² must be able to cover 12.5 m².
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from domain.errors import InvalidCommand

MAX_QUANTITY = Decimal("1000000")
"""No single line or movement may exceed this in its own unit (guards against typos and overflow)."""
QUANTITY_PLACES = 3


class Unit(enum.StrEnum):
    PIECE = "piece"
    BOX = "box"
    SQM = "sqm"


@dataclass(frozen=True, slots=True)
class Packaging:
    """How a product is packed: what a box holds, in pieces and in m²."""

    pieces_per_box: int | None
    sqm_per_box: Decimal | None
    allow_partial_boxes: bool = False


@dataclass(frozen=True, slots=True)
class Conversion:
    """A requested quantity turned into pieces, with the boxes and m² those pieces make."""

    requested: Decimal
    unit: Unit
    pieces: Decimal
    boxes: Decimal | None
    sqm: Decimal | None
    rounding: str


class Sign(enum.Enum):
    """Which quantities a field takes: a movement's (positive), a count's (zero too), a correction's
    (either way, not zero)."""

    POSITIVE = "must be greater than zero"
    NOT_NEGATIVE = "cannot be negative"
    NOT_ZERO = "cannot be zero"

    def refuses(self, value: Decimal) -> bool:
        if self is Sign.POSITIVE:
            return value <= 0
        return value < 0 if self is Sign.NOT_NEGATIVE else value == 0


def parse_quantity(
    raw: object, *, field: str = "quantity", places: int = QUANTITY_PLACES, sign: Sign = Sign.POSITIVE
) -> Decimal:
    """A finite Decimal of the given sign (positive by default) with at most `places` (three) places
    and at most MAX_QUANTITY either way."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise InvalidCommand("must be a decimal number given as a string or an integer", field=field)
    try:
        # An int goes in directly: str() of an int over 4300 digits raises ValueError.
        value = Decimal(raw.strip()) if isinstance(raw, str) else Decimal(raw)
    except ArithmeticError:
        raise InvalidCommand(f"{raw!r} is not a number", field=field) from None
    if not value.is_finite():
        raise InvalidCommand("must be a finite number", field=field)
    if sign.refuses(value):
        raise InvalidCommand(sign.value, field=field)
    if abs(value) > MAX_QUANTITY:
        raise InvalidCommand(f"must be at most {MAX_QUANTITY}", field=field)
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise InvalidCommand(f"has more than {places} decimal places", field=field)
    return value


def parse_unit(raw: object, *, field: str = "unit") -> Unit:
    try:
        return Unit(str(raw))
    except ValueError:
        allowed = ", ".join(u.value for u in Unit)
        raise InvalidCommand(f"unknown unit {raw!r} (one of {allowed})", field=field) from None


def _ceil(value: Decimal) -> Decimal:
    return value.to_integral_value(rounding=ROUND_CEILING)


def to_pieces(quantity: Decimal, unit: Unit, packaging: Packaging, *, field: str = "quantity") -> Conversion:
    """Convert a requested quantity to whole pieces, saying how it was rounded."""
    ppb, spb = packaging.pieces_per_box, packaging.sqm_per_box
    if unit is Unit.PIECE:
        if quantity != _ceil(quantity):
            raise InvalidCommand("pieces must be whole", field=field)
        pieces, rounding = quantity, "exact"
    elif unit is Unit.BOX:
        if not ppb:
            raise InvalidCommand("this product is not sold by the box", field=field)
        if quantity != _ceil(quantity) and not packaging.allow_partial_boxes:
            raise InvalidCommand("this product is sold in whole boxes only", field=field)
        exact = quantity * ppb
        pieces = _ceil(exact)
        rounding = "exact" if pieces == exact else "partial box rounded up to whole pieces"
    else:
        if not ppb or not spb:
            raise InvalidCommand("this product has no area per box: it cannot be sold by m²", field=field)
        boxes_exact = quantity / spb
        if packaging.allow_partial_boxes:
            pieces = _ceil(quantity * ppb / spb)
            rounding = "exact" if pieces == quantity * ppb / spb else "rounded up to whole pieces"
        else:
            boxes = _ceil(boxes_exact)
            pieces = boxes * ppb
            rounding = "exact" if boxes == boxes_exact else "rounded up to whole boxes"
    if pieces > MAX_QUANTITY * max(ppb or 1, 1):
        raise InvalidCommand("quantity is too large", field=field)
    return Conversion(
        requested=quantity,
        unit=unit,
        pieces=pieces,
        boxes=boxes_in(pieces, packaging),
        sqm=sqm_in(pieces, packaging),
        rounding=rounding,
    )


def boxes_in(pieces: Decimal, packaging: Packaging) -> Decimal | None:
    """How many boxes `pieces` make (may be fractional for loose pieces), or None if not boxed."""
    if not packaging.pieces_per_box:
        return None
    return (pieces / packaging.pieces_per_box).quantize(Decimal("0.001"))


def sqm_in(pieces: Decimal, packaging: Packaging) -> Decimal | None:
    """The area `pieces` cover, or None for products without an area."""
    if not packaging.pieces_per_box or not packaging.sqm_per_box:
        return None
    return (pieces * packaging.sqm_per_box / packaging.pieces_per_box).quantize(Decimal("0.0001"))


def decimal_str(value: Decimal | None) -> str | None:
    """A quantity as plain text without trailing zeros or exponent (``Decimal('36.000')`` → ``'36'``)."""
    return None if value is None else format(value.normalize(), "f")
