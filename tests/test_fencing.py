"""The apply transaction proves the lease epoch in Postgres: an older epoch can never apply."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from db.repository import prove_lease
from domain.errors import LeaseLost
from workers.writer import ShardWriter


def _writer(engine: Engine, holder: str) -> ShardWriter:
    return ShardWriter(engine, shards=4, batch_max=16, holder=holder, after_commit=lambda report: None)


def test_a_writer_with_an_older_epoch_is_fenced_out(engine: Engine) -> None:
    _writer(engine, "new").apply_batch(0, epoch=5)
    with pytest.raises(LeaseLost):
        _writer(engine, "stale").apply_batch(0, epoch=4)
    _writer(engine, "newer").apply_batch(0, epoch=6)


def test_a_second_writer_of_a_shard_waits_for_the_first_to_commit(engine: Engine) -> None:
    entered = threading.Event()
    with engine.begin() as first:
        assert prove_lease(first, 1, 7, "first") is not None
        thread = threading.Thread(
            target=lambda: (_writer(engine, "second").apply_batch(1, epoch=8), entered.set())
        )
        thread.start()
        # While the first transaction is open the second cannot get past the fence row.
        assert not entered.wait(0.5)
    thread.join(timeout=10)
    assert entered.is_set()
