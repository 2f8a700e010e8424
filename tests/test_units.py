"""Quantities and units: what a customer asks for, in pieces, boxes or m², and how it is rounded."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidCommand
from domain.quantities import (
    MAX_QUANTITY,
    Packaging,
    Unit,
    boxes_in,
    decimal_str,
    parse_quantity,
    parse_unit,
    sqm_in,
    to_pieces,
)

GRES_60 = Packaging(pieces_per_box=4, sqm_per_box=Decimal("1.44"))
MOSAIC = Packaging(pieces_per_box=11, sqm_per_box=Decimal("0.99"))
LOOSE_MOSAIC = Packaging(pieces_per_box=11, sqm_per_box=Decimal("0.99"), allow_partial_boxes=True)
GROUT_BAG = Packaging(pieces_per_box=None, sqm_per_box=None)
BOXED_TRIM = Packaging(pieces_per_box=20, sqm_per_box=None)

# A quantity as a customer may type it: positive, at most three decimals, at most MAX_QUANTITY.
quantities = st.decimals(min_value=Decimal("0.001"), max_value=MAX_QUANTITY, places=3)
areas = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("50"), places=3)
packagings = st.builds(
    Packaging,
    pieces_per_box=st.integers(min_value=1, max_value=10_000),
    sqm_per_box=areas,
    allow_partial_boxes=st.booleans(),
)
whole_box_packagings = st.builds(
    Packaging, pieces_per_box=st.integers(min_value=1, max_value=200), sqm_per_box=areas
)
partial_box_packagings = st.builds(
    Packaging,
    pieces_per_box=st.integers(min_value=1, max_value=200),
    sqm_per_box=areas,
    allow_partial_boxes=st.just(True),
)


def _ceil(value: Decimal) -> Decimal:
    return value.to_integral_value(rounding=ROUND_CEILING)


# -- reading a quantity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12.5", Decimal("12.5")),
        (12, Decimal(12)),
        (Decimal("0.001"), Decimal("0.001")),
        (" 3 ", Decimal(3)),
        ("1000000", MAX_QUANTITY),
        ("2.500", Decimal("2.5")),
    ],
)
def test_a_quantity_given_as_text_an_integer_or_a_decimal_is_read_exactly(
    raw: object, expected: Decimal
) -> None:
    assert parse_quantity(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("0", id="zero"),
        pytest.param(0, id="zero-int"),
        pytest.param("-0", id="negative-zero"),
        pytest.param("-1", id="negative"),
        pytest.param(-5, id="negative-int"),
        pytest.param("NaN", id="nan"),
        pytest.param("sNaN", id="signalling-nan"),
        pytest.param(Decimal("NaN"), id="nan-decimal"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("-Infinity", id="minus-infinity"),
        pytest.param(Decimal("Infinity"), id="infinity-decimal"),
        pytest.param("1000000.001", id="just-over-the-maximum"),
        pytest.param("1e7", id="huge-exponent"),
        pytest.param(10**30, id="huge-int"),
        pytest.param(10**5000, id="enormous-int"),
        pytest.param("1.2345", id="too-many-decimals"),
        pytest.param("0.0001", id="below-a-thousandth"),
        pytest.param(1.5, id="float"),
        pytest.param(float("nan"), id="float-nan"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("twelve", id="words"),
        pytest.param("12 m2", id="number-with-unit"),
        pytest.param([12], id="list"),
        pytest.param(b"12", id="bytes"),
    ],
)
def test_a_quantity_that_is_not_a_positive_bounded_three_place_number_is_refused(raw: object) -> None:
    with pytest.raises(InvalidCommand) as refused:
        parse_quantity(raw, field="lines[0].quantity")

    assert refused.value.field == "lines[0].quantity"


@given(quantities)
def test_any_positive_quantity_with_three_decimals_reads_back_unchanged(quantity: Decimal) -> None:
    assert parse_quantity(str(quantity)) == quantity


@given(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1000"), places=6))
def test_a_quantity_finer_than_a_thousandth_is_refused_never_rounded(quantity: Decimal) -> None:
    if quantity == quantity.quantize(Decimal("0.001")):
        assert parse_quantity(str(quantity)) == quantity
    else:
        with pytest.raises(InvalidCommand, match="decimal places"):
            parse_quantity(str(quantity))


@pytest.mark.parametrize(("raw", "unit"), [("piece", Unit.PIECE), ("box", Unit.BOX), ("sqm", Unit.SQM)])
def test_piece_box_and_sqm_are_the_units_a_tile_is_sold_in(raw: str, unit: Unit) -> None:
    assert parse_unit(raw) is unit


@pytest.mark.parametrize("raw", ["litre", "m2", "PIECE", "", None, 1, True])
def test_any_other_unit_is_refused_naming_the_field(raw: object) -> None:
    with pytest.raises(InvalidCommand, match="unknown unit") as refused:
        parse_unit(raw, field="lines[3].unit")

    assert refused.value.field == "lines[3].unit"


# -- converting to pieces ----------------------------------------------------------------------


def test_pieces_are_taken_as_asked() -> None:
    conversion = to_pieces(Decimal(7), Unit.PIECE, GRES_60)

    assert (conversion.pieces, conversion.rounding) == (Decimal(7), "exact")
    assert conversion.boxes == Decimal("1.75")
    assert conversion.sqm == Decimal("2.52")


def test_half_a_tile_cannot_be_sold() -> None:
    with pytest.raises(InvalidCommand, match="pieces must be whole") as refused:
        to_pieces(Decimal("2.5"), Unit.PIECE, GRES_60, field="lines[0].quantity")

    assert refused.value.field == "lines[0].quantity"


def test_whole_boxes_are_their_pieces_exactly() -> None:
    conversion = to_pieces(Decimal(3), Unit.BOX, GRES_60)

    assert (conversion.pieces, conversion.boxes, conversion.rounding) == (Decimal(12), Decimal(3), "exact")


def test_part_of_a_box_is_refused_when_the_product_is_sold_in_whole_boxes() -> None:
    with pytest.raises(InvalidCommand, match="whole boxes only"):
        to_pieces(Decimal("1.5"), Unit.BOX, GRES_60)


def test_part_of_a_box_rounds_up_to_whole_pieces_when_partial_boxes_are_allowed() -> None:
    conversion = to_pieces(Decimal("0.5"), Unit.BOX, LOOSE_MOSAIC)  # 5.5 sheets

    assert conversion.pieces == Decimal(6)
    assert conversion.rounding == "partial box rounded up to whole pieces"


@pytest.mark.parametrize("packaging", [GROUT_BAG], ids=["grout-bag"])
def test_a_product_without_boxes_cannot_be_sold_by_the_box(packaging: Packaging) -> None:
    with pytest.raises(InvalidCommand, match="not sold by the box") as refused:
        to_pieces(Decimal(1), Unit.BOX, packaging, field="quantity")

    assert refused.value.field == "quantity"


@pytest.mark.parametrize("packaging", [GROUT_BAG, BOXED_TRIM], ids=["grout-bag", "boxed-trim-without-area"])
def test_a_product_without_an_area_cannot_be_sold_by_the_square_metre(packaging: Packaging) -> None:
    with pytest.raises(InvalidCommand, match="no area per box"):
        to_pieces(Decimal(1), Unit.SQM, packaging)


def test_twelve_and_a_half_square_metres_of_60x60_rounds_up_to_nine_boxes() -> None:
    conversion = to_pieces(Decimal("12.5"), Unit.SQM, GRES_60)

    assert conversion.pieces == Decimal(36)
    assert conversion.boxes == Decimal(9)
    assert conversion.sqm == Decimal("12.96")
    assert conversion.rounding == "rounded up to whole boxes"


def test_an_area_that_is_a_whole_number_of_boxes_is_exact() -> None:
    conversion = to_pieces(Decimal("2.88"), Unit.SQM, GRES_60)

    assert (conversion.pieces, conversion.rounding) == (Decimal(8), "exact")


def test_an_area_rounds_up_to_whole_pieces_when_partial_boxes_are_allowed() -> None:
    conversion = to_pieces(Decimal("1"), Unit.SQM, LOOSE_MOSAIC)  # 11.11… sheets

    assert conversion.pieces == Decimal(12)
    assert conversion.rounding == "rounded up to whole pieces"


def test_an_area_so_large_it_needs_absurdly_many_boxes_is_refused() -> None:
    tiny_boxes = Packaging(pieces_per_box=1, sqm_per_box=Decimal("0.001"))

    with pytest.raises(InvalidCommand, match="too large") as refused:
        to_pieces(Decimal(5000), Unit.SQM, tiny_boxes, field="lines[0].quantity")

    assert refused.value.field == "lines[0].quantity"


@given(quantities, whole_box_packagings)
def test_an_area_always_rounds_up_to_the_fewest_whole_boxes_that_cover_it(
    sqm: Decimal, packaging: Packaging
) -> None:
    assert packaging.pieces_per_box and packaging.sqm_per_box
    if _ceil(sqm / packaging.sqm_per_box) > MAX_QUANTITY:
        with pytest.raises(InvalidCommand, match="too large"):
            to_pieces(sqm, Unit.SQM, packaging)
        return

    conversion = to_pieces(sqm, Unit.SQM, packaging)

    boxes = conversion.pieces / packaging.pieces_per_box
    assert boxes == boxes.to_integral_value()
    assert boxes * packaging.sqm_per_box >= sqm
    assert (boxes - 1) * packaging.sqm_per_box < sqm
    assert conversion.sqm is not None and conversion.sqm >= sqm
    assert (conversion.rounding == "exact") == (boxes * packaging.sqm_per_box == sqm)


@given(quantities, partial_box_packagings)
def test_an_area_of_a_loose_product_rounds_up_to_the_fewest_whole_pieces_that_cover_it(
    sqm: Decimal, packaging: Packaging
) -> None:
    assert packaging.pieces_per_box and packaging.sqm_per_box
    ppb, spb = packaging.pieces_per_box, packaging.sqm_per_box
    if _ceil(sqm * ppb / spb) > MAX_QUANTITY * ppb:
        with pytest.raises(InvalidCommand, match="too large"):
            to_pieces(sqm, Unit.SQM, packaging)
        return

    conversion = to_pieces(sqm, Unit.SQM, packaging)

    assert conversion.pieces == conversion.pieces.to_integral_value()
    assert conversion.pieces * spb / ppb >= sqm
    assert (conversion.pieces - 1) * spb / ppb < sqm


@given(quantities, packagings)
def test_a_converted_area_always_covers_the_request(sqm: Decimal, packaging: Packaging) -> None:
    try:
        conversion = to_pieces(sqm, Unit.SQM, packaging)
    except InvalidCommand as refused:  # only ever for absurdly many boxes
        assert refused.message == "quantity is too large"
        return

    assert packaging.pieces_per_box and packaging.sqm_per_box
    assert conversion.pieces * packaging.sqm_per_box / packaging.pieces_per_box >= sqm
    assert conversion.pieces > 0


@given(st.integers(min_value=1, max_value=1_000_000), packagings)
def test_whole_boxes_are_always_boxes_times_pieces_per_box(boxes: int, packaging: Packaging) -> None:
    conversion = to_pieces(Decimal(boxes), Unit.BOX, packaging)

    assert conversion.pieces == boxes * (packaging.pieces_per_box or 0)
    assert conversion.rounding == "exact"
    assert conversion.boxes == boxes


@given(quantities, partial_box_packagings)
def test_a_partial_box_always_rounds_up_to_whole_pieces(boxes: Decimal, packaging: Packaging) -> None:
    conversion = to_pieces(boxes, Unit.BOX, packaging)

    ppb = packaging.pieces_per_box or 0
    assert conversion.pieces == conversion.pieces.to_integral_value()
    assert boxes * ppb <= conversion.pieces < boxes * ppb + 1


@given(st.integers(min_value=1, max_value=1_000_000), packagings)
def test_whole_pieces_are_never_rounded(pieces: int, packaging: Packaging) -> None:
    conversion = to_pieces(Decimal(pieces), Unit.PIECE, packaging)

    assert (conversion.pieces, conversion.rounding) == (pieces, "exact")


# -- boxes and area of a number of pieces --------------------------------------------------------


def test_pieces_of_an_unboxed_product_have_neither_boxes_nor_area() -> None:
    assert boxes_in(Decimal(5), GROUT_BAG) is None
    assert sqm_in(Decimal(5), GROUT_BAG) is None
    assert sqm_in(Decimal(5), BOXED_TRIM) is None


def test_loose_pieces_are_shown_as_a_fraction_of_a_box_and_their_area() -> None:
    assert boxes_in(Decimal(5), MOSAIC) == Decimal("0.455")
    assert sqm_in(Decimal(5), MOSAIC) == Decimal("0.45")


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("36.000"), "36"), (Decimal("12.50"), "12.5"), (Decimal("1E+3"), "1000"), (None, None)],
)
def test_a_quantity_is_written_without_trailing_zeros_or_exponent(
    value: Decimal | None, text: str | None
) -> None:
    assert decimal_str(value) == text
