"""The shard writer: applies a shard's pending inbox commands, many per transaction, in order.

This is the only place that opens the apply transaction. One batch:
  1. prove the lease in Postgres (fence row: mutual exclusion + epoch check) and read the clock;
  2. take up to ``batch_max`` due commands of the shard in inbox order;
  3. lock the holds they touch (id order: no deadlocks), load lines and lot balances;
  4. let the domain decide each command in turn against the batch's in-memory state, so a later
     hold sees the stock an earlier one took; rejections are results, never failures;
  5. write everything set-based, mark each command applied with its result, commit;
  6. after commit: ring the shards of follow-up commands, wake waiting tickets.
A transient database error rolls the batch back and retries it whole, in place, in order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from db import repository as repo
from db.repository import HoldAlert, InboxCommand, LedgerEntry, NewCommand
from domain import holds as hold_rules
from domain.allocation import LotStock
from domain.commands import (
    HoldCommand,
    StockCommand,
    expiry_key,
    line_answered_key,
    line_command_key,
    parse_kind,
    shard_of,
)
from domain.holds import Alert, Hold, HoldDecision, HoldLine, LineAction, Payment, line_after
from domain.lines import MovementKind, apply_line, fail_line, move
from domain.quantities import decimal_str
from domain.receipts import LotFacts, lot_conflict
from domain.results import HoldResult, LineFacts, line_result

log = structlog.get_logger("tessera.writer")

STATS_SECONDS = 10.0
# How long a pooled session keeps its prepared statements' plans. psycopg prepares a statement on
# its fifth run and PostgreSQL then settles on a generic plan, made for the table sizes of that
# moment; only new statistics (ANALYZE) make it plan again. With autovacuum off (as on CI here), a
# long drain kept the plans of small tables, whole-table scans, to the end: 99,000 holds drained at
# 760/s instead of 7,000/s. Nothing else drops them: an empty claim ends with COMMIT, not ROLLBACK.
REPLAN_SECONDS = 10.0
TRANSIENT_CLASSES = {"08", "40", "53", "57", "58"}
"""Connection exception, transaction rollback, insufficient resources, operator intervention, system error."""
TRANSIENT_STATES = {"55P03", "25P03", "25P04"}
"""Lock not available (lock_timeout), idle-in-transaction and transaction timeouts."""
NOTIFIED_KINDS = {StockCommand.RECEIVE.value, HoldCommand.RELEASE.value, HoldCommand.PAY.value}


@dataclass(slots=True)
class BatchReport:
    applied: int
    fenced: set[int] = field(default_factory=set)
    """Shards whose lease a newer epoch took: this worker must drop them."""
    follow_up_shards: set[int] = field(default_factory=set)
    delayed: list[tuple[int, dt.datetime]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    """ticket → wake-up token: a decided hold's answer (JSON), or "1" for a command's ticket."""
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    """client → hold → answer (JSON), for holds whose client listens on its own channel."""
    now: dt.datetime | None = None
    deferred: int = 0
    """Expiries left for a later batch: a payment or release recorded before them comes first."""


class _Batch:
    """The in-memory state of one transaction: what is loaded, what changed, what to send."""

    def __init__(self, pg: repo.Pg, now: dt.datetime, shards: int, state: repo.BatchState) -> None:
        self.pg, self.now, self.shards = pg, now, shards
        # Line commands and receipts name their product, so only those products' lots were loaded;
        # a settling hold needs its other lines, never their stock.
        self.state = state
        self.holds, self.lines, self.stocks, self.routes = (
            state.holds,
            state.lines,
            state.stocks,
            state.routes,
        )
        self.dirty_stocks: dict[int, LotStock] = {}
        self.dirty_lines: dict[tuple[str, int], HoldLine] = {}
        self.dirty_holds: dict[str, Hold] = {}
        self.ledger: list[LedgerEntry] = []
        self.follow_ups: list[NewCommand] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.results: list[tuple[InboxCommand, dict[str, Any]]] = []
        self.wake: list[str] = []  # holds decided in this batch
        self.reply_to: dict[str, str] = {}  # hold → the client whose line command decided it
        self.pending: dict[tuple[str, int], list[LineAction]] = {}  # (hold, line) → commands sent to it
        self.alerts: dict[str, HoldAlert] = {}
        self.resolved_alerts: set[str] = set()
        self.parked: set[int] = set()
        self.deferred = 0

    # -- one command ---------------------------------------------------------------------------

    def apply(self, command: InboxCommand) -> dict[str, Any] | None:
        """Decide one command; its result, or None for an expiry left for a later batch."""
        kind = parse_kind(command.kind)
        if isinstance(kind, LineAction):
            return self._line(kind, command)
        if kind is StockCommand.RECEIVE:
            return self._receive(command)
        hold = self.holds[command.payload["hold_id"]]
        lines = self.lines[hold.id]
        if kind is HoldCommand.LINE_ANSWERED:
            decided = self._line_answered(hold, command)
            return decided or {"outcome": "counted", "note": "", "lines_pending": hold.lines_pending}
        # Release and payment are judged as of when they were recorded, whenever they are applied.
        if kind is HoldCommand.RELEASE:
            decision = hold_rules.release(hold, lines, command.recorded_at)
        elif kind is HoldCommand.PAY:
            decision = hold_rules.pay(hold, lines, Payment(command.payload["status"]), command.recorded_at)
        else:
            waits = hold.id in self.state.deferring
            decision = hold_rules.expire(hold, lines, self.now, recorded_before_pending=waits)
            if decision.deferred:
                self.deferred += 1
                return None
        return self._decided(hold, decision, command)

    def park(self, command: InboxCommand, *, bare: bool) -> dict[str, Any]:
        """A command that kept failing becomes a dead letter, in its place in order.

        A line allocation its hold waits for answers as a refusal that names the error, so that the
        hold settles (`fail_line`); nothing else changes. `bare`: parking with that answer failed
        too, so the command is parked with no effect at all."""
        error = command.last_error or "unknown error"
        self.parked.add(command.seq)
        self.events.append(
            (
                "command.dead",
                {"key": command.key, "kind": command.kind, "shard": command.shard, "error": error},
            )
        )
        log.error(
            "command.dead",
            key=command.key,
            kind=command.kind,
            shard=command.shard,
            attempts=command.attempts,
            error=error,
        )
        result: dict[str, Any] = {"outcome": "dead", "error": error, "attempts": command.attempts}
        if bare:
            return result
        try:
            action = LineAction(command.kind)
            hold = self.holds[command.payload["hold_id"]]
            line = next(ln for ln in self.lines[hold.id] if ln.line_no == command.payload["line_no"])
        except (ValueError, KeyError, TypeError, StopIteration):
            return result  # not a line command, or its payload is what is broken
        outcome = fail_line(action, line, error)
        if outcome.outcome != "noop":
            self.dirty_lines[(hold.id, line.line_no)] = line
            if decided := self._answered(action, hold, line, command):
                result["hold"] = decided
        return result

    def _line(self, action: LineAction, command: InboxCommand) -> dict[str, Any]:
        hold = self.holds[command.payload["hold_id"]]
        line = next(ln for ln in self.lines[hold.id] if ln.line_no == command.payload["line_no"])
        stocks = self.stocks[line.product_id]
        outcome = apply_line(action, line, stocks, self.routes)
        for movement in outcome.movements:
            self._record(movement, command.seq, hold.id, line.line_no)
        result: dict[str, Any] = {"outcome": outcome.outcome, "note": outcome.note, "line": line.line_no}
        if outcome.outcome != "noop":
            self.dirty_lines[(hold.id, line.line_no)] = line
            if decided := self._answered(action, hold, line, command):
                result["hold"] = decided
        return result

    def _answered(
        self, action: LineAction, hold: Hold, line: HoldLine, command: InboxCommand
    ) -> dict[str, Any] | None:
        """Count a line's answer on its hold, here or at the hold's home; the hold's decision if it settled."""
        if not action.answers:
            return None
        if hold.id in self.state.locked:
            return self._line_answered(hold, command)
        # The hold's home shard is another process's: send the answer there.
        payload = {"hold_id": hold.id, "line_no": line.line_no}
        if reply_to := command.payload.get("reply_to"):
            payload["reply_to"] = reply_to
        self.follow_ups.append(
            NewCommand.of(
                line_answered_key(hold.id, line.line_no, action),
                HoldCommand.LINE_ANSWERED.value,
                payload,
                self.state.home_shards[hold.id],
            )
        )
        return None

    def _line_answered(self, hold: Hold, command: InboxCommand) -> dict[str, Any] | None:
        """One more line has answered; the last one settles the hold (returns its decision)."""
        hold.lines_pending -= 1
        self.dirty_holds[hold.id] = hold
        if hold.lines_pending == 0:
            return self._decided(hold, hold_rules.settle(hold, self.lines[hold.id]), command)
        return None

    def _receive(self, command: InboxCommand) -> dict[str, Any]:
        p = command.payload
        stocks = self.stocks.setdefault(p["product_id"], [])
        expiry = dt.date.fromisoformat(p["expiry"]) if p.get("expiry") else None
        known = next((s for s in stocks if s.lot_code == p["lot"]), None)
        if known is not None and (
            why := lot_conflict(
                p["lot"],
                LotFacts(known.shade, known.caliber, known.expiry),
                LotFacts(p.get("shade"), p.get("caliber"), expiry),
            )
        ):
            # The recording checked this too; two receipts recorded at once can still differ.
            return {"outcome": "rejected", "reason": why, "lot": p["lot"]}
        stock = next(
            (s for s in stocks if s.warehouse_id == p["warehouse_id"] and s.lot_code == p["lot"]), None
        )
        if stock is None:
            stock = repo.ensure_lot_stock(
                self.pg,
                product_id=p["product_id"],
                warehouse_id=p["warehouse_id"],
                lot_code=p["lot"],
                shade=p.get("shade"),
                caliber=p.get("caliber"),
                expiry=expiry,
            )
            stocks.append(stock)
        self._record(move(MovementKind.RECEIPT, stock, on_hand=Decimal(p["pieces"])), command.seq)
        return {
            "outcome": "received",
            "pieces": p["pieces"],
            "lot": p["lot"],
            "on_hand": decimal_str(stock.on_hand),
        }

    # -- effects -------------------------------------------------------------------------------

    def _record(
        self, movement: Any, seq: int, hold_id: str | None = None, line_no: int | None = None
    ) -> None:
        self.dirty_stocks[movement.stock.balance_id] = movement.stock
        self.ledger.append(LedgerEntry(movement, seq, hold_id, line_no))

    def _decided(self, hold: Hold, decision: HoldDecision, command: InboxCommand) -> dict[str, Any]:
        """Carry out a hold decision: save the hold, send its line commands, schedule its expiry."""
        if decision.changed:
            self.dirty_holds[hold.id] = hold
            self.events.append((f"hold.{hold.status.value}", {"hold_id": hold.id}))
        lines = {line.line_no: line for line in self.lines[hold.id]}
        for fan_out in decision.fan_out:
            line = lines[fan_out.line_no]
            self.pending.setdefault((hold.id, line.line_no), []).append(fan_out.action)
            payload = {"hold_id": hold.id, "line_no": line.line_no, "product_id": line.product_id}
            self.follow_ups.append(
                NewCommand.of(
                    line_command_key(hold.id, line.line_no, fan_out.action, again=fan_out.again),
                    fan_out.action.value,
                    payload,
                    shard_of(line.sku, self.shards),
                )
            )
        if decision.schedule_expiry:
            self.follow_ups.append(
                NewCommand.of(
                    expiry_key(hold.id),
                    HoldCommand.EXPIRE.value,
                    {"hold_id": hold.id},
                    self.state.home_shards[hold.id],
                    not_before=hold.expires_at,
                )
            )
        if decision.alert is Alert.RAISE:
            self.alerts[hold.id] = HoldAlert(hold.id, self._alert_detail(hold, decision))
        elif decision.alert is Alert.RESOLVE:
            raised = self.alerts.get(hold.id)
            if raised is not None:  # raised by this very batch: written as resolved at once
                self.alerts[hold.id] = HoldAlert(hold.id, raised.detail, resolved=True)
            else:
                self.resolved_alerts.add(hold.id)
        if hold.status.settled and decision.changed:
            self.wake.append(hold.id)
            if reply_to := command.payload.get("reply_to"):
                self.reply_to[hold.id] = reply_to
        return {"outcome": decision.outcome, "note": decision.note, "hold_status": hold.status.value}

    def _alert_detail(self, hold: Hold, decision: HoldDecision) -> dict[str, Any]:
        """A paid hold without its stock, every line named with its final state."""
        return {
            "hold_id": hold.id,
            "mode": hold.mode.value,
            "note": decision.note,
            "lines": [
                {
                    "line_no": line.line_no,
                    "sku": line.sku,
                    "pieces": decimal_str(line.pieces),
                    "status": self._final(hold.id, line).value,
                    "reason": line.reason,
                }
                for line in self.lines[hold.id]
            ],
        }

    def _final(self, hold_id: str, line: HoldLine) -> hold_rules.LineStatus:
        return line_after(line.status, self.pending.get((hold_id, line.line_no), []))

    def answer(self, hold_id: str) -> str:
        """The hold's answer as a reader would see it after commit, sent with its wake-up so the
        waiting checkout needs no read of its own."""
        hold, routes = self.holds[hold_id], {r.warehouse_id: r.code for r in self.routes}
        lot_names = self.state.lot_names
        lines = []
        for line in self.lines[hold_id]:
            shown = self.state.shown[(hold_id, line.line_no)]
            code, shade, caliber = (
                lot_names.get(line.lot_id, (None, None, None)) if line.lot_id else (None,) * 3
            )
            lines.append(
                line_result(
                    LineFacts(
                        line_no=line.line_no,
                        sku=line.sku,
                        requested=shown.requested,
                        unit=shown.unit,
                        pieces=line.pieces,
                        rounding=shown.rounding,
                        status=self._final(hold_id, line).value,
                        allocated=line.allocated,
                        packaging=shown.packaging,
                        warehouse=routes.get(line.warehouse_id) if line.warehouse_id else None,
                        lot=code,
                        shade=shade,
                        caliber=caliber,
                        reason=line.reason,
                        available=line.available,
                        largest_lot=line.largest_lot,
                    )
                )
            )
        return HoldResult(
            hold_id=hold_id,
            status=hold.status.value,
            mode=hold.mode.value,
            payment=hold.payment.value,
            expires_at=hold.expires_at,
            created_at=self.state.created_at[hold_id],
            lines=lines,
        ).model_dump_json()

    def answers(self) -> dict[str, dict[str, str]]:
        """client → hold → answer, for the decided holds whose client listens for them."""
        by_client: dict[str, dict[str, str]] = {}
        for hold_id, client in self.reply_to.items():
            by_client.setdefault(client, {})[hold_id] = self.answer(hold_id)
        return by_client

    def writes(self) -> repo.BatchWrites:
        touched = sorted({s.product_id for s in self.dirty_stocks.values()})
        stock_events = [
            (
                "stock.changed",
                {
                    "product_id": pid,
                    "available": decimal_str(sum((s.available for s in self.stocks[pid]), Decimal(0))),
                },
            )
            for pid in touched
        ]
        return repo.BatchWrites(
            stocks=list(self.dirty_stocks.values()),
            ledger=self.ledger,
            lines=list(self.dirty_lines.values()),
            holds=list(self.dirty_holds.values()),
            commands=self.follow_ups,
            events=self.events + stock_events,
            results=self.results,
            parked=self.parked,
            alerts=list(self.alerts.values()),
            resolved_alerts=sorted(self.resolved_alerts),
        )


@dataclass(slots=True)
class WriterStats:
    """Batches and commands applied since the last summary line, which it logs every STATS_SECONDS."""

    batches: int = 0
    commands: int = 0
    longest_ms: float = 0.0
    total_ms: float = 0.0
    since: float = field(default_factory=time.monotonic)

    def add(self, commands: int, latency_ms: float) -> None:
        self.batches += 1
        self.commands += commands
        self.total_ms += latency_ms
        self.longest_ms = max(self.longest_ms, latency_ms)
        now = time.monotonic()
        if now - self.since >= STATS_SECONDS:
            log.info(
                "writer.stats",
                seconds=round(now - self.since, 1),
                batches=self.batches,
                commands=self.commands,
                commands_per_batch=round(self.commands / self.batches, 1),
                batch_ms_mean=round(self.total_ms / self.batches, 2),
                batch_ms_max=round(self.longest_ms, 2),
            )
            self.batches = self.commands = 0
            self.total_ms = self.longest_ms = 0.0
            self.since = now


class ShardWriter:
    """Applies the pending commands of the shards this worker holds leases on.

    Parameters:
      engine: the Postgres engine.
      shards: the fixed shard count (follow-up commands are routed with it).
      batch_max: most commands per transaction.
      holder: this worker's name, recorded with each batch.
      announce: called with each committed batch's report (doorbells, wake-ups, answers), while the
        next claim is on its way to PostgreSQL, or as the drain ends: it never holds up a batch.
      max_attempts: tries before a command that keeps failing is parked as a dead letter.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        shards: int,
        batch_max: int,
        holder: str,
        announce: Callable[[BatchReport], None],
        max_attempts: int = 5,
    ) -> None:
        self.engine = engine
        self.shards = shards
        self.batch_max = batch_max
        self.holder = holder
        self.announce = announce
        self.max_attempts = max_attempts
        self._committed: list[BatchReport] = []  # not announced yet
        # When each pooled session last dropped its prepared statements (see REPLAN_SECONDS).
        self._planned: weakref.WeakKeyDictionary[repo.Pg, float] = weakref.WeakKeyDictionary()
        self.stats = WriterStats()
        self._claimed: list[InboxCommand] = []  # the batch being applied
        self._deciding: InboxCommand | None = None  # the command being decided, if any
        self._careful = 0  # batches of one command still to apply, to find which one fails

    def apply_batch(self, leases: Mapping[int, int]) -> BatchReport:
        """One transaction: up to batch_max due commands of the leased shards (shard → epoch), each
        shard's in its inbox order. A shard whose lease was taken by a newer epoch is left alone and
        reported as fenced."""
        try:
            with self._session() as pg:
                return self._apply(pg, leases, self._claim(pg, leases, self.batch_max))
        finally:
            self._announce_committed()

    def drain(
        self, leases: Callable[[], Mapping[int, int]], rung: Callable[[], bool] = lambda: False
    ) -> BatchReport:
        """Apply batches of the shards `leases()` gives (read again before each batch, so a lease
        lost meanwhile is not used) until nothing is due. `rung()` says (and forgets) whether a
        doorbell or nudge came since it was last asked: then more may have been recorded meanwhile,
        and the drain goes on. Returns the total: commands applied, shards fenced out.

        A transient error (PostgreSQL restarting, a lock timeout) rolls the batch back and retries
        it in place, in order, with a backoff. Any other error is a command's: the batch rolls back,
        the command that failed has its try counted, and the batch is tried again; after
        `max_attempts` tries the command is parked as a dead letter, in its place, and the shard goes
        on. When the failure cannot be pinned on one command (a write of the batch was refused),
        the batch's commands are applied one per transaction until it can.

        Batches follow each other on one session: a batch costs two round trips to PostgreSQL, its
        claim and its writes with the commit. A batch's answers are built while its commit is on its
        way, and announced while the next claim is: no round trip waits for the other.
        """
        try:
            return self._drain(leases, rung)
        finally:
            self._announce_committed()  # the last batch's, or those a failed claim left

    def _drain(self, leases: Callable[[], Mapping[int, int]], rung: Callable[[], bool]) -> BatchReport:
        total, backoff = BatchReport(0), 0.05
        while held := leases():
            try:
                with self._session() as pg:
                    while held:
                        self._replan_if_due(pg)
                        limit = 1 if self._careful else self.batch_max
                        report = self._apply(pg, held, self._claim(pg, held, limit))
                        total.applied += report.applied
                        total.fenced |= report.fenced
                        if report.applied and self._careful:
                            self._careful -= 1
                        if not report.applied or (
                            report.applied < limit and not _more_due(report, held) and not rung()
                        ):
                            # It took all that was due, and nothing was rung for since: what
                            # commits later comes with a nudge.
                            break
                        # A shard fenced out is the caller's to drop: not claimed again meanwhile.
                        held = {
                            shard: epoch for shard, epoch in leases().items() if shard not in total.fenced
                        }
                return total
            except Exception as error:
                if _transient(error):
                    log.warning(
                        "batch.retry", shards=sorted(held), error=_first_line(error), backoff_s=backoff
                    )
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                else:
                    self._failed(error)
        return total

    def _failed(self, error: Exception) -> None:
        """A batch failed for a reason retrying will not cure: count it against the command at fault."""
        claimed, culprit = self._claimed, self._deciding
        self._claimed, self._deciding = [], None
        if culprit is None and len(claimed) == 1:
            culprit = claimed[0]
        if culprit is None:
            if len(claimed) > 1:  # a write of the batch was refused: find its command one by one
                self._careful = len(claimed)
                log.warning("batch.isolating", commands=len(claimed), error=_first_line(error))
            else:  # the claim itself failed: no command to blame; do not spin
                log.error("claim.failed", error=_first_line(error))
                time.sleep(1.0)
            return
        detail = f"{type(error).__name__}: {_first_line(error)}"
        with self._session() as pg:
            attempts = repo.record_failure(pg, culprit.seq, detail)
        log.error(
            "command.failed",
            key=culprit.key,
            kind=culprit.kind,
            shard=culprit.shard,
            attempts=attempts,
            error=detail,
        )
        if attempts < self.max_attempts:
            time.sleep(min(0.05 * 2 ** (attempts - 1), 1.0))

    def _replan_if_due(self, pg: repo.Pg) -> None:
        now = time.monotonic()
        if now - self._planned.setdefault(pg, now) > REPLAN_SECONDS:
            pg.execute("DEALLOCATE ALL")  # psycopg forgets its prepared statements too
            self._planned[pg] = now

    def _claim(self, pg: repo.Pg, leases: Mapping[int, int], limit: int) -> repo.Claim:
        self._claimed, self._deciding = [], None
        claim = repo.claim_batch(pg, leases, self.holder, limit, meanwhile=self._announce_committed)
        self._claimed = claim.commands
        return claim

    def _announce_committed(self) -> None:
        while self._committed:
            self.announce(self._committed.pop(0))

    @contextlib.contextmanager
    def _session(self) -> Iterator[repo.Pg]:
        """A pooled connection in autocommit: the writer sends BEGIN and COMMIT itself, inside its
        pipelines. One that failed is discarded, not returned to the pool."""
        with self.engine.connect() as conn:
            try:
                yield repo.psycopg_of(conn.execution_options(isolation_level="AUTOCOMMIT"))
            except BaseException:
                conn.invalidate()
                raise

    def _decide(self, batch: _Batch, commands: list[InboxCommand]) -> None:
        """The domain decides each command in order; a command that failed too often is parked."""
        for command in commands:
            result: dict[str, Any] | None
            if command.attempts >= self.max_attempts:
                result = batch.park(command, bare=command.attempts > self.max_attempts)
            else:
                self._deciding = command
                result = batch.apply(command)
                self._deciding = None
            if result is not None:
                batch.results.append((command, result))

    def _apply(self, pg: repo.Pg, leases: Mapping[int, int], claim: repo.Claim) -> BatchReport:
        """Apply a claimed batch and commit it; its report waits to be announced."""
        started = time.perf_counter()
        now, commands = claim.now, claim.commands
        if now is None or not commands:
            # The claim's transaction wrote nothing. COMMIT, not ROLLBACK: after a ROLLBACK psycopg
            # forgets its prepared statements, and the next batches would be planned again.
            pg.execute("COMMIT")
            return BatchReport(0, fenced=claim.fenced, now=now)
        batch = _Batch(pg, now, self.shards, claim.state)
        self._decide(batch, commands)
        report = BatchReport(
            len(batch.results),
            fenced=claim.fenced,
            follow_up_shards={c.shard for c in batch.follow_ups if c.not_before is None},
            delayed=[(c.shard, c.not_before) for c in batch.follow_ups if c.not_before is not None],
            now=now,
            deferred=batch.deferred,
        )

        def prepare_answers() -> None:  # while the commit is on its way; sent only once it is done
            report.tokens = {
                **{hold_id: batch.answer(hold_id) for hold_id in batch.wake if hold_id not in batch.reply_to},
                **{c.key: "1" for c, _ in batch.results if c.kind in NOTIFIED_KINDS},
            }
            report.answers = batch.answers()

        repo.save_batch(
            pg, batch.writes(), leases=leases, holder=self.holder, started_at=now, meanwhile=prepare_answers
        )
        self._claimed = []
        latency_ms = (time.perf_counter() - started) * 1000
        self.stats.add(len(commands), latency_ms)
        # At INFO, a summary every STATS_SECONDS (a busy writer commits hundreds of batches a second);
        # a line per batch and per command at DEBUG (the inbox row keeps every result anyway).
        if log.is_enabled_for(logging.DEBUG):
            log.debug(
                "batch.applied",
                shards=sorted({c.shard for c in commands}),
                commands=len(commands),
                latency_ms=round(latency_ms, 2),
            )
            for command, result in batch.results:
                log.debug(
                    "command.applied",
                    key=command.key,
                    kind=command.kind,
                    shard=command.shard,
                    product_id=command.payload.get("product_id"),
                    outcome=result["outcome"],
                    batch=len(commands),
                    latency_ms=round(latency_ms, 2),
                )
        self._committed.append(report)
        return report


def _more_due(report: BatchReport, held: Mapping[int, int]) -> bool:
    """Did the batch leave work for this writer? Follow-up commands on its own shards are due at
    once, and nobody rings for them (nor for an expiry already due, whose doorbell is delayed, nor
    for one the batch left until the payment or release recorded before it is applied)."""
    if report.follow_up_shards & held.keys() or report.deferred:
        return True
    return report.now is not None and any(
        shard in held and when <= report.now for shard, when in report.delayed
    )


def _transient(error: BaseException) -> bool:
    """Connection loss, serialization failures, deadlocks, lock timeouts, shutdowns, a session ended
    for idling in its transaction: retry in place. Anything else (a refused write, a bug in a
    decision) is a command's failure."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    if not isinstance(error, psycopg.Error):
        return False
    code = error.sqlstate
    if code is None:  # no answer from the server: the connection is gone
        return isinstance(error, psycopg.OperationalError)
    return code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_STATES


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else repr(error)
