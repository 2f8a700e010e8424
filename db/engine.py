"""Engines: one per process and URL, psycopg 3 underneath."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine


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
def get_engine(url: str, pool_size: int = 32, application_name: str = "tessera") -> Engine:
    """The process's engine for `url`.

    The pool keeps as many connections as the process's threads use at once: a connection opened
    past the pool size is closed when returned, and opening one costs PostgreSQL a backend fork,
    which under a flash sale costs more CPU than the statements themselves.
    """
    # No pre-ping: it costs a round trip per checkout on the hot path; a connection lost with a
    # PostgreSQL restart fails its statement, and the writer retries the batch in place.
    # application_name shows in pg_stat_activity which part of Tessera holds each session.
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=16,
        connect_args={"application_name": application_name[:63]},
    )
