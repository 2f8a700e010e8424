"""Stock commands, applied by the writer of the product's shard: goods in."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from db.batch_state import InboxCommand
from domain.commands import StockCommand
from domain.movements import MovementKind, move
from domain.outcomes import Outcome
from domain.quantities import decimal_str
from domain.receipts import LotFacts, lot_conflict, merged_facts
from workers.batch import Batch, Result
from workers.handlers.registry import handles


@handles(StockCommand.RECEIVE)
def receive(batch: Batch, command: InboxCommand) -> Result:
    p = command.payload
    product_id, warehouse_id, lot_code = p["product_id"], p["warehouse_id"], p["lot"]
    stocks = batch.stocks(product_id)
    received = LotFacts(
        p.get("shade"), p.get("caliber"), dt.date.fromisoformat(p["expiry"]) if p.get("expiry") else None
    )
    known = next((s for s in stocks if s.lot_code == lot_code), None)
    facts = received
    if known is not None:
        lot = LotFacts(known.shade, known.caliber, known.expiry)
        if why := lot_conflict(lot_code, lot, received):
            # The recording checked this too; two receipts recorded at once can still differ.
            return {"outcome": Outcome.REJECTED, "reason": why, "lot": lot_code}
        facts = merged_facts(lot, received)
        if facts != lot:
            batch.complete_lot_facts(product_id, known.lot_id, facts)
    stock = next(
        (s for s in stocks if s.warehouse_id == warehouse_id and s.lot_code == lot_code), None
    ) or batch.new_stock(product_id, warehouse_id, lot_code, facts, known)
    batch.record(move(MovementKind.RECEIPT, stock, on_hand=Decimal(p["pieces"])), command)
    return {
        "outcome": Outcome.RECEIVED,
        "pieces": p["pieces"],
        "lot": lot_code,
        "on_hand": decimal_str(stock.on_hand),
    }
