"""An order's history (schema.sql: order_events): every payment event, provider word, retry and
failure, appended; ``(source, event_id)`` unique, so a redelivered event is recorded once.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.orders import Outcome, Source, json_param


def record_event(conn: Connection, order_id: str, source: Source, kind: str, outcome: Outcome,
                 message: str | None = None, detail: Any = None, event_id: str | None = None) -> bool:
    """Append to the order's history; False when (source, event_id) was recorded before."""
    return conn.execute(
        text(
            """
            INSERT INTO order_events (order_id, source, event_id, kind, outcome, message, detail)
            VALUES (:id, :source, :event, :kind, :outcome, :msg, CAST(:detail AS jsonb))
            ON CONFLICT (source, event_id) DO NOTHING
            RETURNING id
            """
        ),
        {"id": order_id, "source": source, "event": event_id, "kind": kind, "outcome": outcome,
         "msg": message, "detail": json_param(detail)},
    ).first() is not None


def record_held(conn: Connection, order_id: str, kind: str, message: str, detail: dict[str, Any]) -> bool:
    """A genuine event that waits for confirmation (``detail["event"]`` names it), appended to
    the history unless the same word on the same event is its latest record. It stays open
    until a row with that event id is recorded (``open_held``)."""
    return conn.execute(
        text(
            """
            INSERT INTO order_events (order_id, source, kind, outcome, message, detail)
            SELECT :id, 'stripe', :kind, 'noted', :msg, CAST(:detail AS jsonb)
             WHERE NOT EXISTS (SELECT 1 FROM order_events h
                                WHERE h.order_id = :id AND h.kind = :kind AND h.message = :msg
                                  AND h.detail->>'event' = :event)
            RETURNING id
            """
        ),
        {"id": order_id, "kind": kind, "msg": message, "detail": json_param(detail), "event": detail["event"]},
    ).first() is not None


# Held events not yet settled: no row records the event id itself.
OPEN_HELD_SQL = """
    SELECT DISTINCT h.order_id, h.detail->>'event' AS event_id
      FROM order_events h
     WHERE h.kind = :kind AND h.source = 'stripe'
       AND NOT EXISTS (SELECT 1 FROM order_events d WHERE d.source = 'stripe' AND d.event_id = h.detail->>'event')
"""


def open_held(conn: Connection, order_id: str, kind: str) -> list[str]:
    """The event ids of an order that still wait for confirmation."""
    return [str(r[1]) for r in conn.execute(text(OPEN_HELD_SQL + " AND h.order_id = :id ORDER BY 2"),
                                            {"kind": kind, "id": order_id})]


def seen_event(conn: Connection, source: Source, event_id: str) -> bool:
    """Whether an event with this (source, event id) is in any order's history already."""
    return conn.execute(
        text("SELECT 1 FROM order_events WHERE source = :source AND event_id = :event"),
        {"source": source, "event": event_id},
    ).first() is not None


def last_failure(conn: Connection, order_id: str) -> str | None:
    """The reason the order failed (its latest failure record)."""
    return conn.execute(
        text(
            """
            SELECT message FROM order_events WHERE order_id = :id AND outcome = 'failed'
             ORDER BY created_at DESC, id DESC LIMIT 1
            """
        ),
        {"id": order_id},
    ).scalar()
