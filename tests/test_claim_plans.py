"""The writer's claim reads the pending commands it takes, not the inbox's history.

After a backlog builds up (an outage, a burst), ANALYZE (autovacuum, after 2 % of change: migration
0003) sees a large share of the inbox 'recorded'. A pending lookup ordered by seq could then be
planned along the primary key with a filter: every claim walks the applied history from its start
(measured: claims of 20-100 ms, a drain 2-5 times slower), exactly when the writer has to catch up.
The sweep, over the same backlog, counts each shard's waiting commands.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from db.claims import _PROVE_LEASES, _STATE
from db.sql import array_param as _array
from db.sql import forget_plans, psycopg_of
from workers.sweep import stale_shards

SHARDS = 5
LIMIT = 256
DUE_EXPIRIES = 1_000


@pytest.fixture
def history_and_backlog(engine: Engine) -> None:
    """20,000 applied commands, then a backlog: 8,000 recorded ones on shards 0-2, 1,000 expiries
    due on shard 3 and 2,000 due in an hour on shards 0-3; shard 4 has nothing due. Analyzed, as
    autovacuum would."""
    with engine.begin() as conn:
        for name, status, count, shards, due_in in (
            ("applied", "applied", 20_000, [0, 1, 2, 3], None),
            ("recorded", "recorded", 8_000, [0, 1, 2], None),
            ("due", "scheduled", DUE_EXPIRIES, [3], "-1 minute"),
            ("later", "scheduled", 2_000, [0, 1, 2, 3], "1 hour"),
        ):
            conn.execute(
                text(
                    """
                    INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status, not_before)
                    SELECT :name || '-' || i, 'line.reserve', '{}', 'x',
                           (CAST(:shards AS int[]))[1 + i % cardinality(CAST(:shards AS int[]))], :status,
                           now() + CAST(:due_in AS interval)
                    FROM generate_series(1, :count) AS i
                    """
                ),
                {"name": name, "status": status, "count": count, "shards": shards, "due_in": due_in},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE commands"))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _commands_rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of `commands` read: returned plus those their filters removed."""
    return sum(
        (
            node["Actual Rows"]
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        * node["Actual Loops"]
        for node in _nodes(plan)
        if node.get("Relation Name") == "commands"
    )


@pytest.mark.usefixtures("history_and_backlog")
def test_a_claim_reads_pending_commands_only_after_a_backlog_is_analyzed(engine: Engine) -> None:
    params = {
        "shards": _array(range(SHARDS)),
        "epochs": _array([1] * SHARDS),
        "holder": "w-test",
        "limit": LIMIT,
    }
    with engine.begin() as conn:  # the claim's two statements, in one transaction, as the writer runs them
        pg = psycopg_of(conn)
        explained = []
        for statement in (_PROVE_LEASES, _STATE):
            (row,) = pg.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).fetchall()
            explained.append(row[0][0]["Plan"])  # EXPLAIN's json, parsed by psycopg
        taken = pg.execute(_STATE, params).fetchone()
    assert taken is not None and len(taken[0]) == LIMIT  # the first 256 of the backlog, in order
    assert [command[0] for command in taken[0]] == sorted(command[0] for command in taken[0])

    prove, state = (_commands_rows_read(plan) for plan in explained)
    # Proving: each shard's first due command (an expiry's look-up may pass over the due ones of
    # other shards). Taking: each shard's first 256, of which the batch keeps the first 256 by seq.
    # Never the 20,000 applied ones (the plans this guards against read 80,000 in each statement).
    assert prove <= 2 * SHARDS + DUE_EXPIRIES, f"proving the leases read {prove} inbox rows"
    assert state <= SHARDS * LIMIT + DUE_EXPIRIES, f"taking the batch read {state} inbox rows"


@pytest.mark.usefixtures("history_and_backlog")
def test_the_sweep_counts_each_shards_waiting_commands(engine: Engine) -> None:
    # Recorded in an earlier transaction than the sweep's: older than a grace period of 0 s. The
    # 8,000 went round shards 0-2 by i % 3 for i = 1..8,000; shard 4 has nothing waiting.
    assert stale_shards(engine, 0.0, SHARDS) == {0: 2_666, 1: 2_667, 2: 2_667, 3: DUE_EXPIRIES}
    assert stale_shards(engine, 3600.0, SHARDS) == {3: DUE_EXPIRIES}  # the backlog is younger than an hour


@pytest.mark.parametrize("prepared_before_first_forget", [False, True])
def test_forgetting_plans_keeps_the_session_usable_however_often(
    engine: Engine, prepared_before_first_forget: bool
) -> None:
    """psycopg notices DEALLOCATE ALL only the first time it sees the statement's text while it has
    statements prepared: a session that dropped its plans once with none prepared kept using
    names PostgreSQL no longer had ("prepared statement _pg3_0 does not exist"), and the writer's
    claim failed and paused a second every REPLAN_SECONDS."""
    with engine.connect() as conn:
        pg = psycopg_of(conn.execution_options(isolation_level="AUTOCOMMIT"))

        def run_prepared() -> None:
            for _ in range((pg.prepare_threshold or 0) + 2):
                assert pg.execute("SELECT count(*) FROM commands WHERE shard = %s", [1]).fetchone()

        if prepared_before_first_forget:
            run_prepared()
        for _ in range(3):
            forget_plans(pg)
            run_prepared()


def test_a_writer_session_replans_early_then_every_replan_interval(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new session's first plans are made for nearly empty tables: it replans after 0.5 s, then
    after twice as long each time, up to every REPLAN_SECONDS."""
    from workers import writer as writer_module

    clock = [1000.0]
    replanned: list[float] = []
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(writer_module, "forget_plans", lambda pg: replanned.append(clock[0] - 1000.0))
    writer = writer_module.ShardWriter(engine, shards=1, batch_max=10, holder="w", announce=lambda r: None)
    with engine.connect() as conn:
        pg = psycopg_of(conn)
        while clock[0] < 1046.0:
            writer._replan_if_due(pg)
            clock[0] += 0.25
    assert replanned == [0.5, 1.5, 3.5, 7.5, 15.5, 25.5, 35.5, 45.5]


def test_the_writers_hot_statements_stay_within_what_psycopg_caches_the_conversion_of() -> None:
    """psycopg re-splits a statement's placeholders on every run when it is longer, or has more
    parameters, than it caches (`db.sql` raises the length): the claim and a batch of holds' writes."""
    from psycopg import _queries

    from db.writes import _statement

    for statement in (_STATE, _statement(("valuation_quantities",), every_column=False)):
        assert len(statement.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH
        assert len(set(re.findall(r"%\((\w+)\)s", statement))) <= _queries.MAX_CACHED_STATEMENT_PARAMS
