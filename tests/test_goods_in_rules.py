"""The goods-in decisions, with no database: quarantine release and write-off, damage, and the
moving weighted-average cost."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.damage import damage
from domain.movements import Movement
from domain.outcomes import Refused
from domain.quarantine import QuarantinedLine, release, write_off
from domain.valuation import averaged_in
from tests.lots import a_lot

# -- quarantine ----------------------------------------------------------------------------------


def test_a_release_moves_pieces_out_of_quarantine_into_sellable_stock() -> None:
    stock, line = a_lot(30, quarantine=30), QuarantinedLine("q", Decimal(30))
    moved = release(line, stock, Decimal(10))
    assert isinstance(moved, Movement)
    assert (moved.quarantine, moved.on_hand, stock.available, line.left, line.status) == (
        -10,
        0,
        10,
        20,
        "quarantined",
    )
    assert isinstance(release(line, stock, None), Movement)  # all that is left
    assert (stock.quarantine, stock.available, line.status) == (0, 30, "released")


def test_more_than_is_left_in_quarantine_is_refused_and_changes_nothing() -> None:
    stock, line = a_lot(30, quarantine=30), QuarantinedLine("q", Decimal(30), released=Decimal(25))
    refused = write_off(line, stock, Decimal(6), reason="wet")
    assert refused == Refused("6 pieces asked, 5 left in quarantine q", available=Decimal(5))
    assert (stock.quarantine, stock.damaged, line.written_off) == (30, 0, 0)


def test_a_line_with_nothing_left_refuses_even_all_that_is_left() -> None:
    line = QuarantinedLine("q", Decimal(4), released=Decimal(1), written_off=Decimal(3))
    assert line.status == "settled"
    assert isinstance(release(line, a_lot(4), None), Refused)


@given(st.lists(st.tuples(st.booleans(), st.none() | st.integers(1, 12).map(Decimal)), max_size=8))
def test_quarantine_never_gives_more_than_it_holds(steps: list[tuple[bool, Decimal | None]]) -> None:
    stock, line = a_lot(40, quarantine=20), QuarantinedLine("q", Decimal(20))
    for releasing, pieces in steps:
        left = line.left
        decided = release(line, stock, pieces) if releasing else write_off(line, stock, pieces, reason="r")
        taken = left - line.left
        assert isinstance(decided, Refused) == (left == 0 or (pieces is not None and pieces > left))
        assert taken == (0 if isinstance(decided, Refused) else (pieces if pieces is not None else left))
        assert stock.quarantine == line.left and stock.damaged == line.written_off and stock.on_hand == 40
        assert line.released + line.written_off + line.left == line.quantity
        assert (line.status == "quarantined") == (line.left > 0)


# -- damage --------------------------------------------------------------------------------------


def test_damage_takes_available_pieces_only() -> None:
    stock = a_lot(10, reserved=4, quarantine=2)  # 4 available
    refused = damage(stock, Decimal(5), reason="dropped")
    assert isinstance(refused, Refused) and refused.available == 4
    assert stock.damaged == 0
    moved = damage(stock, Decimal(4), reason="dropped", unit_cost=Decimal("1.5"))
    assert isinstance(moved, Movement)
    assert (moved.damaged, moved.on_hand, moved.total_cost, moved.reason) == (4, 0, Decimal(6), "dropped")
    assert (stock.on_hand, stock.damaged, stock.available) == (10, 4, 0)


# -- valuation -----------------------------------------------------------------------------------


def test_a_receipt_averages_its_cost_in_by_quantity() -> None:
    assert averaged_in(Decimal(2), Decimal(100), Decimal(300), Decimal(3)) == Decimal("2.75")
    assert averaged_in(None, Decimal(100), Decimal(5), Decimal("4.2")) == Decimal("4.2")  # no cost known yet
    assert averaged_in(Decimal(9), Decimal(0), Decimal(5), Decimal(4)) == Decimal(
        4
    )  # nothing left at the old cost


costs = st.decimals(min_value=0, max_value=1000, places=4)
pieces = st.integers(1, 10_000).map(Decimal)


@given(costs, pieces, pieces, costs)
def test_an_average_lies_between_the_old_one_and_the_new_cost(
    average: Decimal, on_hand: Decimal, received: Decimal, cost: Decimal
) -> None:
    new = averaged_in(average, on_hand, received, cost)
    assert min(average, cost) <= new <= max(average, cost)
    assert new.as_tuple().exponent >= -4
