"""Reading the outbox's events in an order no later commit can break.

An event's id is drawn before its transaction commits, so "id > last seen" would pass over the
event of a writer that commits after a later-numbered one (DESIGN.md: pending work is found by
state). Events are served in (transaction id, id) order instead, and only those of transactions
older than every transaction still running (`pg_snapshot_xmin` of the reader's snapshot): all
of those have ended, so no event can ever appear before a cursor once it has been passed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class Event:
    cursor: str
    """``<xid>-<id>``: what a subscriber sends back as ``Last-Event-ID``."""
    topic: str
    payload: dict[str, Any]
    created_at: dt.datetime


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    """``"<xid>-<id>"`` → (xid, id); None or malformed → the start."""
    if cursor:
        xid, _, event_id = cursor.partition("-")
        if xid.isdecimal() and event_id.isdecimal():
            return int(xid), int(event_id)
    return 0, 0


def events_after(
    conn: Connection,
    cursor: str | None,
    *,
    topics: list[str] | None = None,
    sku: str | None = None,
    limit: int = 500,
) -> list[Event]:
    """The next events after `cursor`, oldest first, of the given topic prefixes and SKU."""
    xid, event_id = parse_cursor(cursor)
    rows = conn.execute(
        text(
            """
            SELECT o.xid::text, o.id, o.topic, o.payload, o.created_at FROM outbox o
            WHERE (o.xid, o.id) > (CAST(:xid AS text)::xid8, :id)
              AND o.xid < pg_snapshot_xmin(pg_current_snapshot())
              AND (CAST(:topics AS text[]) IS NULL
                   OR EXISTS (SELECT 1 FROM unnest(CAST(:topics AS text[])) AS t(prefix)
                              WHERE o.topic = t.prefix OR o.topic LIKE t.prefix || '.%'))
              AND (CAST(:sku AS text) IS NULL OR o.payload->>'product_id' = (
                   SELECT id::text FROM products WHERE sku = :sku)
                   OR o.payload->>'hold_id' IN (
                   SELECT l.hold_id::text FROM hold_lines l JOIN products p ON p.id = l.product_id
                   WHERE p.sku = :sku))
            ORDER BY o.xid, o.id LIMIT :limit
            """
        ),
        {"xid": str(xid), "id": event_id, "topics": topics, "sku": sku, "limit": limit},
    )
    return [Event(f"{x}-{i}", topic, payload, at) for x, i, topic, payload, at in rows]
