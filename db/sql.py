"""What every statement module shares: the psycopg connection under SQLAlchemy's, and the cheap
encodings of set-based parameters (one JSON document, or one array literal, per column)."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection, Pipeline
from psycopg import Connection as PgConnection
from psycopg import _queries as _psycopg_queries
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

Pg = PgConnection[Any]
AsyncPg = AsyncConnection[Any]
R = TypeVar("R")
Rows = list[tuple[Any, ...]]

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""A text that casts to uuid (matched with ~* before the cast, so a broken payload loads nothing)."""


# psycopg converts a statement's %(name)s placeholders with a regular expression on every execution
# unless the statement is at most MAX_CACHED_STATEMENT_LENGTH bytes (4,096; then the conversion is
# cached): re-splitting the batch's claim and writes was a tenth of the writer's time under a flash
# sale, and the writes, with every bucket and the ledger's costs, reasons, actors and balances after,
# are ~5 KB (~60 µs a batch to split). Our statements are a handful of fixed texts: cache them all.
_psycopg_queries.MAX_CACHED_STATEMENT_LENGTH = max(_psycopg_queries.MAX_CACHED_STATEMENT_LENGTH, 16 * 1024)


def compact(statement: str) -> str:
    """The statement without its comments and runs of white space, which are bytes for psycopg and
    PostgreSQL to read on every execution. (No literal here holds "--" or a run of spaces.)"""
    return " ".join(re.sub(r"--[^\n]*", " ", statement).split())


@dataclass(frozen=True, slots=True)
class Statement(Generic[R]):
    """A statement, its parameters and how its rows become a result: run on a session, or awaited
    on an event loop's, by the same code (the hold recorder runs both ways: `run_steps`)."""

    sql: str
    params: Mapping[str, Any]
    read: Callable[[Rows], R]

    def run(self, pg: Pg) -> R:
        return self.read(pg.execute(self.sql, self.params).fetchall())

    async def run_async(self, apg: AsyncPg) -> R:
        cursor = await apg.execute(self.sql, self.params)
        return self.read(await cursor.fetchall())


Steps = Generator[Statement[Any], Any, R]
"""Work that needs the database: it yields each statement and is sent back its result."""


def run_steps(steps: Steps[R], pg: Pg) -> R:
    """Do the work on a session."""
    try:
        statement = next(steps)
        while True:
            statement = steps.send(statement.run(pg))
    except StopIteration as done:
        return done.value


async def run_steps_async(steps: Steps[R], apg: AsyncPg) -> R:
    """Do the work on an event loop's session: the loop serves other requests while it waits."""
    try:
        statement = next(steps)
        while True:
            statement = steps.send(await statement.run_async(apg))
    except StopIteration as done:
        return done.value


def psycopg_of(conn: Connection) -> Pg:
    """The psycopg connection under a SQLAlchemy one, inside the same transaction."""
    return conn.connection.driver_connection  # type: ignore[return-value]


def json_param(value: Any) -> str:
    """JSON for PostgreSQL; Decimal, UUID and datetime as their text, which jsonb_to_recordset
    turns back into numeric, uuid and timestamptz. Set-based statements take their rows as one
    JSON document: psycopg would quote a jsonb[] array element by element, in Python. orjson
    writes them in a fraction of the standard library's time (a batch's parameters and a recorded
    group's are the writer's and the recorder's largest Python cost)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def array_param(values: Iterable[object]) -> str:
    """A PostgreSQL array literal (cast in the statement, e.g. ``%(ids)s::bigint[]``) of numbers,
    UUIDs or text, text quoted. psycopg would dump a list element by element, in Python."""
    return "{" + ",".join(_element(v) for v in values) + "}"


def number_array(values: Iterable[int | Decimal]) -> str:
    """`array_param` of numbers none of which is NULL: a third faster, for the batch's largest
    arrays (its ledger's and balances')."""
    return "{" + ",".join(map(str, values)) + "}"


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    return _quoted(value) if isinstance(value, str) else str(value)  # numbers and UUIDs need no quotes


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def send_sync(pipeline: Pipeline) -> None:
    """End the pipeline with its Sync now, then read its results.

    psycopg sends a pipeline's Sync only after it has read the results, and PostgreSQL arms
    `idle_in_transaction_session_timeout` only when a Sync has come: a writer stopped (SIGSTOP, a
    VM pause) while waiting for its claim's results would keep its transaction, and its shards'
    fence rows, for as long as it stayed stopped. With the Sync sent first, the session is ended
    after the timeout (see `workers.process.writer_session_options`)."""
    pipeline.sync()


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def parse_decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def forget_plans(pg: Pg) -> None:
    """Drop the session's prepared statements, so the next runs are planned for today's tables.

    psycopg clears its own list of prepared names when it sees DEALLOCATE ALL succeed, but only
    the first time it meets that text while it has names prepared: after a first one with none
    prepared, later ones left it naming statements PostgreSQL had dropped. A text of its own each
    time makes every one count (its tag is still DEALLOCATE ALL)."""
    pg.execute(f"DEALLOCATE ALL /* {next(_forgettings)} */".encode())


_forgettings = itertools.count(1)


TRANSIENT_CLASSES = {"08", "40", "53", "57", "58"}
"""Connection exception, transaction rollback, insufficient resources, operator intervention, system error."""
TRANSIENT_STATES = {"55P03", "25P03", "25P04"}
"""Lock not available (lock_timeout), idle-in-transaction and transaction timeouts."""


def transient(error: BaseException) -> bool:
    """Connection loss, serialization failures, deadlocks, lock timeouts, shutdowns, a session ended
    for idling in its transaction: worth trying again (the writer retries its batch in place; the
    API answers 503 with Retry-After). Anything else (a refused write, a bug) is not."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    if not isinstance(error, psycopg.Error):
        return False
    code = error.sqlstate
    if code is None:  # no answer from the server: the connection is gone
        return isinstance(error, psycopg.OperationalError)
    return code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_STATES
