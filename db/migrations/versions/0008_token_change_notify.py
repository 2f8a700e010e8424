"""A changed or deleted API token is announced on `tessera_tokens`.

The API keeps the tokens it has checked in memory; a trigger, not the CLI, sends the notice, so a
token revoked by any path (the CLI, plain SQL) is forgotten by every API process at its commit.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION api_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('tessera_tokens', OLD.id::text);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER api_token_changed AFTER UPDATE OR DELETE ON api_tokens "
        "FOR EACH ROW EXECUTE FUNCTION api_token_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER api_token_changed ON api_tokens")
    op.execute("DROP FUNCTION api_token_changed()")
