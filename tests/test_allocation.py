"""Choosing the lot that serves a cart line: one lot per line, FEFO then FIFO, warehouses by priority."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.allocation import (
    LargestLot,
    LotStock,
    Pick,
    Shortage,
    WarehouseRoute,
    allocate_line,
    candidate_warehouses,
)

BUCHAREST, CLUJ, SHOWROOM, CLOSED = 1, 2, 3, 4
ROUTES = [
    WarehouseRoute(CLUJ, "CLJ1", can_ship=True, priority=2, active=True),
    WarehouseRoute(BUCHAREST, "BUC1", can_ship=True, priority=1, active=True),
    WarehouseRoute(SHOWROOM, "SHOW", can_ship=False, priority=9, active=True),
    WarehouseRoute(CLOSED, "OLD1", can_ship=True, priority=0, active=False),
]
JAN = dt.datetime(2024, 1, 10, tzinfo=dt.UTC)
_ids = itertools.count(1)


def lot(
    warehouse_id: int,
    on_hand: int | str,
    *,
    code: str | None = None,
    lot_id: int | None = None,
    received_days: int = 0,
    expiry: dt.date | None = None,
    reserved: int | str = 0,
    damaged: int | str = 0,
    quarantine: int | str = 0,
) -> LotStock:
    lot_id = lot_id if lot_id is not None else next(_ids)
    return LotStock(
        balance_id=lot_id,
        product_id=1,
        warehouse_id=warehouse_id,
        lot_id=lot_id,
        lot_code=code or f"L{lot_id}",
        received_at=JAN + dt.timedelta(days=received_days),
        expiry=expiry,
        on_hand=Decimal(on_hand),
        reserved=Decimal(reserved),
        damaged=Decimal(damaged),
        quarantine=Decimal(quarantine),
    )


def picked(result: Pick | Shortage) -> str:
    assert isinstance(result, Pick), result
    return result.stock.lot_code


# -- what is available -----------------------------------------------------------------------


def test_available_is_on_hand_less_reserved_damaged_and_quarantined() -> None:
    stock = lot(BUCHAREST, 100, reserved=30, damaged=5, quarantine=2)

    assert stock.available == 63


def test_available_is_never_negative() -> None:
    stock = lot(BUCHAREST, 10, reserved=8, damaged=5)

    assert stock.available == 0


# -- which warehouses ------------------------------------------------------------------------


def test_without_a_requested_warehouse_the_active_shipping_warehouses_are_tried_by_priority() -> None:
    codes = [route.code for route in candidate_warehouses(ROUTES, None)]

    assert codes == ["BUC1", "CLJ1"]


def test_warehouses_of_equal_priority_are_tried_in_code_order() -> None:
    routes = [
        WarehouseRoute(7, "ZAL1", can_ship=True, priority=1, active=True),
        WarehouseRoute(8, "ARA1", can_ship=True, priority=1, active=True),
    ]

    assert [r.code for r in candidate_warehouses(routes, None)] == ["ARA1", "ZAL1"]


def test_a_requested_showroom_serves_the_line_although_it_does_not_ship() -> None:
    stocks = [lot(SHOWROOM, 50, code="SHOW-LOT"), lot(BUCHAREST, 50, code="BUC-LOT")]

    result = allocate_line(Decimal(10), stocks, ROUTES, requested_warehouse_id=SHOWROOM)

    assert picked(result) == "SHOW-LOT"


def test_a_requested_warehouse_is_the_only_one_tried() -> None:
    stocks = [lot(CLUJ, 5, code="CLJ-SMALL"), lot(BUCHAREST, 500, code="BUC-BIG")]

    result = allocate_line(Decimal(10), stocks, ROUTES, requested_warehouse_id=CLUJ)

    assert isinstance(result, Shortage)
    assert result.reason == "insufficient_stock"
    assert result.available == 5


def test_an_inactive_warehouse_never_serves_even_when_requested() -> None:
    stocks = [lot(CLOSED, 500)]

    assert isinstance(allocate_line(Decimal(1), stocks, ROUTES, requested_warehouse_id=CLOSED), Shortage)
    assert isinstance(allocate_line(Decimal(1), stocks, ROUTES), Shortage)


def test_a_showroom_that_does_not_ship_is_not_used_for_delivery() -> None:
    stocks = [lot(SHOWROOM, 500)]

    result = allocate_line(Decimal(10), stocks, ROUTES)

    assert result == Shortage(reason="insufficient_stock", available=Decimal(0), largest_lot=None)


def test_the_first_priority_warehouse_serves_even_when_another_holds_older_stock() -> None:
    stocks = [lot(CLUJ, 100, code="CLJ-OLD", received_days=-300), lot(BUCHAREST, 100, code="BUC-NEW")]

    assert picked(allocate_line(Decimal(40), stocks, ROUTES)) == "BUC-NEW"


def test_the_next_warehouse_serves_when_the_first_has_no_lot_big_enough() -> None:
    stocks = [lot(BUCHAREST, 30, code="BUC-A"), lot(BUCHAREST, 30, code="BUC-B"), lot(CLUJ, 60, code="CLJ-A")]

    assert picked(allocate_line(Decimal(50), stocks, ROUTES)) == "CLJ-A"


# -- which lot -------------------------------------------------------------------------------


def test_a_line_is_served_from_a_single_lot_that_covers_it_whole() -> None:
    stocks = [lot(BUCHAREST, 20, code="SMALL", received_days=-10), lot(BUCHAREST, 80, code="BIG")]

    result = allocate_line(Decimal(36), stocks, ROUTES)

    assert picked(result) == "BIG"
    assert isinstance(result, Pick) and result.quantity == 36


def test_the_lot_expiring_first_is_picked_even_if_it_arrived_later() -> None:
    stocks = [
        lot(BUCHAREST, 100, code="OLD-LATE-EXPIRY", received_days=-60, expiry=dt.date(2026, 1, 1)),
        lot(BUCHAREST, 100, code="NEW-EARLY-EXPIRY", received_days=-1, expiry=dt.date(2025, 1, 1)),
    ]

    assert picked(allocate_line(Decimal(10), stocks, ROUTES)) == "NEW-EARLY-EXPIRY"


def test_a_lot_that_expires_goes_before_a_lot_that_never_does() -> None:
    stocks = [
        lot(BUCHAREST, 100, code="NO-EXPIRY", received_days=-60),
        lot(BUCHAREST, 100, code="EXPIRES", received_days=-1, expiry=dt.date(2030, 1, 1)),
    ]

    assert picked(allocate_line(Decimal(10), stocks, ROUTES)) == "EXPIRES"


def test_among_lots_that_never_expire_the_one_received_first_is_picked() -> None:
    stocks = [
        lot(BUCHAREST, 100, code="MARCH", received_days=60),
        lot(BUCHAREST, 100, code="JANUARY", received_days=0),
        lot(BUCHAREST, 100, code="FEBRUARY", received_days=30),
    ]

    assert picked(allocate_line(Decimal(10), stocks, ROUTES)) == "JANUARY"


def test_lots_received_at_the_same_moment_go_by_lot_number() -> None:
    stocks = [lot(BUCHAREST, 100, code="SECOND", lot_id=902), lot(BUCHAREST, 100, code="FIRST", lot_id=901)]

    assert picked(allocate_line(Decimal(10), stocks, ROUTES)) == "FIRST"


def test_the_oldest_lot_is_skipped_when_it_cannot_cover_the_whole_line() -> None:
    stocks = [
        lot(BUCHAREST, 100, code="OLDEST", received_days=-90, reserved=95),
        lot(BUCHAREST, 100, code="NEWER", received_days=-5),
    ]

    assert picked(allocate_line(Decimal(10), stocks, ROUTES)) == "NEWER"


def test_reserved_damaged_and_quarantined_tiles_are_not_allocated() -> None:
    stocks = [lot(BUCHAREST, 100, code="ONLY", reserved=50, damaged=20, quarantine=20)]

    assert isinstance(allocate_line(Decimal(11), stocks, ROUTES), Shortage)
    assert picked(allocate_line(Decimal(10), stocks, ROUTES)) == "ONLY"


def test_allocating_changes_no_balance() -> None:
    stocks = [lot(BUCHAREST, 100, reserved=10)]

    allocate_line(Decimal(40), stocks, ROUTES)

    assert (stocks[0].on_hand, stocks[0].reserved) == (100, 10)


# -- why a line cannot be served -------------------------------------------------------------


def test_a_line_larger_than_any_single_lot_says_which_lot_is_largest() -> None:
    stocks = [
        lot(BUCHAREST, 30, code="L-A"),
        lot(BUCHAREST, 45, code="L-B"),
        lot(CLUJ, 40, code="L-C"),
        lot(SHOWROOM, 999, code="NOT-SHIPPED"),
    ]

    result = allocate_line(Decimal(60), stocks, ROUTES)

    assert result == Shortage(
        reason="no_single_lot", available=Decimal(115), largest_lot=LargestLot("L-B", "BUC1", Decimal(45))
    )
    assert result.message(Decimal(60)) == (
        "60 pieces are not in any single lot; 115 available in all, largest lot L-B in BUC1 has 45"
    )


def test_a_line_larger_than_all_stock_says_how_much_is_available() -> None:
    stocks = [lot(BUCHAREST, 30, code="L-A", reserved=10), lot(CLUJ, 12, code="L-C")]

    result = allocate_line(Decimal(100), stocks, ROUTES)

    assert isinstance(result, Shortage)
    assert (result.reason, result.available) == ("insufficient_stock", 32)
    assert result.largest_lot == LargestLot("L-A", "BUC1", Decimal(20))
    assert result.message(Decimal(100)) == "100 pieces requested, 32 available"


def test_a_product_with_no_stock_at_all_has_no_largest_lot() -> None:
    result = allocate_line(Decimal(1), [], ROUTES)

    assert result == Shortage(reason="insufficient_stock", available=Decimal(0), largest_lot=None)


def test_equally_large_lots_name_the_lowest_lot_number_as_largest() -> None:
    stocks = [lot(BUCHAREST, 10, code="L-LATE", lot_id=802), lot(BUCHAREST, 10, code="L-EARLY", lot_id=801)]

    result = allocate_line(Decimal(15), stocks, ROUTES)

    assert isinstance(result, Shortage) and result.largest_lot is not None
    assert result.largest_lot.lot_code == "L-EARLY"


# -- properties over any stock -----------------------------------------------------------------

route_lists = st.lists(
    st.builds(
        WarehouseRoute,
        warehouse_id=st.integers(1, 4),
        code=st.sampled_from(["BUC1", "CLJ1", "TIM1", "SHOW"]),
        can_ship=st.booleans(),
        priority=st.integers(0, 3),
        active=st.booleans(),
    ),
    max_size=4,
    unique_by=lambda r: r.warehouse_id,
)


@st.composite
def lot_lists(draw: st.DrawFn) -> list[LotStock]:
    stocks = []
    for lot_id in range(1, draw(st.integers(0, 8)) + 1):
        on_hand = draw(st.integers(0, 200))
        reserved = draw(st.integers(0, on_hand))
        damaged = draw(st.integers(0, on_hand - reserved))
        stocks.append(
            lot(
                draw(st.integers(1, 4)),
                on_hand,
                lot_id=lot_id,
                received_days=draw(st.integers(0, 5)),
                expiry=draw(st.none() | st.dates(dt.date(2025, 1, 1), dt.date(2025, 1, 5))),
                reserved=reserved,
                damaged=damaged,
            )
        )
    return stocks


def _fefo_fifo(stock: LotStock) -> tuple[dt.date, dt.datetime, int]:
    return (stock.expiry or dt.date.max, stock.received_at, stock.lot_id)


@given(st.integers(1, 250), lot_lists(), route_lists, st.none() | st.integers(1, 4))
def test_allocation_never_picks_a_lot_that_cannot_cover_the_line_and_follows_fefo_then_fifo(
    pieces: int, stocks: list[LotStock], routes: list[WarehouseRoute], requested: int | None
) -> None:
    quantity = Decimal(pieces)
    candidates = candidate_warehouses(routes, requested)
    covering = {
        route.warehouse_id: [
            s for s in stocks if s.warehouse_id == route.warehouse_id and s.available >= quantity
        ]
        for route in candidates
    }

    result = allocate_line(quantity, stocks, routes, requested_warehouse_id=requested)

    if isinstance(result, Pick):
        assert result.quantity == quantity
        assert result.stock.available >= quantity
        first_serving = next(route for route in candidates if covering[route.warehouse_id])
        assert result.stock.warehouse_id == first_serving.warehouse_id
        assert result.stock == min(covering[first_serving.warehouse_id], key=_fefo_fifo)
    else:
        assert not any(covering.values())
        eligible = [s for s in stocks if s.warehouse_id in covering]
        assert result.available == sum(s.available for s in eligible)
        assert result.reason == ("no_single_lot" if result.available >= quantity else "insufficient_stock")
        if result.largest_lot is not None:
            assert result.largest_lot.available == max(s.available for s in eligible)
            assert result.largest_lot.available < quantity
        else:
            assert result.available == 0
