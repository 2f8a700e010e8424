"""A waiting caller's hold handed to its shard's writer (`producers.handover`, `tessera.handover`):
recorded and decided in one transaction; a key sent before, a product changed since the API read
it, no writer at all: the API records the hold itself, and the rules' outcome is the same."""

from __future__ import annotations

import asyncio
import time
import uuid

from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import Engine, text

from domain.commands import shard_of
from domain.errors import IdempotencyConflict
from producers import StockClient
from producers.requests import HoldRequest
from producers.tickets import HoldTicket
from tessera.handover import ROW_FIELDS, HandedHold, HandedHolds
from tessera.settings import Settings
from tests.conftest import Processes
from tests.test_holds import SKU, receive
from workers.writer import BatchReport, ShardWriter

LINE = [{"sku": SKU, "quantity": "1", "unit": "box"}]  # 4 pieces


def _handed(client: StockClient, key: str, lines: list[dict[str, str]], within: float) -> HoldTicket:
    async def reserve() -> HoldTicket:
        try:
            return await client.reserve_async(idempotency_key=key, lines=lines, hand_over_within=within)
        finally:
            # The event loop's own session and Redis client end with this loop.
            await client.recorder.holds.aclose()
            await client.handover.aclose()

    return asyncio.run(reserve())


def _handed_hold(catalog: StockClient, key: str, reply_to: str) -> HandedHold:
    """A one-box hold under `key`, as an API hands it to its shard's writer (deadline in 30 s)."""
    request = HoldRequest.parse(idempotency_key=key, lines=LINE, ttl_seconds=900, mode="all_or_nothing")
    hold_id = str(uuid.uuid4())
    prepared = catalog.recorder.holds.handed_rows(request, hold_id)
    assert prepared is not None and prepared[0] == shard_of(SKU, catalog.settings.shards)
    rows = {field: getattr(prepared[1], field) for field in ROW_FIELDS}
    return HandedHold(hold_id, key, rows, reply_to, time.time() + 30)


def _writer_taking(
    handed: list[HandedHold], catalog: StockClient, engine: Engine, holder: str, announced: list[BatchReport]
) -> ShardWriter:
    """A writer whose first claim takes every hold in `handed`; it announces into `announced`."""
    return ShardWriter(
        engine,
        shards=catalog.settings.shards,
        batch_max=16,
        holder=holder,
        announce=announced.append,
        take_handed=lambda _shards, _limit: [handed.pop(0) for _ in range(len(handed))],
    )


def _handed_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("tessera_holds_handed_total", {"outcome": outcome}) or 0.0


def _transactions(engine: Engine, key: str, hold_id: str) -> set[str]:
    """The transactions that wrote the hold's rows as they stand: its placement, its line command,
    the hold and its line."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT xmin::text FROM commands WHERE idempotency_key = :k "
                    "UNION ALL SELECT xmin::text FROM commands WHERE payload->>'hold_id' = :h "
                    "UNION ALL SELECT xmin::text FROM holds WHERE id::text = :h "
                    "UNION ALL SELECT xmin::text FROM hold_lines WHERE hold_id::text = :h"
                ),
                {"k": key, "h": hold_id},
            ).scalars()
        )


def test_a_waiting_hold_is_recorded_and_decided_by_its_writer_in_one_transaction(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    catalog.reserve(idempotency_key="warm", lines=LINE).wait(timeout=10)  # the API has read the product
    decided = _handed_total("decided")
    ticket = _handed(catalog, "handed-1", LINE, within=10)
    assert _handed_total("decided") == decided + 1
    assert ticket.fresh
    hold = ticket.wait(timeout=0)  # decided already: the writer's answer came with the ticket
    assert hold.status == "reserved" and hold.lines[0].pieces == 4
    assert len(_transactions(engine, "handed-1", ticket.hold_id)) == 1
    assert catalog.stock(SKU).reserved == 8
    assert_consistent()


def test_a_key_sent_before_is_left_by_the_writer_and_answered_as_before(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    first = _handed(catalog, "handed-2", LINE, within=10)
    left = _handed_total("not_taken")
    again = _handed(catalog, "handed-2", LINE, within=10)
    assert _handed_total("not_taken") == left + 1
    assert (again.hold_id, again.fresh) == (first.hold_id, False)
    try:
        _handed(catalog, "handed-2", [{"sku": SKU, "quantity": "2", "unit": "box"}], within=10)
    except IdempotencyConflict:
        pass
    else:
        raise AssertionError("another cart under a used key was not refused")
    assert catalog.stock(SKU).reserved == 4
    assert_consistent()


def test_a_product_changed_since_the_api_read_it_is_recorded_with_its_new_packaging(
    catalog: StockClient, processes: Processes, settings: Settings, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "40", lot="L1")
    catalog.reserve(idempotency_key="warm", lines=LINE).wait(timeout=10)  # boxes of 4, as cached
    with StockClient(settings, engine=engine) as other:  # another process repacks the tile
        other.upsert_product(sku=SKU, name="Grès 60x60 grey", pieces_per_box=6, sqm_per_box="2.16")
    left = _handed_total("not_taken")
    ticket = _handed(catalog, "handed-3", LINE, within=10)
    assert _handed_total("not_taken") == left + 1
    assert ticket.wait(timeout=10).lines[0].pieces == 6  # the writer left it; the API read it again
    assert_consistent()


def test_with_no_writer_the_api_records_the_hold_after_the_hand_over_time(
    catalog: StockClient, processes: Processes, settings: Settings, engine: Engine, assert_consistent
) -> None:
    worker = processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    catalog.reserve(idempotency_key="warm", lines=LINE).wait(timeout=10)  # the API has read the product
    processes.stop(worker)
    started, unanswered = time.monotonic(), _handed_total("unanswered")
    ticket = _handed(catalog, "handed-4", LINE, within=0.5)
    assert _handed_total("unanswered") == unanswered + 1
    assert time.monotonic() - started >= 0.5
    assert ticket.fresh and ticket.result() is None  # recorded, not decided: no worker runs
    lists = Redis.from_url(settings.redis_url)
    shard = shard_of(SKU, settings.shards)
    assert lists.llen(HandedHolds(lists, settings.redis_namespace).key(shard)) == 1  # never taken
    processes.worker()
    assert ticket.wait(timeout=15).status == "reserved"
    with engine.connect() as conn:
        holds = conn.execute(text("SELECT count(*) FROM holds WHERE idempotency_key = 'handed-4'")).scalar()
    assert holds == 1  # the writer took the late message and left it: the API had recorded it
    assert lists.llen(HandedHolds(lists, settings.redis_namespace).key(shard)) == 0
    assert catalog.stock(SKU).reserved == 8
    assert_consistent()


def test_a_handed_message_that_is_not_a_hold_is_passed_over() -> None:
    hold = HandedHold(
        str(uuid.uuid4()), "k", {key: [] for key in ("holds", "lines", "commands", "products")}, "c", 0.0
    )
    assert HandedHold.decode(b"not json") is None
    assert HandedHold.decode(b'{"hold_id": "x"}') is None
    assert HandedHold.decode(hold.encode()) is None  # its rows lack warehouse_ids
    whole = HandedHold(hold.hold_id, "k", {**hold.rows, "warehouse_ids": []}, "c", 10.0)
    assert HandedHold.decode(whole.encode()) == whole
    assert whole.late(now=10.0) and not whole.late(now=9.9)


def test_a_batch_that_fails_with_handed_holds_leaves_them_to_the_api(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    """The writer's batch cannot record the handed hold (here: the database refuses a hold line
    written by a worker's session): it answers NOT_TAKEN at once, the API records the hold itself,
    and the writer then decides it from the inbox as any other."""
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    catalog.reserve(idempotency_key="warm", lines=LINE).wait(timeout=10)  # the API has read the product
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                CREATE FUNCTION refuse_worker_lines() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF current_setting('application_name') LIKE 'tessera-worker%' THEN
                        RAISE EXCEPTION 'no hold line from a worker';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_worker_lines BEFORE INSERT ON hold_lines
                    FOR EACH ROW EXECUTE FUNCTION refuse_worker_lines();
                """
            )
        )
    left = _handed_total("not_taken")
    started = time.monotonic()
    ticket = _handed(catalog, "handed-5", LINE, within=10)
    assert _handed_total("not_taken") == left + 1
    assert time.monotonic() - started < 5  # answered by the failed batch, not by the hand-over's deadline
    assert ticket.fresh and ticket.wait(timeout=10).status == "reserved"
    with engine.connect() as conn:
        dead = conn.execute(text("SELECT count(*) FROM commands WHERE status = 'dead'")).scalar()
    assert dead == 0
    assert catalog.stock(SKU).reserved == 8
    assert_consistent()


def test_a_writer_fenced_out_after_recording_a_handed_hold_rings_its_shard(
    catalog: StockClient, engine: Engine, assert_consistent
) -> None:
    """The recording nudges none of the recording writer's own shards; if the claim behind it finds
    the shard's lease passed on, the batch rings the shard for its new holder."""
    shards = catalog.settings.shards
    shard = shard_of(SKU, shards)
    catalog.receive(idempotency_key="rcv", warehouse="BUC1", sku=SKU, quantity="10", lot="L1")
    catalog.reserve(idempotency_key="warm", lines=LINE)  # the client has read the product
    newer = ShardWriter(engine, shards=shards, batch_max=16, holder="newer", announce=lambda report: None)
    assert newer.apply_batch({shard: 6}).applied == 2
    handed = [_handed_hold(catalog, "handed-6", "c")]
    hold_id = handed[0].hold_id
    announced: list[BatchReport] = []
    stale = _writer_taking(handed, catalog, engine, "stale", announced)
    report = stale.apply_batch({shard: 5})
    assert (report.applied, report.fenced) == (0, {shard})
    assert any(shard in r.follow_up_shards and shard not in r.leased for r in announced)
    assert newer.apply_batch({shard: 6}).applied == 1  # the new holder decides it
    assert catalog.hold(hold_id).status == "reserved"
    assert_consistent()


def test_one_key_handed_twice_in_a_batch_is_recorded_once_and_its_twin_left_to_its_api(
    catalog: StockClient, engine: Engine, assert_consistent
) -> None:
    """Two API processes may hand the same key at once (a checkout's retry on another connection):
    the batch records the first and answers the twin NOT_TAKEN, so its API finds the first's hold
    (or refuses another cart under the key). Nothing fails, nothing is recorded twice."""
    shard = shard_of(SKU, catalog.settings.shards)
    catalog.receive(idempotency_key="rcv", warehouse="BUC1", sku=SKU, quantity="10", lot="L1")
    catalog.reserve(idempotency_key="warm", lines=LINE)  # the client has read the product
    handed = [_handed_hold(catalog, "twin", reply_to) for reply_to in ("api-1", "api-2")]
    announced: list[BatchReport] = []
    writer = _writer_taking(handed, catalog, engine, "w", announced)
    first, twin = handed
    report = writer.apply_batch({shard: 1})
    assert report.applied == 3  # the receipt, the warm-up's line command and the first's
    answers = {hold: answer for r in announced for a in r.answers.values() for hold, answer in a.items()}
    assert answers[twin.hold_id] == "0"  # NOT_TAKEN
    assert '"reserved"' in answers[first.hold_id]
    assert catalog.hold(first.hold_id).status == "reserved"
    with engine.connect() as conn:
        holds = conn.execute(text("SELECT count(*) FROM holds WHERE idempotency_key = 'twin'")).scalar()
    assert holds == 1
    assert catalog.stock(SKU).reserved == 8
    assert_consistent()
