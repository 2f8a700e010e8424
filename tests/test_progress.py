"""Long commands draw a progress bar on a terminal and nothing when piped."""

from __future__ import annotations

import io

import pytest

from ops.progress import tracked


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_output_gets_no_bar_and_every_item(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(tracked(range(5), "steps")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_terminal_gets_a_bar_and_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(tracked(["0001", "0002", "0003"], "migrating")) == ["0001", "0002", "0003"]
    assert "migrating" in terminal.getvalue()
