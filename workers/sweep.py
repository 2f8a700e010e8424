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

from tessera.doorbells import Doorbells

log = structlog.get_logger("tessera.scheduler")


def stale_shards(engine: Engine, grace_seconds: float, shards: int) -> dict[int, int]:
    """Shards with work to ring → how many commands wait there.

    Recorded commands count once they are older than the grace period (their doorbell is probably
    lost); scheduled ones (hold expiry) as soon as they are due, since lateness is what users see.
    Each shard is counted along its own ranges of the pending and scheduled indexes: counted over
    all shards at once, the due ones would be read among every scheduled command (the index by due
    time alone is gone: migration 0005), or the planner could scan the whole inbox, every sweep.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT s.shard, w.waiting FROM generate_series(0, :shards - 1) AS s(shard), LATERAL (
                    SELECT (SELECT count(*) FROM commands
                            WHERE shard = s.shard AND status = 'recorded'
                              AND recorded_at < now() - make_interval(secs => :grace))
                         + (SELECT count(*) FROM commands
                            WHERE shard = s.shard AND status = 'scheduled' AND not_before <= now()) AS waiting
                ) AS w
                WHERE w.waiting > 0
                """
            ),
            {"grace": grace_seconds, "shards": shards},
        )
        return {int(shard): int(waiting) for shard, waiting in rows}


def sweep(engine: Engine, doorbells: Doorbells, grace_seconds: float) -> dict[int, int]:
    stale = stale_shards(engine, grace_seconds, doorbells.shards)
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
