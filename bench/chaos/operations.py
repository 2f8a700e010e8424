"""The warehouse's traffic in the soak, beside the checkouts and through the same faults: transfers
(received whole, short, with damaged pieces, or called back), counts, adjustments (small ones at
once, large ones approved or rejected by a second person), damage, quarantined receipts (released or
written off) and returns of confirmed holds.

Each operation is sent through faults like a checkout's command (`journal.persist`: resent with the
same key) and journaled once acknowledged, so the soak's checks hold it to the same rules: nothing
lost, nothing applied twice. A refusal decided before recording (not enough available to send, a
hold not sold) is an answer, not a problem.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from bench.chaos.clock import DbClock
from bench.chaos.journal import Ack, Journal, await_result, persist
from bench.chaos.traffic import PLENTY
from domain.errors import InvalidCommand
from producers import StockClient
from producers.operations import Actor
from producers.tickets import ReceiptTicket

T = TypeVar("T")
ROUTES = (("BUC1", "CLJ1", "L1"), ("CLJ1", "BUC1", "L2"))
"""from, to, and the lot each warehouse was stocked with (`traffic.seed_catalogue`)."""
ASKS = Actor(name="chaos-warehouse")
APPROVES = Actor(name="chaos-ops")
LARGE = 150  # pieces: above the default approval threshold (TESSERA_ADJUSTMENT_APPROVAL_PIECES, 100)


class WarehouseOps:
    """One thread of warehouse operations, about one every `pause` seconds.

    Parameters:
      confirmed: hold ids the checkouts saw confirmed, for returns.
    """

    def __init__(
        self,
        client: StockClient,
        clock: DbClock,
        journal: Journal,
        seed: int,
        confirmed: queue.Queue[str],
        pause: float = 0.3,
    ) -> None:
        self.client, self.clock, self.journal = client, clock, journal
        self.rng = random.Random(f"{seed}:warehouse")
        self.confirmed, self.pause = confirmed, pause
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.counts: dict[str, int] = {}
        """operation → how many were acknowledged (for the report)."""

    def start(self) -> None:
        self.thread.start()

    def finish(self, timeout: float = 90.0) -> None:
        """Stop starting operations; wait for the one under way (a transfer waits for its receipt)."""
        self.stop.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        operations: list[Callable[[str], None]] = [
            self.transfer,
            self.transfer,
            self.count,
            self.adjust,
            self.damage,
            self.quarantine,
            self.take_back,
        ]
        for n in itertools.count(1):
            if self.stop.wait(self.pause):
                return
            operation = self.rng.choice(operations)
            try:
                operation(f"wh-{n}")
            except InvalidCommand:
                pass  # refused before anything was recorded: stock moved meanwhile
            except Exception as error:
                self.journal.problem(f"{operation.__name__} wh-{n}: {error!r}")

    def _acked(self, call: Callable[[], T], kind: str) -> T:
        """Send until acknowledged; journal the command of each ticket it returned (a receipt's,
        a count's or a return's lines are commands of their own)."""
        sent = self.clock.now()
        result, attempts = persist(call)
        acked = self.clock.now()
        for key in _keys(result):
            self.journal.ack(Ack(key, kind, None, sent, acked, attempts))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return result

    def _result(self, ticket: Any, what: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await_result(ticket.wait)
        if result is None:
            self.journal.problem(f"{what}: no result within the answer time")
        return result

    # -- the operations ------------------------------------------------------------------------

    def transfer(self, key: str) -> None:
        """Send 1-10 pieces, then receive them (whole, short or damaged) or call them back."""
        source, destination, lot = self.rng.choice(ROUTES)
        sku = self.rng.choice(PLENTY)
        ticket = self._acked(
            lambda: self.client.transfer(
                idempotency_key=key,
                from_warehouse=source,
                to_warehouse=destination,
                sku=sku,
                lot=lot,
                quantity=self.rng.randint(1, 10),
                actor=ASKS,
            ),
            "stock.transfer",
        )
        sent = self._result(ticket, f"transfer {key}")
        if sent is None or sent.get("status") != "in_transit":
            return
        quantity = int(sent["quantity"])
        ending = self.rng.choices(("whole", "damaged", "short", "cancel"), weights=(6, 2, 1, 1))[0]
        follow_up = f"{key}-{ending}"
        transfer_id = ticket.operation_id
        if ending == "cancel":
            call: Callable[[], Any] = lambda: self.client.cancel_transfer(  # noqa: E731
                transfer_id, idempotency_key=follow_up, actor=ASKS
            )
            kind = "stock.transfer_cancel"
        else:
            damaged = 1 if ending == "damaged" else 0
            received = quantity - damaged - (1 if ending == "short" else 0)
            call = lambda: self.client.receive_transfer(  # noqa: E731
                transfer_id,
                idempotency_key=follow_up,
                received=received,
                damaged=damaged,
                reason=None if ending == "whole" else f"{ending} on arrival",
                actor=ASKS,
            )
            kind = "stock.transfer_receive"
        self._result(self._acked(call, kind), f"{kind} {follow_up}")

    def count(self, key: str) -> None:
        """A count of one lot, 2 pieces either side of its on_hand as last read (below what is
        held at times: the holds are kept and an alert raised)."""
        warehouse, _, lot = self.rng.choice(ROUTES)
        sku = self.rng.choice(PLENTY)
        on_hand = next(
            (b.on_hand for b in self.client.stock(sku).lots if b.warehouse == warehouse and b.lot == lot),
            None,
        )
        if on_hand is None:
            return
        counted = max(0, int(on_hand) + self.rng.randint(-2, 2))
        line = {"warehouse": warehouse, "sku": sku, "lot": lot, "counted": counted}
        tickets = self._acked(
            lambda: self.client.count(idempotency_key=key, lines=[line], reason="cycle count", actor=ASKS),
            "stock.count",
        )
        for ticket in tickets:
            self._result(ticket, f"count {key}")

    def adjust(self, key: str) -> None:
        """A small correction (applied at once), or a large one that a second person approves or rejects."""
        warehouse, _, lot = self.rng.choice(ROUTES)
        sku = self.rng.choice(PLENTY)
        large = self.rng.random() < 0.3
        quantity = LARGE if large else self.rng.choice((-3, -2, -1, 1, 2, 3))
        ticket = self._acked(
            lambda: self.client.adjust(
                idempotency_key=key,
                warehouse=warehouse,
                sku=sku,
                lot=lot,
                quantity=quantity,
                reason="found on the shelf" if quantity > 0 else "broken in handling",
                actor=ASKS,
            ),
            "stock.adjust",
        )
        asked = self._result(ticket, f"adjustment {key}")
        if not large or asked is None or asked.get("status") != "awaiting_approval":
            return
        approve = self.rng.random() < 0.7
        decision = f"{key}-{'approve' if approve else 'reject'}"
        decide = self.client.approve_adjustment if approve else self.client.reject_adjustment
        decided = self._acked(
            lambda: decide(ticket.operation_id, idempotency_key=decision, actor=APPROVES),
            "stock.adjust_approve" if approve else "stock.adjust_reject",
        )
        self._result(decided, f"adjustment decision {decision}")

    def damage(self, key: str) -> None:
        """One or two pieces of a lot's available stock found broken."""
        warehouse, _, lot = self.rng.choice(ROUTES)
        ticket = self._acked(
            lambda: self.client.damage(
                idempotency_key=key,
                warehouse=warehouse,
                sku=self.rng.choice(PLENTY),
                lot=lot,
                quantity=self.rng.randint(1, 2),
                reason="dropped by a forklift",
                actor=ASKS,
            ),
            "stock.damage",
        )
        self._result(ticket, f"damage {key}")

    def quarantine(self, key: str) -> None:
        """Goods in held in quarantine, then released or written off as damaged."""
        warehouse, _, lot = self.rng.choice(ROUTES)
        line = {
            "warehouse": warehouse,
            "sku": self.rng.choice(PLENTY),
            "quantity": self.rng.randint(5, 20),
            "lot": lot,
            "quarantine": True,
            "unit_cost": "12.50",
        }
        ticket = self._acked(
            lambda: self.client.receive_goods(
                idempotency_key=key, lines=[line], supplier="Chaos Ceramics", actor=ASKS
            ),
            "stock.receive",
        )
        self._result(ticket, f"quarantined receipt {key}")
        quarantine_id = ticket.lines[0].quarantine_id
        assert quarantine_id is not None, f"{key}: a quarantined line without its quarantine id"
        follow_up = f"{key}-{'release' if self.rng.random() < 0.7 else 'write-off'}"
        if follow_up.endswith("release"):
            call: Callable[[], Any] = lambda: self.client.release_quarantine(  # noqa: E731
                quarantine_id, idempotency_key=follow_up, actor=ASKS
            )
            kind = "stock.quarantine_release"
        else:
            call = lambda: self.client.write_off_quarantine(  # noqa: E731
                quarantine_id, idempotency_key=follow_up, reason="cracked glaze", actor=ASKS
            )
            kind = "stock.damage"
        self._result(self._acked(call, kind), f"{kind} {follow_up}")

    def take_back(self, key: str) -> None:
        """A customer brings one piece of a confirmed hold's first line back, resellable or broken."""
        try:
            hold_id = self.confirmed.get_nowait()
        except queue.Empty:
            return
        resellable = self.rng.random() < 0.7
        line = {
            "line_no": 1,
            "quantity": 1,
            "condition": "resellable" if resellable else "damaged",
            "reason": None if resellable else "chipped in the box",
        }
        tickets = self._acked(
            lambda: self.client.return_goods(hold_id, idempotency_key=key, lines=[line], actor=ASKS),
            "stock.return",
        )
        for ticket in tickets:
            self._result(ticket, f"return {key}")


def _keys(ticket: Any) -> list[str]:
    """The inbox keys behind what a call returned: a ticket, a list of them, or a receipt's lines."""
    if isinstance(ticket, list):
        return [key for one in ticket for key in _keys(one)]
    if isinstance(ticket, ReceiptTicket):
        return [line.ticket.key for line in ticket.lines]
    return [ticket.key]
