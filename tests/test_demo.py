"""`tessera demo` runs the whole story with no servers: embedded PostgreSQL and fakeredis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from bench.chaos.servers import free_port
from tests.conftest import ROOT
from tests.stack import until

# The system's servers out of reach: the demo must not need them.
NO_SERVERS = {
    **os.environ,
    "TESSERA_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
    "TESSERA_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
}


def test_the_demo_plays_checkout_payment_expiry_and_rejection_with_no_servers() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "demo", "--no-serve"],
        cwd=ROOT,
        env=NO_SERVERS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    assert "embedded PostgreSQL (pgserver)" in out
    assert "in-memory fakeredis" in out
    assert "rounded up to whole boxes: 9 boxes = 36 pieces = 12.96 m²" in out
    assert "reserved, 36 pieces from lot L2311" in out
    assert "stock GRS-60x60-GREY: on_hand 560, reserved 36, available 524" in out
    assert "confirmed → hold" in out
    assert "stock GRS-60x60-GREY: on_hand 524, reserved 0, available 524" in out
    assert "same recorded result (confirmed), on_hand still 524" in out
    assert "expired" in out
    assert "stock WALL-20x50-WHITE: on_hand 600, reserved 0, available 600" in out
    assert (
        "rejected: no single lot holds 330 pieces; 385 available in all, largest lot M2401 in BUC1 has 220"
        in out
    )
    assert "reconcile: clean" in out
    assert "demo finished" in out
    assert "Traceback" not in done.stderr
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"


def test_the_demo_then_serves_the_api_and_dashboard_until_interrupted() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-u", "-m", "ops.cli", "demo", "--port", str(port)],
        cwd=ROOT,
        env=NO_SERVERS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        assert demo.stdout is not None
        while not any(line.startswith("  ops token") for line in lines):
            line = demo.stdout.readline()
            assert line, "the demo ended before serving:\n" + "".join(lines)
            lines.append(line)
        token = lines[-1].split()[-1]
        assert any(f"http://127.0.0.1:{port}/dashboard#token={token}" in line for line in lines)
        url = f"http://127.0.0.1:{port}"
        until(lambda: _answers(f"{url}/healthz"), what="the demo's API up")
        page = httpx.get(f"{url}/dashboard", timeout=10)
        assert page.status_code == 200 and "Tessera" in page.text
        shards = httpx.get(f"{url}/v1/ops/shards", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert shards.status_code == 200
        assert {row["holder"] for row in shards.json()["shards"]} == {"demo-worker"}
        stock = httpx.get(
            f"{url}/v1/ops/stock/GRS-60x60-GREY", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert stock.json()["stock"]["on_hand"] == "524.000"  # where the story left it
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, rest
    assert "stopped serving" in rest and "demo finished" in rest


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
