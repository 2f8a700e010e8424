"""A plain `postgresql://` URL works everywhere a database URL is taken."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from db.engine import normalize_url
from tessera.settings import Settings
from tests.conftest import PG_ADMIN_URL, run_cli, settings_env


@pytest.fixture
def empty_database(admin_engine: Engine) -> Iterator[str]:
    """A new, empty database, as a plain postgresql:// URL."""
    name = f"tessera_plain_{uuid.uuid4().hex[:10]}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://", 1)
    yield f"{base}/{name}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_normalize_url_gives_psycopg_3_for_both_plain_spellings() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_migrate_and_reconcile_take_a_plain_postgresql_url(empty_database: str, settings: Settings) -> None:
    assert empty_database.startswith("postgresql://")
    env = settings_env(settings) | {"TESSERA_DATABASE_URL": empty_database}

    def tessera(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args, timeout=120)

    migrated = tessera("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "database is at head" in migrated.stdout
    reconciled = tessera("reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert "clean" in reconciled.stdout
    listed = tessera("dead-letters", "list", "--json")
    assert (listed.returncode, listed.stdout.strip()) == (0, "[]")
