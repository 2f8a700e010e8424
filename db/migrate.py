"""`tessera migrate`: take a database (empty or not) to the head revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from db.engine import normalize_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def pending_revisions(database_url: str) -> list[str]:
    """The revisions between the database's and head, oldest first (every one on an empty database)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    config = alembic_config(database_url)
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(config)
    return [r.revision for r in reversed(list(script.iterate_revisions("head", current)))]
