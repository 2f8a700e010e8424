"""`tessera worker --spread`: replicas serving the same shards share them, as
`docker compose up --scale worker=N` runs them, and take a dead or stopped one's shards at once."""

from __future__ import annotations

from collections import Counter

from redis import Redis
from sqlalchemy import Engine, text

from producers import StockClient
from tessera.settings import Settings
from tests.conftest import Processes
from tests.flow import assert_applied_exactly_once, flow, stock_up, wait_all_applied
from tests.stack import until
from workers.lease import lease_holder, lease_key
from workers.spread import shard_ranges

# Takeovers within the TTL come from the workers seeing each other go, not from leases lapsing.
LONG_LEASE = {"TESSERA_LEASE_TTL_SECONDS": "20"}


def test_spread_workers_share_the_shards_and_take_a_killed_or_stopped_ones_at_once(
    catalog: StockClient, processes: Processes, settings: Settings, engine: Engine, assert_consistent
) -> None:
    workers = {
        name: processes.start("worker", "--spread", "--name", name, env=LONG_LEASE)
        for name in ("a", "b", "c")
    }
    until(lambda: _spread(settings) == [1, 1, 2], timeout=30, what="4 shards spread 2-1-1 over 3 workers")
    stock_up(catalog)

    def kill_b() -> None:
        workers["b"].kill()
        workers["b"].wait()
        until(
            lambda: set(_holders(settings)) == {"a", "c"} and _spread(settings) == [2, 2],
            timeout=10,
            what="the killed worker's shards taken by the others",
        )

    keys = flow(catalog, 600, at_half=kill_b)
    wait_all_applied(engine)
    assert_applied_exactly_once(engine, keys)
    with engine.connect() as conn:
        holders = {h for (h,) in conn.execute(text("SELECT DISTINCT holder FROM apply_batches"))}
    # The work was shared: after the kill, a and c hold two shards each, and only one of the four
    # (shard 2) has none of the flow's products.
    assert {"a", "c"} <= holders <= {"a", "b", "c"}

    processes.stop(workers["c"])  # SIGTERM: it leaves the spread and releases its leases
    until(lambda: _spread(settings) == [4], timeout=10, what="the stopped worker's shards taken")
    assert set(_holders(settings)) == {"a"}
    assert_consistent()


def test_shard_sets_are_named_as_the_shards_flag_takes_them() -> None:
    assert shard_ranges(range(16)) == "0-15"
    assert shard_ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


def _holders(settings: Settings) -> list[str]:
    """The holder of each held lease."""
    redis = Redis.from_url(settings.redis_url)
    values = redis.mget([lease_key(settings.redis_namespace, s) for s in range(settings.shards)])
    return [lease_holder(v.decode())[0] for v in values if v is not None]


def _spread(settings: Settings) -> list[int]:
    """How many shards each worker holds, fewest first, once every shard is held ([] until then)."""
    holders = _holders(settings)
    return sorted(Counter(holders).values()) if len(holders) == settings.shards else []
