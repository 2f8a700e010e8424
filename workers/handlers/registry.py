"""Command kind → the handler that applies it in a batch (and, for some, what parking it does).

A handler takes what it needs from the batch, lets the domain decide and records the result in the
batch; it returns the command's result, or None for a command left for a later batch. Adding a
kind is adding a handler: the writer looks them up here and knows none by name.
"""

from __future__ import annotations

from collections.abc import Callable

from db.batch_state import InboxCommand
from domain.errors import UnknownCommandKind
from workers.batch import Batch, Result

Handler = Callable[[Batch, InboxCommand], Result | None]
Parker = Callable[[Batch, InboxCommand, Result], None]

HANDLERS: dict[str, Handler] = {}
PARKERS: dict[str, Parker] = {}


def handles(*kinds: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of these command kinds."""

    def register(handler: Handler) -> Handler:
        for kind in kinds:
            HANDLERS[kind] = handler
        return handler

    return register


def parks(*kinds: str) -> Callable[[Parker], Parker]:
    """Register what parking a command of these kinds does besides the dead letter itself (it may
    add to the parked command's result)."""

    def register(parker: Parker) -> Parker:
        for kind in kinds:
            PARKERS[kind] = parker
        return parker

    return register


def apply(batch: Batch, command: InboxCommand) -> Result | None:
    handler = HANDLERS.get(command.kind)
    if handler is None:
        raise UnknownCommandKind(command.kind)
    return handler(batch, command)


def park(batch: Batch, command: InboxCommand, *, bare: bool) -> Result:
    """Park a command that kept failing; `bare`: parking with its kind's effect failed too, so it
    is parked with no effect at all."""
    result = batch.park(command)
    parker = PARKERS.get(command.kind)
    if parker is not None and not bare:
        parker(batch, command, result)
    return result
