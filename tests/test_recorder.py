"""The hold recorder caches product and warehouse references; a change made since is never missed.

A group of hold requests is recorded by one statement that also checks every reference it was
converted with is still current, and writes nothing if one is not (the recorder then reads them
again). No worker runs here: these are about what gets recorded.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from domain.errors import UnknownWarehouse
from producers import StockClient
from tessera.settings import Settings
from tests.conftest import cut_sessions
from tests.test_bad_input import assert_refused

SKU = "GRS-60x60-GREY"  # 4 pieces a box in seed_catalog


def _recorded_pieces(engine: Engine, hold_id: str) -> Decimal:
    with engine.connect() as conn:
        pieces: Decimal = conn.execute(
            text("SELECT pieces FROM hold_lines WHERE hold_id = :h"), {"h": hold_id}
        ).scalar_one()
    return pieces


def test_a_hold_after_a_packaging_change_is_converted_with_the_new_packaging(
    catalog: StockClient, engine: Engine
) -> None:
    box = [{"sku": SKU, "quantity": "1", "unit": "box"}]
    before = catalog.reserve(idempotency_key="box-before", lines=box)
    catalog.upsert_product(sku=SKU, name="Grès 60x60 grey, new boxes", pieces_per_box=6, sqm_per_box="2.16")
    after = catalog.reserve(idempotency_key="box-after", lines=box)
    assert _recorded_pieces(engine, before.hold_id) == 4
    assert _recorded_pieces(engine, after.hold_id) == 6


def test_a_hold_in_a_warehouse_closed_since_the_last_one_is_refused_and_records_nothing(
    catalog: StockClient, engine: Engine
) -> None:
    line = {"sku": SKU, "quantity": "1", "unit": "piece", "warehouse": "CLJ1"}
    catalog.reserve(idempotency_key="cluj-open", lines=[line])
    catalog.upsert_warehouse(code="CLJ1", name="Cluj", can_ship=True, priority=2, active=False)
    assert_refused(
        engine,
        lambda: catalog.reserve(idempotency_key="cluj-closed", lines=[line]),
        field="lines[0].warehouse",
        error=UnknownWarehouse,
    )


def test_a_recorder_that_cannot_reach_postgres_refuses_each_request_at_once_and_keeps_serving(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    )
    engine = create_engine(unreachable.database_url)
    with StockClient(unreachable, engine=engine) as client:
        for key in ("no-db-1", "no-db-2"):  # the second finds the recorder still serving
            started = time.monotonic()
            with pytest.raises(OperationalError):
                client.reserve(idempotency_key=key, lines=[{"sku": SKU, "quantity": "1", "unit": "piece"}])
            assert time.monotonic() - started < 10  # the error itself, not the caller's 30 s timeout
    engine.dispose()


# -- the event loop's recorder (the API's) ----------------------------------------------------------


def _line(sku: str = SKU) -> list[dict[str, str]]:
    return [{"sku": sku, "quantity": "1", "unit": "piece"}]


def test_the_event_loops_recorder_groups_concurrent_holds_and_tells_resends_and_refusals(
    catalog: StockClient, engine: Engine
) -> None:
    """Requests that arrive together are recorded by one statement (one transaction: one
    created_at); a resend gets its hold, another cart under a used key is refused, a bad line
    refuses only its own request; the loop's session is closed at the end."""
    import asyncio

    from domain.errors import IdempotencyConflict, UnknownSku

    async def scenario() -> list[object]:
        first = await catalog.reserve_async(idempotency_key="loop-0", lines=_line())
        outcomes = await asyncio.gather(
            *(catalog.reserve_async(idempotency_key=f"loop-{i}", lines=_line()) for i in range(1, 9)),
            catalog.reserve_async(idempotency_key="loop-0", lines=_line()),  # a resend
            catalog.reserve_async(idempotency_key="loop-0", lines=_line() * 2),  # another cart, same key
            catalog.reserve_async(idempotency_key="loop-bad", lines=_line("NO-SUCH-SKU")),
            return_exceptions=True,
        )
        await catalog.recorder.holds.aclose()
        return [first, *outcomes]

    first, *grouped, resend, conflict, bad = asyncio.run(scenario())
    assert first.fresh and all(t.fresh for t in grouped)  # type: ignore[attr-defined]
    assert not resend.fresh and resend.hold_id == first.hold_id  # type: ignore[attr-defined]
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(bad, UnknownSku) and bad.field == "lines[0].sku"
    with engine.connect() as conn:
        times = conn.execute(
            text("SELECT count(DISTINCT created_at) FROM holds WHERE idempotency_key LIKE 'loop-%'")
        ).scalar_one()
        holds = conn.execute(
            text("SELECT count(*) FROM holds WHERE idempotency_key LIKE 'loop-%'")
        ).scalar_one()
    assert holds == 9
    assert times <= 2  # the first alone (nothing in flight), then the eight that came together


def test_the_event_loops_recorder_survives_its_session_being_cut(
    catalog: StockClient, engine: Engine
) -> None:
    import asyncio

    async def scenario() -> tuple[str, str, bool]:
        first = await catalog.reserve_async(idempotency_key="cut-1", lines=_line())
        # PostgreSQL ends the recorder's session (a restart, a kill)
        assert cut_sessions(catalog.settings.database_url, "tessera-api recorder") == 1
        # The group meets the cut session, and is recorded again on a new one: its caller never knows.
        again = await catalog.reserve_async(idempotency_key="cut-2", lines=_line())
        await catalog.recorder.holds.aclose()
        return first.hold_id, again.hold_id, again.fresh

    first, again, fresh = asyncio.run(scenario())
    with engine.connect() as conn:
        ids = {
            str(h)
            for h in conn.execute(text("SELECT id FROM holds WHERE idempotency_key LIKE 'cut-%'")).scalars()
        }
    assert ids == {first, again} and fresh


def test_the_recorder_threads_group_on_a_cut_session_is_recorded_on_another(
    catalog: StockClient, engine: Engine
) -> None:
    """The Python client's recorder thread keeps a pooled session while holds keep coming; when
    PostgreSQL ends it (a restart, a kill), the next group is recorded on a new session, and its
    caller gets the hold as new."""
    first = catalog.reserve(idempotency_key="tcut-1", lines=_line())
    assert cut_sessions(catalog.settings.database_url) > 0
    again = catalog.reserve(idempotency_key="tcut-2", lines=_line())
    assert again.fresh and again.hold_id != first.hold_id
    with engine.connect() as conn:
        ids = {
            str(h)
            for h in conn.execute(text("SELECT id FROM holds WHERE idempotency_key LIKE 'tcut-%'")).scalars()
        }
    assert ids == {first.hold_id, again.hold_id}
