"""Recording hold requests durably, many per transaction.

Every caller still waits until its own command is committed before it gets a ticket, but the
requests that arrive while one group is being written are recorded together in the next one:
a handful of set-based statements and one commit (one WAL flush) for the whole group, instead of
a transaction per request. No artificial delay: a lone request is recorded at once.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from domain.commands import HoldCommand, line_command_key, payload_digest, shard_of
from domain.errors import IdempotencyConflict, InvalidCommand, UnknownSku, UnknownWarehouse
from domain.holds import LineAction
from domain.quantities import Packaging, parse_unit, to_pieces

MAX_GROUP = 256


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """A validated hold request: its key, its canonical body and the body's digest."""

    key: str
    body: dict[str, Any]

    @property
    def digest(self) -> str:
        return payload_digest(HoldCommand.PLACE.value, self.body)


@dataclass(slots=True)
class _Pending:
    request: HoldRequest
    future: Future[str] = field(default_factory=Future)
    hold_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    lines: list[dict[str, Any]] = field(default_factory=list)
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class CommandRow:
    key: str
    kind: str
    payload: dict[str, Any]
    shard: int
    status: str = "recorded"


def insert_commands(conn: Connection, rows: Sequence[CommandRow]) -> set[str]:
    """Insert commands in one statement; returns the keys that were new (the rest already existed)."""
    if not rows:
        return set()
    result = conn.execute(
        text(
            """
            INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status)
            SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:payloads AS jsonb[]),
                                 CAST(:digests AS text[]), CAST(:shards AS int[]), CAST(:statuses AS text[]))
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING idempotency_key
            """
        ),
        {
            "keys": [r.key for r in rows],
            "kinds": [r.kind for r in rows],
            "payloads": [json.dumps(r.payload, default=str) for r in rows],
            "digests": [_digest(r) for r in rows],
            "shards": [r.shard for r in rows],
            "statuses": [r.status for r in rows],
        },
    )
    return {key for (key,) in result}


def _digest(row: CommandRow) -> str:
    # A hold's digest covers the request, not the hold id this recording drew for it.
    body = (
        {k: v for k, v in row.payload.items() if k != "hold_id"}
        if row.kind == HoldCommand.PLACE
        else row.payload
    )
    return payload_digest(row.kind, body)


def recorded_payloads(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """key → (kind, digest, payload) of commands recorded earlier."""
    rows = conn.execute(
        text(
            "SELECT idempotency_key, kind, payload_hash, payload FROM commands WHERE idempotency_key = ANY(:k)"
        ),
        {"k": list(keys)},
    )
    return {r.idempotency_key: (r.kind, r.payload_hash, r.payload) for r in rows}


class HoldRecorder:
    """A background thread that records queued hold requests in groups.

    Parameters:
      engine: the Postgres engine.
      shards: the shard count (routing of line commands).
      ring: called after each commit with the shards that got new line commands.
    """

    def __init__(self, engine: Engine, *, shards: int, ring: Any) -> None:
        self.engine = engine
        self.shards = shards
        self.ring = ring
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(self, request: HoldRequest, timeout: float = 30.0) -> tuple[str, bool]:
        """Record the request (or find its earlier recording).

        Returns the hold id once committed, and whether this call recorded it (False: a resend).
        """
        pending = _Pending(request)
        self._ensure_thread()
        self._queue.put(pending)
        return pending.future.result(timeout=timeout), pending.fresh

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="hold-recorder", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                shards = self._record_group(group)
            except Exception as error:
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending in group:
                if not pending.future.done():
                    pending.future.set_result(pending.hold_id)
            if shards:
                self.ring(shards)

    def _record_group(self, group: list[_Pending]) -> set[int]:
        with self.engine.begin() as conn:
            products, warehouses = _reference_data(conn, group)
            valid = []
            for pending in group:
                try:
                    pending.lines = [
                        resolve_line(line, i, products, warehouses)
                        for i, line in enumerate(pending.request.body["lines"])
                    ]
                    valid.append(pending)
                except InvalidCommand as error:
                    pending.future.set_exception(error)
            fresh_keys = insert_commands(
                conn,
                [
                    CommandRow(
                        p.request.key,
                        HoldCommand.PLACE.value,
                        {**p.request.body, "hold_id": p.hold_id},
                        shard_of(p.hold_id, self.shards),
                        "applied",
                    )
                    for p in valid
                ],
            )
            fresh, resends = [], []
            for pending in valid:  # the first of a key in the group is new; a twin in the group is a resend
                if pending.request.key in fresh_keys:
                    fresh_keys.discard(pending.request.key)
                    pending.fresh = True
                    fresh.append(pending)
                else:
                    resends.append(pending)
            self._resolve_resends(conn, resends, fresh)
            if not fresh:
                return set()
            _insert_holds(conn, fresh, self.shards)
            line_commands = [
                CommandRow(
                    line_command_key(p.hold_id, line["line_no"], LineAction.RESERVE),
                    LineAction.RESERVE.value,
                    {"hold_id": p.hold_id, "line_no": line["line_no"], "product_id": line["product_id"]},
                    shard_of(line["sku"], self.shards),
                )
                for p in fresh
                for line in p.lines
            ]
            insert_commands(conn, line_commands)
        return {c.shard for c in line_commands}

    @staticmethod
    def _resolve_resends(conn: Connection, resends: list[_Pending], fresh: list[_Pending]) -> None:
        """A key seen before: the same request gets the same hold; another request is refused."""
        if not resends:
            return
        earlier = recorded_payloads(conn, [p.request.key for p in resends])
        first_in_group = {p.request.key: p for p in fresh}
        for pending in resends:
            kind, digest, payload = earlier[pending.request.key]
            if kind != HoldCommand.PLACE.value or digest != pending.request.digest:
                pending.future.set_exception(IdempotencyConflict(pending.request.key))
            else:
                twin = first_in_group.get(pending.request.key)
                pending.hold_id = twin.hold_id if twin else payload["hold_id"]


def _reference_data(conn: Connection, group: list[_Pending]) -> tuple[dict[str, Any], dict[str, int]]:
    skus = sorted({line["sku"] for p in group for line in p.request.body["lines"]})
    codes = sorted(
        {line["warehouse"] for p in group for line in p.request.body["lines"] if line["warehouse"]}
    )
    products = {
        r.sku: r
        for r in conn.execute(
            text(
                "SELECT id, sku, pieces_per_box, sqm_per_box, allow_partial_boxes FROM products "
                "WHERE sku = ANY(:s) AND active"
            ),
            {"s": skus},
        )
    }
    warehouses: dict[str, int] = {}
    if codes:
        rows = conn.execute(
            text("SELECT code, id FROM warehouses WHERE code = ANY(:c) AND active"), {"c": codes}
        )
        warehouses = {code: wid for code, wid in rows}
    return products, warehouses


def resolve_line(
    line: dict[str, Any], index: int, products: dict[str, Any], warehouses: dict[str, int]
) -> dict[str, Any]:
    """A validated request line → the product, the pieces it asks for (with rounding), the warehouse."""
    field = f"lines[{index}]"
    product = products.get(line["sku"])
    if product is None:
        raise UnknownSku(line["sku"], field=f"{field}.sku")
    warehouse_id = None
    if line["warehouse"]:
        if line["warehouse"] not in warehouses:
            raise UnknownWarehouse(line["warehouse"], field=f"{field}.warehouse")
        warehouse_id = warehouses[line["warehouse"]]
    packaging = Packaging(product.pieces_per_box, product.sqm_per_box, product.allow_partial_boxes)
    conversion = to_pieces(
        Decimal(line["quantity"]), parse_unit(line["unit"]), packaging, field=f"{field}.quantity"
    )
    return {
        "line_no": index + 1,
        "product_id": product.id,
        "sku": product.sku,
        "quantity": conversion.requested,
        "unit": conversion.unit.value,
        "pieces": conversion.pieces,
        "rounding": conversion.rounding,
        "warehouse_id": warehouse_id,
    }


def _insert_holds(conn: Connection, fresh: list[_Pending], shards: int) -> None:
    conn.execute(
        text(
            """
            INSERT INTO holds (id, idempotency_key, status, mode, home_shard, ttl_seconds, expires_at, lines_pending)
            SELECT id, key, 'pending', mode, home, ttl, now() + make_interval(secs => ttl), n
            FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:modes AS text[]), CAST(:homes AS int[]),
                        CAST(:ttls AS int[]), CAST(:ns AS int[])) AS v(id, key, mode, home, ttl, n)
            """
        ),
        {
            "ids": [uuid.UUID(p.hold_id) for p in fresh],
            "keys": [p.request.key for p in fresh],
            "modes": [p.request.body["mode"] for p in fresh],
            "homes": [shard_of(p.hold_id, shards) for p in fresh],
            "ttls": [p.request.body["ttl_seconds"] for p in fresh],
            "ns": [len(p.lines) for p in fresh],
        },
    )
    lines = [(p.hold_id, line) for p in fresh for line in p.lines]
    conn.execute(
        text(
            """
            INSERT INTO hold_lines (hold_id, line_no, product_id, requested_quantity, requested_unit, pieces,
                                    rounding, requested_warehouse_id, status)
            SELECT hold_id, line_no, product_id, quantity, unit, pieces, rounding, warehouse_id, 'pending'
            FROM unnest(CAST(:hold_ids AS uuid[]), CAST(:line_nos AS int[]), CAST(:product_ids AS int[]),
                        CAST(:quantities AS numeric[]), CAST(:units AS text[]), CAST(:pieces AS numeric[]),
                        CAST(:roundings AS text[]), CAST(:warehouse_ids AS int[]))
                 AS v(hold_id, line_no, product_id, quantity, unit, pieces, rounding, warehouse_id)
            """
        ),
        {
            "hold_ids": [uuid.UUID(h) for h, _ in lines],
            "line_nos": [line["line_no"] for _, line in lines],
            "product_ids": [line["product_id"] for _, line in lines],
            "quantities": [line["quantity"] for _, line in lines],
            "units": [line["unit"] for _, line in lines],
            "pieces": [line["pieces"] for _, line in lines],
            "roundings": [line["rounding"] for _, line in lines],
            "warehouse_ids": [line["warehouse_id"] for _, line in lines],
        },
    )
