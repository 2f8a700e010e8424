"""`move`, the one way a balance changes: every bucket stays ≥ 0 and reserved + damaged + quarantine
≤ on_hand, or nothing changes and InvariantBroken says why; the row says the balance it left."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.allocation import LotStock
from domain.errors import InvariantBroken
from domain.movements import MovementKind, move
from tests.lots import a_lot, buckets

BUCKETS = ("on_hand", "reserved", "in_transit", "damaged", "quarantine")


def _valid(values: tuple[Decimal, ...]) -> bool:
    on_hand, reserved, _, damaged, quarantine = values
    return min(values) >= 0 and reserved + damaged + quarantine <= on_hand


small = st.integers(min_value=-20, max_value=20).map(Decimal)


@st.composite
def valid_balances(draw: st.DrawFn) -> LotStock:
    reserved, damaged, quarantine = (draw(st.integers(0, 10)) for _ in range(3))
    on_hand = reserved + damaged + quarantine + draw(st.integers(0, 10))
    return a_lot(
        on_hand, reserved, in_transit=draw(st.integers(0, 10)), damaged=damaged, quarantine=quarantine
    )


@given(valid_balances(), st.tuples(small, small, small, small, small))
def test_a_move_keeps_every_invariant_or_changes_nothing(
    stock: LotStock, deltas: tuple[Decimal, ...]
) -> None:
    before = buckets(stock)
    expected = tuple(b + d for b, d in zip(before, deltas, strict=True))
    changes = dict(zip(BUCKETS, deltas, strict=True))
    if _valid(expected):
        movement = move(MovementKind.ADJUSTMENT, stock, **changes)
        assert buckets(stock) == expected == movement.after
        assert (
            movement.on_hand,
            movement.reserved,
            movement.in_transit,
            movement.damaged,
            movement.quarantine,
        ) == deltas
    else:
        with pytest.raises(InvariantBroken):
            move(MovementKind.ADJUSTMENT, stock, **changes)
        assert buckets(stock) == before


def test_damage_from_quarantine_moves_pieces_between_buckets_and_keeps_on_hand() -> None:
    stock = a_lot(on_hand=10, quarantine=4)
    movement = move(MovementKind.DAMAGE, stock, damaged=Decimal(3), quarantine=Decimal(-3), reason="cracked")
    assert movement.after == (10, 0, 0, 3, 1)
    assert (movement.quantity, movement.reason) == (3, "cracked")


def test_a_movement_with_a_unit_cost_costs_its_quantity_at_it() -> None:
    stock = a_lot()
    receipt = move(MovementKind.RECEIPT, stock, on_hand=Decimal(12), unit_cost=Decimal("2.3456"))
    assert receipt.total_cost == Decimal("28.1472")
    assert move(MovementKind.SALE, stock, on_hand=Decimal(-2)).total_cost is None


def test_pieces_cannot_be_reserved_out_of_damaged_ones() -> None:
    stock = a_lot(on_hand=5, damaged=3)
    with pytest.raises(InvariantBroken, match="reserved 0\\+3"):
        move(MovementKind.RESERVATION, stock, reserved=Decimal(3))
    assert buckets(stock) == (5, 0, 0, 3, 0)
