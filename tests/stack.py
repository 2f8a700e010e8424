"""A real stack for HTTP tests: its own database and Redis namespace, `tessera api` and a worker,
one token per role made with the CLI, and goods received."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

from bench.chaos.servers import free_port, wait_up
from producers import StockClient
from tessera.settings import Settings
from tests.conftest import PG_ADMIN_URL, REDIS_URL, Processes, run_cli, seed_catalog, settings_env

SKU = "GRS-60x60-GREY"
SECRETS = "new-secret,old-secret"


@dataclass
class Stack:
    url: str
    tokens: dict[str, str]
    env: dict[str, str]
    engine: Engine
    client: StockClient
    processes: Processes

    def call(self, method: str, path: str, role: str | None = None, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if role:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def cli_out(env: dict[str, str], *args: str) -> str:
    """A `tessera` command's output; it must succeed."""
    done = run_cli(env, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def running_stack(
    admin_engine: Engine, template_db: str, log_dir: Path, redis_url: str = REDIS_URL
) -> Iterator[Stack]:
    """One database, Redis namespace, API and worker (each starts in a second or two)."""
    name = f"tessera_http_{uuid.uuid4().hex[:10]}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    settings = Settings(
        database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
        redis_url=redis_url,
        redis_namespace=f"tt{uuid.uuid4().hex[:10]}",
        shards=4,
        lease_ttl_seconds=2.0,
    )
    engine = create_engine(settings.database_url)
    processes = Processes(settings, log_dir)
    try:
        with StockClient(settings, engine=engine) as client:
            seed_catalog(client)
            yield _start(settings, engine, client, processes)
    finally:
        processes.stop_all()
        engine.dispose()
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _start(settings: Settings, engine: Engine, client: StockClient, processes: Processes) -> Stack:
    env = {**settings_env(settings), "TESSERA_WEBHOOK_SECRET": SECRETS}
    tokens = {
        role: cli_out(env, "token", "create", "--role", role, "--name", f"test {role}").split()[-1]
        for role in ("checkout", "payments", "warehouse", "ops")
    }
    port = free_port()
    processes.start("api", "--port", str(port), env={"TESSERA_WEBHOOK_SECRET": SECRETS})
    processes.worker()
    url = f"http://127.0.0.1:{port}"
    wait_up(url)
    stack = Stack(url, tokens, env, engine, client, processes)
    received = stack.call(
        "POST",
        "/v1/receipts?wait=10",
        "warehouse",
        headers={"Idempotency-Key": "rcv-1"},
        json={"warehouse": "BUC1", "sku": SKU, "quantity": "250", "unit": "box", "lot": "L1", "shade": "A"},
    )
    assert received.status_code == 200, received.text
    assert received.json()["result"]["outcome"] == "received"
    return stack


def until(condition: Callable[[], object], timeout: float = 20.0, what: str = "the condition") -> None:
    """Poll `condition` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.05)


def park_poison(stack: Stack, key: str) -> None:
    """A receipt into lot POISON, whose creation the database refuses until `cure_poison`: the
    worker tries it TESSERA_MAX_ATTEMPTS times and parks it as a dead letter."""
    with stack.engine.begin() as conn:
        conn.execute(
            text(
                """
                CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'lot POISON cannot be created'; END $$;
                CREATE OR REPLACE TRIGGER refuse_poison BEFORE INSERT ON lots FOR EACH ROW
                    WHEN (NEW.lot_code = 'POISON') EXECUTE FUNCTION refuse_poison();
                """
            )
        )
    sent = stack.call(
        "POST",
        "/v1/receipts",
        "warehouse",
        headers={"Idempotency-Key": key},
        json={"warehouse": "BUC1", "sku": SKU, "quantity": "5", "unit": "piece", "lot": "POISON"},
    )
    assert sent.status_code == 202, sent.text

    def parked() -> bool:
        with stack.engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM commands WHERE idempotency_key = :k"), {"k": key})
            return status.scalar() == "dead"

    until(parked, what=f"{key} parked")


def cure_poison(stack: Stack) -> None:
    with stack.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS refuse_poison ON lots"))


def movements_of(stack: Stack, key: str) -> int:
    """How many ledger rows the command recorded under `key` wrote."""
    with stack.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM movements m JOIN commands c ON c.seq = m.command_seq "
                    "WHERE c.idempotency_key = :k"
                ),
                {"k": key},
            ).scalar_one()
        )
