"""What ops watch, in one place: the dashboard's JSON (`/v1/ops/…`) and `tessera status` both read
through these functions, so the page, the CLI and a probe cannot disagree.

A shard's row joins PostgreSQL (its inbox and batch log: `db.ops_reads`) with Redis (its lease, and
whether its holder is still connected; its Dramatiq queues: doorbells waiting, delayed,
dead-lettered).
"""

from __future__ import annotations

import datetime as dt

import structlog
from pydantic import BaseModel
from redis import Redis
from sqlalchemy import Engine, text

from db.dead_letters import DeadLetter, list_dead, requeue
from db.movements import read_movements
from db.ops_reads import OpenHold, open_holds, shard_inboxes
from db.reads import read_stock
from domain.results import MovementView, StockView
from tessera.doorbells import DRAMATIQ_NAMESPACE, Doorbells, queue_name
from tessera.settings import Settings
from workers.lease import lease_connection, lease_holder, lease_key, live_connections

log = structlog.get_logger("tessera.ops")


class ShardRow(BaseModel):
    shard: int
    holder: str | None
    """The worker named by the shard's lease (None: nobody)."""
    epoch: int | None
    alive: bool
    """Whether a live worker holds the lease: False with no lease, and for a lease whose holder's
    Redis connection is gone (a killed worker's lease lingers until its TTL or a standby takes it)."""
    pending: int
    oldest_age_seconds: float | None
    dead_letters: int
    doorbells: int
    """Doorbell messages waiting on the shard's queue."""
    delayed: int
    """Delayed doorbells (expiries to come) on the queue's `.DQ`."""
    dead_messages: int
    """Messages Dramatiq dead-lettered (`.XQ`); they carry no command, the inbox keeps those."""
    last_batch_at: dt.datetime | None
    per_minute: list[int]
    """Commands applied in each of the last minutes, oldest first."""
    healthy: bool
    """False when the shard has pending work and no live worker holds it."""


class ShardsView(BaseModel):
    at: dt.datetime
    shards: list[ShardRow]
    pending: int
    dead_letters: int
    oldest_age_seconds: float | None
    unhealthy: list[int]


class StockPage(BaseModel):
    stock: StockView
    holds: list[OpenHold]
    movements: list[MovementView]
    next_before: int | None
    """Pass as `before` for the next (older) page; None: this was the last."""


class Requeued(BaseModel):
    key: str
    shard: int


def shards_view(engine: Engine, redis: Redis, settings: Settings) -> ShardsView:
    """Every shard's queue, inbox, lease and pace."""
    with engine.connect() as conn:
        now, inboxes = shard_inboxes(conn, settings.shards)
    shards = list(range(settings.shards))
    leases = [
        value.decode() if value else None
        for value in redis.mget([lease_key(settings.redis_namespace, s) for s in shards])
    ]
    connected = live_connections(
        redis, [c for value in leases if value and (c := lease_connection(value)) is not None]
    )
    pipe = redis.pipeline(transaction=False)
    prefix = f"{settings.redis_namespace}:{DRAMATIQ_NAMESPACE}"
    for shard in shards:
        name = queue_name(shard)
        pipe.llen(f"{prefix}:{name}")
        pipe.llen(f"{prefix}:{name}.DQ")
        pipe.zcard(f"{prefix}:{name}.XQ")
    counts = pipe.execute()
    rows = []
    for shard, lease in zip(shards, leases, strict=True):
        inbox = inboxes[shard]
        holder, epoch = lease_holder(lease) if lease else (None, None)
        alive = _held_by_the_living(lease, connected)
        age = (now - inbox.oldest_pending_at).total_seconds() if inbox.oldest_pending_at else None
        rows.append(
            ShardRow(
                shard=shard,
                holder=holder,
                epoch=epoch,
                alive=alive,
                pending=inbox.pending,
                oldest_age_seconds=max(age, 0.0) if age is not None else None,
                dead_letters=inbox.dead_letters,
                doorbells=counts[3 * shard],
                delayed=counts[3 * shard + 1],
                dead_messages=counts[3 * shard + 2],
                last_batch_at=inbox.last_batch_at,
                per_minute=inbox.per_minute,
                healthy=alive or not inbox.pending,
            )
        )
    ages = [r.oldest_age_seconds for r in rows if r.oldest_age_seconds is not None]
    return ShardsView(
        at=now,
        shards=rows,
        pending=sum(r.pending for r in rows),
        dead_letters=sum(r.dead_letters for r in rows),
        oldest_age_seconds=max(ages) if ages else None,
        unhealthy=[r.shard for r in rows if not r.healthy],
    )


def _held_by_the_living(lease: str | None, connected: set[int] | None) -> bool:
    """Whether the lease is held by a worker still connected to Redis; where that cannot be told
    (CLIENT disabled: `connected` None, or a lease naming no connection) the lease's TTL decides."""
    if lease is None:
        return False
    connection = lease_connection(lease)
    return connected is None or connection is None or connection in connected


def stock_page(engine: Engine, sku: str, *, before: int | None = None, limit: int = 25) -> StockPage:
    """A product's stock by warehouse and lot, its open holds, and a page of its ledger."""
    with engine.connect() as conn:
        stock = read_stock(conn, sku)
        holds = open_holds(conn, sku)
        moves = read_movements(conn, sku, limit=limit + 1, before_id=before)
    return StockPage(
        stock=stock,
        holds=holds,
        movements=moves[:limit],
        next_before=moves[limit - 1].id if len(moves) > limit else None,
    )


def dead_letters(engine: Engine) -> list[DeadLetter]:
    """The parked commands, oldest first (the API serves the dataclass as it is)."""
    with engine.connect() as conn:
        return list_dead(conn)


def requeue_dead(engine: Engine, redis: Redis, settings: Settings, keys: list[str] | None) -> dict[str, int]:
    """Make parked commands pending again (`keys`, or all when None) and ring their shards: key →
    shard of each requeued. A doorbell lost (Redis away) only delays: the sweep rings them."""
    with engine.begin() as conn:
        requeued = requeue(conn, keys)
    try:
        doorbells = Doorbells.of(redis, settings)
        for shard in sorted(set(requeued.values())):
            doorbells.ring(shard)
    except Exception:  # Redis away: the scheduler's sweep rings them within its interval
        log.warning("requeue.not_rung", shards=sorted(set(requeued.values())))
    return requeued


def command_status(engine: Engine, key: str) -> str | None:
    """The status of the command recorded under `key` (None: no such command)."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM commands WHERE idempotency_key = :k"), {"k": key}
        ).scalar()
