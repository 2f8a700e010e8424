"""The front door when a server stops answering. A Redis that is stopped (SIGSTOP: no error, no
answer) and a PostgreSQL that does not answer (here: the inbox locked) each get a hold request a
bounded answer, the one the rules give: recorded and 202 within its wait, or 503 `not_recorded`
with the key still good for a resend. `/readyz` says which server is not ready within its timeout,
and the books reconcile once the server is back."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text
from starlette.requests import Request

from bench.chaos.servers import OwnRedis
from db.reconcile import reconcile
from producers.http.app import create_app
from producers.http.problems import problem_for
from tessera.settings import Settings
from tests.conftest import cut_sessions
from tests.stack import SKU, Stack, running_stack, until

LINE = {"sku": SKU, "quantity": "2", "unit": "box"}
BOUND_SECONDS = 15.0
"""Far above what the answers take (2-6 s), far below the client's 30 s timeout: what they must
not do is hang."""


def _hold(api: Stack, key: str, wait: float) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    answer = api.call(
        "POST",
        f"/v1/holds?wait={wait:g}",
        "checkout",
        headers={"Idempotency-Key": key},
        json={"lines": [LINE]},
    )
    return answer.status_code, answer.json(), time.monotonic() - started


def _holds_of(api: Stack, key: str) -> int:
    with api.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM holds WHERE idempotency_key = :k"), {"k": key}
            ).scalar_one()
        )


def _books_balance(api: Stack) -> None:
    with api.engine.connect() as conn:
        assert reconcile(conn) == []
        assert (
            conn.execute(text("SELECT count(*) FROM stock_balances WHERE reserved > on_hand")).scalar_one()
            == 0
        )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(tmp_path)
    redis.start()
    yield redis
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGCONT)
    redis.stop()


def test_with_redis_stopped_a_hold_is_recorded_and_answered_202_within_its_wait(
    admin_engine: Engine, template_db: str, tmp_path: Path, own_redis: OwnRedis
) -> None:
    with running_stack(admin_engine, template_db, tmp_path, redis_url=own_redis.url) as api:
        assert _hold(api, "warm", 10)[0] == 201  # the API has read the product: the next is handed over
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            status, placed, took = _hold(api, "redis-stopped", 2)
            started = time.monotonic()
            ready = api.call("GET", "/readyz")
            ready_took = time.monotonic() - started
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        assert status == 202 and placed["status"] == "pending", placed
        assert took < BOUND_SECONDS
        assert _holds_of(api, "redis-stopped") == 1  # recorded in PostgreSQL before the answer
        assert ready.status_code == 503 and ready.json()["redis"] == "timeout", ready.text
        assert ready.json()["postgresql"] == "ok" and ready_took < BOUND_SECONDS
        hold = str(placed["hold_id"])
        until(
            lambda: api.call("GET", f"/v1/holds/{hold}", "checkout").json()["status"] != "pending",
            what="the hold decided once Redis is back",
        )
        assert api.call("GET", f"/v1/holds/{hold}", "checkout").json()["status"] == "reserved"
        assert api.call("GET", "/readyz").status_code == 200
        _books_balance(api)


def test_with_postgresql_not_answering_a_hold_is_503_and_a_resend_finds_it(
    admin_engine: Engine, template_db: str, tmp_path: Path
) -> None:
    with running_stack(admin_engine, template_db, tmp_path) as api:
        assert _hold(api, "warm", 10)[0] == 201
        with api.engine.connect() as locker:  # nothing can be recorded, nor claimed, meanwhile
            locker.execute(text("LOCK TABLE commands IN ACCESS EXCLUSIVE MODE"))
            status, refused, took = _hold(api, "pg-stuck", 1)
            locker.rollback()
        assert (status, refused["code"]) == (503, "not_recorded"), refused
        assert took < BOUND_SECONDS
        # The recording that was on its way when the answer was given went on once the lock was
        # gone: the key's resend finds its hold.
        status, again, _ = _hold(api, "pg-stuck", 10)
        assert status in (200, 201) and again["status"] == "reserved", again
        assert _holds_of(api, "pg-stuck") == 1
        _books_balance(api)


def test_sessions_cut_under_the_api_are_replaced_and_every_request_served(
    admin_engine: Engine, template_db: str, tmp_path: Path
) -> None:
    """What a PostgreSQL restart does to the API's sessions, on this test's database only: the
    requests after it are served as before (a hold's resend under its key gets the one hold)."""
    with running_stack(admin_engine, template_db, tmp_path) as api:
        assert _hold(api, "warm", 10)[0] == 201
        assert api.call("GET", f"/v1/stock/{SKU}", "checkout").status_code == 200
        assert cut_sessions(api.client.settings.database_url, "tessera%") > 0  # the API's and the worker's
        # The API's pool pings a session before handing it out: a cut one is replaced unseen.
        reads = [api.call("GET", f"/v1/stock/{SKU}", "checkout") for _ in range(2)]
        assert [r.status_code for r in reads] == [200, 200], [r.text for r in reads]
        # A hold handed to the writer (whose batch retries in place), then its resend, which the
        # API looks up on its own recording session (cut too: replaced, and the group tried again).
        placed = [_hold(api, "after-cut", 10) for _ in range(2)]
        assert [status for status, _, _ in placed] == [201, 200], placed
        assert placed[0][1]["hold_id"] == placed[1][1]["hold_id"]
        assert _holds_of(api, "after-cut") == 1
        _books_balance(api)


def test_a_transient_database_error_is_503_with_retry_after_and_any_other_a_500() -> None:
    """When PostgreSQL is out of reach (restarting, a session lost past the ping), the answer is
    503 `unavailable` with Retry-After, worth a retry under the same key; a refusal that a retry
    would not cure is a 500, logged with the request id."""
    app = create_app(
        Settings(database_url="postgresql://127.0.0.1:1/none", redis_url="redis://127.0.0.1:1/0")
    )
    scope = {"type": "http", "method": "GET", "path": "/v1/stock/X", "headers": [], "query_string": b""}
    request = Request(scope | {"state": {"request_id": "r-1"}})
    lost = asyncio.run(problem_for(app, request, psycopg.OperationalError("server closed the connection")))
    assert lost.status_code == 503 and lost.headers["retry-after"] == "1"
    assert json.loads(bytes(lost.body))["code"] == "unavailable"
    restarting = asyncio.run(
        problem_for(app, request, psycopg.errors.AdminShutdown("terminating connection"))
    )
    assert restarting.status_code == 503
    refused = asyncio.run(problem_for(app, request, psycopg.errors.UniqueViolation("duplicate key")))
    assert refused.status_code == 500 and "r-1" in json.loads(bytes(refused.body))["detail"]
