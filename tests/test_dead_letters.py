"""A poison command in the middle of a shard's inbox is parked; the shard goes on without it.

The worker is stopped while the inbox is filled (good commands, the poison, more good commands, a
hold on the same product), then started: every good command applies, the poison is tried
TESSERA_MAX_ATTEMPTS times and parked as a dead letter with its error and failure times, its ticket
answers with the error, ops see it in `tessera dead-letters list` and can requeue it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from domain.commands import payload_digest, shard_of
from domain.errors import CommandDead
from producers import StockClient
from producers.client import CommandTicket
from tessera.settings import Settings
from tests.conftest import Processes, run_cli, settings_env
from tests.flow import wait_all_applied
from tests.test_holds import SKU, hold_of

MAX_ATTEMPTS = "3"


def _receive(client: StockClient, key: str, pieces: str, lot: str = "L1") -> CommandTicket:
    return client.receive(idempotency_key=key, warehouse="BUC1", sku=SKU, quantity=pieces, lot=lot)


def _unparseable_receipt(client: StockClient, engine: Engine) -> str:
    """A receipt whose payload lacks what its writer needs (as from a release that wrote it otherwise)."""
    key = "poison-unparseable"
    with engine.begin() as conn:
        product_id = conn.execute(text("SELECT id FROM products WHERE sku = :s"), {"s": SKU}).scalar_one()
        payload = {"product_id": product_id, "lot": "L1"}
        conn.execute(
            text(
                "INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status) "
                "VALUES (:k, 'stock.receive', CAST(:p AS jsonb), :h, :s, 'recorded')"
            ),
            {
                "k": key,
                "p": json.dumps(payload),
                "h": payload_digest("stock.receive", payload),
                "s": shard_of(SKU, client.settings.shards),
            },
        )
    return key


def _refused_write(client: StockClient, engine: Engine) -> str:
    """A receipt whose ledger row the database refuses (a trigger stands in for a violated constraint)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'a ledger row of 13 pieces is refused'; END $$;
                CREATE TRIGGER refuse_13 BEFORE INSERT ON movements FOR EACH ROW
                    WHEN (NEW.d_on_hand = 13) EXECUTE FUNCTION refuse_13();
                """
            )
        )
    _receive(client, "poison-refused-write", "13")
    return "poison-refused-write"


def _failing_lookup(client: StockClient, engine: Engine) -> str:
    """A receipt into a new lot whose creation fails until ops fix the cause (then it is requeued)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                CREATE FUNCTION refuse_lot() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'lot POISON cannot be created'; END $$;
                CREATE TRIGGER refuse_lot BEFORE INSERT ON lots FOR EACH ROW
                    WHEN (NEW.lot_code = 'POISON') EXECUTE FUNCTION refuse_lot();
                """
            )
        )
    _receive(client, "poison-failing-lookup", "5", lot="POISON")
    return "poison-failing-lookup"


POISONS: dict[str, Callable[[StockClient, Engine], str]] = {
    "unparseable-payload": _unparseable_receipt,
    "refused-write": _refused_write,
    "failing-lookup": _failing_lookup,
}


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings_env(settings), *args)


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_command_is_parked_and_every_command_after_it_applies(
    poison: str,
    catalog: StockClient,
    processes: Processes,
    engine: Engine,
    settings: Settings,
    assert_consistent,
) -> None:
    first = processes.worker(name="first", TESSERA_MAX_ATTEMPTS=MAX_ATTEMPTS)
    _receive(catalog, "before-the-worker-stops", "10").wait(timeout=15)
    processes.stop(first)
    before = _receive(catalog, "before-the-poison", "1")
    key = POISONS[poison](catalog, engine)
    after = _receive(catalog, "after-the-poison", "2")
    hold = hold_of(catalog, [{"sku": SKU, "quantity": "12", "unit": "piece"}])

    worker = processes.worker(name="second", TESSERA_MAX_ATTEMPTS=MAX_ATTEMPTS)
    processes.start("scheduler")

    assert before.wait(timeout=30)["outcome"] == "received"
    assert after.wait(timeout=30)["outcome"] == "received"
    assert hold.wait(timeout=30).status == "reserved"  # 10 + 1 + 2 on hand: the poison's pieces never came
    with pytest.raises(CommandDead) as dead:
        CommandTicket(catalog, key).wait(timeout=30)
    assert dead.value.attempts == int(MAX_ATTEMPTS)
    wait_all_applied(engine)
    assert catalog.stock(SKU).on_hand == 13

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, attempts, last_error, first_failed_at, last_failed_at, result "
                "FROM commands WHERE idempotency_key = :k"
            ),
            {"k": key},
        ).one()
        events = conn.execute(text("SELECT payload FROM outbox WHERE topic = 'command.dead'")).scalars().all()
    assert (row.status, row.attempts, row.result["outcome"]) == ("dead", int(MAX_ATTEMPTS), "dead")
    assert row.last_error and row.first_failed_at < row.last_failed_at
    assert [e["key"] for e in events] == [key]

    listed = json.loads(_cli(settings, "dead-letters", "list", "--json").stdout)
    assert [(d["key"], d["sku"], d["attempts"]) for d in listed] == [(key, SKU, int(MAX_ATTEMPTS))]
    assert listed[0]["error"] == row.last_error
    processes.stop(worker)
    log = processes.log_of(worker).read_text()
    assert any(
        json.loads(line).get("event") == "command.dead" and json.loads(line).get("level") == "error"
        for line in log.splitlines()
        if line.startswith("{")
    ), "no error-level log line for the parked command"
    assert_consistent()


def test_a_requeued_dead_letter_is_applied_once_when_its_cause_is_fixed(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings, assert_consistent
) -> None:
    processes.worker(TESSERA_MAX_ATTEMPTS=MAX_ATTEMPTS)
    processes.start("scheduler")
    key = _failing_lookup(catalog, engine)
    with pytest.raises(CommandDead):
        CommandTicket(catalog, key).wait(timeout=30)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_lot ON lots"))

    requeued = _cli(settings, "dead-letters", "requeue", key)
    assert requeued.returncode == 0, requeued.stderr
    assert _cli(settings, "dead-letters", "requeue", key).returncode == 1  # nothing left to requeue

    assert CommandTicket(catalog, key).wait(timeout=30)["outcome"] == "received"
    wait_all_applied(engine)
    assert catalog.stock(SKU).on_hand == 5
    assert json.loads(_cli(settings, "dead-letters", "list", "--json").stdout) == []
    with engine.connect() as conn:
        receipts = conn.execute(text("SELECT count(*) FROM movements WHERE kind = 'receipt'")).scalar_one()
    assert receipts == 1
    assert_consistent()


def test_a_dead_line_reservation_answers_its_hold_instead_of_leaving_the_checkout_waiting(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    """A cart line whose reservation cannot be applied is refused with the error, so the cart is
    decided (rejected, its other line given back) rather than pending for ever."""
    other = "WALL-20x50-WHITE"
    first = processes.worker(name="first", TESSERA_MAX_ATTEMPTS=MAX_ATTEMPTS)
    _receive(catalog, "grey", "10").wait(timeout=15)
    catalog.receive(idempotency_key="wall", warehouse="BUC1", sku=other, quantity="10", lot="W1").wait(
        timeout=15
    )
    processes.stop(first)
    ticket = hold_of(
        catalog,
        [{"sku": other, "quantity": "2", "unit": "piece"}, {"sku": SKU, "quantity": "2", "unit": "piece"}],
    )
    with engine.begin() as conn:  # the grey line's command now names no product its writer can load
        conn.execute(
            text(
                """UPDATE commands SET payload = jsonb_set(payload, '{product_id}', '"x"') """
                "WHERE idempotency_key = :k"
            ),
            {"k": f"line.reserve:{ticket.hold_id}:2"},
        )
    processes.worker(name="second", TESSERA_MAX_ATTEMPTS=MAX_ATTEMPTS)

    answer = ticket.wait(timeout=30)

    assert answer.status == "rejected"
    assert [(line.sku, line.status) for line in answer.lines] == [(other, "released"), (SKU, "rejected")]
    assert (answer.lines[1].reason or "").startswith("could not be applied: KeyError")
    wait_all_applied(engine)
    assert catalog.stock(other).reserved == 0
    assert_consistent()
