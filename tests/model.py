"""A reference model of Tessera's stock and hold rules, for the stateful test in test_model.py.

Written from the rules (the specification of conversions, receipts, allocation, holds, payments
and idempotency) and nothing else: it imports nothing from the core. Everything is plain Python
over Decimal pieces, one call at a time, with no queue: after each call the model is in the state
the system must reach once every command has been applied.

Where the rules leave something open (what a line of a rejected hold shows after a payment, for
instance), the model records `None` and the test does not compare that field.

A call that the system must refuse raises `Refused` before the model changes anything.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

MAX_QUANTITY = Decimal(1_000_000)
HELD = ("reserved", "confirmed")
"""Line statuses whose pieces a hold still holds (reserved_pieces = pieces)."""


class Refusal(enum.Enum):
    """Why a call is refused; the test maps each to the exception the client must raise."""

    INVALID = "invalid"  # InvalidCommand (a bad quantity, unit or conversion, a lot with other facts)
    UNKNOWN_SKU = "unknown_sku"
    UNKNOWN_WAREHOUSE = "unknown_warehouse"
    UNKNOWN_HOLD = "unknown_hold"
    CONFLICT = "conflict"  # IdempotencyConflict


class Refused(Exception):
    def __init__(self, refusal: Refusal, why: str) -> None:
        super().__init__(f"{refusal.value}: {why}")
        self.refusal, self.why = refusal, why


@dataclass(frozen=True)
class Packaging:
    pieces_per_box: int | None
    sqm_per_box: Decimal | None
    allow_partial_boxes: bool = False


@dataclass(frozen=True)
class Warehouse:
    code: str
    can_ship: bool
    priority: int
    active: bool = True


@dataclass(frozen=True)
class LotFacts:
    shade: str | None
    caliber: str | None
    expiry: dt.date | None


@dataclass
class Balance:
    """One (product, warehouse, lot) balance."""

    sku: str
    warehouse: str
    lot: str
    order: int  # when the lot was first received (FIFO among lots expiring together)
    on_hand: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)

    @property
    def available(self) -> Decimal:
        return self.on_hand - self.reserved


@dataclass
class Line:
    sku: str
    warehouse: str | None  # the requested warehouse
    pieces: Decimal
    status: str | None  # None: the rules do not say; not compared
    lot: tuple[str, str] | None = None  # (warehouse, lot) the line holds or sold from
    reserved_once: bool = False
    available: Decimal | None = None  # on a line rejected at placement


@dataclass
class Hold:
    key: str
    mode: str
    lines: list[Line]
    status: str
    payment: str = "none"
    alert_open: bool = False


@dataclass(frozen=True)
class CartLine:
    sku: str
    quantity: str
    unit: str
    warehouse: str | None


@dataclass
class Placed:
    hold: Hold
    fresh: bool  # False: a resend of the same cart under the same key


@dataclass
class Applied:
    hold: Hold
    fresh: bool  # False: a resend of the same command under the same key
    status_after: str  # the hold's status right after this command


def parse_quantity(raw: str) -> Decimal | None:
    """Positive, finite, at most 3 decimal places, at most 1,000,000; None when it is not."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0 or value > MAX_QUANTITY or (value * 1000) % 1 != 0:
        return None
    return value


def _ceil(value: Decimal) -> Decimal:
    return value.to_integral_value(rounding=ROUND_CEILING)


def to_pieces(quantity: str, unit: str, packaging: Packaging) -> Decimal | None:
    """The pieces a quantity in a unit makes, or None when the conversion refuses it."""
    q = parse_quantity(quantity)
    if q is None:
        return None
    ppb, spb, partial = packaging.pieces_per_box, packaging.sqm_per_box, packaging.allow_partial_boxes
    if unit == "piece":
        return q if q % 1 == 0 else None
    if unit == "box":
        if ppb is None or (not partial and q % 1 != 0):
            return None
        return _ceil(q * ppb)
    if unit == "sqm":
        if ppb is None or spb is None:
            return None
        if partial:
            return _ceil(q * ppb / spb)
        return _ceil(q / spb) * ppb
    return None


class Shop:
    """The model: warehouses, products, balances, holds and every idempotency key used."""

    def __init__(self) -> None:
        self.warehouses: dict[str, Warehouse] = {}
        self.products: dict[str, Packaging] = {}
        self.facts: dict[tuple[str, str], LotFacts] = {}  # (sku, lot) → the lot's facts
        self.balances: dict[tuple[str, str, str], Balance] = {}  # (sku, warehouse, lot)
        self.holds: dict[str, Hold] = {}  # by the reserve's idempotency key
        self.keys: dict[str, tuple[str, object]] = {}  # key → (kind, payload)
        self._received = 0

    # -- reference data ------------------------------------------------------------------------

    def upsert_warehouse(self, code: str, *, can_ship: bool, priority: int, active: bool = True) -> None:
        self.warehouses[code] = Warehouse(code, can_ship, priority, active)

    def upsert_product(self, sku: str, packaging: Packaging) -> None:
        self.products[sku] = packaging

    # -- idempotency ---------------------------------------------------------------------------

    def _seen(self, key: str, kind: str, payload: object) -> bool:
        """Whether the key was used for this very command (a resend); another command under it is refused."""
        if key not in self.keys:
            return False
        if self.keys[key] != (kind, payload):
            raise Refused(
                Refusal.CONFLICT, f"key {key!r} was used for {self.keys[key][0]} with another payload"
            )
        return True

    # -- receipts ------------------------------------------------------------------------------

    def receive(
        self,
        key: str,
        *,
        warehouse: str,
        sku: str,
        quantity: str,
        unit: str,
        lot: str,
        facts: LotFacts,
    ) -> bool:
        """Receive goods; True when recorded now, False for a resend. Raises Refused."""
        problems = self.problems(sku, warehouse, quantity, unit)
        if problems:
            raise self.refusal(problems)
        pieces = to_pieces(quantity, unit, self.products[sku]) or Decimal(0)
        payload = (warehouse, sku, quantity, unit, lot, facts)
        if self._seen(key, "receive", payload):
            return False
        known = self.facts.get((sku, lot))
        if known is not None:
            for name in ("shade", "caliber", "expiry"):
                old, new = getattr(known, name), getattr(facts, name)
                if old is not None and new is not None and old != new:
                    raise Refused(Refusal.INVALID, f"lot {lot} has {name} {old}, not {new}")
        self.keys[key] = ("receive", payload)
        if known is None:
            self.facts[(sku, lot)] = facts
        balance = self.balances.get((sku, warehouse, lot))
        if balance is None:
            self._received += 1
            balance = self.balances[(sku, warehouse, lot)] = Balance(sku, warehouse, lot, self._received)
        balance.on_hand += pieces
        return True

    # -- allocation ----------------------------------------------------------------------------

    def _candidates(self, warehouse: str | None) -> list[str]:
        if warehouse is not None:
            return [warehouse]
        shipping = [w for w in self.warehouses.values() if w.can_ship and w.active]
        return [w.code for w in sorted(shipping, key=lambda w: (w.priority, w.code))]

    def allocate(self, sku: str, warehouse: str | None, pieces: Decimal) -> tuple[Balance | None, Decimal]:
        """The lot that serves a line (or None), and the available stock of every candidate lot."""
        candidates = self._candidates(warehouse)
        for code in candidates:
            lots = [
                b
                for b in self.balances.values()
                if b.sku == sku and b.warehouse == code and b.available >= pieces
            ]
            if lots:
                return min(lots, key=self._fefo), Decimal(0)
        available = sum(
            (b.available for b in self.balances.values() if b.sku == sku and b.warehouse in candidates),
            Decimal(0),
        )
        return None, available

    def _fefo(self, balance: Balance) -> tuple[bool, dt.date, int]:
        expiry = self.facts[(balance.sku, balance.lot)].expiry
        return (expiry is None, expiry or dt.date.max, balance.order)

    def _balance(self, line: Line) -> Balance:
        assert line.lot is not None
        return self.balances[(line.sku, *line.lot)]

    def _reserve_line(self, line: Line) -> bool:
        balance, available = self.allocate(line.sku, line.warehouse, line.pieces)
        if balance is None:
            line.available = available
            return False
        balance.reserved += line.pieces
        line.lot, line.status, line.reserved_once = (balance.warehouse, balance.lot), "reserved", True
        return True

    def _release_line(self, line: Line, status: str) -> None:
        self._balance(line).reserved -= line.pieces
        line.status = status

    def _sell_line(self, line: Line) -> None:
        balance = self._balance(line)
        balance.reserved -= line.pieces
        balance.on_hand -= line.pieces
        line.status = "confirmed"

    def _return_line(self, line: Line) -> None:
        self._balance(line).on_hand += line.pieces
        line.status = "returned"

    # -- holds ---------------------------------------------------------------------------------

    def problems(self, sku: str, warehouse: str | None, quantity: str, unit: str) -> list[Refused]:
        """Everything wrong with a quantity of a product in a warehouse (empty: it converts)."""
        found = []
        if parse_quantity(quantity) is None:
            found.append(Refused(Refusal.INVALID, f"bad quantity {quantity!r}"))
        if sku not in self.products:
            found.append(Refused(Refusal.UNKNOWN_SKU, sku))
        elif to_pieces(quantity, unit, self.products[sku]) is None and not found:
            found.append(Refused(Refusal.INVALID, f"{quantity} {unit} does not convert"))
        if warehouse is not None and warehouse not in self.warehouses:
            found.append(Refused(Refusal.UNKNOWN_WAREHOUSE, warehouse))
        return found

    @staticmethod
    def refusal(problems: list[Refused]) -> Refused:
        """One problem names its exception; which of several comes first is not specified, so then
        only their common class (InvalidCommand) is expected."""
        if len({p.refusal for p in problems}) == 1:
            return problems[0]
        return Refused(Refusal.INVALID, "; ".join(map(str, problems)))

    def convert_cart(self, lines: list[CartLine]) -> list[Line]:
        """The cart's lines in pieces, or Refused."""
        problems = [
            p for line in lines for p in self.problems(line.sku, line.warehouse, line.quantity, line.unit)
        ]
        if problems:
            raise self.refusal(problems)
        return [
            Line(
                line.sku,
                line.warehouse,
                to_pieces(line.quantity, line.unit, self.products[line.sku]) or Decimal(0),
                "pending",
            )
            for line in lines
        ]

    def reserve(self, key: str, *, mode: str, ttl_seconds: int, lines: list[CartLine]) -> Placed:
        converted = self.convert_cart(lines)
        payload = (mode, ttl_seconds, tuple(lines))
        if self._seen(key, "reserve", payload):
            return Placed(self.holds[key], fresh=False)
        self.keys[key] = ("reserve", payload)
        hold = self.holds[key] = Hold(key, mode, converted, status="pending")
        reserved = [ln for ln in converted if self._reserve_line(ln)]
        for line in converted:
            if line not in reserved:
                line.status = "rejected"
        if mode == "all_or_nothing" and len(reserved) < len(converted):
            for line in reserved:
                self._release_line(line, "released")
            hold.status = "rejected"
        else:
            hold.status = "reserved" if reserved else "rejected"
        return Placed(hold, fresh=True)

    def release(self, hold_key: str, key: str) -> Applied:
        hold = self.holds[hold_key]
        if self._seen(key, "release", hold_key):
            return Applied(hold, fresh=False, status_after=hold.status)
        self.keys[key] = ("release", hold_key)
        if hold.status == "reserved":
            self._give_back(hold, "released")
        return Applied(hold, fresh=True, status_after=hold.status)

    def _give_back(self, hold: Hold, status: str) -> None:
        for line in hold.lines:
            if line.status == "reserved":
                self._release_line(line, "released")
        hold.status = status

    def pay(self, hold_key: str, event_id: str, status: str) -> Applied:
        hold = self.holds[hold_key]
        if self._seen(f"payment:{event_id}", "payment", (hold_key, status)):
            return Applied(hold, fresh=False, status_after=hold.status)
        self.keys[f"payment:{event_id}"] = ("payment", (hold_key, status))
        if hold.status == "reserved":
            if status == "paid":
                for line in hold.lines:
                    if line.status == "reserved":
                        self._sell_line(line)
                hold.status, hold.payment = "confirmed", "paid"
            elif status == "failed":
                self._give_back(hold, "released")
                hold.payment = "failed"
            # refunded: nothing was paid, a no-op
        elif hold.status in ("released", "expired"):
            if status == "paid":
                self._reallocate(hold)
            # release, failed: no-op. refunded: the rules list no transition (nothing was paid).
        elif hold.status == "rejected":
            if status == "paid":
                hold.status, hold.payment, hold.alert_open = "paid_without_stock", "paid", True
                for line in hold.lines:
                    line.status = None  # the rules do not say what its lines show
        elif hold.status in ("confirmed", "paid_without_stock") and status == "refunded":
            for line in hold.lines:
                if line.status == "confirmed":
                    self._return_line(line)
            hold.status, hold.payment, hold.alert_open = "refunded", "refunded", False
        return Applied(hold, fresh=True, status_after=hold.status)

    def _reallocate(self, hold: Hold) -> None:
        """A payment on an expired or released hold: every line reserved once is allocated again."""
        hold.payment = "paid"
        wanted = [ln for ln in hold.lines if ln.reserved_once]
        got: list[Line] = []
        missing: list[Line] = []
        for line in wanted:
            line.available = None
            (got if self._reserve_line(line) else missing).append(line)
        if hold.mode == "all_or_nothing" and missing:
            for line in got:
                self._release_line(line, "released")
            for line in missing:
                line.status = "unfulfilled"
            hold.status, hold.alert_open = "paid_without_stock", True
            return
        for line in got:
            self._sell_line(line)
        for line in missing:
            line.status = "unfulfilled"
        hold.status = "paid_without_stock" if missing else "confirmed"
        hold.alert_open = bool(missing)

    # -- reads ---------------------------------------------------------------------------------

    def stock(self, sku: str) -> dict[tuple[str, str], tuple[Decimal, Decimal, Decimal]]:
        """(warehouse, lot) → (on_hand, reserved, available) of one product."""
        return {
            (b.warehouse, b.lot): (b.on_hand, b.reserved, b.available)
            for b in self.balances.values()
            if b.sku == sku
        }


def reserved_pieces(line: Line) -> Decimal:
    return line.pieces if line.status in HELD else Decimal(0)
