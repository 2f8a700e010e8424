"""The API keeps the tokens it checked in memory, and forgets them at any change to a token:
a revoked token is refused at once by every API process, whatever revoked it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from db.tokens import create_token
from producers.http.auth import TokenCache


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def tokens(engine: Engine) -> Iterator[TokenCache]:
    cache = TokenCache(engine)
    cache.start()
    assert _until(lambda: cache.listening)
    yield cache
    cache.close()


def test_a_checked_token_is_kept_and_forgotten_when_revoked_by_plain_sql(
    engine: Engine, tokens: TokenCache
) -> None:
    with engine.begin() as conn:
        made, token = create_token(conn, "checkout", "kept")
    assert tokens.cached(token) is None
    assert tokens.lookup(token) == made
    assert tokens.cached(token) == made  # the next request costs no round trip
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE id = :id"), {"id": made.id})
    assert _until(lambda: tokens.cached(token) is None)
    assert tokens.lookup(token) is None


def test_a_deleted_token_is_forgotten_too(engine: Engine, tokens: TokenCache) -> None:
    with engine.begin() as conn:
        made, token = create_token(conn, "ops", "deleted")
    assert tokens.lookup(token) == made
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM api_tokens WHERE id = :id"), {"id": made.id})
    assert _until(lambda: tokens.cached(token) is None)
    assert tokens.lookup(token) is None


def test_nothing_is_kept_while_changes_are_not_heard(engine: Engine) -> None:
    deaf = TokenCache(engine)  # never started: no listener
    with engine.begin() as conn:
        made, token = create_token(conn, "ops", "unheard")
    assert deaf.lookup(token) == made
    assert deaf.cached(token) is None


def test_an_unknown_token_is_not_kept(engine: Engine, tokens: TokenCache) -> None:
    assert tokens.lookup("tsr_not-a-token") is None
    assert tokens.cached("tsr_not-a-token") is None
