"""The chaos soak (`python -m bench.chaos`, package `bench/chaos/`), short: every fault kind once while checkouts and the
warehouse's operations run, and every check passes (nothing lost or applied twice, no early expiry, in-time payments and releases honoured, late
ones expire the hold first, no oversell, reconcile clean, no dead letters).

The soak starts servers of its own (a PostgreSQL from pgserver's binaries, a redis-server), so it
uses neither of the shared ones; it needs `redis-server` on the PATH. About 40 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import FAULT_KINDS
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on the PATH")


def run_soak(results_dir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--seconds",
            "25",
            "--seed",
            "7",
            "--results-dir",
            str(results_dir),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    path = results_dir / "chaos.json"
    assert path.exists(), completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed, json.loads(path.read_text())


@pytest.mark.timeout(180)
def test_chaos_soak_passes_every_check_under_every_fault(tmp_path: Path) -> None:
    completed, data = run_soak(tmp_path)

    failed = {c["name"]: c["detail"] for c in data["checks"] if not c["passed"]}
    assert not failed, f"{failed}\n{completed.stdout[-4000:]}"
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert data["passed"] and data["drain"]["drained"]
    # The warehouse's thread ran each of its operations under the same faults.
    assert {
        "stock.transfer",
        "stock.transfer_receive",
        "stock.count",
        "stock.adjust",
        "stock.damage",
        "stock.receive",
        "stock.quarantine_release",
    } <= set(data["warehouse_operations"]), data["warehouse_operations"]

    faults = data["faults"]
    assert Counter(f["kind"] for f in faults if f["verified"]).keys() == set(FAULT_KINDS)
    for fault in faults:
        assert fault["started"] <= fault["ended"], fault
        assert fault["recovery_s"] is not None, f"no recovery measured after {fault}"

    acknowledged = data["acknowledged"]
    for kind in ("hold.place", "paid", "release", "probe", "stock.receive"):
        assert acknowledged[kind]["acknowledged"] > 0, kind
    timed = [row for row in data["timing"] if row["kind"] == "paid"]
    assert sum(row["recorded_before"] for row in timed) > 0, "some payments reached the inbox in time"
    assert sum(row["recorded_at_or_after"] for row in timed) > 0, "and some too late"
    assert data["expiry_lateness"]["count"] > 0
