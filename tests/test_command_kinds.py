"""Command kinds as the inbox stores them: each parses back to its kind, anything else is refused."""

from __future__ import annotations

import pytest

from domain.commands import HoldCommand, StockCommand, parse_kind
from domain.states import LineAction


@pytest.mark.parametrize("kind", [*HoldCommand, *StockCommand, *LineAction])
def test_every_stored_kind_parses_back_to_itself(kind: HoldCommand | StockCommand | LineAction) -> None:
    parsed = parse_kind(kind.value)
    assert parsed is kind
    assert type(parsed) is type(kind)


@pytest.mark.parametrize("text", ["", "hold", "line.RESERVE", "stock.receive ", "hold.place:x"])
def test_an_unknown_kind_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="unknown command kind"):
        parse_kind(text)
