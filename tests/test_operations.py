"""Operating Tessera: PostgreSQL dropping the writer's connections mid-flow, and `tessera reconcile`."""

from __future__ import annotations

import itertools
import subprocess
import sys

from sqlalchemy import Engine, text

from db.reconcile import EVERY_PRODUCT, product_ranges, reconcile
from producers import StockClient
from tessera.settings import Settings
from tests.conftest import ROOT, Processes, cut_sessions, settings_env
from tests.flow import assert_applied_exactly_once, flow, stock_up, wait_all_applied


def test_the_writer_retries_in_place_when_postgres_drops_its_connections(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings, assert_consistent
) -> None:
    processes.worker(name="steady")
    stock_up(catalog)

    def drop_worker_connections() -> None:
        # What a PostgreSQL restart does to the worker: every one of its sessions is cut.
        assert cut_sessions(settings.database_url, "tessera-worker %") > 0

    keys = flow(catalog, 600, at_half=drop_worker_connections)
    wait_all_applied(engine)

    assert_applied_exactly_once(engine, keys)
    assert_consistent()


def _reconcile(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "reconcile"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_reconcile_is_clean_then_reports_a_balance_that_disagrees_with_its_ledger(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings
) -> None:
    processes.worker()
    catalog.receive(
        idempotency_key="rcv-1", warehouse="BUC1", sku="GRS-60x60-GREY", quantity="10", unit="box", lot="L1"
    ).wait(timeout=15)
    clean = _reconcile(settings)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean" in clean.stdout

    with engine.begin() as conn:  # a write that bypassed the writer and the ledger
        conn.execute(text("UPDATE stock_balances SET on_hand = on_hand - 3"))
    broken = _reconcile(settings)
    assert broken.returncode == 1
    assert "GRS-60x60-GREY @ BUC1 lot L1: on_hand balance 37" in broken.stdout
    assert "ledger 40" in broken.stdout


def test_reconcile_reports_stock_still_held_by_a_hold_that_ended_with_nothing_on_its_way_to_free_it(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings
) -> None:
    processes.worker()
    catalog.receive(
        idempotency_key="rcv-1", warehouse="BUC1", sku="GRS-60x60-GREY", quantity="10", lot="L1"
    ).wait(timeout=15)
    hold = catalog.reserve(
        idempotency_key="cart-1", lines=[{"sku": "GRS-60x60-GREY", "quantity": "4", "unit": "piece"}]
    ).wait(timeout=15)
    assert _reconcile(settings).returncode == 0

    with engine.begin() as conn:  # the hold ended, and the release of its line was lost
        conn.execute(text("UPDATE holds SET status = 'released' WHERE id = :h"), {"h": hold.hold_id})
    broken = _reconcile(settings)

    assert broken.returncode == 1
    assert (
        f"GRS-60x60-GREY @ BUC1 lot L1: 4.000 pieces reserved for hold {hold.hold_id} (released)"
        in broken.stdout
    )


def test_reconcile_holds_in_transit_to_the_open_transfers_and_quarantine_to_the_quarantined_lines(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings
) -> None:
    processes.worker()
    sku = "GRS-60x60-GREY"
    catalog.receive_goods(
        idempotency_key="rcv-q",
        lines=[
            {"warehouse": "BUC1", "sku": sku, "quantity": "10", "lot": "L1"},
            {"warehouse": "BUC1", "sku": sku, "quantity": "6", "lot": "L1", "quarantine": True},
        ],
    ).wait(timeout=15)
    catalog.transfer(
        idempotency_key="tr-1", from_warehouse="BUC1", to_warehouse="CLJ1", sku=sku, lot="L1", quantity="4"
    ).wait(timeout=15)
    clean = _reconcile(settings)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # Ledger and balances still agree, but no transfer explains what is on its way any more, and the
    # quarantined line says less is held than the balance does.
    with engine.begin() as conn:
        conn.execute(text("UPDATE transfers SET status = 'cancelled'"))
        conn.execute(text("UPDATE quarantines SET released = 2"))
    broken = _reconcile(settings)

    assert broken.returncode == 1
    assert (
        f"{sku} @ CLJ1 lot L1: in_transit_vs_transfers balance 4.000 ≠ transfers in transit 0"
        in broken.stdout
    )
    assert (
        f"{sku} @ BUC1 lot L1: quarantine_vs_lines balance 6.000 ≠ quarantined lines 4.000" in broken.stdout
    )


def test_reconcile_range_by_range_finds_what_one_pass_finds(
    catalog: StockClient, processes: Processes, engine: Engine
) -> None:
    """`tessera reconcile` checks the products a range at a time (for its progress bar): the
    ranges cover every product, and find the same differences, in the same order, as one pass."""
    processes.worker()
    for sku in ("GRS-60x60-GREY", "WALL-20x50-WHITE", "MOSAIC-30"):
        catalog.receive(
            idempotency_key=f"rcv-{sku}", warehouse="BUC1", sku=sku, quantity="10", lot="L1"
        ).wait(timeout=15)
    hold = catalog.reserve(
        idempotency_key="cart-1", lines=[{"sku": "MOSAIC-30", "quantity": "4", "unit": "piece"}]
    ).wait(timeout=15)
    with engine.begin() as conn:  # two products broken two ways
        conn.execute(text("UPDATE holds SET status = 'released' WHERE id = :h"), {"h": hold.hold_id})
        conn.execute(
            text(
                "UPDATE stock_balances SET on_hand = on_hand + 1 "
                "WHERE product_id = (SELECT id FROM products WHERE sku = 'GRS-60x60-GREY')"
            )
        )

    with engine.connect() as conn:
        ranges = product_ranges(conn, size=1)
        one_pass, by_range = reconcile(conn), reconcile(conn, ranges)
        products = conn.execute(text("SELECT count(*) FROM products")).scalar_one()
    assert [r.count for r in ranges] == [1] * products
    assert ranges[0].first == EVERY_PRODUCT.first and ranges[-1].last == EVERY_PRODUCT.last
    assert all(later.first == earlier.last + 1 for earlier, later in itertools.pairwise(ranges))
    assert {d.bucket for d in one_pass} == {"on_hand", "held_by_ended_hold"}
    assert by_range == one_pass
