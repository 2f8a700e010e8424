"""`tessera worker`: lease shards, consume their doorbells, drain their inboxes.

Threads of one worker process:
  - Dramatiq's consumer and worker threads deliver doorbells; a doorbell drains its shard;
  - the lease keeper renews held leases and takes free ones, draining a shard as it takes it;
  - the nudge listener drains a shard the moment a producer publishes that it has work.
Doorbells lost with Redis are rung again by the scheduler's sweep.
Doorbells for one shard are coalesced: while one thread drains it, others only mark it dirty, so
exactly one thread of this process applies a shard at a time (and the lease fences other processes).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import structlog
from redis import Redis
from sqlalchemy import Engine, text

from db.engine import get_engine
from domain.errors import LeaseLost
from tessera.settings import Settings
from workers.broker import Doorbells, make_broker, queue_name
from workers.lease import LeaseManager, ShardLease
from workers.wakeups import Wakeups
from workers.writer import BatchReport, ShardWriter

log = structlog.get_logger("tessera.worker")


def parse_shards(spec: str | None, total: int) -> list[int]:
    """``"0-7"``, ``"1,3,5"`` or ``None`` (all shards) → sorted shard numbers, each below `total`."""
    if not spec:
        return list(range(total))
    shards: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last < total:
            raise ValueError(f"shard range {part!r} is outside 0-{total - 1}")
        shards.update(range(first, last + 1))
    return sorted(shards)


class ShardWorker:
    """One worker process serving a set of shards.

    Parameters:
      settings: the configuration.
      shards: the shards this worker serves (leases decide which it applies right now).
      name: the holder name recorded in leases and batches.
      redis_client / engine: injected by tests and the demo; built from settings otherwise.
    """

    def __init__(
        self,
        settings: Settings,
        shards: Iterable[int],
        *,
        name: str | None = None,
        redis_client: Redis | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.shards = sorted(shards)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.redis = redis_client or Redis.from_url(settings.redis_url)
        self.engine = engine or get_engine(
            settings.database_url, application_name=f"tessera-worker {self.name}"
        )
        self.broker = make_broker(self.redis, settings.redis_namespace)
        self.doorbells = Doorbells(self.broker, settings.shards)
        self.doorbells.bind(self.on_doorbell)
        self.wakeups = Wakeups(self.redis, settings.redis_namespace)
        self.leases = LeaseManager(
            self.redis, settings.redis_namespace, self.name, settings.lease_ttl_seconds
        )
        self.writer = ShardWriter(
            self.engine,
            shards=settings.shards,
            batch_max=settings.batch_max,
            holder=self.name,
            after_commit=self._after_commit,
        )
        self.held: dict[int, ShardLease] = {}
        self._draining: set[int] = set()
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dramatiq: dramatiq.Worker | None = None
        self._threads: list[threading.Thread] = []
        self._bells_rung: set[tuple[int, int]] = set()
        self._nudge_queued: set[int] = set()
        self._nudged = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="nudge")

    # -- doorbells -------------------------------------------------------------------------------

    def on_doorbell(self, shard: int) -> None:
        lease = self.held.get(shard)
        if lease is None or not lease.is_valid():
            # Another worker holds this shard: hand the doorbell on rather than drop it.
            if self.leases.holder_of(shard) is not None and not self._stop.is_set():
                self.doorbells.ring(shard)
            return
        self.drain(shard)

    def drain(self, shard: int) -> None:
        """Drain the shard, unless another thread of this process is at it (then it drains again)."""
        with self._lock:
            if shard in self._draining:
                self._dirty.add(shard)
                return
            self._draining.add(shard)
        try:
            while True:
                lease = self.held.get(shard)
                if lease is None:
                    break
                try:
                    self.writer.drain(shard, lease.epoch, still_owned=lease.is_valid)
                except LeaseLost:
                    log.warning("lease.fenced", shard=shard, epoch=lease.epoch)
                    self._drop(shard)
                    break
                with self._lock:
                    if shard not in self._dirty:
                        break
                    self._dirty.discard(shard)
        finally:
            with self._lock:
                self._draining.discard(shard)

    def _after_commit(self, report: BatchReport) -> None:
        for shard in report.follow_up_shards - {report.shard}:
            self.doorbells.ring(shard)
        self._ring_later(report)
        if report.wake:
            self.wakeups.wake(report.wake)

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
            pipe.set(f"{self.settings.redis_namespace}:bell:{shard}:{due}", 1, nx=True, px=delay_ms + 60_000)
        for ((shard, _), delay_ms), new in zip(delays.items(), pipe.execute(), strict=True):
            if new:
                self.doorbells.ring(shard, delay_ms=delay_ms)

    # -- leases ----------------------------------------------------------------------------------

    def _drop(self, shard: int) -> None:
        lease = self.held.pop(shard, None)
        if lease:
            lease.valid_until = 0.0

    def _epoch_floor(self, shard: int) -> int:
        with self.engine.connect() as conn:
            epoch = conn.execute(
                text("SELECT epoch FROM shard_fences WHERE shard = :s"), {"s": shard}
            ).scalar()
        return int(epoch or 0)

    def keep_leases(self) -> list[int]:
        """Renew held leases, try to take the free ones; returns the shards newly taken."""
        taken = []
        for shard in self.shards:
            lease = self.held.get(shard)
            if lease is not None and self.leases.renew(lease):
                continue
            if lease is not None:
                log.warning("lease.lost", shard=shard, epoch=lease.epoch)
                self._drop(shard)
            new = self.leases.acquire(shard, self._epoch_floor(shard))
            if new is not None:
                self.held[shard] = new
                taken.append(shard)
                log.info("lease.acquired", shard=shard, epoch=new.epoch, holder=self.name)
        return taken

    def _nudge(self, shard: int) -> None:
        """Queue one drain of a held shard; nudges for a shard already queued or draining coalesce,
        so the queue never holds more than one item per shard however fast nudges come."""
        if shard not in self.held:
            return
        with self._lock:
            if shard in self._draining:
                self._dirty.add(shard)
                return
            if shard in self._nudge_queued:
                return
            self._nudge_queued.add(shard)
        self._nudged.submit(self._drain_nudged, shard)

    def _drain_nudged(self, shard: int) -> None:
        with self._lock:
            self._nudge_queued.discard(shard)
        self.drain(shard)

    def _listen_for_nudges(self) -> None:
        """Drain a held shard as soon as a producer publishes a nudge for it (see Doorbells.ring)."""
        while not self._stop.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.doorbells.nudge_channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.25)
                    if message is not None:
                        self._nudge(int(message["data"]))
                pubsub.close()
            except Exception:  # Redis restarting: the Dramatiq doorbells still flow; resubscribe
                log.exception("nudges.error")
                self._stop.wait(1.0)

    def _keeper_loop(self) -> None:
        interval = self.settings.lease_ttl_seconds / 3
        while not self._stop.wait(interval):
            try:
                for shard in self.keep_leases():
                    self.drain(shard)
            except Exception:
                log.exception("keeper.error")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        # The writer thread waits on PostgreSQL a few times per batch; with dozens of Dramatiq
        # consumer threads in the process, each return from I/O can queue for the GIL for up to
        # the switch interval (5 ms by default). A short interval keeps batches short.
        sys.setswitchinterval(0.0005)
        for shard in self.keep_leases():
            self.drain(shard)
        self._threads = [
            threading.Thread(target=self._keeper_loop, name="lease-keeper", daemon=True),
            threading.Thread(target=self._listen_for_nudges, name="nudges", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._dramatiq = dramatiq.Worker(
            self.broker,
            queues={queue_name(s) for s in self.shards},
            worker_threads=self.settings.worker_threads,
            worker_timeout=1000,  # ms: the longest an idle consumer backs off (nudges carry the latency)
        )
        self._dramatiq.queue_prefetch = self.settings.queue_prefetch
        self._dramatiq.start()
        log.info("worker.started", name=self.name, shards=self.shards, held=sorted(self.held))

    def stop(self) -> None:
        self._stop.set()
        if self._dramatiq is not None:
            self._dramatiq.stop(timeout=10_000)
        for thread in self._threads:
            thread.join(timeout=5)
        self._nudged.shutdown(wait=True)
        for lease in list(self.held.values()):
            self.leases.release(lease)
        self.held.clear()
        log.info("worker.stopped", name=self.name)

    def run_forever(self) -> None:
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(1.0):
            pass
        self.stop()
