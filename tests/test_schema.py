"""The schema's own guards: what the database refuses even if a writer had a bug."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from db.models import Base
from producers import StockClient

MOVEMENT = """
    INSERT INTO movements (product_id, warehouse_id, lot_id, kind, d_on_hand, command_seq)
    SELECT p.id, w.id, :lot, 'receipt', 1, :seq FROM products p, warehouses w
    WHERE p.sku = 'GRS-60x60-GREY' AND w.code = :warehouse
"""


@pytest.fixture
def balance(catalog: StockClient, engine: Engine) -> dict[str, int]:
    """A lot of GRS-60x60-GREY with a balance in BUC1 (none in CLJ1), and a command to cite."""
    with engine.begin() as conn:
        lot = conn.execute(
            text(
                "INSERT INTO lots (product_id, lot_code) SELECT id, 'L1' FROM products "
                "WHERE sku = 'GRS-60x60-GREY' RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO stock_balances (product_id, warehouse_id, lot_id) SELECT p.id, w.id, :lot "
                "FROM products p, warehouses w WHERE p.sku = 'GRS-60x60-GREY' AND w.code = 'BUC1'"
            ),
            {"lot": lot},
        )
        seq = conn.execute(
            text(
                "INSERT INTO commands (idempotency_key, kind, payload, payload_hash, shard, status) "
                "VALUES (:key, 'stock.receive', '{}', 'x', 0, 'applied') RETURNING seq"
            ),
            {"key": f"k-{uuid.uuid4().hex}"},
        ).scalar_one()
    return {"lot": lot, "seq": seq}


def test_a_ledger_row_must_move_an_existing_balance(balance: dict[str, int], engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(MOVEMENT), {**balance, "warehouse": "BUC1"})

    with pytest.raises(IntegrityError, match="movements_balance_fkey"), engine.begin() as conn:
        conn.execute(text(MOVEMENT), {**balance, "warehouse": "CLJ1"})  # no such balance in Cluj

    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM movements")).scalar_one() == 1


def test_an_allocated_line_must_hold_stock_of_an_existing_balance(
    balance: dict[str, int], engine: Engine
) -> None:
    hold_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO holds (id, idempotency_key, status, mode, home_shard, ttl_seconds, expires_at, "
                "lines_pending) VALUES (:id, :key, 'pending', 'all_or_nothing', 0, 60, now(), 1)"
            ),
            {"id": hold_id, "key": f"h-{hold_id}"},
        )
        # Pending: no warehouse and lot yet, so nothing to check.
        conn.execute(
            text(
                "INSERT INTO hold_lines (hold_id, line_no, product_id, requested_quantity, requested_unit, "
                "pieces, rounding, status) SELECT :id, 1, id, 1, 'piece', 1, '', 'pending' FROM products "
                "WHERE sku = 'GRS-60x60-GREY'"
            ),
            {"id": hold_id},
        )
    allocate = text(
        "UPDATE hold_lines SET status = 'reserved', allocated = 1, lot_id = :lot, "
        "warehouse_id = (SELECT id FROM warehouses WHERE code = :warehouse) WHERE hold_id = :id"
    )

    with pytest.raises(IntegrityError, match="hold_lines_balance_fkey"), engine.begin() as conn:
        conn.execute(allocate, {"lot": balance["lot"], "warehouse": "CLJ1", "id": hold_id})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM hold_lines")).scalar_one() == "pending"

    with engine.begin() as conn:
        conn.execute(allocate, {"lot": balance["lot"], "warehouse": "BUC1", "id": hold_id})


@pytest.mark.filterwarnings("ignore:Did not recognize type 'xid8'")  # outbox.xid: a type of our own
def test_the_migrations_build_the_schema_the_models_describe(engine: Engine) -> None:
    """Tables, columns, types, indexes and keys (alembic does not compare CHECKs)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
