"""`tessera scheduler`: the recovery sweep.

Rings every shard that has a command recorded but not applied after a grace period (its doorbell
was lost with Redis, or its worker died), and every shard whose scheduled commands (hold expiry)
are due: the delayed Dramatiq message usually rings first, but Dramatiq keeps delayed messages in a
FIFO list, partly in worker memory, so a short TTL queued behind many long ones can fire late. Applying stays the writer's job: the sweep only
rings, so it can never apply anything twice or out of order.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy import Engine, text

from workers.broker import Doorbells

log = structlog.get_logger("tessera.scheduler")


def stale_shards(engine: Engine, grace_seconds: float) -> dict[int, int]:
    """Shards with work to ring → how many commands wait there.

    Recorded commands count once they are older than the grace period (their doorbell is probably
    lost); scheduled ones (hold expiry) as soon as they are due, since lateness is what users see.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT shard, count(*) FROM commands
                WHERE status = 'recorded' AND recorded_at < now() - make_interval(secs => :grace)
                GROUP BY shard
                UNION ALL
                SELECT shard, count(*) FROM commands
                WHERE status = 'scheduled' AND not_before <= now()
                GROUP BY shard
                """
            ),
            {"grace": grace_seconds},
        )
        stale: dict[int, int] = {}
        for shard, count in rows:
            stale[int(shard)] = stale.get(int(shard), 0) + int(count)
        return stale


def sweep(engine: Engine, doorbells: Doorbells, grace_seconds: float) -> dict[int, int]:
    stale = stale_shards(engine, grace_seconds)
    for shard, waiting in stale.items():
        doorbells.ring(shard)
        log.info("sweep.rang", shard=shard, waiting=waiting)
    return stale


def run_sweeper(
    engine: Engine, doorbells: Doorbells, *, interval: float, grace_seconds: float, stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            sweep(engine, doorbells, grace_seconds)
        except Exception:
            log.exception("sweep.error")
        stop.wait(interval)
