"""Shared plumbing of the benchmarks: a fresh database and Redis namespace, real worker processes,
machine facts, percentiles, tables and the results file.

Every bench talks to 127.0.0.1 only, cleans up what it created (database, Redis keys, processes)
and writes ``bench/results/NAME.json`` (or ``--results-dir``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import itertools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import Engine, create_engine, text

from db.engine import make_engine
from db.migrate import upgrade
from ops.progress import meter
from producers import StockClient
from tessera.settings import Settings
from workers.process import parse_shards

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "bench" / "results"
DEFAULT_PG_ADMIN = os.environ.get("TESSERA_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS = os.environ.get("TESSERA_BENCH_REDIS", "redis://127.0.0.1:6379/0")


# -- command line ------------------------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--pg-admin-url", default=DEFAULT_PG_ADMIN, help="maintenance database URL (CREATE/DROP DATABASE)"
    )
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS, help="Redis URL (keys go under a fresh namespace)"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS, help="where NAME.json is written"
    )
    parser.add_argument(
        "--log-level", default="INFO", help="worker log level (INFO logs one line per command)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database, Redis keys and worker logs")
    return parser


def add_fleet_flags(parser: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """The worker fleet: how many worker processes, how many shards, Dramatiq threads each."""
    parser.add_argument("--workers", type=int, default=1, help="worker processes (splitting the shards)")
    parser.add_argument("--shards", type=int, default=16, help="TESSERA_SHARDS")
    if threads:
        parser.add_argument(
            "--threads", type=int, default=None, help="Dramatiq threads per worker (default: settings)"
        )


def fleet_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the fleet flags change."""
    overrides: dict[str, Any] = {"shards": args.shards}
    if getattr(args, "threads", None):
        overrides["worker_threads"] = args.threads
    return overrides


def add_catalogue_flags(parser: argparse.ArgumentParser) -> None:
    """A catalogue of products, each stocked alike, picked uniformly or by a Zipf law."""
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--stock", type=int, default=1_000_000, help="pieces received per product")
    parser.add_argument("--zipf-s", type=float, default=1.1)


def add_mix_flags(parser: argparse.ArgumentParser) -> None:
    """The command mix: besides holds, payments and releases of earlier holds."""
    parser.add_argument(
        "--pay-share", type=float, default=0.25, help="share of commands that pay an earlier hold"
    )
    parser.add_argument(
        "--release-share", type=float, default=0.15, help="share that release an earlier hold"
    )


def check_threads(parser: argparse.ArgumentParser, count: int, flag: str) -> None:
    """Each producer thread holds a database connection: PostgreSQL allows 100 here."""
    if not 1 <= count <= 64:
        parser.error(f"{flag} must be 1-64 (PostgreSQL max_connections is 100 here)")


def _loopback_only(url: str, what: str) -> None:
    if "127.0.0.1" not in url and "localhost" not in url:
        raise SystemExit(f"{what} must point at 127.0.0.1 (benchmarks send no traffic elsewhere): {url}")


# -- small helpers ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99, max and mean of durations given in seconds, reported in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "count": len(values_s),
        "p50_ms": ms(percentile(values_s, 50)),
        "p95_ms": ms(percentile(values_s, 95)),
        "p99_ms": ms(percentile(values_s, 99)),
        "max_ms": ms(max(values_s) if values_s else None),
        "mean_ms": ms(sum(values_s) / len(values_s) if values_s else None),
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    sys.stdout.flush()


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process from /proc/PID/status (VmRSS), in kB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(command name, CPU seconds user + system) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            raw = stat.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds used during a run by: this process, the worker processes, PostgreSQL, Redis.

    A sampler thread reads /proc every `interval` seconds, so that backends that come and go
    (one connection per producer thread) are counted up to their last sample. PostgreSQL and
    Redis are whole servers: on a shared machine their figures include other clients' work.
    """

    def __init__(self, worker_pids: Iterable[int], interval: float = 0.25) -> None:
        self.worker_pids = set(worker_pids)
        self.interval = interval
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _group(self, pid: int, comm: str) -> str | None:
        if pid == os.getpid():
            return "bench"
        if pid in self.worker_pids:
            return "workers"
        if comm == "postgres" or comm.startswith("postgres"):
            return "postgres"
        if comm.startswith("redis-server"):
            return "redis"
        return None

    def _sample(self, initial: bool) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            stat = _proc_stat(pid)
            if stat is None or self._group(pid, stat[0]) is None:
                continue
            if initial:
                self.first[pid] = stat
            self.last[pid] = stat

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(initial=False)

    def __enter__(self) -> CpuMeter:
        self.started = time.monotonic()
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(initial=False)
        self.wall = time.monotonic() - self.started

    def seconds(self) -> dict[str, float]:
        used: dict[str, float] = {"bench": 0.0, "workers": 0.0, "postgres": 0.0, "redis": 0.0}
        for pid, (comm, cpu) in self.last.items():
            group = self._group(pid, comm)
            if group:
                used[group] += cpu - self.first.get(pid, (comm, 0.0))[1]
        return {group: round(cpu, 2) for group, cpu in used.items()}

    def report(self) -> dict[str, Any]:
        """CPU seconds per component and, per component, cores used on average over the run."""
        used = self.seconds()
        wall = getattr(self, "wall", 0.0) or 1e-9
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "cores": {k: round(v / wall, 2) for k, v in used.items()},
        }


def redis_used_memory(redis_client: Redis) -> int:
    info: Mapping[str, Any] = redis_client.info("memory")
    return int(info["used_memory"])


def split_shards(total: int, workers: int) -> list[str]:
    """Contiguous shard ranges for `workers` processes ('0-3', '4-7'); fewer if shards are fewer."""
    workers = max(1, min(workers, total))
    bounds = [round(i * total / workers) for i in range(workers + 1)]
    return [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}" for lo, hi in itertools.pairwise(bounds)]


BENCH_OUTPUTS = (":!docs/*.folded", ":!docs/*.png")


def git_commit() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": run("rev-parse", "HEAD") or None,
        # What earlier benches of the same session wrote (results, the worker profile, the plots)
        # is no change to the code measured.
        "dirty": bool(
            run("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results", *BENCH_OUTPUTS)
        ),
    }


def machine_facts(engine: Engine, redis_client: Redis) -> dict[str, Any]:
    with engine.connect() as conn:
        pg_version = conn.execute(text("SELECT version()")).scalar()
        pg_settings: dict[str, str] = dict(
            conn.execute(  # type: ignore[arg-type]
                text(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections', 'wal_level')"
                )
            ).all()
        )
    server: Mapping[str, Any] = redis_client.info("server")
    persistence: Mapping[str, Any] = redis_client.info("persistence")
    return {
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql_version": pg_version,
        "postgresql_settings": pg_settings,
        "redis_version": server.get("redis_version"),
        "redis_aof_enabled": persistence.get("aof_enabled"),
        "git": git_commit(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, results_dir: Path, data: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    print(f"\nresults written to {path}")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


# -- the environment: database, Redis namespace, processes ------------------------------------


try:
    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In a child process, before exec: get SIGTERM if the bench dies, so no worker outlives it.

    Only a C call here (no Python-level locks after fork); Linux's PR_SET_PDEATHSIG = 1.
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)


def _exit_on_sigterm() -> None:
    """SIGTERM to the bench unwinds like Ctrl-C: processes stopped, database dropped."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _run_outside_transaction(url: str, statement: str) -> None:
    """One statement that cannot run in a transaction block (CREATE / DROP DATABASE, VACUUM)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def settings_env(settings: Settings) -> dict[str, str]:
    """This process's environment with a TESSERA_* variable for every setting, and the repository on
    PYTHONPATH: what `ops.cli` processes are started with."""
    env = dict(os.environ)
    for field, value in settings.model_dump().items():
        env[f"TESSERA_{field.upper()}"] = str(value)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_cli(args: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m ops.cli ARGS` from the repository, its output in `log`; it dies with the bench."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ops.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=_die_with_parent,
        )


def terminate(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM to every process still running, then wait for each; SIGKILL one that outlives `timeout`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed_warehouses(client: StockClient) -> None:
    """The warehouses of tests/conftest.py `seed_catalog`."""
    client.upsert_warehouse(code="BUC1", name="Bucharest", can_ship=True, priority=1)
    client.upsert_warehouse(code="CLJ1", name="Cluj", can_ship=True, priority=2)
    client.upsert_warehouse(code="SHOW", name="Showroom", can_ship=False, priority=9, type="showroom")


class BenchEnv:
    """A fresh database (migrated to head) and Redis namespace, and the processes started on them.

    Parameters:
      name: the bench name (part of the database name).
      args: the parsed common flags (see `base_parser`).
      pool_size: connection pool of the bench's own engine (its producer threads).
      overrides: Settings fields (shards, batch_max, ...).
    """

    def __init__(self, name: str, args: argparse.Namespace, *, pool_size: int = 40, **overrides: Any) -> None:
        _loopback_only(args.pg_admin_url, "--pg-admin-url")
        _loopback_only(args.redis_url, "--redis-url")
        self.name = name
        self.args = args
        self.pool_size = pool_size
        token = uuid.uuid4().hex[:10]
        self.db_name = f"bench_{name}_{token}"
        self.namespace = f"bench-{name}-{token}"
        self.admin_url: str = args.pg_admin_url
        self.database_url = self.admin_url.rsplit("/", 1)[0] + "/" + self.db_name
        self.settings = Settings(
            database_url=self.database_url,
            redis_url=args.redis_url,
            redis_namespace=self.namespace,
            log_level=args.log_level,
            **overrides,
        )
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self._created = False
        self.engine: Engine
        self.redis: Redis
        self.client: StockClient

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> BenchEnv:
        _exit_on_sigterm()
        _run_outside_transaction(self.admin_url, f'CREATE DATABASE "{self.db_name}"')
        self._created = True
        try:
            upgrade(self.database_url)
            self.engine = make_engine(
                self.database_url,
                pool_size=self.pool_size,
                max_overflow=8,
                pool_pre_ping=False,
            )
            self.redis = Redis.from_url(self.settings.redis_url)
            self.client = StockClient(self.settings, engine=self.engine, redis_client=self.redis)
        except BaseException:
            self.close()
            raise
        # The generator's startup heap (every module it imported) out of the collector's way, as the
        # worker does with its own: a full collection then stops its threads for what the run made,
        # not for the imports too (measured: 40-80 ms pauses, the open loop's worst latencies).
        gc.freeze()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the processes, drop the database, delete the namespace's Redis keys.

        The database goes first: dropping it (WITH FORCE) ends any producer thread still running
        after an interrupt, so none can ring a doorbell into Redis after its keys are deleted.
        """
        self.stop_processes()
        if hasattr(self, "client"):
            self.client.close()
        if hasattr(self, "engine"):
            self.engine.dispose()
        if self.args.keep:
            print(f"kept: database {self.db_name}, Redis namespace {self.namespace}, logs {self.log_dir}")
            return
        if self._created:
            _run_outside_transaction(self.admin_url, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._created = False
        if hasattr(self, "redis"):
            for _ in range(2):  # again after a moment: a doorbell may have been in flight
                keys = list(self.redis.scan_iter(f"{self.namespace}:*", count=1000))
                for i in range(0, len(keys), 1000):
                    self.redis.delete(*keys[i : i + 1000])
                time.sleep(0.2)
            self.redis.close()
        for path in self.log_dir.glob("*.log"):
            path.unlink()
        self.log_dir.rmdir()

    # -- processes -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return settings_env(self.settings)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = start_cli(args, self.env(), self.log_dir / f"{args[0]}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def start_worker(
        self, shards: str | None, name: str, threads: int | None = None
    ) -> subprocess.Popen[bytes]:
        args = ["worker", "--name", name]
        if shards:
            args += ["--shards", shards]
        if threads:
            args += ["--threads", str(threads)]
        return self.start(*args)

    def start_workers(self, count: int, timeout: float = 30.0) -> list[subprocess.Popen[bytes]]:
        """`count` worker processes splitting the shards, once each holds its leases."""
        specs = split_shards(self.settings.shards, count)
        procs = [self.start_worker(spec, f"w{i}") for i, spec in enumerate(specs)]
        for i, spec in enumerate(specs):
            self.wait_for_leases(spec, f"w{i}", timeout)
        return procs

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        return self.start("scheduler")

    def wait_for_leases(self, shards: str | None, name: str | None, timeout: float = 30.0) -> None:
        wanted = parse_shards(shards, self.settings.shards)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holders = self.redis.mget([f"{self.namespace}:lease:{s}" for s in wanted])
            if all(holders) and (
                name is None or all(h and h.decode().startswith(name + "|") for h in holders)
            ):
                return
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a process exited with {proc.returncode}; logs in {self.log_dir}")
            time.sleep(0.05)
        raise RuntimeError(
            f"no worker took leases on shards {wanted} within {timeout}s; logs in {self.log_dir}"
        )

    def stop_processes(self, timeout: float = 20.0) -> None:
        terminate(self.procs, timeout)
        self.procs.clear()

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"process {proc.args!r} exited with {proc.returncode}; logs in {self.log_dir}"
                )

    # -- catalogue and stock ---------------------------------------------------------------------

    def seed_warehouses(self) -> None:
        seed_warehouses(self.client)

    def pending_count(self) -> int:
        """Commands recorded but not applied yet (scheduled ones, e.g. hold expiries, excluded)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM commands WHERE status = 'recorded'")).scalar_one()
            )

    def wait_drained(self, timeout: float) -> bool:
        """Wait until no command is left recorded-but-unapplied; False on timeout."""
        deadline = time.monotonic() + timeout
        waiting = first = self.pending_count()
        with meter("applying the inbox", total=first) as applied:
            while waiting and time.monotonic() < deadline:
                self.check_alive()
                time.sleep(0.2)
                waiting = self.pending_count()
                applied(max(first - waiting, 0))
        return waiting == 0

    def reconcile(self) -> list[str]:
        """db.reconcile differences (ledger vs balances, reserved vs active hold lines) plus rows that
        break reserved <= on_hand; empty when consistent."""
        from db.reconcile import reconcile

        with self.engine.connect() as conn:
            differences = [str(d) for d in reconcile(conn)]
            bad = conn.execute(
                text(
                    "SELECT count(*) FROM stock_balances WHERE reserved > on_hand OR on_hand < 0 OR reserved < 0"
                )
            ).scalar_one()
        if bad:
            differences.append(f"{bad} balance row(s) with reserved > on_hand or a negative bucket")
        return differences

    def settle(self) -> None:
        """VACUUM ANALYZE, as autovacuum does on a database that has been running.

        Sessions plan a statement (and PostgreSQL each foreign-key check) when they first run it
        and keep the plan until the table's statistics change. On a fresh database the tables are
        empty at that moment, so the plans scan whole tables, slower with each row added during the
        run. After the warm-up has put some history in, this gives both systems the plans of a
        database in service; run the warm-up long enough that the tables are not tiny.
        """
        _run_outside_transaction(self.database_url, "VACUUM ANALYZE")

    def last_batch_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT coalesce(max(id), 0) FROM apply_batches")).scalar_one())

    def batch_stats(self, after_id: int) -> dict[str, Any]:
        """Writer transactions since batch `after_id`: how many, commands per batch, duration.

        `apply_batches` logs a row per shard of a transaction; the rows of one transaction share
        their writer and their start (the claim's clock), and are counted as one batch here."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    """
                    WITH batch AS (
                        SELECT sum(commands) AS commands,
                               extract(epoch FROM max(finished_at) - started_at) * 1000 AS ms
                        FROM apply_batches WHERE id > :after GROUP BY holder, started_at
                    )
                    SELECT count(*), coalesce(sum(commands), 0), avg(commands),
                           percentile_cont(0.5) WITHIN GROUP (ORDER BY commands), max(commands), avg(ms),
                           percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
                    FROM batch
                    """
                ),
                {"after": after_id},
            ).one()
        count, commands, avg, p50, most, avg_ms, p99_ms = row

        def num(value: Any) -> float | None:
            return None if value is None else round(float(value), 2)

        return {
            "batches": int(count),
            "commands": int(commands),
            "commands_per_batch_avg": num(avg),
            "commands_per_batch_p50": num(p50),
            "commands_per_batch_max": None if most is None else int(most),
            "batch_ms_avg": num(avg_ms),
            "batch_ms_p99": num(p99_ms),
        }

    def db_now(self) -> dt.datetime:
        with self.engine.connect() as conn:
            now: dt.datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        return now
