"""`tessera worker`: lease shards, consume their doorbells, drain their inboxes.

Threads of one worker process:
  - Dramatiq's consumer and worker threads deliver doorbells; a doorbell starts the writer;
  - the lease keeper renews held leases and takes free ones, starting the writer when it takes one;
  - the nudge listeners start the writer the moment a shard has work: PostgreSQL notifies the holds
    recorded as their statement commits, and other producers publish a nudge on Redis.
Doorbells lost with Redis are rung again by the scheduler's sweep.
One writer at a time per process: a doorbell for any of its shards runs a batch over all the shards
the process holds (one transaction, each shard's commands in its own order), so many quiet shards
share one commit instead of paying one each. While a thread is at it, other doorbells only mark
the process dirty and it goes round again; the leases fence other processes. The writer sends what
each committed batch tells (answers to waiting tickets, doorbells) the moment its commit is confirmed.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import psycopg
import structlog
from dramatiq.brokers.redis import RedisBroker
from prometheus_client import start_http_server
from psycopg import sql
from redis import Redis
from sqlalchemy import Engine, text

from db.engine import get_engine, libpq_url
from db.inbox import NUDGE_CHANNEL
from db.ops_reads import shard_inboxes
from domain.errors import InvalidCommand
from tessera import metrics
from tessera.answers import Wakeups
from tessera.doorbells import RING_ACTOR, CoalescingDoorbells, Doorbells, make_broker, queue_name
from tessera.handover import HandedHold, HandedHolds
from tessera.logs import first_line
from tessera.redis_clients import connect_redis
from tessera.settings import Settings
from tessera.signals import stop_on_termination
from workers.announcer import Announcer
from workers.lease import LeaseManager, ShardLease
from workers.spread import ShardSpread
from workers.writer import ShardWriter

log = structlog.get_logger("tessera.worker")
GAUGES_SECONDS = 5.0
"""How often a worker serving /metrics reads the inbox of the shards it holds."""


def writer_session_options(lease_ttl_seconds: float) -> str:
    """Bounds on how long a writer's session can hold its shards' rows, from the lease TTL.

    A worker stopped inside its batch transaction (SIGSTOP, a VM pause) keeps its fence rows and
    holds locked; the worker that takes its leases over would wait on them. PostgreSQL ends a
    transaction idle for half the TTL (before the lease can pass on: the stalled worker renewed it
    at most a third of the TTL before it stopped), so the new holder applies within the TTL and a
    batch, and the stalled one, when it wakes, finds its session gone and its epoch fenced. A claim
    waits at most as long for a lock, then retries (with its leases read again).
    """
    half_ttl_ms = max(int(lease_ttl_seconds * 500), 100)
    return f"-c idle_in_transaction_session_timeout={half_ttl_ms} -c lock_timeout={half_ttl_ms}"


def parse_shards(spec: str | None, total: int) -> list[int]:
    """``"0-7"``, ``"1,3,5"`` or ``None`` (all shards) → sorted shard numbers, each below `total`."""
    if not spec:
        return list(range(total))
    shards: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last < total:
            raise InvalidCommand(f"shard range {part!r} is outside 0-{total - 1}", field="shards")
        shards.update(range(first, last + 1))
    return sorted(shards)


def doorbell_actor(broker: RedisBroker, on_doorbell: Callable[[int], None]) -> dramatiq.Actor[[int], None]:
    """The one actor of a worker process: a doorbell for shard S, on S's queue, calls
    `on_doorbell(S)`. Producers ring it by name (`tessera.doorbells.RING_ACTOR`)."""
    return dramatiq.Actor(
        on_doorbell, broker=broker, actor_name=RING_ACTOR, queue_name=queue_name(0), priority=0, options={}
    )


class WorkerProcess:
    """One worker process serving a set of shards.

    Parameters:
      settings: the configuration.
      shards: the shards this worker serves (leases decide which it applies right now).
      name: the holder name recorded in leases and batches.
      redis_client / engine: injected by tests and the demo; built from settings otherwise.
      metrics_port / metrics_host: where to serve Prometheus /metrics (not served by default).
      spread: share the shards with the other workers that serve the same ones (`workers.spread`),
        instead of taking every free lease and leaving the others to stand by.
    """

    def __init__(
        self,
        settings: Settings,
        shards: Iterable[int],
        *,
        name: str | None = None,
        redis_client: Redis | None = None,
        engine: Engine | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        spread: bool = False,
    ) -> None:
        self.settings = settings
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.shards = sorted(shards)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        # A Redis that hangs must not hang the writer, which sends its answers itself: give up after a
        # while (the sweep rings again, and tickets re-read PostgreSQL).
        self.redis = redis_client or connect_redis(settings.redis_url)
        self.engine = engine or get_engine(
            settings.database_url,
            application_name=f"tessera-worker {self.name}",
            options=writer_session_options(settings.lease_ttl_seconds),
        )
        self.broker = make_broker(self.redis, settings.redis_namespace)
        self.doorbells = Doorbells(self.broker, settings.shards)
        doorbell_actor(self.broker, self.on_doorbell)
        # Follow-ups for shards of other processes: a nudge at once, a Dramatiq doorbell at most
        # every second per shard (each one costs the other process a fetch, an ack and a drain).
        self.foreign_bells = CoalescingDoorbells(self.doorbells)
        self.announcer = Announcer(
            self.redis,
            settings.redis_namespace,
            doorbells=self.doorbells,
            foreign_bells=self.foreign_bells,
            wakeups=Wakeups(self.redis, settings.redis_namespace),
        )
        self.leases = LeaseManager(
            self.redis, settings.redis_namespace, self.name, settings.lease_ttl_seconds
        )
        self.spread = (
            ShardSpread(
                self.redis,
                settings.redis_namespace,
                self.name,
                self.shards,
                settings.lease_ttl_seconds,
                self.leases.connection_id,
            )
            if spread
            else None
        )
        self.writer = ShardWriter(
            self.engine,
            shards=settings.shards,
            batch_max=settings.batch_max,
            holder=self.name,
            announce=self.announcer.announce,
            max_attempts=settings.max_attempts,
            take_handed=self._take_handed,
        )
        self.handed = HandedHolds(self.redis, settings.redis_namespace)
        self.held: dict[int, ShardLease] = {}
        self._draining = False
        self._dirty = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dramatiq: dramatiq.Worker | None = None
        self._threads: list[threading.Thread] = []
        self._nudge_queued = False
        self._nudged = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nudge")

    # -- doorbells -------------------------------------------------------------------------------

    def on_doorbell(self, shard: int) -> None:
        lease = self.held.get(shard)
        if lease is None or not lease.is_valid():
            # Another worker holds this shard: hand the doorbell on rather than drop it.
            if self.leases.holder_of(shard) is not None and not self._stop.is_set():
                self.doorbells.ring(shard)
            return
        self.drain()

    def held_leases(self) -> dict[int, int]:
        """Shard → epoch of the leases this worker may apply with right now."""
        return {shard: lease.epoch for shard, lease in list(self.held.items()) if lease.is_valid()}

    def drain(self) -> None:
        """Apply what is due on the held shards, unless another thread of this process is at it
        (then that thread goes round again)."""
        with self._lock:
            if self._draining:
                self._dirty = True
                return
            self._draining = True
        try:
            while True:
                report = self.writer.drain(self.held_leases, self._rung)
                for shard in report.fenced:
                    metrics.LEASE_CHANGES.labels("fenced").inc()
                    log.warning(
                        "lease.fenced",
                        shard=shard,
                        epoch=self.held[shard].epoch if shard in self.held else None,
                    )
                    self._drop(shard)
                with self._lock:
                    if not self._dirty:
                        self._draining = False
                        break
                    self._dirty = False
        finally:
            with self._lock:
                self._draining = False

    def _rung(self) -> bool:
        """Did a doorbell or nudge come while the writer was at it? (And forget that it did.)"""
        with self._lock:
            rung, self._dirty = self._dirty, False
        return rung

    def _take_handed(self, shards: list[int], limit: int) -> list[HandedHold]:
        """The holds handed to these shards; none while Redis is away (their APIs record them)."""
        try:
            return self.handed.take(shards, limit)
        except Exception as error:
            log.warning("handed.error", error=first_line(error))
            return []

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
                metrics.LEASE_CHANGES.labels("lost").inc()
                self._drop(shard)
            if self._take(shard):
                taken.append(shard)
        return taken

    def take_free_leases(self) -> list[int]:
        """Take the leases of served shards that nobody holds, or whose holder's connection is gone
        (one look at Redis for all of them, one more when others hold some)."""
        unheld = [shard for shard in self.shards if shard not in self.held]
        if not unheld:
            return []
        return [shard for shard, gone in self.leases.vacant(unheld).items() if self._take(shard, gone)]

    def share_leases(self) -> None:
        """With --spread: tell the peers how many shards this worker holds, and release one if a peer
        holds two or more fewer (that peer takes it on its next look)."""
        if self.spread is None:
            return
        self.spread.report(len(self.held))
        if self.spread.over(len(self.held)):
            shard = max(self.held)
            lease = self.held[shard]
            self._drop(shard)  # no new batch of the shard from here; one under way commits as usual
            self.leases.release(lease)
            metrics.LEASE_CHANGES.labels("released").inc()
            log.info("lease.released", shard=shard, epoch=lease.epoch, peers=self.spread.peers)
            self.spread.report(len(self.held))

    def _take(self, shard: int, gone_holder: str | None = None) -> bool:
        """Acquire a free lease; `gone_holder`: the lease it replaces, of a worker whose connection is gone.
        With --spread, a worker leaves it to a peer that holds fewer shards."""
        if self.spread is not None and not self.spread.may_take(len(self.held)):
            return False
        new = self.leases.acquire(shard, self._epoch_floor(shard))
        if new is None:
            return False
        self.held[shard] = new
        log.info("lease.acquired", shard=shard, epoch=new.epoch, holder=self.name, taken_from=gone_holder)
        metrics.LEASE_CHANGES.labels("acquired" if gone_holder is None else "taken_over").inc()
        return True

    def _nudge(self, payload: str) -> None:
        """Queue one drain when a nudge ("3,5,7", on Redis or PostgreSQL) names a held shard;
        nudges while one is queued or running coalesce, so the queue never holds more than one item
        however fast nudges come. A field that is not a shard number is passed over (anyone may
        publish or NOTIFY on the channels)."""
        if self.held.keys().isdisjoint(int(s) for s in payload.split(",") if s.isdecimal()):
            return
        with self._lock:
            if self._draining:
                self._dirty = True
                return
            if self._nudge_queued:
                return
            self._nudge_queued = True
        self._nudged.submit(self._drain_nudged)

    def _drain_nudged(self) -> None:
        with self._lock:
            self._nudge_queued = False
        self.drain()

    def _listen_for_nudges(self) -> None:
        """Drain a held shard as soon as a producer publishes a nudge for it (see Doorbells.ring)."""
        while not self._stop.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.doorbells.nudge_channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.25)
                    if message is not None:
                        self._nudge(message["data"].decode(errors="replace"))
                pubsub.close()
            except Exception:  # Redis restarting: the Dramatiq doorbells still flow; resubscribe
                log.exception("nudges.error")
                self._stop.wait(1.0)

    def _listen_for_notifies(self) -> None:
        """Drain a held shard the moment a hold recording that gave it work commits: the recording
        statement notifies `NUDGE_CHANNEL` itself (see `db.inbox.record_holds`). A session of its
        own, out of the pool, opened again when PostgreSQL cuts it (the doorbells still flow)."""
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    libpq_url(self.engine),
                    autocommit=True,
                    application_name=f"tessera-nudges {self.name}"[:63],
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NUDGE_CHANNEL)))
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.25):
                            self._nudge(note.payload)
            except Exception as error:  # PostgreSQL restarting: listen again once it is back
                log.warning("notifies.error", error=first_line(error))
                self._stop.wait(1.0)

    def _keeper_loop(self) -> None:
        """Renew the leases every third of the TTL; in between, look for free ones often, so that a
        standby takes over a dead worker's shards as soon as their leases expire (with looks only
        every third of the TTL, a takeover took up to 1.33 TTL, and the expiries due meanwhile waited)."""
        renew_every = self.settings.lease_ttl_seconds / 3
        look_every = min(renew_every, max(self.settings.lease_ttl_seconds / 20, 0.05))
        renew_at = time.monotonic() + renew_every
        while not self._stop.wait(look_every):
            try:
                if time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + renew_every
                    taken = self.keep_leases()
                else:
                    taken = self.take_free_leases()
                self.share_leases()
                if taken:
                    self.drain()
            except Exception as error:  # Redis or PostgreSQL restarting: the next round tries again
                log.warning("keeper.error", error=first_line(error))

    def _gauges_loop(self) -> None:
        """Every GAUGES_SECONDS, the inbox gauges of the shards this worker holds (for /metrics):
        a thread of its own, so that a slow read never holds up the renewal of the leases."""
        while not self._stop.is_set():
            try:
                self._refresh_gauges()
            except Exception as error:  # PostgreSQL restarting: the gauges keep their last values
                log.warning("gauges.error", error=first_line(error))
            self._stop.wait(GAUGES_SECONDS)

    def _refresh_gauges(self) -> None:
        with self.engine.connect() as conn:
            now, inboxes = shard_inboxes(conn, self.settings.shards)
        held = sorted(self.held)
        metrics.record_inbox(
            pending={s: inboxes[s].pending for s in held},
            oldest_seconds={
                s: (now - oldest).total_seconds() if (oldest := inboxes[s].oldest_pending_at) else None
                for s in held
            },
            dead={s: inboxes[s].dead_letters for s in held},
            not_held=[s for s in self.shards if s not in held],
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        # The writer thread waits on PostgreSQL a few times per batch; with dozens of Dramatiq
        # consumer threads in the process, each return from I/O can queue for the GIL for up to
        # the switch interval (5 ms by default). A short interval keeps batches short.
        sys.setswitchinterval(0.0005)
        # What startup made (modules, classes, the engine, the broker) lives as long as the process:
        # out of the collector's way, a full collection scans only what the work made since. Measured
        # at 1,000 commands/s, full collections stopped the worker for 100 ms each.
        gc.freeze()
        if self.metrics_port is not None:
            start_http_server(self.metrics_port, addr=self.metrics_host)
        if self.spread is not None:
            self.spread.report(0)  # known to the peers before taking anything: they share with it
        self.keep_leases()
        self.drain()
        self._threads = [
            threading.Thread(target=self._keeper_loop, name="lease-keeper", daemon=True),
            threading.Thread(target=self._listen_for_nudges, name="nudges", daemon=True),
            threading.Thread(target=self._listen_for_notifies, name="recorded-holds", daemon=True),
        ]
        if self.metrics_port is not None:
            self._threads.append(threading.Thread(target=self._gauges_loop, name="gauges", daemon=True))
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
        self.foreign_bells.close()  # the writer is done: send the doorbells it still owes other processes
        if self.spread is not None:
            self.spread.leave()  # first: a peer at its share takes the released shards only once it is gone
        for lease in list(self.held.values()):
            self.leases.release(lease)
            metrics.LEASE_CHANGES.labels("released").inc()
        self.held.clear()
        self.leases.close()
        log.info("worker.stopped", name=self.name)

    def run_forever(self) -> None:
        self.start()
        stop_on_termination(self._stop)
        while not self._stop.wait(1.0):
            pass
        self.stop()
