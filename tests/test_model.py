"""The core against a reference model: random sequences of client calls, real workers, real databases.

A hypothesis state machine sends receipts, packaging changes, carts, releases, payments and resends
through the public client (`producers.StockClient`, two of them) to a real `tessera worker` process
over PostgreSQL and Redis, and makes the same calls on the model in tests/model.py, which is written
from the rules alone. Every answer must match the model: the exception of a refused call, the hold a
reserve answers, the hold's status after a release or a payment. After every step, once nothing is
waiting in the inbox, every stock read must match the model and the books must reconcile.

Calls whose outcome the rules leave open are not sent: a line or a receipt naming a closed
warehouse, a payment that would re-reserve a line in a warehouse closed since, a cart resent after a
packaging change made it unconvertible, a receipt in boxes or m² resent after a packaging change.

One database and one worker serve the whole test; each example gets SKUs and warehouses of its
own (a fresh prefix), so examples never share stock. Holds live 600 s, so none expires during a
run (expiry has tests of its own).

On a failure, hypothesis prints the shrunk steps, each one below the client calls it made (`c0`
and `c1` are the two clients; names are shown without their per-example prefix, and a hold id as
`<the key of its reserve>`). Those calls, in order, are the reproduction.
"""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

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
from sqlalchemy import Connection, Engine, text

from db.reconcile import reconcile
from domain.errors import IdempotencyConflict, InvalidCommand, UnknownHold, UnknownSku, UnknownWarehouse
from producers import HoldResult, StockClient
from tessera.settings import Settings
from tests.conftest import Processes
from tests.model import (
    HELD,
    CartLine,
    Hold,
    Line,
    LotFacts,
    Packaging,
    Refusal,
    Refused,
    Shop,
    reserved_pieces,
    to_pieces,
)

T = TypeVar("T")

TTL = 600
TIMEOUT = 20.0
SETTLED_WITHIN = 30.0
ERRORS: dict[Refusal, type[Exception]] = {
    Refusal.INVALID: InvalidCommand,
    Refusal.UNKNOWN_SKU: UnknownSku,
    Refusal.UNKNOWN_WAREHOUSE: UnknownWarehouse,
    Refusal.UNKNOWN_HOLD: UnknownHold,
    Refusal.CONFLICT: IdempotencyConflict,
}
UNSETTLED = ("pending", "reallocating")
INBOX = """
    SELECT (SELECT count(*) FROM commands WHERE status = 'recorded')
           + (SELECT count(*) FROM commands WHERE status = 'scheduled' AND not_before <= now()),
           (SELECT count(*) FROM commands WHERE status = 'dead')
"""
STUCK = """
    SELECT idempotency_key, kind, shard, status FROM commands
    WHERE status = 'recorded' OR (status = 'scheduled' AND not_before <= now()) ORDER BY seq LIMIT 5
"""
CHANGED_BY = {
    "release": ("reserved",),
    "failed": ("reserved",),
    "paid": ("reserved", "released"),
    "refunded": ("confirmed", "paid_without_stock"),
}
"""The hold statuses that each command changes."""

PACKAGINGS = [
    Packaging(4, Decimal("1.44")),
    Packaging(4, Decimal("1.44"), allow_partial_boxes=True),
    Packaging(10, Decimal("1.00")),
    Packaging(11, Decimal("0.99"), allow_partial_boxes=True),
    Packaging(6, None),  # boxes, no m²
    Packaging(None, None),  # pieces only
]
FIRST_PACKAGING = [0, 3, 5]  # of the example's three products
WAREHOUSES = [("W0", True, 1), ("W1", True, 2), ("SHOW", False, 9)]  # code, can ship, priority
UNKNOWN = 3  # the index of a product or a warehouse that does not exist

CART_AMOUNTS = [
    ("1", "piece"),
    ("2", "piece"),
    ("5", "piece"),
    ("9", "piece"),
    ("1", "box"),
    ("2", "box"),
    ("1.5", "box"),  # only with partial boxes
    ("0.25", "box"),  # only with partial boxes
    ("1", "sqm"),
    ("2.5", "sqm"),
    ("0.72", "sqm"),
]
RECEIPT_AMOUNTS = [
    ("10", "piece"),
    ("20", "piece"),
    ("40", "piece"),
    ("60", "piece"),
    ("100", "piece"),
    ("6", "piece"),
    ("3", "box"),
    ("8", "box"),
    ("20", "box"),
    ("2.5", "box"),  # only with partial boxes
    ("6", "sqm"),
]
BAD_AMOUNTS = [("1.5", "piece"), ("0", "piece"), ("2.0005", "box"), ("1000001", "piece"), ("-2", "piece")]
SHADES = ["A", "B", None]
CALIBERS = ["9", "8", None]
EXPIRIES = [None, dt.date(2031, 3, 1), dt.date(2030, 9, 1)]

# An amount is mostly one that converts with the product's packaging at the time (its index taken
# modulo the ones that do), and once in a while (`wild`) any amount at all, which may be refused.
products = st.sampled_from([0, 1, 2] * 4 + [UNKNOWN])
wild = st.sampled_from([False] * 7 + [True])
picks = st.integers(0, 1000)  # an earlier hold, release, payment or receipt, modulo how many there are
receipt_requests = st.fixed_dictionaries(
    {
        "product": products,
        "warehouse": st.sampled_from([0, 1, 0, 1, 2] * 2 + [UNKNOWN]),
        "lot": st.integers(0, 1),
        "amount": st.integers(0, 30),
        "wild": wild,
        "facts": st.tuples(st.sampled_from(SHADES), st.sampled_from(CALIBERS), st.sampled_from(EXPIRIES)),
        # A lot received before comes again: with its facts, without them, with other facts; or a
        # lot of another warehouse of the product comes here with other facts.
        "again": st.sampled_from(["same", "same", "other", "omit", "elsewhere"]),
    }
)
REPACKS: list[tuple[int, int] | None] = [None] * 54 + [
    (p, k) for p in range(3) for k in range(len(PACKAGINGS))
]
REORGANISATIONS = ["swap priorities", "showroom ships or not", "W0 closes or opens", "W1 closes or opens"]
carts = st.fixed_dictionaries(
    {
        "repack": st.sampled_from(REPACKS),  # (product, packaging) changed before the cart
        "reorganise": st.sampled_from([None] * 16 + REORGANISATIONS),  # warehouses changed before it
        "grab": st.sampled_from([False] * 7 + [True]),  # a cart that takes all the stock of a product
        "client": st.integers(0, 1),
        "mode": st.sampled_from(["all_or_nothing", "partial"]),
        "lines": st.lists(
            st.tuples(
                products,
                st.integers(0, 30),  # the amount
                wild,
                st.sampled_from([None] * 16 + [0, 1, 2] * 2 + [UNKNOWN]),  # the warehouse
            ),
            min_size=1,
            max_size=3,
        ),
    }
)


@dataclass
class Env:
    """What every example shares: the two clients, the engine and the worker process."""

    clients: list[StockClient]
    engine: Engine
    worker: subprocess.Popen[bytes]


class ShopMachine(RuleBasedStateMachine):
    """Every rule makes the same call on the system and on the model, and compares the answers."""

    def __init__(self, env: Env) -> None:
        super().__init__()
        self.env = env
        self.prefix = f"m{uuid.uuid4().hex[:8]}"
        self.shop = Shop()
        self.count = itertools.count(1)
        self.hold_keys: list[str] = []  # the reserve keys of the holds recorded, in order
        self.hold_ids: dict[str, str] = {}  # reserve key → the system's hold id
        self.carts: dict[str, tuple[str, int, list[CartLine]]] = {}  # reserve key → (mode, ttl, lines)
        self.releases: list[tuple[str, str]] = []  # (release key, hold key)
        self.payments: list[tuple[str, str, str]] = []  # (event id, hold key, status)
        self.receipts: list[dict[str, Any]] = []  # the arguments of receipts recorded in pieces
        self.results: dict[str, dict[str, Any]] = {}  # command key → its ticket's first result
        with self.env.engine.connect() as conn:
            self.dead_before = self._inbox(conn)[1]
        note(f"example prefix {self.prefix!r} (left out of the names below)")
        for code, can_ship, priority in WAREHOUSES:
            self._upsert_warehouse(code, can_ship=can_ship, priority=priority, active=True)
        for i, packaging in enumerate(FIRST_PACKAGING):
            self._upsert_product(0, i, PACKAGINGS[packaging])

    # -- names and notes -----------------------------------------------------------------------

    def name(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def short(self, value: object) -> object:
        if isinstance(value, str):
            return value.replace(f"{self.prefix}-", "")
        if isinstance(value, list | tuple):
            return type(value)(self.short(v) for v in value)
        if isinstance(value, dict):
            return {self.short(k): self.short(v) for k, v in value.items()}
        return value

    def call(self, client: int, method: str, **kwargs: Any) -> str:
        """Note the client call: a failing example prints it just above the step that made it."""
        args = ", ".join(f"{k}={self.short(v)!r}" for k, v in kwargs.items())
        line = f"c{client}.{method}({args})"
        note(line)
        return line

    def sku(self, index: int) -> str:
        return self.name(f"P{index}" if index != UNKNOWN else "NOPE")

    def warehouse(self, index: int | None) -> str | None:
        if index is None:
            return None
        return self.name(WAREHOUSES[index][0] if index != UNKNOWN else "NOWHERE")

    def closed(self, code: str | None) -> bool:
        """Whether the warehouse was closed (inactive): a command naming one is not sent, since the
        rules do not say what it does."""
        return code in self.shop.warehouses and not self.shop.warehouses[code].active

    def key(self, kind: str) -> str:
        return self.name(f"{kind}{next(self.count)}")

    def amount(self, sku: str, index: int, wild: bool, choices: list[tuple[str, str]]) -> tuple[str, str]:
        """One of `choices` that converts with the product's packaging now, or (wild) any amount."""
        packaging = self.shop.products.get(sku)
        if wild or packaging is None:
            pool = choices + BAD_AMOUNTS
        else:
            pool = [a for a in choices if to_pieces(*a, packaging) is not None] or [("1", "piece")]
        return pool[index % len(pool)]

    def hold_for(self, command: str, pick: int, anyone: bool) -> str:
        """A hold: mostly one that the command changes, else any."""
        live = [k for k in self.hold_keys if self.shop.holds[k].status in CHANGED_BY[command]]
        pool = live if live and not anyone else self.hold_keys
        return pool[pick % len(pool)]

    def names_a_closed_warehouse(self, hold_key: str) -> bool:
        """Whether a line to re-reserve names a warehouse closed since: the rules do not say whether
        a payment on the released hold may re-reserve there, so such a payment is not sent."""
        return any(ln.reserved_once and self.closed(ln.warehouse) for ln in self.shop.holds[hold_key].lines)

    # -- plumbing ------------------------------------------------------------------------------

    def _inbox(self, conn: Connection) -> tuple[int, int]:
        """How many commands wait (recorded, or scheduled and due), and how many were parked as dead."""
        waiting, dead = conn.execute(text(INBOX)).one()
        return int(waiting), int(dead)

    def settle(self) -> None:
        """Wait until no command waits in the inbox; none may have been parked as a dead letter."""
        deadline = time.monotonic() + SETTLED_WITHIN
        with self.env.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while (counts := self._inbox(conn))[0]:
                assert self.env.worker.poll() is None, "the worker process died"
                if time.monotonic() > deadline:
                    stuck = conn.execute(text(STUCK)).all()
                    raise AssertionError(f"commands still waiting after {SETTLED_WITHIN}s: {stuck}")
                time.sleep(0.005)
        assert counts[1] == self.dead_before, "a command was parked as a dead letter"

    def expect_refused(self, refused: Refused, call: Callable[[], object], what: str) -> None:
        expected = ERRORS[refused.refusal]
        try:
            call()
        except expected:
            return
        except Exception as error:
            raise AssertionError(
                f"{what}: the model refuses it ({refused.why}) with {expected.__name__}, "
                f"the system raised {type(error).__name__}: {error}"
            ) from error
        raise AssertionError(
            f"{what}: the model refuses it ({refused.why}) with {expected.__name__}, the system accepted it"
        )

    def accepted(self, call: Callable[[], T], what: str) -> T:
        try:
            return call()
        except Exception as error:
            raise AssertionError(
                f"{what}: the model accepts it, the system raised {type(error).__name__}: {error}"
            ) from error

    def settled_hold(self, hold_key: str) -> HoldResult:
        """The hold once it is decided (not pending, not reallocating)."""
        hold_id = self.hold_ids[hold_key]
        deadline = time.monotonic() + TIMEOUT
        while True:
            hold = self.env.clients[0].hold(hold_id)
            if hold.status not in UNSETTLED:
                return hold
            assert time.monotonic() < deadline, f"hold {hold_key} still {hold.status} after {TIMEOUT}s"
            time.sleep(0.005)

    def check_hold(self, actual: HoldResult, hold: Hold, what: str) -> None:
        expected = {
            "status": hold.status,
            "mode": hold.mode,
            "payment": hold.payment,
            "lines": [_expected_line(line) for line in hold.lines],
        }
        got = {
            "status": actual.status,
            "mode": actual.mode,
            "payment": actual.payment,
            "lines": [
                {k: _actual_line_field(line, k) for k in want}
                for line, want in zip(actual.lines, expected["lines"], strict=False)
            ],
        }
        if len(actual.lines) != len(hold.lines):
            got["lines"] = [*got["lines"], f"{len(actual.lines)} lines in all"]
        assert got == expected, (
            f"{what} differs from the model:\n  model:  {self.short(expected)}\n  system: {self.short(got)}"
        )

    def _upsert_warehouse(self, short: str, *, can_ship: bool, priority: int, active: bool) -> None:
        kind = "showroom" if short == "SHOW" else "warehouse"
        kwargs: dict[str, Any] = {"code": self.name(short), "name": short, "can_ship": can_ship}
        kwargs |= {"priority": priority, "type": kind, "active": active}
        self.call(0, "upsert_warehouse", **kwargs)
        self.env.clients[0].upsert_warehouse(**kwargs)
        self.shop.upsert_warehouse(self.name(short), can_ship=can_ship, priority=priority, active=active)

    def _upsert_product(self, client: int, index: int, packaging: Packaging) -> None:
        kwargs: dict[str, Any] = {
            "sku": self.sku(index),
            "name": f"tile {index}",
            "pieces_per_box": packaging.pieces_per_box,
            "sqm_per_box": packaging.sqm_per_box,
            "allow_partial_boxes": packaging.allow_partial_boxes,
        }
        self.call(client, "upsert_product", **kwargs)
        self.env.clients[client].upsert_product(**kwargs)
        self.shop.upsert_product(self.sku(index), packaging)

    # -- receipts and packaging ----------------------------------------------------------------

    @initialize(
        receipts=st.lists(receipt_requests, min_size=2, max_size=5),
        first_carts=st.lists(carts, min_size=1, max_size=2),
    )
    def stock_up(self, receipts: list[dict[str, Any]], first_carts: list[dict[str, Any]]) -> None:
        """A few receipts and carts to start from, so that there is stock and holds to work on."""
        for request in receipts:
            self.receive(**request)
        for cart in first_carts:
            self.reserve(cart)

    @rule(
        request=receipt_requests,
        again=st.sampled_from([None] * 6 + ["same", "changed", "cart key"]),
        pick=picks,
    )
    def receive_goods(self, request: dict[str, Any], again: str | None, pick: int) -> None:
        """Goods into a lot. Or (again) a receipt in pieces resent: the same (nothing changes), or its
        key with another quantity; or a cart's key under a receipt (both refused)."""
        open_ones = [i for i in range(len(WAREHOUSES)) if not self.closed(self.warehouse(i))]
        if again == "cart key" and self.hold_keys and open_ones:
            args = self._receipt_args(0, open_ones[0], 0, "1", "piece", LotFacts(None, None, None))
            args["idempotency_key"] = self.hold_keys[pick % len(self.hold_keys)]
            self._receive(1, args)
        elif again in ("same", "changed") and self.receipts:
            args = dict(self.receipts[pick % len(self.receipts)])
            if again == "changed":
                args["quantity"] = str(Decimal(args["quantity"]) + 1)
            if not self.closed(args["warehouse"]):
                self._receive(1, args)
        else:
            self.receive(**request)

    def receive(
        self,
        product: int,
        warehouse: int,
        lot: int,
        amount: int,
        wild: bool,
        facts: tuple[str | None, str | None, dt.date | None],
        again: str,
    ) -> None:
        """Goods into a lot, whose code names its warehouse (W0-L1). A lot received before comes again
        with its facts, without them, or with its stated facts changed; or a lot the product has
        (elsewhere) comes with other facts. The last two are refused."""
        args = self._receipt_args(product, warehouse, lot, "1", "piece", LotFacts(*facts))
        elsewhere = [
            (code, facts_there)
            for (sku, code), facts_there in sorted(self.shop.facts.items())
            if sku == args["sku"]
            and code != args["lot"]
            and _other_facts(facts_there) != LotFacts(None, None, None)
        ]
        if again == "elsewhere" and elsewhere:  # the product has that lot: refused, whatever the warehouse
            code, facts_there = elsewhere[lot % len(elsewhere)]
            args |= {"lot": code, "shade": None, "caliber": None, "expiry": None}
            args |= {k: v for k, v in vars(_other_facts(facts_there)).items() if v is not None}
        elif again == "elsewhere":
            again = "same"
        known = self.shop.facts.get((args["sku"], args["lot"]))
        if known is not None and again != "elsewhere":
            given = {"same": known, "omit": LotFacts(None, None, None), "other": _other_facts(known)}[again]
            args |= {"shade": given.shade, "caliber": given.caliber, "expiry": given.expiry}
        args["quantity"], args["unit"] = self.amount(args["sku"], amount, wild, RECEIPT_AMOUNTS)
        if not self.closed(args["warehouse"]):
            self._receive(0, args)

    def _receipt_args(
        self, product: int, warehouse: int, lot: int, quantity: str, unit: str, facts: LotFacts
    ) -> dict[str, Any]:
        return {
            "idempotency_key": self.key("rcv"),
            "warehouse": self.warehouse(warehouse),
            "sku": self.sku(product),
            "quantity": quantity,
            "unit": unit,
            "lot": f"{WAREHOUSES[warehouse][0] if warehouse != UNKNOWN else 'X'}-L{lot}",
            "shade": facts.shade,
            "caliber": facts.caliber,
            "expiry": facts.expiry,
        }

    def _receive(self, client: int, args: dict[str, Any]) -> None:
        what = self.call(client, "receive", **args)
        key = args["idempotency_key"]
        try:
            fresh = self.shop.receive(
                key,
                warehouse=args["warehouse"],
                sku=args["sku"],
                quantity=args["quantity"],
                unit=args["unit"],
                lot=args["lot"],
                facts=LotFacts(args["shade"], args["caliber"], args["expiry"]),
            )
        except Refused as refused:
            self.expect_refused(refused, lambda: self.env.clients[client].receive(**args), what)
            return
        result = self.accepted(lambda: self.env.clients[client].receive(**args).wait(timeout=TIMEOUT), what)
        if not fresh:
            assert result == self.results[key], (
                f"{what}: a resend answered {result}, first {self.results[key]}"
            )
            return
        assert result.get("outcome") == "received", f"{what}: answered {result}"
        self.results[key] = result
        if args["unit"] == "piece":  # a resend of it is the same payload whatever the packaging
            self.receipts.append(args)

    # -- holds ---------------------------------------------------------------------------------

    @rule(cart=carts)
    def reserve(self, cart: dict[str, Any]) -> None:
        """A cart of 1-3 lines; sometimes after a packaging change (another box size or partial-box
        rule), which the very next command of every client must convert with, or after a change of
        warehouses; sometimes a cart that takes all the stock of a product."""
        if cart["reorganise"] is not None:
            self.reorganise_warehouses(cart["reorganise"])
        if cart["repack"] is not None:
            product, packaging = cart["repack"]
            self._upsert_product(1 - cart["client"], product, PACKAGINGS[packaging])
        lines = [
            CartLine(
                self.sku(p),
                *self.amount(self.sku(p), a, odd, CART_AMOUNTS),
                None if self.closed(self.warehouse(w)) else self.warehouse(w),
            )
            for p, a, odd, w in cart["lines"]
        ]
        if cart["grab"]:  # a later payment on a released hold of the product may find no stock
            lines = self.all_the_stock(lines[0].sku) or lines
        self._reserve(cart["client"], self.key("cart"), cart["mode"], TTL, lines)

    def reorganise_warehouses(self, change: str) -> None:
        """Warehouses change: the next line without a warehouse must look in the new order, skip a
        closed warehouse, or look in a showroom that now ships."""
        w0, w1, show = (self.shop.warehouses[self.name(code)] for code, _, _ in WAREHOUSES)
        if change == "swap priorities":
            self._upsert_warehouse("W0", can_ship=w0.can_ship, priority=w1.priority, active=w0.active)
            self._upsert_warehouse("W1", can_ship=w1.can_ship, priority=w0.priority, active=w1.active)
        elif change == "showroom ships or not":
            self._upsert_warehouse(
                "SHOW", can_ship=not show.can_ship, priority=show.priority, active=show.active
            )
        else:
            w = w0 if change.startswith("W0") else w1
            self._upsert_warehouse(change[:2], can_ship=w.can_ship, priority=w.priority, active=not w.active)

    def all_the_stock(self, sku: str) -> list[CartLine]:
        """A line for every lot of the product with stock, the largest first (so each line takes its own lot)."""
        lots = [
            b
            for b in self.shop.balances.values()
            if b.sku == sku and b.available > 0 and not self.closed(b.warehouse)
        ]
        return [
            CartLine(b.sku, str(b.available), "piece", b.warehouse)
            for b in sorted(lots, key=lambda b: b.available, reverse=True)
        ]

    @rule(
        pick=picks,
        gone=st.lists(st.booleans(), min_size=3, max_size=3),
        client=st.integers(0, 1),
        new_cart=st.sampled_from([None, "all_or_nothing", "partial"]),
    )
    def pay_after_the_stock_went(
        self, pick: int, gone: list[bool], client: int, new_cart: str | None
    ) -> None:
        """A payment that comes after its hold was given back (released first if it was still
        reserved) and other carts took all the stock of some of its products (`gone[i]`: the i-th of
        them): the re-reservation finds every line, some, or none. The hold is an earlier one, or
        (`new_cart`) a new cart of one piece of every product in stock."""
        holds = [
            k
            for k in self.hold_keys
            if self.shop.holds[k].status in ("reserved", "released") and not self.names_a_closed_warehouse(k)
        ]
        # Mostly a hold of several products (some may be gone, some not), all-or-nothing first.
        several = [
            k for k in holds if len({ln.sku for ln in self.shop.holds[k].lines if ln.reserved_once}) > 1
        ]
        whole = [k for k in several if self.shop.holds[k].mode == "all_or_nothing"]
        holds = [whole, several, holds][pick % 3] or several or holds
        if new_cart is not None:
            in_stock = [
                sku for sku in sorted(self.shop.products) if self.shop.allocate(sku, None, Decimal(1))[0]
            ]
            if in_stock:
                key = self.key("cart")
                self._reserve(
                    client, key, new_cart, TTL, [CartLine(sku, "1", "piece", None) for sku in in_stock]
                )
                if key in self.shop.holds and self.shop.holds[key].status == "reserved":
                    holds = [key]
        if not holds:
            return
        hold = holds[pick // 3 % len(holds)]
        if self.shop.holds[hold].status == "reserved":
            key = self.key("rel")
            self.releases.append((key, hold))
            self._release(client, hold, key)
        skus = sorted({line.sku for line in self.shop.holds[hold].lines if line.reserved_once})
        for i, sku in enumerate(skus):
            if gone[i] and (lines := self.all_the_stock(sku)):
                self._reserve(1 - client, self.key("cart"), "partial", TTL, lines)
        event = self.key("evt")
        self.payments.append((event, hold, "paid"))
        self._pay(client, hold, event, "paid")

    @precondition(lambda self: self.hold_keys)
    @rule(
        pick=picks,
        client=st.integers(0, 1),
        change=st.sampled_from(["none", "none", "none", "mode", "ttl", "release key"]),
    )
    def resend_reserve(self, pick: int, client: int, change: str) -> None:
        """The same cart under the same key (the same hold back). Or another cart under it, or a cart
        under a release's key (both refused)."""
        if change == "release key" and self.releases:
            key = self.releases[pick % len(self.releases)][0]
            self._reserve(client, key, "partial", TTL, [CartLine(self.sku(0), "1", "piece", None)])
            return
        key = self.hold_keys[pick % len(self.hold_keys)]
        mode, ttl, cart = self.carts[key]
        if change == "mode":
            mode = "partial" if mode == "all_or_nothing" else "all_or_nothing"
        elif change == "ttl":
            ttl += 1
        if any(self.closed(line.warehouse) for line in cart):
            return
        try:
            self.shop.convert_cart(cart)
        except Refused:
            return  # a packaging change made the cart unconvertible: which answer wins is not specified
        self._reserve(client, key, mode, ttl, cart)

    def _reserve(self, client: int, key: str, mode: str, ttl: int, cart: list[CartLine]) -> None:
        request = [
            {"sku": c.sku, "quantity": c.quantity, "unit": c.unit}
            | ({"warehouse": c.warehouse} if c.warehouse else {})
            for c in cart
        ]
        what = self.call(client, "reserve", idempotency_key=key, lines=request, ttl_seconds=ttl, mode=mode)
        stock_client = self.env.clients[client]

        def send() -> Any:
            return stock_client.reserve(idempotency_key=key, lines=request, ttl_seconds=ttl, mode=mode)

        try:
            placed = self.shop.reserve(key, mode=mode, ttl_seconds=ttl, lines=cart)
        except Refused as refused:
            self.expect_refused(refused, send, what)
            return
        ticket = self.accepted(send, what)
        if placed.fresh:
            self.hold_ids[key] = ticket.hold_id
            self.hold_keys.append(key)
            self.carts[key] = (mode, ttl, cart)
        else:
            assert ticket.hold_id == self.hold_ids[key], f"{what}: a resend got another hold"
        self.check_hold(ticket.wait(timeout=TIMEOUT), placed.hold, f"{what}: its answer")
        self.settle()
        self.check_hold(self.settled_hold(key), placed.hold, f"{what}: the hold read back")

    @precondition(lambda self: self.hold_keys)
    @rule(
        pick=picks,
        anyone=wild,
        client=st.integers(0, 1),
        how=st.sampled_from(
            ["fresh"] * 5 + ["unknown hold", "resend", "resend for another hold", "cart key"]
        ),
    )
    def release(self, pick: int, anyone: bool, client: int, how: str) -> None:
        """Give a hold back. Or: a hold id that names no hold, a release resent for its hold (nothing
        changes) or for another hold, a cart's key under a release (the others are refused)."""
        if how == "unknown hold":
            key, hold_id = self.key("rel"), str(uuid.uuid4())
            what = self.call(client, "release", hold_id=hold_id, idempotency_key=key)
            refused = Refused(Refusal.UNKNOWN_HOLD, "no such hold")
            send = self.env.clients[client].release
            self.expect_refused(refused, lambda: send(hold_id, idempotency_key=key), what)
        elif how == "cart key":
            hold = self.hold_keys[pick % len(self.hold_keys)]
            self._release(client, hold, hold)
        elif how.startswith("resend") and self.releases:
            key, hold = self.releases[pick % len(self.releases)]
            if how == "resend for another hold":
                hold = self.hold_keys[(pick + 1) % len(self.hold_keys)]
            self._release(client, hold, key)
        else:
            key, hold = self.key("rel"), self.hold_for("release", pick, anyone)
            self.releases.append((key, hold))
            self._release(client, hold, key)

    def _release(self, client: int, hold: str, key: str) -> None:
        what = self.call(client, "release", hold_id=f"<{hold}>", idempotency_key=key)
        hold_id = self.hold_ids[hold]

        def send() -> Any:
            return self.env.clients[client].release(hold_id, idempotency_key=key)

        try:
            applied = self.shop.release(hold, key)
        except Refused as refused:
            self.expect_refused(refused, send, what)
            return
        result = self.accepted(lambda: send().wait(timeout=TIMEOUT), what)
        self._check_command(what, key, result, applied.fresh, applied.status_after, applied.hold)

    @precondition(lambda self: self.hold_keys)
    @rule(
        pick=picks,
        anyone=wild,
        client=st.integers(0, 1),
        status=st.sampled_from(["paid", "paid", "failed", "refunded"]),
        how=st.sampled_from(
            ["fresh"] * 5 + ["resend", "resend", "resend with another status", "resend for another hold"]
        ),
    )
    def pay(self, pick: int, anyone: bool, client: int, status: str, how: str) -> None:
        """A payment event: paid, failed or refunded. Or an event resent: the same (nothing changes),
        or with another status or for another hold (refused)."""
        if how.startswith("resend") and self.payments:
            event, hold, status = self.payments[pick % len(self.payments)]
            if how == "resend with another status":
                status = {"paid": "failed", "failed": "refunded", "refunded": "paid"}[status]
            elif how == "resend for another hold":
                hold = self.hold_keys[(pick + 1) % len(self.hold_keys)]
        else:
            event, hold = self.key("evt"), self.hold_for(status, pick, anyone)
            if (
                status == "paid"
                and self.shop.holds[hold].status == "released"
                and self.names_a_closed_warehouse(hold)
            ):
                return
            self.payments.append((event, hold, status))
        self._pay(client, hold, event, status)

    def _pay(self, client: int, hold: str, event: str, status: str) -> None:
        what = self.call(client, "confirm_payment", event_id=event, hold_id=f"<{hold}>", status=status)
        hold_id = self.hold_ids[hold]

        def send() -> Any:
            return self.env.clients[client].confirm_payment(event_id=event, hold_id=hold_id, status=status)

        try:
            applied = self.shop.pay(hold, event, status)
        except Refused as refused:
            self.expect_refused(refused, send, what)
            return
        result = self.accepted(lambda: send().wait(timeout=TIMEOUT), what)
        self._check_command(
            what, f"payment:{event}", result, applied.fresh, applied.status_after, applied.hold
        )

    def _check_command(
        self, what: str, key: str, result: dict[str, Any], fresh: bool, status_after: str, hold: Hold
    ) -> None:
        """A release's or a payment's ticket answer, then the hold once the command has settled."""
        if not fresh:
            assert result == self.results[key], (
                f"{what}: a resend answered {result}, first {self.results[key]}"
            )
        else:
            self.results[key] = result
            if result.get("hold_status") not in UNSETTLED:
                assert result.get("hold_status") == status_after, (
                    f"{what}: answered hold_status {result.get('hold_status')!r}, the model {status_after!r}"
                )
        self.settle()
        self.check_hold(self.settled_hold(hold.key), hold, f"{what}: the hold afterwards")

    # -- what must hold after every step -------------------------------------------------------

    @invariant()
    def stock_reads_match_the_model_and_the_books_reconcile(self) -> None:
        self.settle()
        for index in range(3):
            self._check_stock(self.sku(index), self.env.clients[index % 2])
        with self.env.engine.connect() as conn:
            differences = [d for d in reconcile(conn) if d.sku.startswith(self.prefix)]
            assert not differences, "the books do not reconcile:\n" + "\n".join(map(str, differences))
            bad = conn.execute(
                text(
                    "SELECT count(*) FROM stock_balances b JOIN products p ON p.id = b.product_id "
                    "WHERE p.sku LIKE :prefix AND (b.reserved > b.on_hand OR b.on_hand < 0 OR b.reserved < 0 "
                    "OR b.damaged < 0 OR b.quarantine < 0 OR b.in_transit < 0)"
                ),
                {"prefix": f"{self.prefix}-%"},
            ).scalar_one()
            assert bad == 0, f"{bad} balances with reserved > on_hand or a negative bucket"
            self._check_alerts(conn)

    def _check_stock(self, sku: str, client: StockClient) -> None:
        view = client.stock(sku)
        expected = self.shop.stock(sku)
        got = {(b.warehouse, b.lot): (b.on_hand, b.reserved, b.available) for b in view.lots}
        assert got == expected, (
            f"stock of {self.short(sku)} per lot differs from the model:\n"
            f"  model:  {self.short(expected)}\n  system: {self.short(got)}"
        )
        totals = tuple(sum((v[i] for v in expected.values()), Decimal(0)) for i in range(3))
        assert (view.on_hand, view.reserved, view.available) == totals, (
            f"stock totals of {self.short(sku)}: model {totals}, system {(view.on_hand, view.reserved, view.available)}"
        )
        facts = {(b.warehouse, b.lot): LotFacts(b.shade, b.caliber, b.expiry) for b in view.lots}
        want = {k: self.shop.facts[(sku, k[1])] for k in expected}
        assert facts == want, (
            f"lot facts of {self.short(sku)}: model {self.short(want)}, system {self.short(facts)}"
        )

    def _check_alerts(self, conn: Connection) -> None:
        """One open critical paid_without_stock alert per hold paid without stock, none once refunded."""
        rows = conn.execute(
            text(
                "SELECT CAST(hold_id AS text), severity, count(*) FROM alerts "
                "WHERE kind = 'paid_without_stock' AND status <> 'resolved' "
                "AND hold_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1, 2"
            ),
            {"ids": list(self.hold_ids.values())},
        ).all()
        alerts = {(hold, severity): count for hold, severity, count in rows}
        expected = {(self.hold_ids[h.key], "critical"): 1 for h in self.shop.holds.values() if h.alert_open}
        assert alerts == expected, (
            f"open paid_without_stock alerts (hold, severity): model {self.short(expected)}, "
            f"system {self.short(alerts)}"
        )


def _expected_line(line: Line) -> dict[str, Any]:
    """The fields of a hold line that the rules decide (the others are not compared)."""
    want: dict[str, Any] = {"sku": line.sku, "pieces": line.pieces}
    if line.status is not None:
        want["status"] = line.status
        want["reserved_pieces"] = reserved_pieces(line)
    if line.status in (*HELD, "returned"):
        want["lot"] = line.lot
    if line.status == "rejected" and line.available is not None:
        want["available"] = line.available
    return want


def _actual_line_field(line: Any, name: str) -> Any:
    if name == "lot":
        return (line.warehouse, line.lot)
    return getattr(line, name)


def _other_facts(known: LotFacts) -> LotFacts:
    """The lot's facts with every stated one changed (refused); unstated ones stay unstated."""
    return LotFacts(
        None if known.shade is None else ("B" if known.shade != "B" else "A"),
        None if known.caliber is None else ("8" if known.caliber != "8" else "9"),
        None if known.expiry is None else known.expiry + dt.timedelta(days=1),
    )


# About 90 s when it passes; when it fails, hypothesis may spend up to 5 more minutes shrinking.
@pytest.mark.timeout(900)
def test_the_core_agrees_with_the_reference_model(
    settings: Settings, engine: Engine, client: StockClient, processes: Processes
) -> None:
    """Random sequences of client calls give the answers, stock and books that the rules say."""
    worker = processes.worker()
    with StockClient(settings, engine=engine) as second:
        env = Env(clients=[client, second], engine=engine, worker=worker)
        run_state_machine_as_test(
            lambda: ShopMachine(env),
            settings=hypothesis_settings(max_examples=80, stateful_step_count=40, deadline=None),
        )
