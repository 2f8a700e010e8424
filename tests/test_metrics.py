"""Prometheus metrics move as the system works: scraped from a real worker (`--metrics-port`) and a
real two-process API (multi-process mode) during a small run."""

from __future__ import annotations

import re
import signal
import uuid

import httpx
from sqlalchemy import Engine

from bench.chaos.servers import free_port
from producers import StockClient
from tessera.settings import Settings
from tests.conftest import Processes, run_cli, settings_env
from tests.stack import SKU, until


def _scrape(url: str) -> dict[str, float]:
    """`name{labels}` → value, for Tessera's samples."""
    samples = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith("tessera_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _sum(samples: dict[str, float], pattern: str) -> float:
    return sum(v for k, v in samples.items() if re.fullmatch(pattern, k))


def test_worker_and_api_metrics_move_during_a_run(
    catalog: StockClient, processes: Processes, settings: Settings, engine: Engine, assert_consistent
) -> None:
    worker_port, api_port = free_port(), free_port()
    processes.start("worker", "--metrics-port", str(worker_port))
    processes.wait_for_leases(None, None)
    processes.start("api", "--port", str(api_port), "--workers", "2")
    api, worker = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{worker_port}/metrics"
    until(lambda: _up(f"{api}/healthz"), what="the API up")
    token = run_cli(settings_env(settings), "token", "create", "--role", "checkout").stdout.split()[-1]
    catalog.receive(
        idempotency_key="m-rcv", warehouse="BUC1", sku=SKU, quantity="100", unit="box", lot="L1"
    ).wait(15)
    before_worker, before_api = _scrape(worker), _scrape(f"{api}/metrics")

    holds = 6
    for i in range(holds):
        placed = httpx.post(
            f"{api}/v1/holds?wait=10",
            headers={
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": f"m-hold-{i}-{uuid.uuid4().hex[:6]}",
            },
            json={"lines": [{"sku": SKU, "quantity": "1", "unit": "box"}]},
            timeout=30,
        )
        assert placed.status_code == 201, placed.text

    after_api = _scrape(f"{api}/metrics")  # both processes' samples, whichever served this scrape
    posted = r'tessera_http_requests_total\{method="POST",route="/v1/holds",status="201"\}'
    assert _sum(after_api, posted) - _sum(before_api, posted) == holds
    timed = r'tessera_http_request_seconds_count\{method="POST",route="/v1/holds"\}'
    assert _sum(after_api, timed) - _sum(before_api, timed) == holds
    assert _sum(after_api, r'tessera_holds\{status="reserved"\}') == holds  # counted as it is scraped
    assert _sum(after_api, r'tessera_holds\{status="expired"\}') == 0

    def worker_moved() -> bool:
        after = _scrape(worker)
        reserved = r'tessera_commands_applied_total\{kind="line\.reserve",outcome="[a-z_]+"\}'
        return _sum(after, reserved) - _sum(before_worker, reserved) == holds

    until(worker_moved, timeout=20, what="the worker's counters")
    after = _scrape(worker)
    assert not any(k.startswith("tessera_holds{") for k in after)  # the API's to report, once
    assert _sum(after, "tessera_batch_commands_count") > _sum(before_worker, "tessera_batch_commands_count")
    assert _sum(after, "tessera_batch_seconds_count") > _sum(before_worker, "tessera_batch_seconds_count")
    assert (
        _sum(after, "tessera_command_lag_seconds_count")
        >= _sum(before_worker, "tessera_command_lag_seconds_count") + holds
    )
    assert _sum(after, r'tessera_lease_changes_total\{change="acquired"\}') == settings.shards
    assert _sum(after, r"tessera_inbox_pending\{shard=\"\d+\"\}") == 0  # all applied; a gauge per shard
    assert len([k for k in after if k.startswith("tessera_inbox_pending{")]) == settings.shards
    assert_consistent()


def test_lease_changes_and_shard_gauges_follow_the_leases_from_worker_to_worker(
    processes: Processes, settings: Settings
) -> None:
    """A stalled worker's shards expire to a standby (acquired; the stalled one counts them lost and
    stops reporting their gauges); a killed worker's are taken over at once (taken_over)."""
    shards = settings.shards
    first_port, standby_port = free_port(), free_port()
    first = processes.start("worker", "--name", "first", "--metrics-port", str(first_port))
    processes.wait_for_leases(None, "first")
    standby = processes.start("worker", "--name", "standby", "--metrics-port", str(standby_port))
    first_url, standby_url = (f"http://127.0.0.1:{port}/metrics" for port in (first_port, standby_port))
    until(lambda: _gauged_shards(first_url) == shards, what="the first worker's shard gauges")
    until(lambda: _up(standby_url), what="the standby's /metrics")
    assert _gauged_shards(standby_url) == 0

    first.send_signal(signal.SIGSTOP)  # stalled: its connection lives, its leases expire
    try:
        processes.wait_for_leases(None, "standby")
    finally:
        first.send_signal(signal.SIGCONT)
    taken = _scrape(standby_url)
    assert _sum(taken, _change("acquired")) == shards and _sum(taken, _change("taken_over")) == 0
    until(lambda: _gauged_shards(standby_url) == shards, what="the standby's shard gauges")

    def first_let_go() -> bool:
        scraped = _scrape(first_url)
        gone = _sum(scraped, _change("lost")) + _sum(scraped, _change("fenced"))
        return gone == shards and _gauged_shards(first_url) == 0

    until(first_let_go, what="the stalled worker to count its leases lost and drop their gauges")

    standby.kill()  # its Redis connection closes: the first worker need not wait for the TTL
    standby.wait()
    processes.wait_for_leases(None, "first", timeout=5)
    until(lambda: _sum(_scrape(first_url), _change("taken_over")) == shards, what="the takeover counted")


def _change(change: str) -> str:
    return rf'tessera_lease_changes_total\{{change="{change}"\}}'


def _gauged_shards(url: str) -> int:
    return len([k for k in _scrape(url) if k.startswith("tessera_inbox_pending{")])


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
