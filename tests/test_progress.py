"""Long commands draw a progress bar on a terminal and nothing when piped."""

from __future__ import annotations

import io

import pytest

from ops.progress import meter, tracked


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """stdout and stderr on a terminal; returns stderr, where the bar is drawn. (Called in the test
    itself: pytest sets its own capture back between a fixture's setup and the test.)"""
    drawn = Terminal()
    monkeypatch.setattr("sys.stdout", Terminal())
    monkeypatch.setattr("sys.stderr", drawn)
    return drawn


def test_piped_output_gets_no_bar_and_every_item(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(tracked(range(5), "steps")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_output_piped_from_a_terminal_gets_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tessera reconcile > report.txt` in a terminal: the report is the output, no bar beside it."""
    stderr = Terminal()
    monkeypatch.setattr("sys.stderr", stderr)
    assert list(tracked(["0001", "0002"], "migrating")) == ["0001", "0002"]
    assert stderr.getvalue() == ""


def test_a_terminal_gets_a_bar_and_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    assert list(tracked(["0001", "0002", "0003"], "migrating")) == ["0001", "0002", "0003"]
    assert "migrating" in terminal.getvalue()


def test_a_bar_counts_what_each_item_weighs(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    ranges = [500, 500, 120]  # products per range
    assert list(tracked(ranges, "reconciling products", total=sum(ranges), size=lambda n: n)) == ranges
    assert "0/1120" in terminal.getvalue()  # out of the products, not of the 3 ranges


def test_a_bar_within_a_bar_is_a_line_of_the_same_display(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    for _ in tracked(range(2), "runs"):
        with meter("applying the inbox", total=10) as applied:
            applied(10)
    assert "runs" in terminal.getvalue() and "applying the inbox" in terminal.getvalue()
