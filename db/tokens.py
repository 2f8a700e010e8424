"""The HTTP API's bearer tokens: created, listed, revoked, and looked up by their hash.

A token is shown once, when it is created; the database keeps only its SHA-256, so a leaked
table does not leak a token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, text

ROLES = ("checkout", "payments", "warehouse", "ops")
TOKEN_PREFIX = "tsr_"
CHANGES_CHANNEL = "tessera_tokens"
"""A trigger announces every changed or deleted token here (migration 0008)."""


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    name: str
    role: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: Connection, role: str, name: str) -> tuple[ApiToken, str]:
    """A new token of `role`: its row, and the token itself (never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = conn.execute(
        text(
            "INSERT INTO api_tokens (name, role, token_hash) VALUES (:name, :role, :hash) "
            "RETURNING id, name, role, created_at, revoked_at"
        ),
        {"name": name, "role": role, "hash": token_hash(token)},
    ).one()
    return ApiToken(*row), token


def list_tokens(conn: Connection) -> list[ApiToken]:
    rows = conn.execute(text("SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY id"))
    return [ApiToken(*row) for row in rows]


def revoke_token(conn: Connection, token_id: int) -> bool:
    """Revoke a token (True), or say there is no such live token (False)."""
    revoked = conn.execute(
        text("UPDATE api_tokens SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL RETURNING id"),
        {"id": token_id},
    ).first()
    return revoked is not None


def find_token(conn: Connection, token: str) -> ApiToken | None:
    """The live token this bearer token is (None: unknown or revoked)."""
    row = conn.execute(
        text(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens "
            "WHERE token_hash = :hash AND revoked_at IS NULL"
        ),
        {"hash": token_hash(token)},
    ).first()
    return ApiToken(*row) if row else None
