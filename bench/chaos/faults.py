"""The faults: their plan (drawn from the seed), the injector that runs them one after another, the
probes recorded at each fault's mark and the watcher that stamps its recovery."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from sqlalchemy import text

from bench.chaos.clock import POLL_SECONDS, DbClock
from bench.chaos.journal import Ack, Journal, persist, say
from bench.chaos.processes import WORKERS, Fleet, Leases, process_state
from bench.chaos.servers import OwnPostgres
from bench.common import terminate
from db.engine import make_engine
from domain.commands import shard_of
from producers import StockClient

FAULT_KINDS = (
    "kill_worker",
    "kill_scheduler",
    "stop_worker",
    "flush_redis",
    "restart_postgres",
    "third_worker",
)
MARK_AT_END = frozenset({"stop_worker", "third_worker"})


@dataclass(slots=True)
class Fault:
    kind: str
    planned_s: float
    params: dict[str, float]
    target: str | None = None
    started: float | None = None
    ended: float | None = None
    verified: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    probes: list[str] = field(default_factory=list)
    """Keys of the receipts recorded on every shard at the mark, once all are acknowledged."""
    recovered: float | None = None

    @property
    def mark(self) -> float | None:
        """The moment its recovery is measured from (database clock)."""
        return self.ended if self.kind in MARK_AT_END else self.started

    @property
    def recovery_s(self) -> float | None:
        mark = self.mark
        return None if mark is None or self.recovered is None else round(self.recovered - mark, 3)


def plan_faults(rng: random.Random, seconds: float, per_kind: int, lease_ttl: float) -> list[Fault]:
    """Every kind `per_kind` times, shuffled, one per slot of the run, at a random moment of the
    slot's first half; their durations drawn too, so the seed fixes the whole schedule."""
    kinds = [kind for kind in FAULT_KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    lead, tail = min(3.0, seconds * 0.1), min(8.0, seconds * 0.15)
    slot = (seconds - lead - tail) / len(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        params = {
            "pause_s": rng.uniform(0.5, 2.0),
            "stopped_s": lease_ttl + rng.uniform(0.5, 2.0),
            "third_s": rng.uniform(2.0, 4.0),
        }
        faults.append(Fault(kind, round(lead + i * slot + rng.uniform(0, slot / 2), 3), params))
    return faults


class Injector:
    """Runs the faults one after another, in the main thread, minding the processes in between."""

    def __init__(
        self,
        fleet: Fleet,
        pg: OwnPostgres,
        redis_client: Redis,
        leases: Leases,
        clock: DbClock,
        on_mark: Callable[[Fault], None],
    ) -> None:
        self.fleet = fleet
        self.pg = pg
        self.redis = redis_client
        self.leases = leases
        self.clock = clock
        self.on_mark = on_mark
        self.started = time.monotonic()

    def _begin(self, fault: Fault, target: str) -> None:
        fault.target, fault.started = target, self.clock.now()
        if fault.kind not in MARK_AT_END:
            self.on_mark(fault)

    def _finish(self, fault: Fault) -> None:
        fault.ended = self.clock.now()
        if fault.kind in MARK_AT_END:
            self.on_mark(fault)

    def idle(self, seconds: float, tick: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.fleet.watch()
            if tick is not None:
                tick()
            time.sleep(min(POLL_SECONDS, remaining))

    def run(self, faults: list[Fault], seconds: float) -> None:
        self.started = time.monotonic()
        for fault in faults:
            self.idle(self.started + fault.planned_s - time.monotonic())
            getattr(self, f"_{fault.kind}")(fault)
            elapsed = time.monotonic() - self.started
            outcome = "ok" if fault.verified else "NOT VERIFIED"
            say(f"  [{elapsed:6.1f}s] {fault.kind:<16} {fault.target or '':<9} {outcome}  {fault.detail}")
        self.idle(self.started + seconds - time.monotonic())

    def _kill(self, fault: Fault, role: str) -> None:
        proc = self.fleet.take_down(role)
        self._begin(fault, role)
        proc.send_signal(signal.SIGKILL)
        returncode = proc.wait(timeout=10)
        fault.verified = returncode == -signal.SIGKILL
        self.idle(fault.params["pause_s"])
        new = self.fleet.start(role)
        self._finish(fault)
        fault.detail = {"pid": proc.pid, "returncode": returncode, "new_pid": new.pid}

    def _kill_worker(self, fault: Fault) -> None:
        role = self.leases.busiest(WORKERS)
        held = self.leases.count()[role]
        self._kill(fault, role)
        fault.detail["leases_held"] = held

    def _kill_scheduler(self, fault: Fault) -> None:
        self._kill(fault, "scheduler")

    def _stop_worker(self, fault: Fault) -> None:
        role = self.leases.busiest(WORKERS)
        held = self.leases.count()[role]
        proc = self.fleet.procs[role]
        self._begin(fault, role)
        os.kill(proc.pid, signal.SIGSTOP)
        state = self._state_within(proc.pid, "T", 1.0)
        self.idle(fault.params["stopped_s"])
        taken = self.leases.count()
        with contextlib.suppress(ProcessLookupError):  # it died while stopped: watch() reports the exit
            os.kill(proc.pid, signal.SIGCONT)
        self._finish(fault)
        fault.verified = state == "T"
        fault.detail = {
            "pid": proc.pid,
            "state": state,
            "leases_held": held,
            "leases_at_sigcont": dict(taken),
        }

    def _state_within(self, pid: int, wanted: str, seconds: float) -> str | None:
        deadline = time.monotonic() + seconds
        state = process_state(pid)
        while state != wanted and time.monotonic() < deadline:
            time.sleep(0.01)
            state = process_state(pid)
        return state

    def _flush_redis(self, fault: Fault) -> None:
        keys = int(self.redis.dbsize())
        self._begin(fault, "redis")
        self.redis.flushall()
        self._finish(fault)
        fault.verified = keys > 0
        fault.detail = {"keys_before": keys}

    def _restart_postgres(self, fault: Fault) -> None:
        old = self.pg.postmaster_pid()
        self._begin(fault, "postgres")
        self.pg.restart()
        self._finish(fault)
        new = self.pg.postmaster_pid()
        back = self.pg.accepts()
        fault.verified = old is not None and new is not None and old != new and back
        took = round((fault.ended or 0) - (fault.started or 0), 3)
        fault.detail = {"old_pid": old, "new_pid": new, "took_s": took}

    def _third_worker(self, fault: Fault) -> None:
        self._begin(fault, "w3")
        proc = self.fleet.start("w3")
        most = 0

        def look() -> None:
            nonlocal most
            most = max(most, self.leases.count()["w3"])

        self.idle(fault.params["third_s"], look)
        alive = proc.poll() is None
        self.fleet.take_down("w3")
        terminate([proc], timeout=20)
        self._finish(fault)
        fault.verified = alive
        fault.detail = {"pid": proc.pid, "returncode": proc.returncode, "most_leases_held": most}


def probe_skus(shards: int) -> list[str]:
    """One product per shard (PROBE-n), so that a probe receipt reaches every shard's writer."""
    by_shard: dict[int, str] = {}
    for n in itertools.count():
        by_shard.setdefault(shard_of(f"PROBE-{n}", shards), f"PROBE-{n}")
        if len(by_shard) == shards:
            return [by_shard[shard] for shard in range(shards)]
    raise AssertionError("unreachable")


class Prober:
    """At a fault's mark, records a one-piece receipt on every shard (in a thread of its own,
    retried with the same keys until PostgreSQL takes them); sets `fault.probes` once all are in."""

    def __init__(self, client: StockClient, clock: DbClock, journal: Journal, skus: list[str]) -> None:
        self.client = client
        self.clock = clock
        self.journal = journal
        self.skus = skus
        self._numbers = itertools.count(1)

    def probe(self, fault: Fault) -> None:
        number = next(self._numbers)
        threading.Thread(target=self._record, args=(fault, number), name="probe", daemon=True).start()

    def _record(self, fault: Fault, number: int) -> None:
        keys = []
        try:
            for sku in self.skus:
                key = f"probe-{number}-{sku}"
                call = functools.partial(
                    self.client.receive,
                    idempotency_key=key,
                    warehouse="BUC1",
                    sku=sku,
                    quantity="1",
                    lot="P1",
                    shade="A",
                    caliber="9",
                )
                sent = self.clock.now()
                _, attempts = persist(call)
                self.journal.ack(Ack(key, "probe", None, sent, self.clock.now(), attempts))
                keys.append(key)
        except Exception as error:
            self.journal.problem(f"probe {number} ({fault.kind}): {error!r}")
            return
        fault.probes = keys


class RecoveryWatcher:
    """Polls the inbox every 50 ms and stamps each fault's recovery (see the package docstring,
    bench/chaos/__init__.py)."""

    QUERY = text(
        """
        SELECT extract(epoch FROM clock_timestamp()),
               extract(epoch FROM (SELECT min(recorded_at) FROM commands WHERE status = 'recorded')),
               extract(epoch FROM (SELECT min(not_before) FROM commands WHERE status = 'scheduled'))
        """
    )
    APPLIED = text(
        "SELECT idempotency_key FROM commands "
        "WHERE idempotency_key = ANY(CAST(:keys AS text[])) AND status = 'applied'"
    )

    def __init__(self, url: str, faults: list[Fault]) -> None:
        self.engine = make_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        self.faults = faults
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="recovery", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.engine.dispose()

    def _run(self) -> None:
        while not self.stop.wait(POLL_SECONDS):
            waiting = [
                f for f in list(self.faults) if f.recovered is None and f.mark is not None and f.probes
            ]
            if not waiting:
                continue
            try:
                with self.engine.connect() as conn:
                    now, recorded, scheduled = conn.execute(self.QUERY).one()
                    probes = [key for fault in waiting for key in fault.probes]
                    applied = set(conn.execute(self.APPLIED, {"keys": probes}).scalars())
            except Exception:
                continue  # PostgreSQL restarting
            times = [float(t) for t in (recorded, scheduled) if t is not None]
            oldest = min(times) if times else None
            for fault in waiting:
                mark = fault.mark
                assert mark is not None
                if (oldest is None or oldest >= mark) and applied.issuperset(fault.probes):
                    fault.recovered = float(now)
