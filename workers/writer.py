"""The shard writer: applies a shard's pending inbox commands, many per transaction, in order.

This is the only place that opens the apply transaction, sends BEGIN and COMMIT and owns the
pipelines they go in. One batch:
  1. prove the lease in Postgres (fence row: mutual exclusion + epoch check) and read the clock;
  2. take up to ``batch_max`` due commands of the shard in inbox order;
  3. lock the holds they touch (id order: no deadlocks), load lines and lot balances (1-3 are the
     claim, `db.claims`: one round trip);
  4. apply each command in turn with its kind's handler (`workers.handlers`) against the batch's
     in-memory state (`workers.batch`), so a later hold sees the stock an earlier one took;
     rejections are results, never failures;
  5. write everything set-based, mark each command applied with its result, commit (`db.writes`:
     one round trip);
  6. at once after commit: ring the shards of follow-up commands, wake waiting tickets.
A transient database error rolls the batch back and retries it whole, in place, in order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine

from db.claims import Claim, InboxCommand, send_claim
from db.inbox import HoldRows, record_holds
from db.sql import Pg, Statement, forget_plans, psycopg_of, send_sync, transient
from db.writes import record_failure, send_writes
from domain.commands import HoldCommand, StockCommand
from tessera import metrics
from tessera.handover import NOT_TAKEN, HandedHold
from tessera.logs import first_line
from workers import handlers
from workers.batch import Batch

log = structlog.get_logger("tessera.writer")

STATS_SECONDS = 10.0
# How long a pooled session keeps its prepared statements' plans. psycopg prepares a statement on
# its fifth run and PostgreSQL then settles on a generic plan, made for the table sizes of that
# moment; only new statistics (ANALYZE) make it plan again. With autovacuum off (as on CI here), a
# long drain kept the plans of small tables, whole-table scans, to the end: 99,000 holds drained at
# 760/s instead of 7,000/s. Nothing else drops them: an empty claim ends with COMMIT, not ROLLBACK.
# A session's first plans are made for the tables as they are when it starts, which in a new
# database are nearly empty: finding a batch's 20 rows by a whole-table scan is then the cheapest
# plan, and it stays while the tables grow (a flash sale on a new database spent half its writer's
# time in such scans for its first 10 s). So a new session replans early and then less often:
# after FIRST_REPLAN_SECONDS, twice that, and so on up to every REPLAN_SECONDS.
REPLAN_SECONDS = 10.0
FIRST_REPLAN_SECONDS = 0.5
NOTIFIED_KINDS = {*(kind.value for kind in StockCommand), HoldCommand.RELEASE.value, HoldCommand.PAY.value}
"""The kinds whose callers wait on a command ticket: woken with a token once applied."""


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
    leased: set[int] = field(default_factory=set)
    """The shards this writer applied the batch with: follow-ups for the others are another
    process's to apply, and need their doorbells."""


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
      announce: called with each committed batch's report (doorbells, wake-ups, answers) as soon as
        its commit is confirmed, before anything else: its waiting callers send the next holds.
      max_attempts: tries before a command that keeps failing is parked as a dead letter.
      take_handed: (shards, limit) → the holds handed to those shards' writer (`tessera.handover`),
        recorded first thing in the next batch.
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
        take_handed: Callable[[list[int], int], list[HandedHold]] | None = None,
    ) -> None:
        self.engine = engine
        self.shards = shards
        self.batch_max = batch_max
        self.holder = holder
        self.announce = announce
        self.max_attempts = max_attempts
        self.take_handed = take_handed
        # Taken from Redis and not committed yet: recorded again by the next try of the batch.
        self._handed: list[HandedHold] = []
        self._placed: set[str] = set()  # the ids of those this try of the batch recorded
        # Each pooled session's next replan and the interval it came after (see REPLAN_SECONDS).
        self._replans: weakref.WeakKeyDictionary[Pg, tuple[float, float]] = weakref.WeakKeyDictionary()
        self.stats = WriterStats()
        self._claimed: list[InboxCommand] = []  # the batch being applied
        self._deciding: InboxCommand | None = None  # the command being decided, if any
        self._careful = 0  # batches of one command still to apply, to find which one fails

    def apply_batch(self, leases: Mapping[int, int]) -> BatchReport:
        """One transaction: up to batch_max due commands of the leased shards (shard → epoch), each
        shard's in its inbox order. A shard whose lease was taken by a newer epoch is left alone and
        reported as fenced."""
        with self._session() as pg:
            return self._apply(pg, leases, self._claim(pg, leases, self.batch_max))

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
        way, and sent the moment it is confirmed: a closed loop of waiting callers (a checkout's
        connections) sends its next holds only once answered. (Sent while the next claim was on its
        way instead, they waited for that batch's take and recording: 2.3 ms of a hold's 24 at 32
        connections, measured.)
        """
        return self._drain(leases, rung)

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
                if transient(error):
                    log.warning(
                        "batch.retry", shards=sorted(held), error=first_line(error), backoff_s=backoff
                    )
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                else:
                    self._drop_handed()
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
                log.warning("batch.isolating", commands=len(claimed), error=first_line(error))
            else:  # the claim itself failed: no command to blame; do not spin
                log.error("claim.failed", error=first_line(error))
                time.sleep(1.0)
            return
        detail = f"{type(error).__name__}: {first_line(error)}"
        with self._session() as pg:
            attempts = record_failure(pg, culprit.seq, detail)
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

    def _replan_if_due(self, pg: Pg) -> None:
        now = time.monotonic()
        due, interval = self._replans.setdefault(pg, (now + FIRST_REPLAN_SECONDS, FIRST_REPLAN_SECONDS))
        if now >= due:
            forget_plans(pg)
            interval = min(interval * 2, REPLAN_SECONDS)
            self._replans[pg] = (now + interval, interval)

    def _claim(self, pg: Pg, leases: Mapping[int, int], limit: int) -> Claim:
        """Open the batch's transaction and claim its commands: one round trip."""
        self._claimed, self._deciding = [], None
        recording = self._recording(leases, limit)
        with pg.pipeline() as pipeline:
            pg.execute("BEGIN")
            recorded = pg.execute(recording.sql, recording.params) if recording else None
            sent = send_claim(pg, leases, self.holder, limit)
            send_sync(pipeline)
        keys = (recording.read(recorded.fetchall()) or set()) if recording and recorded else set()
        self._placed = {hold.hold_id for hold in self._recorded_firsts() if hold.key in keys}
        claim = sent.read()
        self._claimed = claim.commands
        return claim

    def _recording(self, leases: Mapping[int, int], limit: int) -> Statement[set[str] | None] | None:
        """The statement that records the holds handed to this writer, if any: those taken before
        and not committed yet, and up to `limit` more. A hold past its deadline is left out: its
        API records it itself."""
        if self.take_handed is not None:
            self._handed += self.take_handed(sorted(leases), limit)
        now = time.time()
        self._handed = [hold for hold in self._handed if not hold.late(now)]
        if not self._handed:
            return None
        # Its commands are this writer's to claim, in this batch: no nudge. (Should a lease have
        # passed on meanwhile, the batch rings that shard once committed: `_handed_committed`.)
        return record_holds(
            HoldRows.merged([HoldRows(**hold.rows) for hold in self._recorded_firsts()]),
            quiet_shards=sorted(leases),
        )

    def _recorded_firsts(self) -> list[HandedHold]:
        """The handed holds the batch records: the first of each key. Two APIs may hand one key at
        once (a checkout retrying on another connection); one statement cannot record both, and the
        twin, answered NOT_TAKEN, is recorded by its API, which finds the first's hold."""
        firsts: dict[str, HandedHold] = {}
        for hold in self._handed:
            firsts.setdefault(hold.key, hold)
        return list(firsts.values())

    def _handed_committed(self, report: BatchReport) -> None:
        """The batch that recorded the handed holds committed: those it did not record are answered,
        and the shards it recorded them on but was fenced out of are rung for their new holder (the
        recording nudged none of this writer's shards)."""
        _not_taken(report, (hold for hold in self._handed if hold.hold_id not in self._placed))
        recorded_on = {
            command["shard"]
            for hold in self._handed
            if hold.hold_id in self._placed
            for command in hold.rows["commands"]
        }
        if passed_on := recorded_on & report.fenced:
            report.follow_up_shards |= passed_on
            report.leased -= passed_on
        self._handed, self._placed = [], set()

    def _drop_handed(self) -> None:
        """A batch that recorded handed holds failed for a reason retrying will not cure: their
        APIs record them themselves."""
        if self._handed:
            report = BatchReport(0)
            _not_taken(report, self._handed)
            self._handed, self._placed = [], set()
            self.announce(report)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Pg]:
        """A pooled connection in autocommit: the writer sends BEGIN and COMMIT itself, inside its
        pipelines. One that failed is discarded, not returned to the pool."""
        with self.engine.connect() as conn:
            try:
                yield psycopg_of(conn.execution_options(isolation_level="AUTOCOMMIT"))
            except BaseException:
                conn.invalidate()
                raise

    def _decide(self, batch: Batch, commands: list[InboxCommand]) -> None:
        """Apply each command with its kind's handler, in order; one that failed too often is parked."""
        for command in commands:
            result: dict[str, Any] | None
            if command.attempts >= self.max_attempts:
                result = handlers.park(batch, command, bare=command.attempts > self.max_attempts)
                log.error(
                    "command.dead",
                    key=command.key,
                    kind=command.kind,
                    shard=command.shard,
                    attempts=command.attempts,
                    error=command.last_error,
                )
            else:
                self._deciding = command
                result = handlers.apply(batch, command)
                self._deciding = None
            if result is not None:
                batch.results.append((command, result))

    def _apply(self, pg: Pg, leases: Mapping[int, int], claim: Claim) -> BatchReport:
        """Apply a claimed batch, commit it and announce it."""
        started = time.perf_counter()
        now, commands = claim.now, claim.commands
        if now is None or not commands:
            # The claim's transaction wrote nothing but, maybe, the handed holds' recording (a
            # shard fenced out: its new holder decides them). COMMIT, not ROLLBACK: after a ROLLBACK
            # psycopg forgets its prepared statements, and the next batches would be planned again.
            pg.execute("COMMIT")
            report = BatchReport(0, fenced=claim.fenced, now=now)
            self._handed_committed(report)
            if report.answers or report.follow_up_shards:
                self.announce(report)
            return report
        batch = Batch(now, self.shards, claim.state)
        self._decide(batch, commands)
        report = BatchReport(
            len(batch.results),
            fenced=claim.fenced,
            follow_up_shards={c.shard for c in batch.follow_ups if c.not_before is None},
            delayed=[(c.shard, c.not_before) for c in batch.follow_ups if c.not_before is not None],
            now=now,
            deferred=batch.deferred,
            leased=set(leases),
        )

        with pg.pipeline() as pipeline:
            send_writes(pg, batch.writes(), leases=leases, holder=self.holder, started_at=now)
            pg.execute("COMMIT")  # a statement in the pipeline, not commit(): no round trip of its own
            # While the commit is on its way: the answers, sent only once it is done.
            report.tokens = {
                **{hold_id: batch.answer(hold_id) for hold_id in batch.wake if hold_id not in batch.reply_to},
                **{c.key: "1" for c, _ in batch.results if c.kind in NOTIFIED_KINDS},
            }
            report.answers = batch.answers()
            send_sync(pipeline)
        self._claimed = []
        self._handed_committed(report)
        self.announce(report)
        latency_ms = (time.perf_counter() - started) * 1000
        self.stats.add(len(commands), latency_ms)
        metrics.record_batch(
            ((c.kind, str(r.get("outcome"))) for c, r in batch.results),
            # a scheduled expiry waited by design: its lag from recording says nothing
            ((now - c.recorded_at).total_seconds() for c, _ in batch.results if c.kind != HoldCommand.EXPIRE),
            latency_ms / 1000,
            len(commands),
        )
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
        return report


def _not_taken(report: BatchReport, holds: Iterable[HandedHold]) -> None:
    """Answer these handed holds NOT_TAKEN: their APIs record them themselves."""
    for hold in holds:
        report.answers.setdefault(hold.reply_to, {})[hold.hold_id] = NOT_TAKEN.decode()


def _more_due(report: BatchReport, held: Mapping[int, int]) -> bool:
    """Did the batch leave work for this writer? Follow-up commands on its own shards are due at
    once, and nobody rings for them (nor for an expiry already due, whose doorbell is delayed, nor
    for one the batch left until the payment or release recorded before it is applied)."""
    if report.follow_up_shards & held.keys() or report.deferred:
        return True
    return report.now is not None and any(
        shard in held and when <= report.now for shard, when in report.delayed
    )
