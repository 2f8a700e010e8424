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


@lru_cache(maxsize=8)
def get_engine(url: str, pool_size: int = 8) -> Engine:
    return create_engine(normalize_url(url), pool_size=pool_size, max_overflow=32, pool_pre_ping=True)
