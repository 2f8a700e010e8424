"""After a batch commits: doorbells for the follow-up commands it recorded, and wake-ups for the
tickets waiting on what it decided. The writer announces each batch as soon as its commit is
confirmed; a failure here only delays (the sweep rings again, tickets re-read)."""

from __future__ import annotations

import math

import structlog
from redis import Redis

from tessera.answers import Wakeups
from tessera.doorbells import CoalescingDoorbells, Doorbells
from workers.writer import BatchReport

log = structlog.get_logger("tessera.worker")


class Announcer:
    """Sends what committed batches decided.

    Parameters:
      redis_client / namespace: where delayed doorbells are deduplicated.
      doorbells: this process's doorbells (delayed ones, for expiries).
      foreign_bells: coalesced doorbells for shards other processes hold.
      wakeups: the tickets' tokens and the clients' answer channels.
    """

    def __init__(
        self,
        redis_client: Redis,
        namespace: str,
        *,
        doorbells: Doorbells,
        foreign_bells: CoalescingDoorbells,
        wakeups: Wakeups,
    ) -> None:
        self.redis = redis_client
        self.namespace = namespace
        self.doorbells = doorbells
        self.foreign_bells = foreign_bells
        self.wakeups = wakeups
        self._bells_rung: set[tuple[int, int]] = set()

    def announce(self, report: BatchReport) -> None:
        """Doorbells for its follow-ups on other processes' shards, delayed doorbells for the
        expiries it scheduled, wake-ups and answers."""
        try:
            if foreign := report.follow_up_shards - report.leased:
                self.foreign_bells.ring(foreign)
            self._ring_later(report)
            if report.tokens or report.answers:
                self.wakeups.wake(report.tokens, report.answers)
        except Exception:  # Redis away: the sweep rings again, and waiting tickets re-read PostgreSQL
            log.exception("announce.error")

    def _ring_later(self, report: BatchReport) -> None:
        """One delayed doorbell per (shard, second) of due time, however many holds fall due then.

        That bounds the delayed messages Redis and worker memory keep to shards × distinct seconds,
        instead of one per pending hold.
        """
        if not report.delayed or report.now is None:
            return
        bells = {(shard, math.ceil(when.timestamp())) for shard, when in report.delayed} - self._bells_rung
        if not bells:
            return
        self._bells_rung |= bells
        if len(self._bells_rung) > 100_000:  # keep memory bounded; Redis SET NX still dedupes
            self._bells_rung = set(bells)
        now = report.now.timestamp()
        delays = {(shard, due): max(0, int((due - now) * 1000)) for shard, due in sorted(bells)}
        pipe = self.redis.pipeline(transaction=False)
        for (shard, due), delay_ms in delays.items():
            pipe.set(f"{self.namespace}:bell:{shard}:{due}", 1, nx=True, px=delay_ms + 60_000)
        for ((shard, _), delay_ms), new in zip(delays.items(), pipe.execute(), strict=True):
            if new:
                self.doorbells.ring(shard, delay_ms=delay_ms)
