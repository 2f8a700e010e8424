"""Reference data changes: packaging reaches every client's next command; a lot keeps its facts."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from domain.errors import InvalidCommand, LotMismatch
from producers import StockClient
from tests.conftest import Processes
from tests.flow import wait_all_applied
from tests.test_holds import hold_of, receive

SKU = "GROUT-5KG"  # sold by the piece only, to begin with


def _hold_of_boxes(client: StockClient, boxes: str) -> str:
    return hold_of(client, [{"sku": SKU, "quantity": boxes, "unit": "box"}]).wait(timeout=15).status


def test_a_client_that_used_a_product_sees_its_packaging_change_at_its_next_command(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "100", lot="G1")
    assert (
        hold_of(catalog, [{"sku": SKU, "quantity": "1", "unit": "piece"}]).wait(timeout=15).status
        == "reserved"
    )
    with pytest.raises(InvalidCommand, match="not sold by the box"):
        _hold_of_boxes(catalog, "1")

    catalog.upsert_product(sku=SKU, name="Grout 5 kg bag", pieces_per_box=10)  # now boxed, whole boxes
    assert _hold_of_boxes(catalog, "1") == "reserved"
    with pytest.raises(InvalidCommand, match="whole boxes only"):
        _hold_of_boxes(catalog, "1.5")

    catalog.upsert_product(sku=SKU, name="Grout 5 kg bag", pieces_per_box=10, allow_partial_boxes=True)
    assert _hold_of_boxes(catalog, "1.5") == "reserved"

    assert catalog.stock(SKU).reserved == 1 + 10 + 15
    assert_consistent()


def test_a_packaging_change_made_by_another_client_is_seen_too(
    catalog: StockClient, processes: Processes, engine: Engine, settings
) -> None:
    processes.worker()
    receive(catalog, SKU, "100", lot="G1")
    with pytest.raises(InvalidCommand):
        _hold_of_boxes(catalog, "2")
    with StockClient(settings, engine=engine) as ops:
        ops.upsert_product(sku=SKU, name="Grout 5 kg bag", pieces_per_box=4)

    assert _hold_of_boxes(catalog, "2") == "reserved"
    assert catalog.stock(SKU).reserved == 8


def _receive_lot(client: StockClient, shade: str, caliber: str = "9", expiry: str | None = None) -> None:
    client.receive(
        idempotency_key=f"rcv-{uuid.uuid4().hex}",
        warehouse="BUC1",
        sku="GRS-60x60-GREY",
        quantity="10",
        lot="L1",
        shade=shade,
        caliber=caliber,
        expiry=expiry,
    ).wait(timeout=15)


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"shade": "B"}, "shade B"),
        ({"caliber": "10"}, "caliber 10"),
        ({"expiry": "2031-01-01"}, "expiry 2031-01-01"),
    ],
)
def test_a_known_lot_received_with_other_facts_is_refused_with_the_lot_s_facts(
    catalog: StockClient, processes: Processes, engine: Engine, changed: dict[str, str], named: str
) -> None:
    processes.worker()
    _receive_lot(catalog, "A", "9", "2030-01-01")
    facts = {"shade": "A", "caliber": "9", "expiry": "2030-01-01"} | changed

    with pytest.raises(LotMismatch) as refused:
        _receive_lot(catalog, **facts)

    assert "lot L1 is shade A, caliber 9, expiry 2030-01-01" in str(refused.value)
    assert named in str(refused.value)
    _receive_lot(catalog, "A", "9", "2030-01-01")  # the same facts: the lot grows
    _receive_lot(catalog, "A")  # a fact left out is not a difference
    stock = catalog.stock("GRS-60x60-GREY")
    assert [(lot.lot, lot.shade, lot.on_hand) for lot in stock.lots] == [("L1", "A", 30)]


def test_two_receipts_of_a_new_lot_with_other_shades_recorded_together_keep_the_first_shade_only(
    catalog: StockClient, processes: Processes, engine: Engine, assert_consistent
) -> None:
    """Neither receipt sees the lot when it is recorded (no worker runs): the writer refuses the second."""
    tickets = [
        catalog.receive(
            idempotency_key=f"rcv-{shade}",
            warehouse="BUC1",
            sku="GRS-60x60-GREY",
            quantity="10",
            lot="L9",
            shade=shade,
        )
        for shade in ("A", "B")
    ]
    processes.worker()

    first, second = (t.wait(timeout=15) for t in tickets)

    assert first["outcome"] == "received"
    assert second["outcome"] == "rejected"
    assert "lot L9 is shade A" in second["reason"] and "this receipt says shade B" in second["reason"]
    wait_all_applied(engine)
    with engine.connect() as conn:
        lots = conn.execute(text("SELECT lot_code, shade FROM lots")).all()
    assert lots == [("L9", "A")]
    assert catalog.stock("GRS-60x60-GREY").on_hand == 10
    assert_consistent()
