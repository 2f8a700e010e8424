"""The Python client of the checkout service, the payment relay and the warehouse.

Every stock-changing call validates its request (`producers.requests`), records it durably in the
Postgres inbox with its idempotency key (`producers.recording`) and returns a ticket
(`producers.tickets`). Resending the same key with the same payload returns the same ticket;
another payload under that key is refused. Reads (`hold`, `stock`, `movements`) go straight to
Postgres.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from redis import Redis
from sqlalchemy import Engine, text

from db.engine import get_engine
from db.inbox import NewCommand
from db.movements import read_movements
from db.reads import read_hold, read_stock
from db.sql import Pg
from db.valuation import read_valuation
from domain.errors import InvalidCommand
from domain.results import HoldResult, MovementView, StockView, ValuationView
from domain.states import parse_hold_id
from producers import tickets
from producers.goods_in import damage_commands, quarantine_commands, receipt_commands
from producers.handover import HoldHandover
from producers.operations import OperationRecorder
from producers.recording import Actor, Recorder
from producers.requests import (
    DamageRequest,
    GoodsReceiptRequest,
    HoldRequest,
    PaymentEvent,
    ProductRequest,
    QuarantineRequest,
    QuarantineWriteOffRequest,
    ReleaseRequest,
    WarehouseRequest,
)
from producers.tickets import CommandTicket, HoldTicket, ReceiptLineTicket, ReceiptTicket
from producers.warehouse_client import WarehouseCalls
from tessera.answers import AnswerChannel, Wakeups
from tessera.doorbells import CoalescingDoorbells, Doorbells
from tessera.handover import HandedHolds
from tessera.redis_clients import connect_async_redis, connect_redis
from tessera.settings import Settings, get_settings

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["CommandTicket", "HoldTicket", "ReceiptTicket", "StockClient"]


class StockClient(WarehouseCalls):
    """Reserve, release, confirm and read stock; the warehouse's operations (`WarehouseCalls`).

    Parameters:
      settings: configuration (``StockClient.from_env()`` reads it from the environment).
      engine / redis_client: injected by tests and the demo; built from settings otherwise.
      actor: who the warehouse operations of this client are done by, as their ledger rows name
        them (None: the system); a call's own `actor=` wins.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        redis_client: Redis | None = None,
        actor: str | Actor | None = None,
    ) -> None:
        self.settings = settings
        self.actor = _as_actor(actor)
        self.engine = engine or get_engine(settings.database_url)
        self.redis = redis_client or connect_redis(settings.redis_url)
        self.bells = CoalescingDoorbells(Doorbells.of(self.redis, settings))
        self.wakeups = Wakeups(self.redis, settings.redis_namespace)
        self.client_id = uuid.uuid4().hex
        self.answers = AnswerChannel(self.redis, settings.redis_namespace, self.client_id)
        # Reads are single statements: autocommit spares them a BEGIN and a ROLLBACK round trip.
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.recorder = Recorder(
            self.engine, shards=settings.shards, ring=self.bells.ring, reply_to=self.client_id
        )
        self.operations = OperationRecorder(self.recorder, settings)
        self.handover = HoldHandover(
            self.recorder.holds,
            HandedHolds(self.redis, settings.redis_namespace),
            self.answers,
            connect=lambda: connect_async_redis(settings.redis_url),
            nudge_channel=self.bells.doorbells.nudge_channel,
            reply_to=self.client_id,
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
        can_receive: bool = True,
    ) -> None:
        request = WarehouseRequest.parse(
            code=code,
            name=name,
            can_ship=can_ship,
            priority=priority,
            type=type,
            active=active,
            can_receive=can_receive,
        )
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO warehouses (code, name, type, can_ship, priority, active, can_receive)
                    VALUES (:code, :name, :type, :can_ship, :priority, :active, :can_receive)
                    ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, type = EXCLUDED.type,
                        can_ship = EXCLUDED.can_ship, priority = EXCLUDED.priority, active = EXCLUDED.active,
                        can_receive = EXCLUDED.can_receive
                    """
                ),
                request.model_dump(),
            )

    def upsert_product(
        self,
        *,
        sku: str,
        name: str,
        pieces_per_box: int | None = None,
        sqm_per_box: str | Decimal | None = None,
        allow_partial_boxes: bool = False,
        adjustment_approval_pieces: str | int | Decimal | None = None,
        adjustment_approval_value: str | int | Decimal | None = None,
    ) -> None:
        """Add or change a product. `adjustment_approval_pieces` / `_value`: the product's own
        thresholds above which an adjustment waits for approval (None: the global settings')."""
        request = ProductRequest.parse(
            sku=sku,
            name=name,
            pieces_per_box=pieces_per_box,
            sqm_per_box=sqm_per_box,
            allow_partial_boxes=allow_partial_boxes,
            adjustment_approval_pieces=adjustment_approval_pieces,
            adjustment_approval_value=adjustment_approval_value,
        )
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO products (sku, name, pieces_per_box, sqm_per_box, allow_partial_boxes,
                                          adjustment_approval_pieces, adjustment_approval_value)
                    VALUES (:sku, :name, :pieces_per_box, :sqm_per_box, :allow_partial_boxes,
                            :adjustment_approval_pieces, :adjustment_approval_value)
                    ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, pieces_per_box = EXCLUDED.pieces_per_box,
                        sqm_per_box = EXCLUDED.sqm_per_box, allow_partial_boxes = EXCLUDED.allow_partial_boxes,
                        adjustment_approval_pieces = EXCLUDED.adjustment_approval_pieces,
                        adjustment_approval_value = EXCLUDED.adjustment_approval_value
                    """
                ),
                request.model_dump(),
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
        unit_cost: str | int | Decimal | None = None,
        quarantine: bool = False,
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        """Goods arrive into a warehouse and lot (into quarantine if `quarantine`): a receipt of one
        line, recorded under the key itself (`receive_goods` records several)."""
        line: dict[str, Any] = {
            "warehouse": warehouse,
            "sku": sku,
            "quantity": quantity,
            "unit": unit,
            "lot": lot,
        }
        optional = {"shade": shade, "caliber": caliber, "expiry": expiry, "unit_cost": unit_cost}
        line.update({name: value for name, value in optional.items() if value is not None})
        if quarantine:
            line["quarantine"] = True
        request = GoodsReceiptRequest.parse(idempotency_key=idempotency_key, lines=[line], numbered=False)
        return self.record_receipt(request, actor).lines[0].ticket

    def receive_goods(
        self,
        *,
        idempotency_key: str,
        lines: Sequence[Mapping[str, Any]],
        supplier: str | None = None,
        purchase_order: str | None = None,
        invoice: str | None = None,
        actor: str | Actor | None = None,
    ) -> ReceiptTicket:
        """A receipt of several lines (each: warehouse, sku, quantity, unit, lot, shade, caliber,
        expiry, unit_cost, quarantine), recorded all or none: one `stock.receive` per line, keyed
        `{idempotency_key}:{n}`. A quarantined line's id is in the ticket at once."""
        request = GoodsReceiptRequest.parse(
            idempotency_key=idempotency_key,
            lines=lines,
            supplier=supplier,
            purchase_order=purchase_order,
            invoice=invoice,
        )
        return self.record_receipt(request, actor)

    def record_receipt(self, request: GoodsReceiptRequest, actor: str | Actor | None = None) -> ReceiptTicket:
        """Record a receipt as validated (the front doors' way in: `receive`, `receive_goods`, HTTP)."""
        who, shards = self.actor_of(actor), self.settings.shards
        commands = self.recorder.stock_commands(lambda pg: receipt_commands(pg, request, who, shards))
        return ReceiptTicket(
            request.idempotency_key,
            [
                ReceiptLineTicket(n, CommandTicket(self, c.key), c.payload.get("quarantine_id"))
                for n, c in enumerate(commands, start=1)
            ],
        )

    def release_quarantine(
        self,
        quarantine_id: str,
        *,
        idempotency_key: str,
        quantity: str | int | Decimal | None = None,
        unit: str = "piece",
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        """Release a quarantined receipt line to sellable stock: `quantity` of it, or all that is left."""
        request = QuarantineRequest.parse(
            quarantine_id=quarantine_id, idempotency_key=idempotency_key, quantity=quantity, unit=unit
        )
        return self._warehouse_command(request.idempotency_key, quarantine_commands, request, actor)

    def write_off_quarantine(
        self,
        quarantine_id: str,
        *,
        idempotency_key: str,
        reason: str,
        quantity: str | int | Decimal | None = None,
        unit: str = "piece",
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        """Write a quarantined receipt line (`quantity` of it, or all that is left) off as damaged."""
        request = QuarantineWriteOffRequest.parse(
            quarantine_id=quarantine_id,
            idempotency_key=idempotency_key,
            quantity=quantity,
            unit=unit,
            reason=reason,
        )
        return self._warehouse_command(request.idempotency_key, quarantine_commands, request, actor)

    def damage(
        self,
        *,
        idempotency_key: str,
        warehouse: str,
        sku: str,
        lot: str,
        quantity: str | int | Decimal,
        reason: str,
        unit: str = "piece",
        actor: str | Actor | None = None,
    ) -> CommandTicket:
        """Pieces of a lot found damaged: from its available stock (reserved ones are the holds')."""
        request = DamageRequest.parse(
            idempotency_key=idempotency_key,
            warehouse=warehouse,
            sku=sku,
            lot=lot,
            quantity=quantity,
            unit=unit,
            reason=reason,
        )
        return self._warehouse_command(request.idempotency_key, damage_commands, request, actor)

    def _warehouse_command(
        self,
        key: str,
        build: Callable[[Pg, R, Actor | None, int], list[NewCommand]],
        request: R,
        actor: str | Actor | None,
    ) -> CommandTicket:
        who, shards = self.actor_of(actor), self.settings.shards
        self.recorder.stock_commands(lambda pg: build(pg, request, who, shards))
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
        request = self._hold_request(idempotency_key, lines, ttl_seconds, mode)
        hold_id, fresh = self.recorder.hold(request)
        return HoldTicket(self, hold_id, request.idempotency_key, fresh=fresh)

    async def reserve_async(
        self,
        *,
        idempotency_key: str,
        lines: Sequence[Mapping[str, Any]],
        ttl_seconds: int | None = None,
        mode: str = "all_or_nothing",
        hand_over_within: float = 0.0,
        record_within: float = 30.0,
    ) -> HoldTicket:
        """`reserve` for a coroutine (the HTTP API): the event loop waits for the recording, up to
        `record_within` seconds (then RecordingTimeout). `hand_over_within` > 0 (a caller that
        waits for the answer): the hold is handed to its shard's writer, which records and decides
        it at once (`producers.handover`); recorded here if not answered within that many seconds."""
        request = self._hold_request(idempotency_key, lines, ttl_seconds, mode)
        if hand_over_within > 0:
            hold_id, fresh, answer = await self.handover.hold(request, hand_over_within, record_within)
            return HoldTicket(self, hold_id, request.idempotency_key, fresh=fresh, answer=answer)
        hold_id, fresh = await self.recorder.hold_async(request, record_within)
        return HoldTicket(self, hold_id, request.idempotency_key, fresh=fresh)

    def _hold_request(
        self, idempotency_key: str, lines: Sequence[Mapping[str, Any]], ttl_seconds: int | None, mode: str
    ) -> HoldRequest:
        request = HoldRequest.parse(
            idempotency_key=idempotency_key,
            lines=lines,
            ttl_seconds=self.settings.hold_ttl_seconds if ttl_seconds is None else ttl_seconds,
            mode=mode,
        )
        self.answers.listen()  # subscribed before the hold is recorded, so its answer cannot be missed
        return request

    def release(self, hold_id: str, *, idempotency_key: str) -> CommandTicket:
        """Give a hold back before it expires (cart abandoned)."""
        request = ReleaseRequest.parse(hold_id=hold_id, idempotency_key=idempotency_key)
        self.recorder.hold_command(request)
        return CommandTicket(self, request.key)

    def confirm_payment(self, *, event_id: str, hold_id: str, status: str) -> CommandTicket:
        """A payment provider event: "paid" (sale), "failed" (release) or "refunded" (return to stock)."""
        request = PaymentEvent.parse(event_id=event_id, status=status, hold_id=hold_id)
        self.recorder.hold_command(request)
        return CommandTicket(self, request.key)

    def actor_of(self, actor: str | Actor | None) -> Actor | None:
        """Who does an operation: the call's actor, else the client's."""
        return _as_actor(actor) or self.actor

    # -- reads -----------------------------------------------------------------------------------

    def hold(self, hold_id: str) -> HoldResult:
        with self.reader.connect() as conn:
            return read_hold(conn, uuid.UUID(parse_hold_id(hold_id)))

    def stock(self, sku: str) -> StockView:
        with self.reader.connect() as conn:
            return read_stock(conn, sku)

    def movements(
        self,
        sku: str | None = None,
        *,
        warehouse: str | None = None,
        lot: str | None = None,
        kind: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        hold_id: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[MovementView]:
        """The ledger, newest first, each row with who, why, what it cost, the balance it left and
        the command that explains it; of a product, a warehouse, a lot, a kind, a time (since ≤ at <
        until), a hold, each if given; `before_id`: older than that movement (the next page)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidCommand("must be a whole number from 1 to 1000", field="limit")
        hold = uuid.UUID(parse_hold_id(hold_id)) if hold_id is not None else None
        with self.reader.connect() as conn:
            return read_movements(
                conn,
                sku,
                warehouse=warehouse,
                limit=limit,
                lot=lot,
                kind=kind,
                since=since,
                until=until,
                hold_id=hold,
                before_id=before_id,
            )

    def valuation(self, warehouse: str | None = None) -> ValuationView:
        """Stock value at moving-average cost, per warehouse and product (one warehouse's if given)."""
        with self.reader.connect() as conn:
            return read_valuation(conn, warehouse)

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
        """Block on the ticket's wake-up (by default its token) until `read()` gives its result
        (see `producers.tickets.wait_for`)."""
        return tickets.wait_for(
            ticket,
            read,
            timeout,
            read_first=read_first,
            from_token=from_token,
            wake=wake or self.wakeups.wait,
        )


def _as_actor(actor: str | Actor | None) -> Actor | None:
    if actor is None or isinstance(actor, Actor):
        return actor
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 100:
        raise InvalidCommand("must be a non-empty name of at most 100 characters", field="actor")
    return Actor(actor.strip())
