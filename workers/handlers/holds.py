"""Hold-level commands, applied by the hold's home shard writer: release, payment, expiry, and a
line's answer sent home by another process's writer."""

from __future__ import annotations

from db.batch_state import InboxCommand
from domain import holds as hold_rules
from domain.commands import HoldCommand
from domain.outcomes import Outcome
from domain.states import Payment
from workers.batch import Batch, Result
from workers.handlers.registry import handles


# Release and payment are judged as of when they were recorded, whenever they are applied.
@handles(HoldCommand.RELEASE)
def release(batch: Batch, command: InboxCommand) -> Result:
    hold, lines = batch.hold(command)
    return batch.decided(hold, hold_rules.release(hold, lines, command.recorded_at), command)


@handles(HoldCommand.PAY)
def pay(batch: Batch, command: InboxCommand) -> Result:
    hold, lines = batch.hold(command)
    payment = Payment(command.payload["status"])
    return batch.decided(hold, hold_rules.pay(hold, lines, payment, command.recorded_at), command)


@handles(HoldCommand.EXPIRE)
def expire(batch: Batch, command: InboxCommand) -> Result | None:
    """None: the expiry waits for a later batch (a payment or release recorded before it comes first)."""
    hold, lines = batch.hold(command)
    waits = hold.id in batch.state.deferring
    decision = hold_rules.expire(hold, lines, batch.now, recorded_before_pending=waits)
    if decision.deferred:
        batch.deferred += 1
        return None
    return batch.decided(hold, decision, command)


@handles(HoldCommand.LINE_ANSWERED)
def line_answered(batch: Batch, command: InboxCommand) -> Result:
    hold, _ = batch.hold(command)
    decided = batch.count_answer(hold, command)
    return decided or {"outcome": Outcome.COUNTED, "note": "", "lines_pending": hold.lines_pending}
