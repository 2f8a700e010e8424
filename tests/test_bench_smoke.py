"""Each benchmark runs end to end at a tiny size and writes its results file with the expected fields.

Nothing here asserts a speed: only that the benches run, clean up, and report what they promise
(and the correctness checks they make: no oversell, a clean reconcile, no expiry missed or early).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.profile import summarise
from tests.conftest import PG_ADMIN_URL, REDIS_URL, ROOT

MACHINE_FIELDS = {"cpu_count", "postgresql_version", "redis_version", "git", "timestamp"}
LATENCY_FIELDS = {"count", "p50_ms", "p95_ms", "p99_ms", "max_ms"}


def run_bench(name: str, tmp_path: Path, *flags: str, timeout: float = 120) -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            f"bench.{name}",
            "--results-dir",
            str(tmp_path),
            "--pg-admin-url",
            PG_ADMIN_URL,
            "--redis-url",
            REDIS_URL,
            "--log-level",
            "WARNING",
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["bench"] == name
    assert set(data["machine"]) >= MACHINE_FIELDS
    assert data["machine"]["cpu_count"] >= 1
    assert "PostgreSQL" in data["machine"]["postgresql_version"]
    assert data["machine"]["redis_version"]
    assert isinstance(data["parameters"], dict)
    return data


@pytest.mark.timeout(180)
def test_flash_sale_smoke(tmp_path: Path) -> None:
    data = run_bench(
        "flash_sale",
        tmp_path,
        *("--holds", "120", "--producers", "8", "--warmup", "10", "--backlog", "100"),
        *("--limited-stock", "20", "--limited-holds", "30", "--limited-pieces", "3"),
    )
    assert {"tessera_holds_per_s", "seed_holds_per_s", "ratio", "holds", "producers"} <= set(data)
    assert data["holds"] == 120 and data["producers"] == 8
    assert data["tessera_holds_per_s"] > 0 and data["seed_holds_per_s"] > 0 and data["ratio"] > 0
    assert data["all_reserved"] is True
    phases = data["tessera_runs"][0]["phases"]
    assert list(phases) == [
        "waiting_for_the_recorder",
        "recording",
        "ticket_to_claim",
        "claim_to_applied",
        "applied_to_answer",
    ]
    assert all(phase["count"] == 120 for phase in phases.values())
    assert data["tessera_backlog"]["drained"] is True
    limited = data["limited_stock"]
    assert limited["tessera_reserved"] == 6 and limited["seed_reserved"] == 6
    assert limited["oversell_tessera"] == 0 and limited["oversell_seed"] == 0
    assert limited["reconcile_clean"] is True


@pytest.mark.timeout(180)
def test_catalog_smoke(tmp_path: Path) -> None:
    data = run_bench(
        "catalog",
        tmp_path,
        *("--shard-counts", "2", "--worker-counts", "1,2", "--distributions", "zipf"),
        *("--products", "30", "--producers", "8", "--seconds", "2", "--warmup-seconds", "0.5"),
        *("--backlog", "200"),
    )
    runs = data["runs"]
    assert [(r["shards"], r["workers"]) for r in runs] == [(2, 1), (2, 2)]
    for run in runs:
        assert run["distribution"] == "zipf"
        assert run["applied"] > 0 and run["applied_per_s"] > 0
        assert set(run["latency_producer_sent"]) >= LATENCY_FIELDS
        assert run["drained_after"] is True
        drain = run["drain"]
        # 200 sends: holds of 1-3 lines (a command per line), payments and releases
        assert drain["drained"] is True and drain["backlog"] >= 200
        assert drain["drained_per_s"] > 0 and drain["applied"] >= drain["backlog"]
        assert drain["writer_batches"]["commands"] == drain["applied"]
    assert data["reconcile_clean"] is True


@pytest.mark.timeout(180)
def test_latency_smoke(tmp_path: Path) -> None:
    data = run_bench(
        "latency",
        tmp_path,
        *("--rates", "40", "--seconds", "2", "--warmup-seconds", "0.5", "--products", "30", "--senders", "8"),
    )
    (run,) = data["runs"]
    assert run["rate"] == 40 and run["scheduled"] == 80
    assert run["sent"] + run["dropped_generator_behind"] + sum(run["problems"].values()) == 80
    assert set(run["latency"]) >= LATENCY_FIELDS
    assert run["latency"]["count"] > 0
    assert run["unapplied_after_drain"] == 0
    assert data["reconcile_clean"] is True


@pytest.mark.timeout(180)
def test_expiry_smoke(tmp_path: Path) -> None:
    data = run_bench(
        "expiry",
        tmp_path,
        *("--holds", "150", "--short", "20", "--ten-second", "5", "--short-max-ttl", "11"),
        *("--products", "30", "--producers", "8", "--tail", "3", "--shards", "4"),
    )
    assert data["due_during_run"] == 20
    assert data["due_not_expired"] == 0 and data["expired_early"] == 0
    for field in ("lateness_hold_expired", "lateness_stock_returned", "lateness_ten_second_holds"):
        assert set(data[field]) >= LATENCY_FIELDS
    assert data["lateness_ten_second_holds"]["count"] == 5
    memory = data["memory"]
    assert memory["worker_rss_kb"]["peak"] > 0 and memory["redis_used_memory"]["peak"] > 0
    assert data["samples"]
    assert data["reconcile_clean"] is True


def test_a_profile_is_summed_up_per_function_in_it_and_under_it() -> None:
    collapsed = (
        "run (threading.py:982);drain (workers/writer.py:410);claim (db/repository.py:171) 6\n"
        "run (threading.py:982);drain (workers/writer.py:412);save (db/repository.py:694) 3\n"
        "run (threading.py:982);announce (workers/runtime.py:160) 1\n"
    )
    summary = summarise(collapsed, top=3)
    assert summary["samples"] == 10
    assert summary["self"][0] == {"function": "claim (db/repository.py)", "percent": 60.0}
    assert summary["total"][0] == {"function": "drain (workers/writer.py)", "percent": 90.0}  # two lines
    assert all("threading.py" not in row["function"] for row in summary["total"])
