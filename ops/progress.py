"""Progress bars for long commands, drawn on stderr only when the output is a terminal: piped
output (CI logs, tests, `tessera reconcile > report.txt`) stays as it was. A bar opened while
another is shown (a bench's drain within its runs) is drawn as one more line of the same display:
rich draws one live display at a time."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")
_shown: list[Progress] = []  # the display being drawn, if any (bars are opened by the main thread)


def on_terminal() -> bool:
    """Both stdout (what the command prints) and stderr (where the bar goes) are terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


@contextlib.contextmanager
def meter(description: str, total: float | None) -> Iterator[Callable[[float], None]]:
    """A bar for work the caller measures: yields `done(amount)`, to call with how much is done
    so far (out of `total`; None: unknown)."""
    if not on_terminal():
        yield lambda amount: None
        return
    with _display() as progress:
        task = progress.add_task(description, total=total)
        try:
            yield lambda amount: progress.update(task, completed=amount)
        finally:
            progress.remove_task(task)


@contextlib.contextmanager
def _display() -> Iterator[Progress]:
    if _shown:
        yield _shown[-1]
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        _shown.append(progress)
        try:
            yield progress
        finally:
            _shown.pop()


def tracked(
    items: Iterable[T],
    description: str,
    total: float | None = None,
    size: Callable[[T], float] = lambda item: 1,
) -> Iterator[T]:
    """Iterate `items`, the bar advancing by `size(item)` as each is done (`total`: their sum;
    by default, how many items there are, when `items` can tell)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with meter(description, total) as done:
        progress = 0.0
        for item in items:
            yield item
            progress += size(item)
            done(progress)
