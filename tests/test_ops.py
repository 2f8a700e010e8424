"""Ops' JSON (`/v1/ops/…`) and `tessera status`, over real HTTP and the real CLI against a real
stack: the shards' queues and leases, a product's stock page, dead letters and their requeue; and
the shards view itself where a lease's holder has to die on cue."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from sqlalchemy import Engine, text

from bench.chaos.servers import free_port
from domain.commands import shard_of
from ops.views import shards_view
from producers import StockClient
from tessera.settings import Settings
from tests.conftest import run_cli, settings_env
from tests.stack import SKU, Stack, cure_poison, movements_of, park_poison, until
from workers.lease import LeaseManager

OPS_ROUTES = [
    ("GET", "/v1/ops/shards"),
    ("GET", f"/v1/ops/stock/{SKU}"),
    ("GET", "/v1/ops/dead-letters"),
    ("POST", "/v1/ops/dead-letters/nothing/requeue"),
]


@pytest.mark.parametrize(("method", "path"), OPS_ROUTES)
def test_ops_routes_are_for_ops_tokens_only(stack: Stack, method: str, path: str) -> None:
    missing = stack.call(method, path)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for role in ("checkout", "payments", "warehouse"):
        refused = stack.call(method, path, role)
        assert refused.status_code == 403, (role, refused.text)
        assert refused.json()["code"] == "forbidden"


def _hold(stack: Stack, key: str) -> dict[str, object]:
    placed = stack.call(
        "POST",
        "/v1/holds?wait=10",
        "checkout",
        headers={"Idempotency-Key": key},
        json={"lines": [{"sku": SKU, "quantity": "1", "unit": "box"}], "ttl_seconds": 600},
    )
    assert placed.status_code == 201, placed.text
    hold: dict[str, object] = placed.json()
    return hold


def test_the_shards_view_shows_who_applied_a_hold_and_its_pace(stack: Stack) -> None:
    _hold(stack, "ops-shards-1")
    view = stack.call("GET", "/v1/ops/shards", "ops")
    assert view.status_code == 200, view.text
    body = view.json()
    row = body["shards"][shard_of(SKU, 4)]
    with stack.engine.connect() as conn:
        applied_by = conn.execute(
            text("SELECT holder FROM apply_batches WHERE shard = :s ORDER BY id DESC LIMIT 1"),
            {"s": row["shard"]},
        ).scalar()
    assert row["holder"] == applied_by  # the worker that holds the lease applied the hold
    assert row["epoch"] >= 1
    assert row["last_batch_at"] is not None
    assert sum(row["per_minute"]) >= 2  # the module's receipt and this hold at least
    assert row["healthy"] and body["unhealthy"] == []
    assert len(body["shards"]) == 4


def test_the_stock_page_shows_lots_open_holds_and_pages_the_ledger(stack: Stack) -> None:
    hold = _hold(stack, "ops-stock-1")
    for i in range(3):
        _hold(stack, f"ops-stock-page-{i}")
    page = stack.call("GET", f"/v1/ops/stock/{SKU}?limit=2", "ops").json()
    assert page["stock"]["sku"] == SKU
    assert page["stock"]["lots"][0]["lot"] == "L1"
    opened = {h["hold_id"]: h for h in page["holds"]}
    assert hold["hold_id"] in opened
    line = opened[hold["hold_id"]]
    assert 0 < line["seconds_left"] <= 600
    assert (line["status"], line["line_status"], line["pieces"], line["reserved"]) == (
        "reserved",
        "reserved",
        "4.000",  # one box of four tiles, all held in L1
        "4.000",
    )
    assert (line["warehouse"], line["lot"]) == ("BUC1", "L1")
    assert len(page["movements"]) == 2 and page["next_before"] is not None
    older = stack.call("GET", f"/v1/ops/stock/{SKU}?limit=2&before={page['next_before']}", "ops").json()
    assert older["movements"][0]["id"] < page["movements"][-1]["id"]
    unknown = stack.call("GET", "/v1/ops/stock/NO-SUCH-SKU", "ops")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_sku"
    assert stack.call("GET", f"/v1/ops/stock/{SKU}?before={2**63}", "ops").status_code == 422
    for nothing in ("/v1/ops/stock/A%00B", "/v1/stock/A%00B"):  # no text in PostgreSQL holds a NUL
        refused = stack.call("GET", nothing, "ops")
        assert refused.status_code == 422 and refused.json()["field"] == "sku", refused.text

    released = stack.call(
        "POST",
        f"/v1/holds/{hold['hold_id']}/release?wait=10",
        "checkout",
        headers={"Idempotency-Key": "ops-rel-1"},
    )
    assert released.status_code == 200, released.text
    still_open = stack.call("GET", f"/v1/ops/stock/{SKU}", "ops").json()["holds"]
    assert hold["hold_id"] not in {h["hold_id"] for h in still_open}  # a released hold is not open


def test_a_dead_letter_is_listed_and_its_requeue_applies_it_once(stack: Stack) -> None:
    park_poison(stack, "ops-poison-1")
    listed = stack.call("GET", "/v1/ops/dead-letters", "ops").json()
    parked = next(d for d in listed if d["key"] == "ops-poison-1")
    assert parked["kind"] == "stock.receive" and parked["sku"] == SKU
    assert "POISON" in parked["error"] and parked["attempts"] >= 1
    assert parked["first_failed_at"] and parked["last_failed_at"]
    cure_poison(stack)
    requeued = stack.call("POST", "/v1/ops/dead-letters/ops-poison-1/requeue", "ops")
    assert requeued.status_code == 200, requeued.text
    assert requeued.json() == {"key": "ops-poison-1", "shard": shard_of(SKU, 4)}
    until(lambda: movements_of(stack, "ops-poison-1") == 1, what="the requeued receipt applied")
    again = stack.call("POST", "/v1/ops/dead-letters/ops-poison-1/requeue", "ops")
    assert again.status_code == 409 and again.json()["code"] == "not_dead"
    unknown = stack.call("POST", "/v1/ops/dead-letters/no-such-key/requeue", "ops")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_command"
    assert stack.call("POST", "/v1/ops/dead-letters/no%00key/requeue", "ops").status_code == 422
    assert movements_of(stack, "ops-poison-1") == 1
    assert all(d["key"] != "ops-poison-1" for d in stack.call("GET", "/v1/ops/dead-letters", "ops").json())


def test_status_is_a_probe_late_work_with_no_worker_exits_1(stack: Stack) -> None:
    healthy = run_cli(stack.env, "status", "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert len(json.loads(healthy.stdout)["shards"]) == 4
    table = run_cli(stack.env, "status")
    assert table.returncode == 0 and "lease holder" in table.stdout

    worker = next(p for p in stack.processes.procs if p.args[3] == "worker")  # type: ignore[index]
    stack.processes.stop(worker)
    try:
        sent = stack.call(
            "POST",
            "/v1/receipts",
            "warehouse",
            headers={"Idempotency-Key": "ops-waiting-1"},
            json={"warehouse": "BUC1", "sku": SKU, "quantity": "1", "unit": "piece", "lot": "L1"},
        )
        assert sent.status_code == 202
        shard = shard_of(SKU, 4)

        def unhealthy() -> bool:
            rows = stack.call("GET", "/v1/ops/shards", "ops").json()
            return shard in rows["unhealthy"] and rows["shards"][shard]["oldest_age_seconds"] > 0.5

        until(unhealthy, what="the shard shown unhealthy (work waiting, no lease)")
        late = run_cli(stack.env, "status", "--max-age", "0.5")
        assert late.returncode == 1, late.stdout
        assert f"[{shard}]" in late.stdout  # named as late
        patient = run_cli(stack.env, "status", "--max-age", "3600")
        assert patient.returncode == 0
    finally:
        stack.processes.worker()
    until(lambda: movements_of(stack, "ops-waiting-1") == 1, what="the waiting receipt applied")
    assert run_cli(stack.env, "status", "--max-age", "0.5").returncode == 0


def test_a_lease_left_by_a_dead_worker_shows_its_waiting_shard_red_before_the_lease_expires(
    catalog: StockClient, engine: Engine, settings: Settings, assert_consistent
) -> None:
    """A worker killed outright leaves its lease in Redis until the TTL (here ten minutes); the view
    asks whether the holder's Redis connection is still open, as a standby does before taking over."""
    shard = shard_of(SKU, settings.shards)
    redis = Redis.from_url(settings.redis_url)
    doomed = Redis.from_url(settings.redis_url)  # the dying worker's connections
    assert LeaseManager(doomed, settings.redis_namespace, "doomed", ttl_seconds=600).acquire(shard, 0)
    catalog.receive(idempotency_key="waits", warehouse="BUC1", sku=SKU, quantity="1", lot="L1")

    row = shards_view(engine, redis, settings).shards[shard]
    assert (row.holder, row.epoch, row.alive, row.pending, row.healthy) == ("doomed", 1, True, 1, True)

    doomed.connection_pool.disconnect()  # as the kernel closes a killed process's sockets
    until(lambda: not shards_view(engine, redis, settings).shards[shard].alive, what="the holder seen gone")
    view = shards_view(engine, redis, settings)
    assert (view.shards[shard].holder, view.shards[shard].healthy) == (
        "doomed",
        False,
    )  # the lease is still there
    assert view.unhealthy == [shard]
    assert all(row.alive is False and row.healthy for row in view.shards if row.shard != shard)
    assert_consistent()


def test_status_out_of_reach_of_its_servers_exits_2_with_a_reason(settings: Settings) -> None:
    closed = free_port()  # nobody listens there
    env = {
        **settings_env(settings),
        "TESSERA_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{closed}/tessera",
        "TESSERA_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
    }
    done = run_cli(env, "status")
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        done.stderr.startswith("tessera status: cannot read the shards:") and "Traceback" not in done.stderr
    )
