"""`python -m bench.chaos`: the command line, the run (servers, processes, traffic and faults, then the
drain and the checks) and its results file."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import queue
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import Engine, text

from bench.chaos.checks import (
    Check,
    Outcome,
    check_applied_twice,
    check_dead,
    check_exits,
    check_expired_early,
    check_faults,
    check_gave_up,
    check_lost,
    check_oversold,
    check_reconcile,
    check_resends,
    check_timed,
    check_unsettled,
    drain,
    expiry_lateness,
    timed_outcomes,
)
from bench.chaos.clock import DbClock
from bench.chaos.faults import Fault, Injector, Prober, RecoveryWatcher, plan_faults, probe_skus
from bench.chaos.journal import Journal, say
from bench.chaos.operations import WarehouseOps
from bench.chaos.processes import WORKERS, Fleet, Leases
from bench.chaos.report import report
from bench.chaos.servers import OwnPostgres, OwnRedis
from bench.chaos.traffic import Checkouts, seed_catalogue
from bench.common import DEFAULT_RESULTS, _exit_on_sigterm, machine_facts, settings_env, write_results
from db.engine import make_engine
from db.migrate import upgrade
from producers import StockClient
from tessera.settings import Settings

NAME = "chaos"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",  # not __main__.py, the name argparse would take from sys.argv[0]
        description="Chaos soak: checkout traffic while workers, the scheduler, Redis and PostgreSQL are faulted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=90.0, help="how long producers and faults run")
    parser.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and the workload")
    parser.add_argument(
        "--faults-per-kind",
        type=int,
        default=None,
        help="each fault kind this often (default: 3 from 75 s, 2 from 50 s, else 1)",
    )
    parser.add_argument("--producers", type=int, default=16, help="checkout threads")
    parser.add_argument("--shards", type=int, default=8, help="TESSERA_SHARDS")
    parser.add_argument("--lease-ttl", type=float, default=2.0, help="TESSERA_LEASE_TTL_SECONDS")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="TESSERA_SWEEP_INTERVAL_SECONDS")
    parser.add_argument("--sweep-grace", type=float, default=1.0, help="TESSERA_SWEEP_GRACE_SECONDS")
    parser.add_argument("--drain-timeout", type=float, default=90.0, help="bound on the wait after the run")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS, help="where chaos.json is written"
    )
    parser.add_argument("--log-level", default="INFO", help="TESSERA_LOG_LEVEL of the workers and scheduler")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (data, server and worker logs)"
    )
    args = parser.parse_args(argv)
    if args.faults_per_kind is None:
        args.faults_per_kind = 3 if args.seconds >= 75 else 2 if args.seconds >= 50 else 1
    if args.seconds < 10 or args.faults_per_kind < 1:
        parser.error("need --seconds >= 10 and --faults-per-kind >= 1")
    return args


class Soak:
    """The servers, processes, client and bookkeeping of one run; `close()` tears all down."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.pg = OwnPostgres(workdir)
        self.redis_server = OwnRedis(workdir)
        self.journal = Journal()
        self.faults: list[Fault] = []
        self.closers: list[Callable[[], None]] = []
        self.warehouse_operations: dict[str, int] = {}
        """operation kind → how many the warehouse's thread had acknowledged."""

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception as error:
                say(f"teardown: {error!r}")

    def start(self) -> None:
        self.pg.start()
        self.closers.append(self.pg.stop)
        self.redis_server.start()
        self.closers.append(self.redis_server.stop)
        upgrade(self.pg.url())
        self.settings = Settings(
            database_url=self.pg.url(),
            redis_url=self.redis_server.url,
            redis_namespace="chaos",
            shards=self.args.shards,
            lease_ttl_seconds=self.args.lease_ttl,
            sweep_interval_seconds=self.args.sweep_interval,
            sweep_grace_seconds=self.args.sweep_grace,
            log_level=self.args.log_level,
        )
        self.env = settings_env(self.settings)
        self.engine = make_engine(self.pg.url(), pool_size=self.args.producers + 8, max_overflow=16)
        self.closers.append(self.engine.dispose)
        self.redis = Redis.from_url(self.redis_server.url)
        self.closers.append(self.redis.close)
        self.clock = DbClock(self.engine)
        self.leases = Leases(self.redis, self.settings)
        log_dir = self.workdir / "logs"
        log_dir.mkdir()
        self.fleet = Fleet(self.env, log_dir, self.clock)
        self.closers.append(self.fleet.stop_all)

    def print_settings(self) -> None:
        say(f"PostgreSQL {self.pg.url()} (data {self.pg.pgdata}), Redis {self.redis_server.url}")
        say(
            "settings: " + " ".join(f"TESSERA_{k.upper()}={v}" for k, v in self.settings.model_dump().items())
        )

    def boot(self) -> None:
        for role in (*WORKERS, "scheduler"):
            self.fleet.start(role)
        self.leases.wait_all_held(self.fleet)
        self.client = StockClient(self.settings, engine=self.engine, redis_client=self.redis)
        self.closers.append(self.client.close)
        self.prober = Prober(self.client, self.clock, self.journal, probe_skus(self.settings.shards))
        seed_catalogue(self.client, self.clock, self.journal, self.prober.skus)

    def run(self) -> dict[str, Any]:
        """Producers and faults for --seconds, then the drain."""
        rng = random.Random(self.args.seed)
        planned = plan_faults(rng, self.args.seconds, self.args.faults_per_kind, self.args.lease_ttl)
        watcher = RecoveryWatcher(self.pg.url(), self.faults)
        watcher.start()
        self.closers.append(watcher.close)
        confirmed: queue.Queue[str] = queue.Queue()
        checkouts = Checkouts(self.client, self.clock, self.journal, self.args.seed, confirmed)
        self.closers.append(checkouts.stop.set)
        checkouts.start(self.args.producers)
        warehouse = WarehouseOps(self.client, self.clock, self.journal, self.args.seed, confirmed)
        self.closers.append(warehouse.stop.set)
        warehouse.start()
        self.faults.extend(planned)
        say(f"running {self.args.seconds:.0f}s with {len(planned)} faults:")
        injector = Injector(self.fleet, self.pg, self.redis, self.leases, self.clock, self.prober.probe)
        injector.run(planned, self.args.seconds)
        say("stopping producers")
        checkouts.finish()
        warehouse.finish()
        self.warehouse_operations = dict(sorted(warehouse.counts.items()))
        say(f"warehouse operations acknowledged: {self.warehouse_operations}")
        say("draining")
        drained = drain(self.engine, self.fleet, self.args.drain_timeout)
        watcher.close()
        return drained

    def checks(self) -> tuple[list[Check], list[Outcome], list[float]]:
        acks = self.journal.firsts()
        with self.engine.connect() as conn:
            outcomes = timed_outcomes(conn, acks)
            checks = [
                check_lost(conn, acks),
                check_unsettled(conn),
                check_resends(self.journal),
                check_applied_twice(conn),
                check_expired_early(conn),
                *check_timed(outcomes),
                check_oversold(conn),
                check_dead(conn),
            ]
            lateness = expiry_lateness(conn)
        checks += [
            check_reconcile(self.env),
            check_gave_up(self.journal),
            check_exits(self.fleet),
            check_faults(self.faults, self.args.faults_per_kind),
        ]
        return checks, outcomes, lateness


def _hold_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            s: int(n)
            for s, n in conn.execute(text("SELECT status, count(*) FROM holds GROUP BY 1 ORDER BY 1"))
        }


def _holds_handed() -> dict[str, float]:
    """How the checkouts' handed holds went (`tessera_holds_handed_total`, this process's)."""
    handed = {
        sample.labels["outcome"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "tessera_holds_handed"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    say(f"holds handed to their writers, by outcome: {handed}")
    return handed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _exit_on_sigterm()
    # A pooled connection that PostgreSQL's restart cut is invalidated and replaced; SQLAlchemy's
    # pool logs its failed reset with a traceback, and psycopg a pipeline it could not close: both
    # expected here (the calls are resent), and they would bury the report.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="tessera-chaos-"))
    soak = Soak(args, workdir)
    try:
        soak.start()
        soak.print_settings()
        facts = machine_facts(soak.engine, soak.redis)
        soak.boot()
        started = dt.datetime.now(dt.UTC)
        drained = soak.run()
        checks, outcomes, lateness = soak.checks()
        figures = report(soak.faults, soak.journal, soak.settings, checks, outcomes, lateness)
        if not drained["drained"]:
            say(f"the drain did not finish within {args.drain_timeout}s: {drained}")
        passed = all(c.passed for c in checks)
        results = {
            "bench": NAME,
            "machine": facts,
            "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "settings": {
                k: v for k, v in soak.settings.model_dump().items() if k not in ("database_url", "redis_url")
            },
            "started": started,
            "drain": drained,
            "passed": passed,
            "checks": [asdict(c) for c in checks],
            **figures,
            "hold_status_counts": _hold_counts(soak.engine),
            "holds_handed": _holds_handed(),
            "warehouse_operations": soak.warehouse_operations,
            "faults": [{**asdict(f), "mark": f.mark, "recovery_s": f.recovery_s} for f in soak.faults],
            "process_exits": soak.fleet.exits,
            "producer_problems": soak.journal.problems[:100],
        }
        write_results(NAME, args.results_dir, results)
        say("PASSED" if passed else "FAILED: " + ", ".join(c.name for c in checks if not c.passed))
        return 0 if passed else 1
    finally:
        soak.close()
        if args.keep:
            say(f"kept {workdir} (data: {soak.pg.pgdata}, logs: {workdir / 'logs'})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
