"""The checkout traffic: the producers' plans (a cart, then a payment or release timed around the
hold's expires_at), the producer threads, and the catalogue they buy from."""

from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.chaos.clock import DbClock
from bench.chaos.journal import ANSWER_WITHIN_SECONDS, Ack, Journal, await_result, persist
from bench.common import seed_warehouses
from domain.results import HoldResult
from producers import StockClient
from producers.client import CommandTicket, HoldTicket

T = TypeVar("T")
BUCKETS: dict[str, tuple[float, float]] = {
    "before": (-1.2, -0.5),
    "just_before": (-0.300, -0.020),
    "at": (-0.010, 0.010),
    "just_after": (0.020, 0.500),
}
ACTIONS = ("paid", "release", "failed")
HAND_OVER_SECONDS = 1.0
"""As the API with ?wait=2 (`TESSERA_HAND_OVER_SECONDS`)."""
PLENTY = tuple(f"TILE-{i:02d}" for i in range(16))
SCARCE = tuple(f"RARE-{i}" for i in range(4))


@dataclass(frozen=True, slots=True)
class Plan:
    """One checkout: its cart, and what follows the hold's answer."""

    lines: list[dict[str, str]]
    mode: str
    ttl: int
    action: str
    """paid, release, failed or none (the hold is left to expire)."""
    bucket: str
    offset: float
    """Seconds from expires_at at which the action is sent."""
    refund: bool
    pay_if_rejected: bool
    resend_hold: bool
    resend_action: bool
    hand_over: bool
    """Sent as the API sends a waiting caller's hold: handed to its shard's writer (`producers.handover`)."""


def _line(rng: random.Random, sku: str) -> dict[str, str]:
    if sku in SCARCE:
        return {"sku": sku, "quantity": str(rng.randint(2, 5)), "unit": "piece"}
    unit = rng.choice(("box", "sqm", "piece"))
    quantity = {
        "box": str(rng.randint(1, 3)),
        "sqm": f"{rng.uniform(1, 4):.2f}",
        "piece": str(rng.randint(1, 8)),
    }[unit]
    return {"sku": sku, "quantity": quantity, "unit": unit}


def draw_plan(rng: random.Random) -> Plan:
    count = rng.choice((1, 1, 2, 3))
    skus = rng.sample(PLENTY, count)
    if rng.random() < 0.3:
        skus[rng.randrange(count)] = rng.choice(SCARCE)
    action = rng.choices(("paid", "release", "failed", "none"), weights=(45, 25, 8, 22))[0]
    bucket = "none" if action == "none" else rng.choice(tuple(BUCKETS))
    low, high = BUCKETS.get(bucket, (0.0, 0.0))
    return Plan(
        lines=[_line(rng, sku) for sku in skus],
        mode=rng.choice(("all_or_nothing", "all_or_nothing", "partial")),
        ttl=rng.randint(2, 6),
        action=action,
        bucket=bucket,
        offset=rng.uniform(low, high),
        refund=rng.random() < 0.25,
        pay_if_rejected=rng.random() < 0.4,
        resend_hold=rng.random() < 0.15,
        resend_action=rng.random() < 0.15,
        hand_over=rng.random() < 0.5,
    )


class Checkouts:
    """Producer threads: holds, then a payment or release timed around the hold's expires_at."""

    def __init__(
        self, client: StockClient, clock: DbClock, journal: Journal, seed: int, confirmed: queue.Queue[str]
    ) -> None:
        self.client = client
        self.confirmed = confirmed
        """Holds seen confirmed and not refunded: the warehouse's returns take goods back from them."""
        self.clock = clock
        self.journal = journal
        self.seed = seed
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        # The client's coroutine calls (the API's path) run on one event loop, as in an API process.
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="checkout-loop", daemon=True).start()

    def start(self, producers: int) -> None:
        for number in range(producers):
            self.threads.append(threading.Thread(target=self._run, args=(number,), daemon=True))
        self.threads.append(threading.Thread(target=self._receipts, daemon=True))
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float = 90.0) -> None:
        """Stop starting checkouts; wait for those under way (a timed action may still be due)."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, number: int) -> None:
        rng = random.Random(f"{self.seed}:{number}")
        for n in itertools.count(1):
            if self.stop.is_set():
                return
            tag = f"p{number}-{n}"
            try:
                self.checkout(rng, tag)
            except Exception as error:
                self.journal.problem(f"checkout {tag}: {error!r}")

    def _receipts(self) -> None:
        rng = random.Random(f"{self.seed}:receipts")
        for n in itertools.count(1):
            if self.stop.wait(1.0):
                return
            call = functools.partial(
                self.client.receive,
                idempotency_key=f"rcv-run-{n}",
                warehouse="BUC1",
                sku=rng.choice(PLENTY),
                quantity=str(rng.randint(20, 80)),
                lot="L1",
                shade="A",
                caliber="9",
            )
            try:
                self._acknowledged(call, "stock.receive", None)
            except Exception as error:
                self.journal.problem(f"receipt rcv-run-{n}: {error!r}")

    def _acknowledged(
        self, call: Callable[[], T], kind: str, hold_id: str | None, **facts: Any
    ) -> tuple[T, Ack]:
        sent = self.clock.now()
        ticket, attempts = persist(call)
        key = ticket.key if isinstance(ticket, CommandTicket | HoldTicket) else ""
        ack = Ack(
            key, kind, hold_id or getattr(ticket, "hold_id", None), sent, self.clock.now(), attempts, **facts
        )
        self.journal.ack(ack)
        return ticket, ack

    def checkout(self, rng: random.Random, tag: str) -> None:
        plan = draw_plan(rng)
        key = f"cart-{tag}"
        ticket = self._reserve(key, plan)
        hold = await_result(ticket.wait)
        if hold is None:
            self.journal.problem(f"{key}: hold {ticket.hold_id} not decided within {ANSWER_WITHIN_SECONDS}s")
            return
        if hold.status == "rejected":
            if plan.pay_if_rejected:
                self._act("paid", hold, f"{key}-paid", None, 0.0, resend=False)
            return
        if plan.action != "none":
            self._timed_action(plan, hold, key)

    def _reserve(self, key: str, plan: Plan) -> HoldTicket:
        call: Callable[[], HoldTicket] = functools.partial(
            self.client.reserve, idempotency_key=key, lines=plan.lines, ttl_seconds=plan.ttl, mode=plan.mode
        )
        if plan.hand_over:

            def call() -> HoldTicket:
                handed = self.client.reserve_async(
                    idempotency_key=key,
                    lines=plan.lines,
                    ttl_seconds=plan.ttl,
                    mode=plan.mode,
                    hand_over_within=HAND_OVER_SECONDS,
                )
                return asyncio.run_coroutine_threadsafe(handed, self.loop).result()

        ticket, _ = self._acknowledged(call, "hold.place", None)
        if plan.resend_hold:
            again, _ = self._acknowledged(call, "hold.place", None, resend=True)
            if again.hold_id != ticket.hold_id:
                self.journal.problem(f"resend of {key} returned hold {again.hold_id}, first {ticket.hold_id}")
        return ticket

    def _timed_action(self, plan: Plan, hold: HoldResult, key: str) -> None:
        send_at = self.clock.local(hold.expires_at.timestamp() + plan.offset)
        if (delay := send_at - time.time()) > 0:
            time.sleep(delay)  # the workload's timing, not synchronisation
        ticket = self._act(
            plan.action, hold, f"{key}-{plan.action}", plan.bucket, plan.offset, plan.resend_action
        )
        if plan.action != "paid":
            return
        result = await_result(ticket.wait)
        if result is not None and result.get("hold_status") == "confirmed":
            # Offered for a return before any refund: a return and a refund of one line race.
            self.confirmed.put(hold.hold_id)
            if plan.refund:
                confirmed = hold.model_copy(update={"status": "confirmed"})
                self._act("refunded", confirmed, f"{key}-refund", None, 0.0, resend=False)

    def _act(
        self, action: str, hold: HoldResult, key: str, bucket: str | None, offset: float, resend: bool
    ) -> CommandTicket:
        if action == "release":
            call = functools.partial(self.client.release, hold.hold_id, idempotency_key=key)
        else:
            call = functools.partial(
                self.client.confirm_payment, event_id=key, hold_id=hold.hold_id, status=action
            )
        facts: dict[str, Any] = {
            "bucket": bucket,
            "planned_offset_ms": round(offset * 1000, 1),
            "seen": hold.status,
        }
        ticket, _ = self._acknowledged(call, action, hold.hold_id, **facts)
        if resend:
            self._acknowledged(call, action, hold.hold_id, resend=True, **facts)
        return ticket


def seed_catalogue(client: StockClient, clock: DbClock, journal: Journal, probes: list[str]) -> None:
    """Warehouses, products and their stock, and the probe products; waits until the receipts are applied."""
    seed_warehouses(client)
    receipts: list[dict[str, Any]] = []
    for sku in PLENTY:
        client.upsert_product(sku=sku, name=f"Tile {sku}", pieces_per_box=4, sqm_per_box="1.44")
        receipts.append({"sku": sku, "warehouse": "BUC1", "lot": "L1", "shade": "A", "quantity": "20000"})
        receipts.append({"sku": sku, "warehouse": "CLJ1", "lot": "L2", "shade": "B", "quantity": "5000"})
    for sku in probes:
        client.upsert_product(sku=sku, name=f"Recovery probe {sku}")
    for sku in SCARCE:
        client.upsert_product(sku=sku, name=f"Rare tile {sku}", pieces_per_box=2, sqm_per_box="0.72")
        receipts.append({"sku": sku, "warehouse": "BUC1", "lot": "S1", "shade": "A", "quantity": "6"})
        receipts.append({"sku": sku, "warehouse": "CLJ1", "lot": "S2", "shade": "C", "quantity": "4"})
    tickets = []
    for r in receipts:
        sent = clock.now()
        key = f"rcv-seed-{r['sku']}-{r['lot']}"
        ticket = client.receive(idempotency_key=key, caliber="9", unit="piece", **r)
        journal.ack(Ack(key, "stock.receive", None, sent, clock.now(), 1))
        tickets.append(ticket)
    for ticket in tickets:
        ticket.wait(timeout=60)
