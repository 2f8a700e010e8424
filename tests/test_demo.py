"""`tessera demo` runs the whole story with no servers: embedded PostgreSQL and fakeredis."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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
    assert "received in CLJ1, 48 good, 2 damaged" in out
    assert "count of W2309 in BUC1: 598 found, a count_adjustment of -2 pieces" in out
    assert "lot W2405 in CLJ1: on_hand 50, in transit 0, damaged 2, available 48" in out
    assert "reconcile: clean" in out
    assert "demo finished" in out
    assert "Traceback" not in done.stderr
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"


def test_the_demo_then_serves_the_api_and_dashboard_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    demo, output = _start_demo(tmp_path, "--port", str(port))
    try:
        told = _wait_for(demo, output, "  ops token ", timeout=90)
        token = told.split("  ops token ", 1)[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        assert f"  dashboard {url}/dashboard#token={token}" in told
        until(lambda: _answers(f"{url}/healthz"), what="the demo's API up")
        page = httpx.get(f"{url}/dashboard", timeout=10)
        assert page.status_code == 200 and "Tessera" in page.text
        ops = {"Authorization": f"Bearer {token}"}
        shards = httpx.get(f"{url}/v1/ops/shards", headers=ops, timeout=10)
        assert shards.status_code == 200
        assert {row["holder"] for row in shards.json()["shards"]} == {"demo-worker"}
        stock = httpx.get(f"{url}/v1/ops/stock/GRS-60x60-GREY", headers=ops, timeout=10)
        assert stock.json()["stock"]["on_hand"] == "524.000"  # where the story left it
        metrics = httpx.get(f"{url}/metrics", timeout=10).text  # the worker's counters, served by the API
        assert 'tessera_commands_applied_total{kind="line.reserve",outcome="reserved"}' in metrics
        assert 'tessera_holds{status="confirmed"} 1.0' in metrics
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        _kill(demo)
    told = output.read_text()
    assert demo.returncode == 0, told
    assert "stopped serving" in told and "demo finished" in told
    assert "Traceback" not in told
    _assert_all_stopped(told, port)


def test_a_demo_interrupted_during_its_story_stops_everything_it_started(tmp_path: Path) -> None:
    port = free_port()
    demo, output = _start_demo(tmp_path, "--port", str(port))
    try:
        _wait_for(demo, output, "1. A small tile catalogue", timeout=90)
        demo.send_signal(signal.SIGTERM)  # as `docker stop` or systemd would
        demo.wait(timeout=60)
    finally:
        _kill(demo)
    told = output.read_text()
    assert demo.returncode == 130, told
    assert "demo interrupted" in told and "Traceback" not in told
    _assert_all_stopped(told, port)


def test_a_busy_port_is_refused_before_the_story(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", "demo", "--port", str(port)],
            cwd=ROOT,
            env=NO_SERVERS,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"demo FAILED: cannot serve on 127.0.0.1:{port}" in done.stdout
    assert "postgres" not in done.stdout  # nothing was started


def _start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`tessera demo ARGS`, its output (stdout and stderr) going to a file the test can poll."""
    output = tmp_path / "demo.out"
    with open(output, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "demo", *args],
            cwd=ROOT,
            env=NO_SERVERS,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return demo, output


def _wait_for(demo: subprocess.Popen[bytes], output: Path, text: str, timeout: float) -> str:
    """The demo's output, once it holds `text`; fails at once if the demo has ended."""
    until(
        lambda: text in output.read_text() or demo.poll() is not None,
        timeout=timeout,
        what=f"the demo to print {text!r}",
    )
    told = output.read_text()
    assert text in told, f"the demo ended (exit {demo.returncode}) before printing {text!r}:\n{told}"
    return told


def _assert_all_stopped(told: str, port: int) -> None:
    """The embedded PostgreSQL is gone with its directory, and nothing listens on the port."""
    workdir = re.search(r"on a socket in (\S+), up in", told)
    assert workdir is not None, told
    assert not Path(workdir[1]).exists()
    assert not [cmd for cmd in _command_lines() if workdir[1] in cmd]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def _command_lines() -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def _kill(demo: subprocess.Popen[bytes]) -> None:
    if demo.poll() is None:
        demo.kill()
        demo.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
