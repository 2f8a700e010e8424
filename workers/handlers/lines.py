"""Line commands, applied by the writer of the line's product's shard: the stock side of a hold."""

from __future__ import annotations

from db.batch_state import InboxCommand
from domain.lines import apply_line, fail_line
from domain.outcomes import Outcome
from domain.states import LineAction
from workers.batch import Batch, Result
from workers.handlers.registry import handles, parks


@handles(*LineAction)
def apply(batch: Batch, command: InboxCommand) -> Result:
    action = LineAction(command.kind)
    hold, line = batch.line(command)
    outcome = apply_line(action, line, batch.stocks(line.product_id), batch.state.routes)
    for movement in outcome.movements:
        batch.record(movement, command, hold.id, line.line_no)
    result: Result = {"outcome": outcome.outcome, "note": outcome.note, "line": line.line_no}
    if outcome.outcome is not Outcome.NOOP:
        batch.line_changed(hold, line)
        if decided := batch.answered(action, hold, line, command):
            result["hold"] = decided
    return result


@parks(*LineAction)
def park(batch: Batch, command: InboxCommand, result: Result) -> None:
    """A line allocation its hold waits for answers as a refusal that names the error, so that the
    hold settles (`fail_line`); nothing else changes."""
    action = LineAction(command.kind)
    try:
        hold, line = batch.line(command)
    except (KeyError, TypeError, StopIteration):
        return  # its payload is what is broken
    outcome = fail_line(action, line, result["error"])
    if outcome.outcome is not Outcome.NOOP:
        batch.line_changed(hold, line)
        if decided := batch.answered(action, hold, line, command):
            result["hold"] = decided
