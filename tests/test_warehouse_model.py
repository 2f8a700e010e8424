"""Warehouse operations against a pure model: random sequences, a real writer, real databases.

A hypothesis state machine sends receipts, holds, payments, releases, refunds, transfers (create,
receive, cancel), counts, adjustments (and their approval or rejection), returns and damage, over 2 products,
2 warehouses and 2 lots, through `StockClient` to a real `tessera worker` process, and makes the same
moves on a model of five buckets per (product, warehouse, lot) written from docs/warehouse.md alone.
After every step, once the inbox is drained: every balance equals the model's, none is negative,
reserved ≤ on_hand, the ledger reconciles with the balances, and pieces are conserved per product:
received + returned + adjusted = on_hand + in_transit + sold + written off (docs/warehouse.md,
"Conservation"), in the model and in the ledger alike.

Each example has SKUs and warehouses of its own (a fresh prefix). Holds live 600 s: none expires.
"""

from __future__ import annotations

import itertools
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from hypothesis import note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from db.reconcile import reconcile
from domain.errors import InvalidCommand
from producers import StockClient
from tessera.settings import Settings
from tests.conftest import Processes

ZERO = Decimal(0)
TIMEOUT = 20.0
APPROVAL_PIECES = Decimal(100)  # TESSERA_ADJUSTMENT_APPROVAL_PIECES's default
PRODUCTS, WAREHOUSES, LOTS = 2, 2, 2
BUCKETS = ("on_hand", "reserved", "in_transit", "damaged", "quarantine")
ASKER, APPROVER = "ana", "ion"

indexes = st.integers(0, 1)
pieces = st.integers(1, 40)
picks = st.integers(0, 1000)


@dataclass
class Balance:
    on_hand: Decimal = ZERO
    reserved: Decimal = ZERO
    in_transit: Decimal = ZERO
    damaged: Decimal = ZERO

    @property
    def held(self) -> Decimal:
        return self.reserved + self.damaged

    @property
    def available(self) -> Decimal:
        return self.on_hand - self.held

    def buckets(self) -> tuple[Decimal, ...]:
        return (self.on_hand, self.reserved, self.in_transit, self.damaged, ZERO)


@dataclass
class Sale:
    """A one-line hold: where it holds, and what became of it."""

    hold_id: str
    sku: str
    place: tuple[str, str, str]  # sku, warehouse, lot
    pieces: Decimal
    status: str  # reserved, confirmed, released, refunded
    returned: Decimal = ZERO


@dataclass
class Moved:
    transfer_id: str
    source: tuple[str, str, str]
    destination: tuple[str, str, str]
    pieces: Decimal
    status: str = "in_transit"


@dataclass
class Asked:
    adjustment_id: str
    place: tuple[str, str, str]
    pieces: Decimal
    status: str = "awaiting_approval"


@dataclass
class Books:
    """Conservation's terms, per product."""

    received: Decimal = ZERO
    returned: Decimal = ZERO
    adjusted: Decimal = ZERO
    sold: Decimal = ZERO
    written_off: Decimal = ZERO


@dataclass
class Model:
    balances: dict[tuple[str, str, str], Balance] = field(default_factory=dict)
    lot_order: list[tuple[str, str]] = field(default_factory=list)  # (sku, lot) in order of creation
    books: dict[str, Books] = field(default_factory=dict)

    def at(self, place: tuple[str, str, str]) -> Balance:
        return self.balances.setdefault(place, Balance())

    def has_lot(self, sku: str, lot: str) -> bool:
        return (sku, lot) in self.lot_order

    def first_lot_serving(self, sku: str, warehouse: str, quantity: Decimal) -> tuple[str, str, str] | None:
        """FIFO among the lots that can serve the whole line (no expiry dates here)."""
        for lot_sku, lot in self.lot_order:
            place = (sku, warehouse, lot)
            if lot_sku == sku and place in self.balances and self.balances[place].available >= quantity:
                return place
        return None


@dataclass
class Env:
    client: StockClient
    engine: Engine
    worker: subprocess.Popen[bytes]


class WarehouseMachine(RuleBasedStateMachine):
    def __init__(self, env: Env) -> None:
        super().__init__()
        self.env = env
        self.prefix = f"w{uuid.uuid4().hex[:8]}"
        self.keys = itertools.count(1)
        self.model = Model()
        self.sales: list[Sale] = []
        self.transfers: list[Moved] = []
        self.adjustments: list[Asked] = []
        for w in range(WAREHOUSES):
            env.client.upsert_warehouse(code=self.warehouse(w), name=f"W{w}", priority=w + 1)
        for p in range(PRODUCTS):
            env.client.upsert_product(sku=self.sku(p), name=f"tile {p}")
            self.model.books[self.sku(p)] = Books()

    def sku(self, p: int) -> str:
        return f"{self.prefix}-P{p}"

    def warehouse(self, w: int) -> str:
        return f"{self.prefix}-W{w}"

    def lot(self, n: int) -> str:
        return f"L{n}"

    def key(self, kind: str) -> str:
        return f"{self.prefix}-{kind}{next(self.keys)}"

    def done(self, ticket: Any) -> dict[str, Any]:
        result: dict[str, Any] = ticket.wait(TIMEOUT)
        return result

    # -- goods in, holds, payments --------------------------------------------------------------

    @initialize(
        receipts=st.lists(st.tuples(indexes, indexes, indexes, st.integers(20, 60)), min_size=2, max_size=4)
    )
    def stock_up(self, receipts: list[tuple[int, int, int, int]]) -> None:
        """Goods to start from, so that holds, transfers and counts have stock to work on."""
        for receipt in receipts:
            self.receive(*receipt)

    @rule(p=indexes, w=indexes, n=indexes, q=pieces)
    def receive(self, p: int, w: int, n: int, q: int) -> None:
        sku, warehouse, lot = self.sku(p), self.warehouse(w), self.lot(n)
        note(f"receive {q} of {sku} into {warehouse}/{lot}")
        ticket = self.env.client.receive(
            idempotency_key=self.key("rcv"), warehouse=warehouse, sku=sku, quantity=q, lot=lot
        )
        assert self.done(ticket)["outcome"] == "received"
        if not self.model.has_lot(sku, lot):
            self.model.lot_order.append((sku, lot))
        self.model.at((sku, warehouse, lot)).on_hand += q
        self.model.books[sku].received += q

    @rule(p=indexes, w=indexes, q=pieces)
    def hold(self, p: int, w: int, q: int) -> None:
        sku, warehouse = self.sku(p), self.warehouse(w)
        note(f"hold {q} of {sku} in {warehouse}")
        line = {"sku": sku, "quantity": str(q), "unit": "piece", "warehouse": warehouse}
        answer = self.env.client.reserve(idempotency_key=self.key("cart"), lines=[line], ttl_seconds=600)
        held = answer.wait(TIMEOUT)
        place = self.model.first_lot_serving(sku, warehouse, Decimal(q))
        if place is None:
            assert held.status == "rejected", f"the model has no lot for {q}; the system {held.status}"
            return
        assert held.status == "reserved", f"the model holds {place}; the system {held.status}"
        assert (held.lines[0].warehouse, held.lines[0].lot) == place[1:], held.lines[0]
        self.model.at(place).reserved += q
        self.sales.append(Sale(held.hold_id, sku, place, Decimal(q), "reserved"))

    def _pay(self, sale: Sale, status: str) -> dict[str, Any]:
        note(f"payment {status} for {sale.hold_id}")
        ticket = self.env.client.confirm_payment(
            event_id=self.key("evt"), hold_id=sale.hold_id, status=status
        )
        return self.done(ticket)

    @precondition(lambda self: any(s.status == "reserved" for s in self.sales))
    @rule(pick=picks, paid=st.booleans())
    def pay_or_release(self, pick: int, paid: bool) -> None:
        sale = [s for s in self.sales if s.status == "reserved"][
            pick % sum(s.status == "reserved" for s in self.sales)
        ]
        balance = self.model.at(sale.place)
        balance.reserved -= sale.pieces
        if paid:
            assert self._pay(sale, "paid")["outcome"] == "confirmed"
            balance.on_hand -= sale.pieces
            self.model.books[sale.sku].sold += sale.pieces
            sale.status = "confirmed"
        else:
            note(f"release {sale.hold_id}")
            assert (
                self.done(self.env.client.release(sale.hold_id, idempotency_key=self.key("rel")))["outcome"]
                == "released"
            )
            sale.status = "released"

    @precondition(lambda self: any(s.status == "confirmed" for s in self.sales))
    @rule(pick=picks)
    def refund(self, pick: int) -> None:
        confirmed = [s for s in self.sales if s.status == "confirmed"]
        sale = confirmed[pick % len(confirmed)]
        assert self._pay(sale, "refunded")["outcome"] == "refunded"
        rest = sale.pieces - sale.returned
        self.model.at(sale.place).on_hand += rest
        self.model.books[sale.sku].returned += rest
        sale.returned, sale.status = sale.pieces, "refunded"

    @precondition(lambda self: any(s.status == "confirmed" for s in self.sales))
    @rule(pick=picks, q=st.integers(1, 12), damaged=st.booleans())
    def take_back(self, pick: int, q: int, damaged: bool) -> None:
        confirmed = [s for s in self.sales if s.status == "confirmed"]
        sale = confirmed[pick % len(confirmed)]
        line = {"line_no": 1, "quantity": str(q), "condition": "damaged" if damaged else "resellable"}
        if damaged:
            line["reason"] = "chipped"
        note(f"return {line} of {sale.hold_id}")
        send = partial(
            self.env.client.return_goods, sale.hold_id, idempotency_key=self.key("ret"), lines=[line]
        )
        if q > sale.pieces - sale.returned:
            with pytest.raises(InvalidCommand):
                send()
            return
        [ticket] = send()
        assert self.done(ticket)["outcome"] == "returned"
        balance = self.model.at(sale.place)
        balance.on_hand += q
        balance.damaged += q if damaged else 0
        sale.returned += q
        self.model.books[sale.sku].returned += q
        if sale.returned == sale.pieces:
            sale.status = "returned"

    @rule(p=indexes, w=indexes, n=indexes, q=st.integers(1, 10))
    def damage(self, p: int, w: int, n: int, q: int) -> None:
        sku, warehouse, lot = self.sku(p), self.warehouse(w), self.lot(n)
        place = (sku, warehouse, lot)
        note(f"damage {q} of {place}")
        send = partial(
            self.env.client.damage,
            idempotency_key=self.key("dmg"),
            warehouse=warehouse,
            sku=sku,
            lot=lot,
            quantity=q,
            reason="forklift",
        )
        if place not in self.model.balances or self.model.at(place).available < q:
            with pytest.raises(InvalidCommand):
                send()
            return
        assert self.done(send())["outcome"] == "damaged"
        self.model.at(place).damaged += q  # still on hand, no longer sellable

    # -- transfers ------------------------------------------------------------------------------

    @rule(p=indexes, n=indexes, w=indexes, q=pieces)
    def send(self, p: int, n: int, w: int, q: int) -> None:
        sku, lot = self.sku(p), self.lot(n)
        source, destination = (sku, self.warehouse(w), lot), (sku, self.warehouse(1 - w), lot)
        note(f"transfer {q} of {source} to {destination[1]}")
        send = partial(
            self.env.client.transfer,
            idempotency_key=self.key("tr"),
            from_warehouse=source[1],
            to_warehouse=destination[1],
            sku=sku,
            lot=lot,
            quantity=q,
        )
        if (
            not self.model.has_lot(sku, lot)
            or source not in self.model.balances
            or self.model.at(source).available < q
        ):
            with pytest.raises(InvalidCommand):  # reserved, damaged pieces never move
                send()
            return
        ticket = send()
        result = self.done(ticket)
        assert result["outcome"] == "in_transit", result
        self.model.at(source).on_hand -= q
        self.model.at(destination).in_transit += q
        self.transfers.append(Moved(ticket.operation_id, source, destination, Decimal(q)))

    @precondition(lambda self: any(t.status == "in_transit" for t in self.transfers))
    @rule(pick=picks, good=st.integers(0, 40), damaged=st.integers(0, 5), cancel=st.booleans())
    def arrive_or_cancel(self, pick: int, good: int, damaged: int, cancel: bool) -> None:
        moving = [t for t in self.transfers if t.status == "in_transit"]
        moved = moving[pick % len(moving)]
        sku = moved.source[0]
        if cancel:
            note(f"cancel transfer {moved.transfer_id}")
            result = self.done(
                self.env.client.cancel_transfer(moved.transfer_id, idempotency_key=self.key("trc"))
            )
            assert result["outcome"] == "cancelled", result
            self.model.at(moved.source).on_hand += moved.pieces
            self.model.at(moved.destination).in_transit -= moved.pieces
            moved.status = "cancelled"
            return
        good_pieces = min(Decimal(good), moved.pieces)
        damaged_pieces = min(Decimal(damaged), moved.pieces - good_pieces)
        note(f"receive transfer {moved.transfer_id}: {good_pieces} good, {damaged_pieces} damaged")
        ticket = self.env.client.receive_transfer(
            moved.transfer_id,
            idempotency_key=self.key("tri"),
            received=good_pieces,
            damaged=damaged_pieces,
            reason="pallet dropped",
        )
        assert self.done(ticket)["outcome"] == "received"
        balance = self.model.at(moved.destination)
        arrived = good_pieces + damaged_pieces
        balance.in_transit -= moved.pieces
        balance.on_hand += arrived
        balance.damaged += damaged_pieces
        self.model.books[sku].written_off += moved.pieces - arrived
        moved.status = "received"

    # -- counts and adjustments -----------------------------------------------------------------

    @rule(p=indexes, w=indexes, n=indexes, counted=st.integers(0, 60))
    def count(self, p: int, w: int, n: int, counted: int) -> None:
        sku, warehouse, lot = self.sku(p), self.warehouse(w), self.lot(n)
        line = {"warehouse": warehouse, "sku": sku, "lot": lot, "counted": str(counted)}
        note(f"count {line}")
        send = partial(self.env.client.count, idempotency_key=self.key("cnt"), lines=[line])
        if not self.model.has_lot(sku, lot):
            with pytest.raises(InvalidCommand):
                send()
            return
        [ticket] = send()
        assert self.done(ticket)["outcome"] == "adjusted"
        place = (sku, warehouse, lot)
        if place not in self.model.balances and counted == 0:
            return
        balance = self.model.at(place)
        target = max(Decimal(counted), balance.held)
        self.model.books[sku].adjusted += target - balance.on_hand
        balance.on_hand = target

    @rule(p=indexes, w=indexes, n=indexes, q=st.integers(-150, 150).filter(bool))
    def adjust(self, p: int, w: int, n: int, q: int) -> None:
        sku, warehouse, lot = self.sku(p), self.warehouse(w), self.lot(n)
        place = (sku, warehouse, lot)
        note(f"adjust {place} by {q}")
        send = partial(
            self.env.client.adjust,
            idempotency_key=self.key("adj"),
            warehouse=warehouse,
            sku=sku,
            lot=lot,
            quantity=q,
            reason="recount",
            actor=ASKER,
        )
        if not self.model.has_lot(sku, lot):
            with pytest.raises(InvalidCommand):
                send()
            return
        ticket = send()
        result = self.done(ticket)
        if q < 0 and place not in self.model.balances:  # nothing there to take away
            assert result["status"] == "rejected", result
        elif abs(q) > APPROVAL_PIECES:
            assert result["status"] == "awaiting_approval", result
            self.adjustments.append(Asked(ticket.operation_id, place, Decimal(q)))
        elif self._applies(place, Decimal(q)):
            assert result["status"] == "applied", result
        else:
            assert result["status"] == "rejected", result

    def _applies(self, place: tuple[str, str, str], q: Decimal) -> bool:
        if q < 0 and place not in self.model.balances:
            return False
        balance = self.model.at(place)
        if balance.on_hand + q < balance.held:
            return False
        balance.on_hand += q
        self.model.books[place[0]].adjusted += q
        return True

    @precondition(lambda self: any(a.status == "awaiting_approval" for a in self.adjustments))
    @rule(pick=picks, approve=st.booleans(), by_asker=st.sampled_from([False, False, False, True]))
    def decide(self, pick: int, approve: bool, by_asker: bool) -> None:
        waiting = [a for a in self.adjustments if a.status == "awaiting_approval"]
        asked = waiting[pick % len(waiting)]
        decide = self.env.client.approve_adjustment if approve else self.env.client.reject_adjustment
        note(
            f"{'approve' if approve else 'reject'} {asked.adjustment_id} as {ASKER if by_asker else APPROVER}"
        )
        send = partial(
            decide,
            asked.adjustment_id,
            idempotency_key=self.key("dec"),
            actor=ASKER if by_asker else APPROVER,
        )
        if by_asker:
            with pytest.raises(InvalidCommand):
                send()
            return
        result = self.done(send())
        if not approve:
            assert result["status"] == "rejected", result
            asked.status = "rejected"
        elif self._applies(asked.place, asked.pieces):
            assert result["status"] == "approved", result
            asked.status = "approved"
        else:
            assert (result["outcome"], result["status"]) == ("rejected", "awaiting_approval"), result

    # -- after every step -----------------------------------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        self._settle()
        with self.env.engine.connect() as conn:
            assert reconcile(conn) == [], "the ledger and the balances disagree"
            rows = conn.execute(
                text(
                    "SELECT p.sku, w.code, l.lot_code, b.on_hand, b.reserved, b.in_transit, b.damaged, b.quarantine "
                    "FROM stock_balances b JOIN products p ON p.id = b.product_id "
                    "JOIN warehouses w ON w.id = b.warehouse_id JOIN lots l ON l.id = b.lot_id WHERE p.sku LIKE :p"
                ),
                {"p": f"{self.prefix}-%"},
            ).all()
            flows = dict(
                conn.execute(
                    text(
                        "SELECT p.sku, sum(CASE WHEN m.kind IN ('receipt', 'return', 'adjustment', 'count_adjustment') "
                        "THEN m.d_on_hand ELSE 0 END) - sum(CASE WHEN m.kind = 'sale' THEN -m.d_on_hand "
                        "WHEN m.kind = 'write_off' THEN -(m.d_on_hand + m.d_in_transit) ELSE 0 END) "
                        "FROM movements m JOIN products p ON p.id = m.product_id WHERE p.sku LIKE :p GROUP BY 1"
                    ),
                    {"p": f"{self.prefix}-%"},
                ).all()
            )
        system = {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
        model = {place: b.buckets() for place, b in self.model.balances.items()}
        assert {k: v for k, v in system.items() if any(v)} == {k: v for k, v in model.items() if any(v)}, (
            f"balances differ:\n  model:  {model}\n  system: {system}"
        )
        for buckets in system.values():
            on_hand, reserved, _, damaged, quarantine = buckets
            assert min(buckets) >= 0 and reserved + damaged + quarantine <= on_hand
        for sku, books in self.model.books.items():
            stock = sum(
                (b.on_hand + b.in_transit for (s, _, _), b in self.model.balances.items() if s == sku), ZERO
            )
            assert books.received + books.returned + books.adjusted == stock + books.sold + books.written_off
            on_books = sum((v[0] + v[2] for (s, _, _), v in system.items() if s == sku), ZERO)
            assert flows.get(sku, ZERO) == on_books, f"{sku}: pieces not conserved on the ledger"

    def _settle(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        with self.env.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while conn.execute(text("SELECT count(*) FROM commands WHERE status = 'recorded'")).scalar_one():
                assert self.env.worker.poll() is None, "the worker died"
                assert time.monotonic() < deadline, "commands still waiting"
                time.sleep(0.005)
            dead = conn.execute(text("SELECT count(*) FROM commands WHERE status = 'dead'")).scalar_one()
        assert dead == 0, "a command was parked as a dead letter"


@pytest.mark.timeout(300)
def test_warehouse_operations_agree_with_the_model(
    settings: Settings, engine: Engine, client: StockClient, processes: Processes
) -> None:
    env = Env(client, engine, processes.worker())
    run_state_machine_as_test(
        lambda: WarehouseMachine(env),
        settings=hypothesis_settings(max_examples=15, stateful_step_count=30, deadline=None),
    )
