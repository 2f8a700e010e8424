"""The ops dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
stack: log in with an ops token, see a hold just made and the shard that applied it, requeue a
dead letter with its button, and save a screenshot.

Set TESSERA_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the README's picture.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from domain.commands import shard_of
from tests.stack import SKU, Stack, cure_poison, movements_of, park_poison, until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)


def test_ops_see_a_hold_and_its_shard_and_requeue_a_dead_letter(stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    placed = stack.call(
        "POST",
        "/v1/holds?wait=10",
        "checkout",
        headers={"Idempotency-Key": "dash-hold-1"},
        json={"lines": [{"sku": SKU, "quantity": "3", "unit": "box"}], "ttl_seconds": 900},
    )
    assert placed.status_code == 201, placed.text
    hold_id = placed.json()["hold_id"]
    park_poison(stack, "dash-poison-1")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []  # the console's errors, a refused script or style among them
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        try:
            page.goto(f"{stack.url}/dashboard#token={stack.tokens['ops']}")
            expect(page.locator("#board")).to_be_visible()
            assert "token" not in page.url  # the token left the address bar

            applied_in, applied_by = _batch_of(stack, f"line.reserve:{hold_id}:1")
            assert applied_in == shard_of(SKU, 4)
            shard = page.locator(f"#shards tbody tr[data-shard='{applied_in}']")
            expect(shard.locator("td").nth(1)).to_have_text(applied_by)  # the worker that applied the hold
            expect(shard.locator("td").nth(9)).to_contain_text("ago")  # its last batch
            expect(shard).not_to_have_class("unhealthy")

            page.fill("#sku", SKU)
            page.click("#stock-search button[type=submit]")
            open_hold = page.locator("#holds tbody tr", has_text=hold_id)
            expect(open_hold).to_contain_text("reserved")
            expect(open_hold.locator("td").last).to_contain_text("min")  # time left, of its 15
            expect(page.locator("#lots tbody")).to_contain_text("L1")
            expect(page.locator("#movements tbody")).to_contain_text(hold_id)  # its reservation in the ledger

            dead = page.locator("#dead tbody tr", has_text="dash-poison-1")
            expect(dead).to_be_visible(timeout=10_000)
            expect(dead).to_contain_text("POISON")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if target := os.environ.get("TESSERA_DASHBOARD_SCREENSHOT"):
                page.screenshot(path=target, full_page=True)

            cure_poison(stack)
            dead.locator("button", has_text="Requeue").click()
            until(lambda: movements_of(stack, "dash-poison-1") == 1, what="the requeued receipt applied")
            expect(page.locator("#dead tbody tr", has_text="dash-poison-1")).to_have_count(0, timeout=10_000)
            expect(page.locator("#dead-none")).to_be_visible()
            page.screenshot(path=str(tmp_path / "dashboard-after-requeue.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert errors == []
    assert movements_of(stack, "dash-poison-1") == 1  # applied once, not twice


def _batch_of(stack: Stack, key: str) -> tuple[int, str]:
    """The shard and the worker of the batch that applied the command recorded under `key`."""
    with stack.engine.connect() as conn:
        shard, holder = conn.execute(
            text(
                "SELECT b.shard, b.holder FROM commands c JOIN apply_batches b ON b.id = c.batch_id "
                "WHERE c.idempotency_key = :k"
            ),
            {"k": key},
        ).one()
    return int(shard), str(holder)


def test_the_page_keeps_other_origins_out(stack: Stack) -> None:
    """It holds an ops token: no script, style or frame from elsewhere, and no referrer sent out."""
    headers = stack.call("GET", "/dashboard").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"


def test_a_wrong_token_is_asked_again(stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        try:
            page.goto(f"{stack.url}/dashboard#token={stack.tokens['checkout']}")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#login-error")).not_to_be_empty()
            page.fill("#token", stack.tokens["ops"])
            page.click("#login button[type=submit]")
            expect(page.locator("#board")).to_be_visible()
            expect(page.locator("#shards tbody tr")).to_have_count(4)
        finally:
            browser.close()
