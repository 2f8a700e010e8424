"""Fixtures: a database of its own and a Redis namespace of its own for every test, real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from db.migrate import upgrade
from db.reconcile import reconcile
from producers import StockClient
from tessera.settings import Settings

if TYPE_CHECKING:
    from tests.stack import Stack

PG_ADMIN_URL = os.environ.get("TESSERA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TESSERA_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[1]


def _db_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def admin_engine() -> Iterator[Engine]:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def template_db(admin_engine: Engine) -> Iterator[str]:
    """A migrated database that each test clones (CREATE DATABASE … TEMPLATE is fast)."""
    name = f"tessera_tpl_{os.getpid()}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade(_db_url(name))
    yield name
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(admin_engine: Engine, template_db: str) -> Iterator[str]:
    name = f"tessera_t_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield _db_url(name)
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_db() -> int:
    """The Redis db number; tests that wipe Redis take a db of their own (see test_recovery)."""
    return int(REDIS_URL.rsplit("/", 1)[1] or 0)


@pytest.fixture
def settings(database_url: str, redis_db: int) -> Iterator[Settings]:
    namespace = f"tt{uuid.uuid4().hex[:10]}"
    s = Settings(
        database_url=database_url,
        redis_url=REDIS_URL.rsplit("/", 1)[0] + f"/{redis_db}",
        redis_namespace=namespace,
        shards=4,
        lease_ttl_seconds=2.0,
        sweep_interval_seconds=0.5,
        sweep_grace_seconds=1.0,
        hold_ttl_seconds=900,
    )
    yield s
    _delete_namespace(s.redis_url, namespace)
    _NAMESPACES.append((s.redis_url, namespace))


# Every namespace the session used, wiped again when it ends: a worker thread or a doorbell timer that
# outlived its test may have written to its namespace after the test's own cleanup.
_NAMESPACES: list[tuple[str, str]] = []


def _delete_namespace(redis_url: str, namespace: str) -> None:
    r = Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{namespace}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="session", autouse=True)
def _wipe_namespaces_at_the_end() -> Iterator[None]:
    yield
    for redis_url, namespace in _NAMESPACES:
        _delete_namespace(redis_url, namespace)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    e = create_engine(settings.database_url, pool_size=16, max_overflow=32)
    yield e
    e.dispose()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[StockClient]:
    with StockClient(settings, engine=engine) as client:
        yield client


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for field, value in settings.model_dump().items():
        env[f"TESSERA_{field.upper()}"] = str(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one `tessera` command (as `python -m ops.cli`) to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Processes:
    """Real `tessera` processes started by a test, stopped (or killed) at its end."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"{args[0]}-{len(self.procs)}.log"
        log = open(path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", *args],
            env={**settings_env(self.settings), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs.append(proc)
        self._logs[proc.pid] = path
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> Path:
        """The file the process writes its output (structlog JSON lines) to."""
        return self._logs[proc.pid]

    def worker(
        self, shards: str | None = None, name: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        args = ["worker"]
        if shards:
            args += ["--shards", shards]
        if name:
            args += ["--name", name]
        proc = self.start(*args, env=env)
        self.wait_for_leases(shards, name)
        return proc

    def wait_for_leases(self, shards: str | None, name: str | None, timeout: float = 20.0) -> None:
        """Block until some worker holds every requested shard (the worker is up and serving)."""
        from workers.process import parse_shards

        wanted = parse_shards(shards, self.settings.shards)
        r = Redis.from_url(self.settings.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holders = [r.get(f"{self.settings.redis_namespace}:lease:{s}") for s in wanted]
            if all(holders) and (
                name is None or all(h and h.decode().startswith(name + "|") for h in holders)
            ):
                return
            time.sleep(0.05)
        raise AssertionError(f"no worker took leases on shards {wanted} within {timeout}s")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """Stop one process the way an operator does (SIGTERM), and wait for it to exit."""
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(settings, tmp_path)
    yield procs
    procs.stop_all()


def check_invariants(engine: Engine) -> None:
    """The invariants checked after every concurrency and fault test: ledger = balances, no bucket
    negative, reserved ≤ on_hand, and what is held, damaged or quarantined within on_hand."""
    with engine.connect() as conn:
        differences = reconcile(conn)
        assert not differences, "\n".join(map(str, differences))
        bad = conn.execute(
            text(
                "SELECT count(*) FROM stock_balances WHERE least(on_hand, reserved, in_transit, damaged, quarantine) < 0 "
                "OR reserved > on_hand OR reserved + damaged + quarantine > on_hand"
            )
        ).scalar()
        assert bad == 0


def cut_sessions(database_url: str, application_name: str = "%") -> int:
    """What a PostgreSQL restart does to a database's sessions (those whose application_name is
    LIKE `application_name`): each is ended. From a session of its own, outside every pool (a
    pooled one could be the very session to cut). Returns how many were ended."""
    killer = create_engine(database_url, poolclass=NullPool)
    try:
        with killer.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND application_name LIKE :name"
                    ),
                    {"name": application_name},
                ).scalar_one()
            )
    finally:
        killer.dispose()


def fingerprint(engine: Engine, tables: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """Row count and a fingerprint of the contents of each table: what a refused request must leave
    as it was."""
    with engine.connect() as conn:
        return {
            table: tuple(
                conn.execute(
                    text(
                        f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
                    )
                ).one()
            )
            for table in tables
        }


@pytest.fixture(scope="module")
def stack(
    admin_engine: Engine, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running stack for the module (API, a worker, a token per role, goods received); its
    invariants are checked when the module is done with it."""
    from tests.stack import running_stack  # tests.stack imports this module

    with running_stack(admin_engine, template_db, tmp_path_factory.mktemp("stack")) as running:
        yield running
        check_invariants(running.engine)


@pytest.fixture
def assert_consistent(engine: Engine) -> Callable[[], None]:
    return lambda: check_invariants(engine)


def seed_catalog(client: StockClient) -> None:
    client.upsert_warehouse(code="BUC1", name="Bucharest", can_ship=True, priority=1)
    client.upsert_warehouse(code="CLJ1", name="Cluj", can_ship=True, priority=2)
    client.upsert_warehouse(code="SHOW", name="Showroom", can_ship=False, priority=9, type="showroom")
    client.upsert_product(sku="GRS-60x60-GREY", name="Grès 60x60 grey", pieces_per_box=4, sqm_per_box="1.44")
    client.upsert_product(
        sku="WALL-20x50-WHITE", name="Wall tile 20x50 white", pieces_per_box=10, sqm_per_box="1.00"
    )
    client.upsert_product(sku="MOSAIC-30", name="Mosaic sheet 30x30", pieces_per_box=11, sqm_per_box="0.99")
    client.upsert_product(sku="GROUT-5KG", name="Grout 5 kg bag")


@pytest.fixture
def catalog(client: StockClient) -> StockClient:
    seed_catalog(client)
    return client
