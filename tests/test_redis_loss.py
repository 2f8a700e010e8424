"""Redis loses its memory while commands flow: the Postgres inbox and the sweep make up for it."""

from __future__ import annotations

import pytest
from redis import Redis
from sqlalchemy import Engine

from producers import StockClient
from tessera.settings import Settings
from tests.conftest import Processes
from tests.flow import assert_applied_exactly_once, flow, stock_up, wait_all_applied

WIPED_DB = 9


@pytest.fixture
def redis_db() -> int:
    """A Redis db of this test's own, so wiping it (FLUSHDB) touches no other test's keys."""
    return WIPED_DB


def test_redis_flush_mid_flow_loses_no_acknowledged_command(
    catalog: StockClient, processes: Processes, engine: Engine, settings: Settings, assert_consistent
) -> None:
    processes.worker()
    processes.start("scheduler")
    stock_up(catalog)
    redis = Redis.from_url(settings.redis_url)

    keys = flow(catalog, 2000, at_half=redis.flushdb)
    wait_all_applied(engine)

    assert_applied_exactly_once(engine, keys)
    assert_consistent()
