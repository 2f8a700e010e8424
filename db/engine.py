"""Engines: one per process and URL, psycopg 3 underneath."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from psycopg.types.json import set_json_loads
from sqlalchemy import Engine, create_engine, event


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs too; Tessera always talks psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(engine: Engine) -> str:
    """The engine's URL as libpq takes it, for a session of one's own outside the pool (LISTEN)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache(maxsize=8)
def get_engine(
    url: str,
    pool_size: int = 32,
    application_name: str = "tessera",
    options: str | None = None,
    pre_ping: bool = False,
) -> Engine:
    """The process's engine for `url`.

    The pool keeps as many connections as the process's threads use at once: a connection opened
    past the pool size is closed when returned, and opening one costs PostgreSQL a backend fork,
    which under a flash sale costs more CPU than the statements themselves. `options` are the
    sessions' settings (libpq's ``options``, e.g. ``-c lock_timeout=5000``).
    """
    # No pre-ping by default: it costs a round trip per checkout on the writer's hot path, and a
    # connection lost with a PostgreSQL restart fails its statement, which the writer retries in
    # place. The API pings (`pre_ping`): its requests check a session out only off the hold path
    # (reads, a token's first lookup, webhooks), and a stale one would fail its request.
    # application_name shows in pg_stat_activity which part of Tessera holds each session.
    connect_args = {"application_name": application_name[:63]}
    if options:
        connect_args["options"] = options
    return make_engine(
        url, pool_size=pool_size, max_overflow=16, connect_args=connect_args, pool_pre_ping=pre_ping
    )


def make_engine(url: str, **options: Any) -> Engine:
    """A new engine for `url` as Tessera sets one up (psycopg 3, JSON results read by orjson);
    `options` go to SQLAlchemy's create_engine. Most callers want `get_engine`'s shared one."""
    engine = create_engine(normalize_url(url), **options)
    event.listen(engine, "connect", _read_json_with_orjson)
    return engine


def _read_json_with_orjson(dbapi_connection: Any, _record: Any) -> None:
    """json/jsonb results parsed by orjson: a batch's state comes back as one JSON document, and
    the standard library's parser was a fifth of the writer's claim."""
    set_json_loads(orjson.loads, dbapi_connection)
