from __future__ import annotations

from producers import StockClient
from tests.conftest import Processes


def test_a_hold_reserves_stock_received_into_a_lot(
    catalog: StockClient, processes: Processes, assert_consistent
) -> None:
    processes.worker()
    catalog.receive(
        idempotency_key="rcv-1",
        warehouse="BUC1",
        sku="GRS-60x60-GREY",
        quantity="100",
        unit="box",
        lot="L2311",
        shade="A",
        caliber="9",
    ).wait(timeout=10)
    result = catalog.reserve(
        idempotency_key="cart-1", lines=[{"sku": "GRS-60x60-GREY", "quantity": "12.5", "unit": "sqm"}]
    ).wait(timeout=10)
    assert result.status == "reserved"
    assert result.lines[0].reserved_pieces == 36
    assert catalog.stock("GRS-60x60-GREY").available == 400 - 36
    assert_consistent()
