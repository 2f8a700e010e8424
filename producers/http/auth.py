"""Who is calling: a bearer token of a role. Missing, unknown or revoked → 401 (with
`WWW-Authenticate: Bearer`); a live token of a role that may not do this → 403."""

from __future__ import annotations

import threading
import time
from typing import Annotated

import psycopg
import structlog
from fastapi import Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from db.engine import libpq_url
from db.tokens import CHANGES_CHANNEL, ApiToken, find_token, token_hash
from producers.http.problems import Problem
from producers.recording import Actor
from tessera.logs import first_line

CHECKOUT, PAYMENTS, WAREHOUSE, OPS = "checkout", "payments", "warehouse", "ops"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
log = structlog.get_logger("tessera.api")


class TokenCache:
    """The live tokens this process has checked, so that a request costs no round trip to
    PostgreSQL for its token (under a flash sale that lookup was a quarter of the API's time).

    A trigger announces every change to a token (`CHANGES_CHANNEL`); a listener thread drops the
    whole cache on each, so a revoked token is refused from its commit on (give or take the
    notice's trip). A lookup that a change overtook is not cached (`_generation`), and while the
    listener has no session (PostgreSQL restarting) nothing is cached at all. Entries also age out
    after `TTL_SECONDS`, a bound if a notice were ever lost.
    """

    TTL_SECONDS = 60.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tokens: dict[str, tuple[ApiToken, float]] = {}
        self._generation = 0
        self._listening = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="token-changes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    @property
    def listening(self) -> bool:
        """Whether changes are heard (only then is anything kept)."""
        return self._listening

    def cached(self, token: str) -> ApiToken | None:
        entry = self._tokens.get(token_hash(token))
        if entry is None or time.monotonic() - entry[1] > self.TTL_SECONDS:
            return None
        return entry[0]

    def lookup(self, token: str) -> ApiToken | None:
        """Read the token from PostgreSQL (blocking), and keep it if no change came meanwhile."""
        generation, listening = self._generation, self._listening
        with self.engine.connect() as conn:
            found = find_token(conn, token)
        if found is not None and listening and generation == self._generation:
            self._tokens[token_hash(token)] = (found, time.monotonic())
        return found

    def _forget(self) -> None:
        self._generation += 1
        self._tokens = {}

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    libpq_url(self.engine), autocommit=True, application_name="tessera-api tokens"
                ) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._forget()  # what changed while no one listened
                    self._listening = True
                    while not self._stop.is_set():
                        for _note in conn.notifies(timeout=0.5):
                            self._forget()
            except Exception as error:  # PostgreSQL restarting: check every token until back
                log.warning("token_changes.error", error=first_line(error))
            finally:
                self._listening = False
                self._forget()
            self._stop.wait(1.0)


class RoleCheck:
    """A dependency: the caller's token, if its role is one of `roles`."""

    checks_caller = True
    """Marks the token check, which `problems.refused_caller` runs where FastAPI did not."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.roles = roles

    async def __call__(self, request: Request) -> ApiToken:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "unauthenticated", "send Authorization: Bearer <token>", headers=_CHALLENGE)
        tokens: TokenCache = request.app.state.tokens
        found = tokens.cached(token) or await run_in_threadpool(tokens.lookup, token)
        if found is None:
            raise Problem(401, "unauthenticated", "unknown or revoked token", headers=_CHALLENGE)
        if found.role not in self.roles:
            raise Problem(403, "forbidden", f"a {found.role} token may not do this")
        return found


def allow(*roles: str) -> RoleCheck:
    """`Depends(allow(CHECKOUT, OPS))`: the caller's token, if its role is one of these."""
    return RoleCheck(roles)


def actor_of(token: ApiToken) -> Actor:
    """Who a token's request acts as: its name on the ledger rows, its id for approvals."""
    return Actor(name=token.name, token_id=token.id)


Warehouse = Annotated[ApiToken, Depends(allow(WAREHOUSE))]
"""A route's caller, of the warehouse role."""
