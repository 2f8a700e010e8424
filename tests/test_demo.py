"""`tessera demo` runs the whole story with no servers: embedded PostgreSQL and fakeredis."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import ROOT


def test_the_demo_plays_checkout_payment_expiry_and_rejection_with_no_servers() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "demo"],
        cwd=ROOT,
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
