"""The Python client of the checkout service and the payment relay.

Every stock-changing call records its command durably in the Postgres inbox (with its
idempotency key) before it returns a ticket, then rings the shard's doorbell. Resending the same
key with the same payload returns the same ticket; another payload under that key is refused.
Reads (`hold`, `stock`) go straight to Postgres.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from redis import Redis
from sqlalchemy import Connection, Engine, text

from db import repository as repo
from db.engine import get_engine
from domain.commands import HoldCommand, StockCommand, payload_digest, shard_of
from domain.errors import (
    CommandDead,
    IdempotencyConflict,
    InvalidCommand,
    LotMismatch,
    ResultTimeout,
    UnknownHold,
    UnknownSku,
    UnknownWarehouse,
)
from domain.holds import HoldMode, HoldStatus, Payment
from domain.quantities import decimal_str, parse_quantity, parse_unit, to_pieces
from domain.receipts import LotFacts, lot_conflict
from producers.recorder import HoldRecorder, HoldRequest
from producers.views import (
    HoldResult,
    MovementView,
    StockView,
    parse_hold_id,
    read_hold,
    read_movements,
    read_stock,
)
from tessera.settings import Settings, get_settings
from workers.broker import CoalescingDoorbells, Doorbells, make_broker
from workers.wakeups import AnswerChannel, Wakeups

T = TypeVar("T")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@#-]{0,127}$")
RESERVED_KEY_PREFIXES = ("line.", "hold.", "payment:")  # the keys the system makes for itself
SQM_PER_BOX_PLACES = 4  # products.sqm_per_box is NUMERIC(12, 4): 25 tiles of 15x15 make 0.5625 m²
MAX_LINES = 100
WAIT_SLICE_SECONDS = 0.5
"""A ticket re-reads Postgres at least this often, in case a wake-up token was lost."""


def check_key(key: object, field: str = "idempotency_key") -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key) or key.startswith(RESERVED_KEY_PREFIXES):
        raise InvalidCommand(
            "must be 1-128 characters of letters, digits and . _ : / @ # -, "
            "not starting with 'line.', 'hold.' or 'payment:'",
            field=field,
        )
    return key


def check_text(value: object, field: str, *, max_len: int = 64, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidCommand(f"must be a non-empty text of at most {max_len} characters", field=field)
    return value.strip()


def _required_text(value: object, field: str, *, max_len: int = 64) -> str:
    return check_text(value, field, max_len=max_len) or ""  # never "": check_text refuses blank text


def _check_flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidCommand("must be true or false", field=field)
    return value


class CommandTicket:
    """The receipt for a recorded command; `wait()` returns its result once applied."""

    def __init__(self, client: StockClient, key: str) -> None:
        self.client, self.key = client, key

    def __repr__(self) -> str:
        return f"CommandTicket({self.key!r})"

    def result(self) -> dict[str, Any] | None:
        """The command's result once applied (None before); raises CommandDead if it was parked."""
        with self.client.reader.connect() as conn:
            row = conn.execute(
                text("SELECT status, result, last_error, attempts FROM commands WHERE idempotency_key = :k"),
                {"k": self.key},
            ).one()
        if row.status == "dead":
            raise CommandDead(self.key, row.last_error, row.attempts)
        return row.result if row.status == "applied" else None

    def wait(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.client.wait_for(self.key, self.result, timeout)


class HoldTicket:
    """The receipt for a hold request; `wait()` returns the HoldResult once the hold is decided."""

    def __init__(self, client: StockClient, hold_id: str, key: str, *, fresh: bool = False) -> None:
        self.client, self.hold_id, self.key = client, hold_id, key
        self._fresh = fresh  # recorded by this call: its answer cannot be there before the wake-up

    def __repr__(self) -> str:
        return f"HoldTicket(hold_id={self.hold_id!r})"

    def result(self) -> HoldResult | None:
        hold = self.client.hold(self.hold_id)
        return None if hold.status in (HoldStatus.PENDING, HoldStatus.REALLOCATING) else hold

    def wait(self, timeout: float = 5.0) -> HoldResult:
        read_first, self._fresh = not self._fresh, False
        return self.client.wait_for(
            self.hold_id,
            self.result,
            timeout,
            read_first=read_first,
            from_token=HoldResult.model_validate_json,
            # Recorded by this client: its answer comes on the client's channel; a resend's may not.
            wake=self.client.answers.wait if not read_first else None,
        )


class StockClient:
    """Reserve, release, confirm and read stock.

    Parameters:
      settings: configuration (``StockClient.from_env()`` reads it from the environment).
      engine / redis_client: injected by tests and the demo; built from settings otherwise.
    """

    def __init__(
        self, settings: Settings, *, engine: Engine | None = None, redis_client: Redis | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine or get_engine(settings.database_url)
        self.redis = redis_client or Redis.from_url(settings.redis_url)
        self.bells = CoalescingDoorbells(
            Doorbells(make_broker(self.redis, settings.redis_namespace), settings.shards)
        )
        self.wakeups = Wakeups(self.redis, settings.redis_namespace)
        self.client_id = uuid.uuid4().hex
        self.answers = AnswerChannel(self.redis, settings.redis_namespace, self.client_id)
        # Reads are single statements: autocommit spares them a BEGIN and a ROLLBACK round trip.
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.recorder = HoldRecorder(
            self.engine, shards=settings.shards, ring=self.bells.ring, reply_to=self.client_id
        )

    @classmethod
    def from_env(cls) -> StockClient:
        return cls(get_settings())

    def close(self) -> None:
        """Stop the client's threads: the answer listener, the recorder (once what it was given is
        recorded) and the doorbells (once those still owed are sent). The connections are the
        engine's and Redis's to close."""
        self.answers.close()
        self.recorder.close()
        self.bells.close()

    def __enter__(self) -> StockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reference data (not sharded: no stock changes) --------------------------------------------

    def upsert_warehouse(
        self,
        *,
        code: str,
        name: str,
        can_ship: bool = True,
        priority: int = 100,
        type: str = "warehouse",
        active: bool = True,
    ) -> None:
        code = _required_text(code, "code", max_len=32)
        name = _required_text(name, "name", max_len=200)
        if type not in ("warehouse", "showroom"):
            raise InvalidCommand("must be 'warehouse' or 'showroom'", field="type")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10_000:
            raise InvalidCommand("must be a whole number from 0 (first) to 10000", field="priority")
        _check_flag(can_ship, "can_ship")
        _check_flag(active, "active")
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO warehouses (code, name, type, can_ship, priority, active)
                    VALUES (:code, :name, :type, :can_ship, :priority, :active)
                    ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, type = EXCLUDED.type,
                        can_ship = EXCLUDED.can_ship, priority = EXCLUDED.priority, active = EXCLUDED.active
                    """
                ),
                {
                    "code": code,
                    "name": name,
                    "type": type,
                    "can_ship": can_ship,
                    "priority": priority,
                    "active": active,
                },
            )

    def upsert_product(
        self,
        *,
        sku: str,
        name: str,
        pieces_per_box: int | None = None,
        sqm_per_box: str | Decimal | None = None,
        allow_partial_boxes: bool = False,
    ) -> None:
        sku = _required_text(sku, "sku")
        name = _required_text(name, "name", max_len=200)
        if pieces_per_box is not None and (
            isinstance(pieces_per_box, bool)
            or not isinstance(pieces_per_box, int)
            or not 0 < pieces_per_box <= 10_000
        ):
            raise InvalidCommand("must be a whole number from 1 to 10000", field="pieces_per_box")
        area = (
            parse_quantity(sqm_per_box, field="sqm_per_box", places=SQM_PER_BOX_PLACES)
            if sqm_per_box is not None
            else None
        )
        if area is not None and pieces_per_box is None:
            raise InvalidCommand("needs pieces_per_box", field="sqm_per_box")
        _check_flag(allow_partial_boxes, "allow_partial_boxes")
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO products (sku, name, pieces_per_box, sqm_per_box, allow_partial_boxes)
                    VALUES (:sku, :name, :ppb, :spb, :partial)
                    ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, pieces_per_box = EXCLUDED.pieces_per_box,
                        sqm_per_box = EXCLUDED.sqm_per_box, allow_partial_boxes = EXCLUDED.allow_partial_boxes
                    """
                ),
                {
                    "sku": sku,
                    "name": name,
                    "ppb": pieces_per_box,
                    "spb": area,
                    "partial": allow_partial_boxes,
                },
            )

    # -- commands ----------------------------------------------------------------------------------

    def receive(
        self,
        *,
        idempotency_key: str,
        warehouse: str,
        sku: str,
        quantity: str | int | Decimal,
        unit: str = "piece",
        lot: str,
        shade: str | None = None,
        caliber: str | None = None,
        expiry: dt.date | str | None = None,
    ) -> CommandTicket:
        """Goods arrive into a warehouse and lot: a purchase receipt movement."""
        key = check_key(idempotency_key)
        qty, unit_ = parse_quantity(quantity), parse_unit(unit)
        lot_code = check_text(lot, "lot")
        expiry_date = _parse_date(expiry, "expiry")
        check_text(sku, "sku")
        check_text(warehouse, "warehouse", max_len=32)
        with self.engine.begin() as conn:
            products, warehouses = repo.load_references(repo.psycopg_of(conn), [sku], [warehouse])
            if sku not in products:
                raise UnknownSku(sku, field="sku")
            if warehouse not in warehouses:
                raise UnknownWarehouse(warehouse, field="warehouse")
            product, warehouse_id = products[sku], warehouses[warehouse]
            conversion = to_pieces(qty, unit_, product.packaging)
            facts = LotFacts(
                check_text(shade, "shade", max_len=32, required=False),
                check_text(caliber, "caliber", max_len=32, required=False),
                expiry_date,
            )
            known = repo.lot_facts(repo.psycopg_of(conn), product.id, lot_code or "")
            if known is not None and (why := lot_conflict(lot_code or "", known, facts)):
                raise LotMismatch(why, lot=lot_code or "")
            payload = {
                "product_id": product.id,
                "sku": sku,
                "warehouse_id": warehouse_id,
                "lot": lot_code,
                "shade": facts.shade,
                "caliber": facts.caliber,
                "expiry": expiry_date.isoformat() if expiry_date else None,
                "quantity": decimal_str(qty),
                "unit": unit_.value,
                "pieces": decimal_str(conversion.pieces),
            }
            shard = shard_of(sku, self.settings.shards)
            fresh = self._record(conn, key, StockCommand.RECEIVE, payload, shard)
        if fresh:
            self.bells.ring({shard})  # a lost doorbell only delays: the sweep rings again
        return CommandTicket(self, key)

    def reserve(
        self,
        *,
        idempotency_key: str,
        lines: Sequence[Mapping[str, Any]],
        ttl_seconds: int | None = None,
        mode: str = "all_or_nothing",
    ) -> HoldTicket:
        """Hold cart lines for `ttl_seconds`: one line command per product shard (a saga)."""
        key = check_key(idempotency_key)
        hold_mode = _parse_mode(mode)
        ttl = self.settings.hold_ttl_seconds if ttl_seconds is None else ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= 7 * 24 * 3600:
            raise InvalidCommand("must be a whole number of seconds from 1 to 604800", field="ttl_seconds")
        if not isinstance(lines, Sequence) or isinstance(lines, str | bytes) or not lines:
            raise InvalidCommand("a hold needs at least one line", field="lines")
        if len(lines) > MAX_LINES:
            raise InvalidCommand(f"at most {MAX_LINES} lines per hold", field="lines")
        body = {
            "mode": hold_mode.value,
            "ttl_seconds": ttl,
            "lines": [_line_request(ln, i) for i, ln in enumerate(lines)],
        }
        self.answers.listen()  # subscribed before the hold is recorded, so its answer cannot be missed
        hold_id, fresh = self.recorder.record(HoldRequest(key, body))
        return HoldTicket(self, hold_id, key, fresh=fresh)

    def release(self, hold_id: str, *, idempotency_key: str) -> CommandTicket:
        """Give a hold back before it expires (cart abandoned)."""
        return self._hold_command(HoldCommand.RELEASE, hold_id, check_key(idempotency_key), {})

    def confirm_payment(self, *, event_id: str, hold_id: str, status: str) -> CommandTicket:
        """A payment provider event: "paid" (sale), "failed" (release) or "refunded" (return to stock)."""
        event = check_key(event_id, "event_id")
        if status not in (Payment.PAID, Payment.FAILED, Payment.REFUNDED):
            raise InvalidCommand("must be 'paid', 'failed' or 'refunded'", field="status")
        return self._hold_command(
            HoldCommand.PAY, hold_id, f"payment:{event}", {"status": status, "event_id": event}
        )

    def _hold_command(
        self, kind: HoldCommand, hold_id: str, key: str, extra: dict[str, Any]
    ) -> CommandTicket:
        hid = parse_hold_id(hold_id)
        payload = {"hold_id": str(hid), **extra}
        digest = payload_digest(kind.value, payload)
        # One statement in autocommit: the hold's existence is checked and the command recorded together.
        with self.engine.connect() as conn:
            pg = repo.psycopg_of(conn.execution_options(isolation_level="AUTOCOMMIT"))
            home, fresh = repo.record_hold_command(
                pg, hid, key=key, kind=kind.value, payload=payload, digest=digest
            )
            if home is None:
                raise UnknownHold(str(hold_id))
            if not fresh:
                self._check_resend(pg, key, kind.value, digest)
        if fresh:
            self.bells.ring({home})  # a lost doorbell only delays: the sweep rings again
        return CommandTicket(self, key)

    # -- reads -----------------------------------------------------------------------------------

    def hold(self, hold_id: str) -> HoldResult:
        with self.reader.connect() as conn:
            return read_hold(conn, hold_id)

    def stock(self, sku: str) -> StockView:
        with self.reader.connect() as conn:
            return read_stock(conn, sku)

    def movements(self, sku: str, *, limit: int = 100, before_id: int | None = None) -> list[MovementView]:
        """The product's ledger, newest first, each row with the command that explains it."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidCommand("must be a whole number from 1 to 1000", field="limit")
        with self.reader.connect() as conn:
            return read_movements(conn, sku, limit=limit, before_id=before_id)

    # -- plumbing --------------------------------------------------------------------------------

    def _record(
        self,
        conn: Connection,
        key: str,
        kind: HoldCommand | StockCommand,
        payload: dict[str, Any],
        shard: int,
    ) -> bool:
        """Record a command (True), or recognise its resend (False); another payload under the key is refused.

        A concurrent first request with the same key makes this wait until that one commits
        (the unique index), so a resend never sees a half-recorded command.
        """
        pg = repo.psycopg_of(conn)
        command = repo.NewCommand.of(key, kind.value, payload, shard)
        if repo.insert_commands(pg, [command]).fetchall():
            return True
        self._check_resend(pg, command.key, command.kind, command.payload_hash)
        return False

    @staticmethod
    def _check_resend(pg: repo.Pg, key: str, kind: str, digest: str) -> None:
        """A key recorded before: the same command is a resend; another one under the key is refused."""
        earlier_kind, earlier_digest, _ = repo.recorded_commands(pg, [key])[key]
        if (earlier_kind, earlier_digest) != (kind, digest):
            raise IdempotencyConflict(key)

    def wait_for(
        self,
        ticket: str,
        read: Callable[[], T | None],
        timeout: float,
        *,
        read_first: bool = True,
        from_token: Callable[[bytes], T] | None = None,
        wake: Callable[[str, float], bytes | None] | None = None,
    ) -> T:
        """Block on the ticket's wake-up until its result is there; re-read PostgreSQL at least
        every slice, in case a wake-up was lost. A token that carries the answer is the answer."""
        deadline = time.monotonic() + timeout
        wait = wake or self.wakeups.wait
        token = None
        if not read_first:  # just recorded: the answer cannot be there yet, so wait for the wake-up first
            token = wait(ticket, min(timeout, WAIT_SLICE_SECONDS))
        while True:
            if token is not None and from_token is not None and token != b"1":
                return from_token(token)
            result = read()
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(
                    f"no result for {ticket} after {timeout}s; it stays recorded and will apply"
                )
            token = wait(ticket, min(remaining, WAIT_SLICE_SECONDS))


def _parse_mode(mode: object) -> HoldMode:
    try:
        return HoldMode(str(mode))
    except ValueError:
        raise InvalidCommand("must be 'all_or_nothing' or 'partial'", field="mode") from None


def _parse_date(value: object, field: str) -> dt.date | None:
    # Not a datetime (its isoformat is no date for the writer), not 20240101 or "2024-W01-1".
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise InvalidCommand("must be a date (YYYY-MM-DD)", field=field)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidCommand("must be a date (YYYY-MM-DD)", field=field) from None


def _line_request(line: object, index: int) -> dict[str, Any]:
    field = f"lines[{index}]"
    if not isinstance(line, Mapping):
        raise InvalidCommand("must be an object with sku, quantity and unit", field=field)
    unknown = set(line) - {"sku", "quantity", "unit", "warehouse"}
    if unknown:
        raise InvalidCommand(f"unknown fields {sorted(map(str, unknown))}", field=field)
    qty = parse_quantity(line.get("quantity"), field=f"{field}.quantity")
    unit = parse_unit(line.get("unit", "piece"), field=f"{field}.unit")
    return {
        "sku": check_text(line.get("sku"), f"{field}.sku"),
        "quantity": decimal_str(qty),
        "unit": unit.value,
        "warehouse": check_text(line.get("warehouse"), f"{field}.warehouse", max_len=32, required=False),
    }
