"""Bad input to the client is refused with a clear error naming the field, and changes nothing.

Runs against the real PostgreSQL (no worker: every refusal happens before anything is recorded).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from domain.errors import IdempotencyConflict, InvalidCommand, UnknownHold, UnknownSku, UnknownWarehouse
from producers import StockClient
from producers.client import CommandTicket
from tests.conftest import fingerprint

TABLES = ("commands", "holds", "hold_lines", "movements", "stock_balances", "lots", "products", "warehouses")


def snapshot(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a fingerprint of the contents of every table a client call may write."""
    return fingerprint(engine, TABLES)


def assert_refused(
    engine: Engine, call: Callable[[], object], *, field: str | None, error: type[Exception] = InvalidCommand
) -> Exception:
    """The call raises `error` naming `field`, and not a row anywhere has changed."""
    before = snapshot(engine)

    with pytest.raises(error) as refused:
        call()

    if field is not None:
        assert isinstance(refused.value, InvalidCommand)
        assert refused.value.field == field, str(refused.value)
        assert refused.value.message
    assert snapshot(engine) == before, "a refused call changed the database"
    return refused.value


@pytest.fixture
def pending_hold(catalog: StockClient) -> str:
    """A hold recorded but not yet decided (no worker runs in these tests)."""
    catalog.upsert_warehouse(code="OLD1", name="Closed warehouse", priority=5, active=False)
    return catalog.reserve(
        idempotency_key="cart-1", lines=[{"sku": "GRS-60x60-GREY", "quantity": "12.5", "unit": "sqm"}]
    ).hold_id


# -- the calls, each with one input made bad ---------------------------------------------------

Call = Callable[[StockClient, str], object]
THE_HOLD = "<the pending hold>"
OTHER_HOLD = "<another hold>"


def _hold_id(client: StockClient, pending: str, value: object) -> Any:
    if value == THE_HOLD:
        return pending
    if value == OTHER_HOLD:
        with client.engine.connect() as conn:
            return str(
                conn.execute(text("SELECT id FROM holds WHERE idempotency_key = 'cart-other'")).scalar_one()
            )
    return value


GOOD_LINE = {"sku": "GRS-60x60-GREY", "quantity": "2", "unit": "box"}


def reserve(**overrides: Any) -> Call:
    args = {"idempotency_key": "cart-2", "lines": [GOOD_LINE], **overrides}
    return lambda client, _hold: client.reserve(**args)


def reserve_line(**line: Any) -> Call:
    return reserve(lines=[{**GOOD_LINE, **line}])


def receive(**overrides: Any) -> Call:
    args = {
        "idempotency_key": "rcv-2",
        "warehouse": "BUC1",
        "sku": "GRS-60x60-GREY",
        "quantity": "10",
        "unit": "box",
        "lot": "L2403",
        **overrides,
    }
    return lambda client, _hold: client.receive(**args)


def release(hold_id: object = THE_HOLD, idempotency_key: object = "abandon-1") -> Call:
    return lambda client, hold: client.release(
        _hold_id(client, hold, hold_id),
        idempotency_key=idempotency_key,  # type: ignore[arg-type]
    )


def confirm_payment(**overrides: Any) -> Call:
    def call(client: StockClient, hold: str) -> object:
        args = {"event_id": "evt-1", "hold_id": THE_HOLD, "status": "paid", **overrides}
        return client.confirm_payment(**{**args, "hold_id": _hold_id(client, hold, args["hold_id"])})

    return call


def upsert_product(**overrides: Any) -> Call:
    args = {"sku": "GRS-30x60-BEIGE", "name": "Grès 30x60 beige", "pieces_per_box": 8, "sqm_per_box": "1.44"}
    return lambda client, _hold: client.upsert_product(**{**args, **overrides})


def upsert_warehouse(**overrides: Any) -> Call:
    args = {"code": "TIM1", "name": "Timișoara", "priority": 3}
    return lambda client, _hold: client.upsert_warehouse(**{**args, **overrides})


BASELINES = {
    "reserve": reserve(),
    "reserve-partial-with-warehouse": reserve(
        mode="partial", ttl_seconds=60, lines=[{**GOOD_LINE, "warehouse": "SHOW"}]
    ),
    "receive": receive(shade="A", caliber="9", expiry="2030-01-31"),
    "release": release(),
    "confirm_payment": confirm_payment(),
    "upsert_product": upsert_product(),
    "upsert_product-area-with-four-decimals": upsert_product(sku="GRS-15x15", sqm_per_box="0.5625"),
    "upsert_product-partial-boxes": upsert_product(allow_partial_boxes=True),
    "upsert_warehouse": upsert_warehouse(),
    "upsert_warehouse-priority-zero": upsert_warehouse(priority=0, can_ship=False, type="showroom"),
}


@pytest.mark.parametrize("call", BASELINES.values(), ids=BASELINES.keys())
def test_the_untouched_calls_are_accepted(catalog: StockClient, pending_hold: str, call: Call) -> None:
    """Each bad-input case below differs from one of these by a single input."""
    call(catalog, pending_hold)


# -- quantities --------------------------------------------------------------------------------

BAD_QUANTITIES = [
    pytest.param("0", id="zero"),
    pytest.param(0, id="zero-int"),
    pytest.param("-3", id="negative"),
    pytest.param(-3, id="negative-int"),
    pytest.param("NaN", id="nan"),
    pytest.param(Decimal("NaN"), id="nan-decimal"),
    pytest.param("Infinity", id="infinity"),
    pytest.param("-Infinity", id="minus-infinity"),
    pytest.param("1000001", id="huge"),
    pytest.param(10**12, id="huge-int"),
    pytest.param(10**5000, id="enormous-int"),
    pytest.param("2.00001", id="too-many-decimals"),
    pytest.param(2.5, id="float"),
    pytest.param(float("nan"), id="float-nan"),
    pytest.param(float("inf"), id="float-infinity"),
    pytest.param(True, id="bool"),
    pytest.param("two", id="words"),
    pytest.param("", id="empty"),
    pytest.param([2], id="list"),
]


@pytest.mark.parametrize("quantity", [*BAD_QUANTITIES, pytest.param(None, id="missing")])
@pytest.mark.parametrize(
    ("make", "field"),
    [(reserve_line, "lines[0].quantity"), (receive, "quantity")],
    ids=["reserve", "receive"],
)
def test_a_quantity_that_is_not_a_positive_bounded_decimal_is_refused(
    catalog: StockClient,
    pending_hold: str,
    engine: Engine,
    make: Callable[..., Call],
    field: str,
    quantity: object,
) -> None:
    assert_refused(engine, lambda: make(quantity=quantity)(catalog, pending_hold), field=field)


@pytest.mark.parametrize("area", BAD_QUANTITIES)
def test_a_box_area_that_is_not_a_positive_bounded_decimal_is_refused(
    catalog: StockClient, engine: Engine, area: object
) -> None:
    assert_refused(engine, lambda: upsert_product(sqm_per_box=area)(catalog, ""), field="sqm_per_box")


@pytest.mark.parametrize(
    ("make", "field"),
    [(reserve_line, "lines[0].quantity"), (receive, "quantity")],
    ids=["reserve", "receive"],
)
def test_a_quantity_with_four_decimals_is_refused(
    catalog: StockClient, pending_hold: str, engine: Engine, make: Callable[..., Call], field: str
) -> None:
    assert_refused(engine, lambda: make(quantity="1.2345", unit="sqm")(catalog, pending_hold), field=field)


BAD_WHOLE_NUMBERS = [
    pytest.param(-1, id="negative"),
    pytest.param(10**7, id="huge"),
    pytest.param(2.5, id="fraction"),
    pytest.param(4.0, id="float"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="infinity"),
    pytest.param(True, id="bool"),
    pytest.param("4", id="text"),
    pytest.param(Decimal(4), id="decimal"),
]


@pytest.mark.parametrize("value", [pytest.param(0, id="zero"), *BAD_WHOLE_NUMBERS])
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda v: reserve(ttl_seconds=v), "ttl_seconds"),
        (lambda v: upsert_product(pieces_per_box=v), "pieces_per_box"),
    ],
    ids=["reserve-ttl", "upsert_product-pieces-per-box"],
)
def test_a_count_that_is_not_a_positive_bounded_whole_number_is_refused(
    catalog: StockClient,
    pending_hold: str,
    engine: Engine,
    make: Callable[[object], Call],
    field: str,
    value: object,
) -> None:
    assert_refused(engine, lambda: make(value)(catalog, pending_hold), field=field)


@pytest.mark.parametrize("value", BAD_WHOLE_NUMBERS)
def test_a_warehouse_priority_that_is_not_a_bounded_whole_number_is_refused(
    catalog: StockClient, engine: Engine, value: object
) -> None:
    assert_refused(engine, lambda: upsert_warehouse(priority=value)(catalog, ""), field="priority")


@pytest.mark.parametrize("ttl", [604_801, 10**9], ids=["a-week-and-a-second", "decades"])
def test_a_hold_longer_than_a_week_is_refused(catalog: StockClient, engine: Engine, ttl: int) -> None:
    assert_refused(engine, lambda: reserve(ttl_seconds=ttl)(catalog, ""), field="ttl_seconds")


# -- units and what a product can be sold in -------------------------------------------------------

CANNOT_BE_SOLD_SO = [
    pytest.param({"unit": "litre"}, "unit", id="unknown-unit"),
    pytest.param({"unit": None}, "unit", id="no-unit"),
    pytest.param({"unit": "BOX"}, "unit", id="unit-in-capitals"),
    pytest.param(
        {"sku": "GROUT-5KG", "unit": "box", "quantity": "1"}, "quantity", id="box-of-an-unboxed-product"
    ),
    pytest.param(
        {"sku": "GROUT-5KG", "unit": "sqm", "quantity": "3"}, "quantity", id="sqm-of-a-product-without-area"
    ),
    pytest.param({"unit": "piece", "quantity": "2.5"}, "quantity", id="fractional-pieces"),
    pytest.param({"unit": "box", "quantity": "1.5"}, "quantity", id="part-of-a-whole-box-only-product"),
    pytest.param(
        {"unit": "sqm", "quantity": "999999", "sku": "MOSAIC-30"}, "quantity", id="over-a-million-boxes"
    ),
]


@pytest.mark.parametrize(("change", "field"), CANNOT_BE_SOLD_SO)
def test_a_line_in_a_unit_the_product_is_not_sold_in_is_refused(
    catalog: StockClient, pending_hold: str, engine: Engine, change: dict[str, Any], field: str
) -> None:
    assert_refused(engine, lambda: reserve_line(**change)(catalog, pending_hold), field=f"lines[0].{field}")


@pytest.mark.parametrize(("change", "field"), CANNOT_BE_SOLD_SO)
def test_a_receipt_in_a_unit_the_product_is_not_sold_in_is_refused(
    catalog: StockClient, engine: Engine, change: dict[str, Any], field: str
) -> None:
    assert_refused(engine, lambda: receive(**change)(catalog, ""), field=field)


# -- products and warehouses that do not exist -----------------------------------------------------

UNKNOWN = [
    pytest.param(reserve_line(sku="NO-SUCH-TILE"), "lines[0].sku", UnknownSku, id="reserve-unknown-sku"),
    pytest.param(
        reserve(lines=[GOOD_LINE, {**GOOD_LINE, "sku": "NO-SUCH-TILE"}]),
        "lines[1].sku",
        UnknownSku,
        id="reserve-unknown-sku-on-the-second-line",
    ),
    pytest.param(
        reserve_line(warehouse="NOPE"), "lines[0].warehouse", UnknownWarehouse, id="reserve-unknown-warehouse"
    ),
    pytest.param(
        reserve_line(warehouse="OLD1"),
        "lines[0].warehouse",
        UnknownWarehouse,
        id="reserve-inactive-warehouse",
    ),
    pytest.param(receive(sku="NO-SUCH-TILE"), "sku", UnknownSku, id="receive-unknown-sku"),
    pytest.param(receive(warehouse="NOPE"), "warehouse", UnknownWarehouse, id="receive-unknown-warehouse"),
    pytest.param(receive(warehouse="OLD1"), "warehouse", UnknownWarehouse, id="receive-inactive-warehouse"),
]


@pytest.mark.parametrize(("call", "field", "error"), UNKNOWN)
def test_an_unknown_product_or_warehouse_is_refused_by_name(
    catalog: StockClient, pending_hold: str, engine: Engine, call: Call, field: str, error: type[Exception]
) -> None:
    assert_refused(engine, lambda: call(catalog, pending_hold), field=field, error=error)


# -- the shape of a cart -----------------------------------------------------------------------

BAD_CARTS = [
    pytest.param([], "lines", id="empty-cart"),
    pytest.param((), "lines", id="empty-tuple"),
    pytest.param(None, "lines", id="no-lines"),
    pytest.param(GOOD_LINE, "lines", id="a-line-not-in-a-list"),
    pytest.param("GRS-60x60-GREY", "lines", id="text"),
    pytest.param(3, "lines", id="number"),
    pytest.param((line for line in [GOOD_LINE]), "lines", id="generator"),
    pytest.param([GOOD_LINE] * 101, "lines", id="more-than-100-lines"),
    pytest.param(["GRS-60x60-GREY"], "lines[0]", id="a-line-that-is-text"),
    pytest.param([GOOD_LINE, None], "lines[1]", id="a-line-that-is-none"),
    pytest.param([{**GOOD_LINE, "colour": "grey"}], "lines[0]", id="a-line-with-an-unknown-field"),
    pytest.param(
        [{**GOOD_LINE, 7: "x", "colour": "grey"}], "lines[0]", id="a-line-with-unknown-fields-of-mixed-type"
    ),
    pytest.param([{"quantity": "2"}], "lines[0].sku", id="a-line-without-sku"),
    pytest.param([{**GOOD_LINE, "sku": 42}], "lines[0].sku", id="a-sku-that-is-a-number"),
    pytest.param([{**GOOD_LINE, "sku": "   "}], "lines[0].sku", id="a-blank-sku"),
    pytest.param([{**GOOD_LINE, "sku": "X" * 65}], "lines[0].sku", id="a-sku-too-long"),
    pytest.param([{**GOOD_LINE, "sku": "GRS\x00"}], "lines[0].sku", id="a-sku-with-a-nul"),
    pytest.param([{**GOOD_LINE, "warehouse": ""}], "lines[0].warehouse", id="an-empty-warehouse"),
    pytest.param([{**GOOD_LINE, "warehouse": 1}], "lines[0].warehouse", id="a-warehouse-that-is-a-number"),
]


@pytest.mark.parametrize(("lines", "field"), BAD_CARTS)
def test_a_cart_that_is_not_a_list_of_known_lines_is_refused(
    catalog: StockClient, pending_hold: str, engine: Engine, lines: object, field: str
) -> None:
    assert_refused(engine, lambda: reserve(lines=lines)(catalog, pending_hold), field=field)


@pytest.mark.parametrize("mode", ["all", "ALL_OR_NOTHING", "", None, 1, True])
def test_a_hold_mode_other_than_all_or_nothing_or_partial_is_refused(
    catalog: StockClient, engine: Engine, mode: object
) -> None:
    assert_refused(engine, lambda: reserve(mode=mode)(catalog, ""), field="mode")


# -- idempotency keys ----------------------------------------------------------------------------

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("k" * 129, id="too-long"),
    pytest.param("cart 42", id="with-a-space"),
    pytest.param(" cart-42", id="leading-space"),
    pytest.param("cart-42\n", id="trailing-newline"),
    pytest.param("-cart", id="starting-with-a-dash"),
    pytest.param("coș-42", id="non-ascii"),
    pytest.param(42, id="a-number"),
    pytest.param(None, id="none"),
    pytest.param(b"cart-42", id="bytes"),
    pytest.param("line.reserve:abc:1", id="reserved-prefix-line"),
    pytest.param("hold.expire:abc", id="reserved-prefix-hold"),
    pytest.param("payment:evt-1", id="reserved-prefix-payment"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda k: reserve(idempotency_key=k), "idempotency_key"),
        (lambda k: receive(idempotency_key=k), "idempotency_key"),
        (lambda k: release(idempotency_key=k), "idempotency_key"),
        (lambda k: confirm_payment(event_id=k), "event_id"),
    ],
    ids=["reserve", "receive", "release", "confirm_payment"],
)
def test_a_malformed_idempotency_key_is_refused(
    catalog: StockClient,
    pending_hold: str,
    engine: Engine,
    make: Callable[[object], Call],
    field: str,
    key: object,
) -> None:
    assert_refused(engine, lambda: make(key)(catalog, pending_hold), field=field)


# -- holds and payments ----------------------------------------------------------------------------

BAD_HOLD_IDS = [
    pytest.param(str(uuid.uuid4()), id="unknown"),
    pytest.param("not-a-uuid", id="malformed"),
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param(42, id="a-number"),
    pytest.param("' OR 1=1 --", id="injection"),
]


@pytest.mark.parametrize("hold_id", BAD_HOLD_IDS)
@pytest.mark.parametrize(
    "make",
    [lambda h: release(hold_id=h), lambda h: confirm_payment(hold_id=h)],
    ids=["release", "confirm_payment"],
)
def test_an_unknown_or_malformed_hold_is_refused(
    catalog: StockClient, pending_hold: str, engine: Engine, make: Callable[[object], Call], hold_id: object
) -> None:
    assert_refused(engine, lambda: make(hold_id)(catalog, pending_hold), field="hold_id", error=UnknownHold)


@pytest.mark.parametrize("status", ["PAID", "ok", "none", "", None, 1, True, ["paid"]])
def test_a_payment_status_other_than_paid_failed_or_refunded_is_refused(
    catalog: StockClient, pending_hold: str, engine: Engine, status: object
) -> None:
    assert_refused(engine, lambda: confirm_payment(status=status)(catalog, pending_hold), field="status")


# -- reference data ------------------------------------------------------------------------------

BAD_REFERENCE_DATA = [
    pytest.param(upsert_product(sku=""), "sku", id="product-empty-sku"),
    pytest.param(upsert_product(sku=None), "sku", id="product-no-sku"),
    pytest.param(upsert_product(sku=7), "sku", id="product-sku-a-number"),
    pytest.param(upsert_product(sku="S" * 65), "sku", id="product-sku-too-long"),
    pytest.param(upsert_product(name="  "), "name", id="product-blank-name"),
    pytest.param(upsert_product(pieces_per_box=None), "sqm_per_box", id="product-area-without-boxes"),
    pytest.param(upsert_product(sqm_per_box="1.44444"), "sqm_per_box", id="product-area-five-decimals"),
    pytest.param(upsert_product(allow_partial_boxes="yes"), "allow_partial_boxes", id="product-partial-text"),
    pytest.param(upsert_product(allow_partial_boxes=1), "allow_partial_boxes", id="product-partial-number"),
    pytest.param(upsert_product(allow_partial_boxes=None), "allow_partial_boxes", id="product-partial-none"),
    pytest.param(upsert_warehouse(code=""), "code", id="warehouse-empty-code"),
    pytest.param(upsert_warehouse(code="W" * 33), "code", id="warehouse-code-too-long"),
    pytest.param(upsert_warehouse(code=None), "code", id="warehouse-no-code"),
    pytest.param(upsert_warehouse(name=""), "name", id="warehouse-empty-name"),
    pytest.param(upsert_warehouse(type="depot"), "type", id="warehouse-unknown-type"),
    pytest.param(upsert_warehouse(type=None), "type", id="warehouse-no-type"),
    pytest.param(upsert_warehouse(can_ship="no"), "can_ship", id="warehouse-can-ship-text"),
    pytest.param(upsert_warehouse(can_ship=0), "can_ship", id="warehouse-can-ship-number"),
    pytest.param(upsert_warehouse(active="false"), "active", id="warehouse-active-text"),
    pytest.param(upsert_warehouse(active=None), "active", id="warehouse-active-none"),
]


@pytest.mark.parametrize(("call", "field"), BAD_REFERENCE_DATA)
def test_bad_reference_data_is_refused(catalog: StockClient, engine: Engine, call: Call, field: str) -> None:
    assert_refused(engine, lambda: call(catalog, ""), field=field)


def test_a_bad_update_to_an_existing_product_leaves_it_as_it_was(
    catalog: StockClient, engine: Engine
) -> None:
    update = upsert_product(sku="GRS-60x60-GREY", pieces_per_box=True)

    assert_refused(engine, lambda: update(catalog, ""), field="pieces_per_box")

    assert catalog.stock("GRS-60x60-GREY").pieces_per_box == 4


def test_codes_and_names_are_stored_without_surrounding_spaces(catalog: StockClient) -> None:
    catalog.upsert_warehouse(code=" TIM1 ", name=" Timișoara ", priority=3)
    catalog.upsert_product(sku=" GRS-30x60 ", name=" Grès 30x60 ", pieces_per_box=8, sqm_per_box="1.44")

    ticket = catalog.receive(
        idempotency_key="rcv-t", warehouse="TIM1", sku="GRS-30x60", quantity="1", lot="L1"
    )

    assert ticket.key == "rcv-t"
    assert catalog.stock("GRS-30x60").name == "Grès 30x60"


# -- receipts ------------------------------------------------------------------------------------

BAD_RECEIPTS = [
    pytest.param({"lot": ""}, "lot", id="empty-lot"),
    pytest.param({"lot": None}, "lot", id="no-lot"),
    pytest.param({"lot": "L" * 65}, "lot", id="lot-too-long"),
    pytest.param({"lot": "L\x001"}, "lot", id="lot-with-a-nul"),
    pytest.param({"expiry": "2024-13-45"}, "expiry", id="impossible-expiry"),
    pytest.param({"expiry": "next spring"}, "expiry", id="expiry-in-words"),
    pytest.param({"expiry": 20240101}, "expiry", id="expiry-a-number"),
    pytest.param({"expiry": "20240101"}, "expiry", id="expiry-without-dashes"),
    pytest.param({"expiry": "2030-W05-1"}, "expiry", id="expiry-as-a-week"),
    pytest.param({"expiry": dt.datetime(2030, 1, 31, 12, 0)}, "expiry", id="expiry-a-datetime"),
    pytest.param({"shade": "S" * 33}, "shade", id="shade-too-long"),
    pytest.param({"shade": ""}, "shade", id="empty-shade"),
    pytest.param({"caliber": 9}, "caliber", id="caliber-a-number"),
    pytest.param({"warehouse": None}, "warehouse", id="no-warehouse"),
    pytest.param({"sku": None}, "sku", id="no-sku"),
]


@pytest.mark.parametrize(("change", "field"), BAD_RECEIPTS)
def test_a_receipt_with_a_bad_lot_or_expiry_is_refused(
    catalog: StockClient, engine: Engine, change: dict[str, Any], field: str
) -> None:
    assert_refused(engine, lambda: receive(**change)(catalog, ""), field=field)


# -- the same idempotency key twice ----------------------------------------------------------------


def test_a_resent_hold_request_returns_the_same_hold_and_records_nothing_more(
    catalog: StockClient, pending_hold: str, engine: Engine
) -> None:
    before = snapshot(engine)

    resent = catalog.reserve(
        idempotency_key="cart-1", lines=[{"sku": "GRS-60x60-GREY", "quantity": "12.500", "unit": "sqm"}]
    )

    assert resent.hold_id == pending_hold
    assert snapshot(engine) == before
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT idempotency_key FROM commands ORDER BY seq")).scalars().all()
    assert keys == ["cart-1", f"line.reserve:{pending_hold}:1"]


def test_a_resent_receipt_returns_the_same_ticket_and_records_nothing_more(
    catalog: StockClient, engine: Engine
) -> None:
    first = catalog.receive(
        idempotency_key="rcv-9", warehouse="BUC1", sku="MOSAIC-30", quantity="5", unit="box", lot="M1"
    )
    before = snapshot(engine)

    again = catalog.receive(
        idempotency_key="rcv-9", warehouse="BUC1", sku="MOSAIC-30", quantity=5, unit="box", lot="M1"
    )

    assert again.key == first.key
    assert snapshot(engine) == before
    assert before["commands"][0] == 1


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(release(), id="release"),
        pytest.param(confirm_payment(), id="confirm_payment"),
        pytest.param(confirm_payment(status="failed", event_id="evt-2"), id="failed-payment"),
    ],
)
def test_a_resent_hold_command_returns_the_same_ticket_and_records_nothing_more(
    catalog: StockClient, pending_hold: str, engine: Engine, call: Call
) -> None:
    first = call(catalog, pending_hold)
    before = snapshot(engine)

    again = call(catalog, pending_hold)

    assert isinstance(first, CommandTicket) and isinstance(again, CommandTicket)
    assert again.key == first.key
    assert snapshot(engine) == before


CONFLICTS = [
    pytest.param(
        reserve(idempotency_key="cart-1", lines=[{**GOOD_LINE, "quantity": "3"}]),
        "cart-1",
        id="reserve-other-lines",
    ),
    pytest.param(
        reserve(
            idempotency_key="cart-1",
            lines=[{"sku": "GRS-60x60-GREY", "quantity": "12.5", "unit": "sqm"}],
            mode="partial",
        ),
        "cart-1",
        id="reserve-other-mode",
    ),
    pytest.param(
        reserve(
            idempotency_key="cart-1",
            lines=[{"sku": "GRS-60x60-GREY", "quantity": "12.5", "unit": "sqm"}],
            ttl_seconds=60,
        ),
        "cart-1",
        id="reserve-other-ttl",
    ),
    pytest.param(receive(idempotency_key="rcv-1", quantity="11"), "rcv-1", id="receive-other-quantity"),
    pytest.param(receive(idempotency_key="rcv-1", lot="L9999"), "rcv-1", id="receive-other-lot"),
    pytest.param(receive(idempotency_key="cart-1"), "cart-1", id="receive-under-a-hold-key"),
    pytest.param(reserve(idempotency_key="rcv-1"), "rcv-1", id="reserve-under-a-receipt-key"),
    pytest.param(release(OTHER_HOLD, idempotency_key="abandon-1"), "abandon-1", id="release-another-hold"),
    pytest.param(release(idempotency_key="rcv-1"), "rcv-1", id="release-under-a-receipt-key"),
    pytest.param(confirm_payment(status="failed"), "payment:evt-1", id="payment-other-status"),
    pytest.param(confirm_payment(hold_id=OTHER_HOLD), "payment:evt-1", id="payment-other-hold"),
]


@pytest.mark.parametrize(("call", "key"), CONFLICTS)
def test_the_same_idempotency_key_with_another_payload_is_refused(
    catalog: StockClient, pending_hold: str, engine: Engine, call: Call, key: str
) -> None:
    catalog.receive(
        idempotency_key="rcv-1",
        warehouse="BUC1",
        sku="GRS-60x60-GREY",
        quantity="10",
        unit="box",
        lot="L2403",
    )
    catalog.reserve(idempotency_key="cart-other", lines=[GOOD_LINE])
    release(idempotency_key="abandon-1")(catalog, pending_hold)
    confirm_payment()(catalog, pending_hold)

    def on_the_pending_hold() -> object:
        return call(catalog, pending_hold)

    conflict = assert_refused(engine, on_the_pending_hold, field=None, error=IdempotencyConflict)

    assert isinstance(conflict, IdempotencyConflict) and conflict.key == key
