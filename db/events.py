"""The event outbox and its deliveries (schema.sql, the events section).

Events are written by row triggers in the same statement (orders: the same transaction) as the
transition they announce; nothing here writes one. This module turns events into deliveries, one
per configured endpoint (``materialize``), hands out the deliveries that are due to a delivery
run with a lease and a fencing token (``claim_due``), strictly in order per ordering key and
endpoint, and records each attempt's outcome (``record_attempt``).

Delivery statuses: pending -> delivering (claimed; its lease runs) -> delivered, or back to
pending with a later ``next_attempt_at`` (a failed attempt), or dead (out of attempts: an
operator's ``retry --event`` makes it pending again). A delivering row whose lease ran out (its
worker died mid-request) is claimed again: the receiver may get it twice and dedupes by id.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

# An event is given its delivery rows once it is visible. Its seq was taken when it was recorded,
# but transactions commit out of seq order, so an endpoint's cursor (the seq below which every
# event has its delivery) never simply jumps to the highest seq seen: a transaction still open
# (an operator's psql session, for minutes) may commit an event with a lower seq later. Each run
# records a *candidate* (the highest seq with a delivery) with its own transaction's xid, which is
# above the xid of every transaction that took a lower seq (each got its xid before its seq: the
# triggers run after the transition's write). A later run moves the cursor to the candidate once
# the oldest running transaction is past that xid (pg_snapshot_xmin): every such transaction has
# committed (its events are visible and got their deliveries) or aborted. No event is ever passed
# over; a long transaction (here or in another database of the cluster: xmin is cluster-wide)
# only keeps the cursor back, which costs a longer scan, never an event.


def add_endpoints(conn: Connection, endpoints: list[str], backlog_seconds: float) -> None:
    """Register endpoints seen for the first time (a new ``WEBHOOK_URLS`` entry, the broker): each
    gets the events of the last ``backlog_seconds`` and every later one. Known ones are unchanged."""
    for endpoint in endpoints:
        conn.execute(
            text(
                """
                INSERT INTO event_endpoints (endpoint, cursor)
                SELECT :e, COALESCE((SELECT max(seq) FROM outbox_events
                                      WHERE occurred_at < now() - make_interval(secs => :backlog)), 0)
                 WHERE NOT EXISTS (SELECT 1 FROM event_endpoints WHERE endpoint = :e)  -- (no scan when known)
                ON CONFLICT (endpoint) DO NOTHING
                """
            ),
            {"e": endpoint, "backlog": backlog_seconds},
        )


def materialize(conn: Connection, endpoint: str, limit: int = 1000) -> int:
    """Create the missing delivery rows of ``endpoint`` (at most ``limit``, oldest first) and move
    its cursor to the candidate an earlier run recorded once no transaction that could commit an
    event below it is still running (see above); record the next candidate. One statement; safe
    when run concurrently (the unique (event, endpoint) pair; the endpoint's row lock). Returns
    the delivery rows created."""
    return int(conn.execute(
        text(
            """
            WITH ep AS (SELECT cursor, candidate, candidate_xid FROM event_endpoints WHERE endpoint = :e),
            fresh AS (
                INSERT INTO event_deliveries (event_seq, endpoint, ordering_key)
                SELECT o.seq, :e, o.ordering_key FROM outbox_events o
                 WHERE o.seq > (SELECT cursor FROM ep)
                   AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_seq = o.seq AND d.endpoint = :e)
                 ORDER BY o.seq LIMIT :n
                ON CONFLICT (event_seq, endpoint) DO NOTHING
                RETURNING 1
            ), moved AS (
                UPDATE event_endpoints en SET
                    cursor = CASE WHEN ep.candidate_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                                  THEN GREATEST(ep.cursor, ep.candidate) ELSE ep.cursor END,
                    candidate = (SELECT max(o.seq) FROM outbox_events o
                                  WHERE o.seq > ep.cursor
                                    AND EXISTS (SELECT 1 FROM event_deliveries d
                                                 WHERE d.event_seq = o.seq AND d.endpoint = :e)),
                    candidate_xid = pg_current_xact_id()::text::bigint
                  FROM ep
                 WHERE en.endpoint = :e
            )
            SELECT count(*) FROM fresh
            """
        ),
        {"e": endpoint, "n": limit},
    ).scalar() or 0)


def claim_due(conn: Connection, endpoints: list[str], limit: int, lease: float) -> list[RowMapping]:
    """Claim up to ``limit`` due deliveries of ``endpoints`` for ``lease`` seconds: each the oldest
    open delivery of its (endpoint, ordering key), so a key's events go one at a time, in order,
    and a later event waits while an earlier one is pending, in flight or backing off (delivered
    and dead ones no longer hold it). Rows another run is claiming are skipped (SKIP LOCKED).
    Returns rows with the delivery (``id``, ``token``, ``attempt``: this attempt's number,
    ``endpoint``) and its event (``event_id``, ``type``, ``payload``, ``occurred_at``)."""
    return list(conn.execute(
        text(
            """
            WITH due AS (
                SELECT d.id FROM event_deliveries d
                 WHERE d.endpoint = ANY(:endpoints)
                   AND ((d.status = 'pending' AND d.next_attempt_at <= now())
                        OR (d.status = 'delivering' AND d.lease_until < now()))
                   AND NOT EXISTS (SELECT 1 FROM event_deliveries p
                                    WHERE p.endpoint = d.endpoint AND p.ordering_key = d.ordering_key
                                      AND p.event_seq < d.event_seq AND p.status IN ('pending', 'delivering'))
                 ORDER BY d.event_seq
                 LIMIT :n
                 FOR UPDATE SKIP LOCKED
            )
            UPDATE event_deliveries d
               SET status = 'delivering', attempts = d.attempts + 1, claim_token = d.claim_token + 1,
                   lease_until = now() + make_interval(secs => :lease)
              FROM due, outbox_events o
             WHERE d.id = due.id AND o.seq = d.event_seq
            RETURNING d.id, d.claim_token AS token, d.attempts AS attempt, d.endpoint,
                      o.id AS event_id, o.type, o.payload, o.occurred_at
            """
        ),
        {"endpoints": endpoints, "n": limit, "lease": lease},
    ).mappings())


def record_attempt(conn: Connection, delivery_id: int, token: int, attempt: int, *, ok: bool,
                   status_code: int | None, latency_ms: int | None, error: str | None,
                   retry_in: float, max_attempts: int) -> str | None:
    """Record one attempt (``event_attempts``, always) and its outcome on the delivery, if this
    run still holds it (``token``): ok -> delivered; else pending again in ``retry_in`` seconds,
    or dead once ``attempt`` reached ``max_attempts``. Returns the delivery's new status, or None
    when the claim was lost (a run that outlived its lease: the new holder decides)."""
    return conn.execute(
        text(
            """
            WITH a AS (
                INSERT INTO event_attempts (delivery_id, attempt, status_code, latency_ms, error)
                VALUES (:id, :attempt, :code, :ms, :error)
            )
            UPDATE event_deliveries
               SET status = CASE WHEN :ok THEN 'delivered' WHEN attempts >= :max THEN 'dead' ELSE 'pending' END,
                   delivered_at = CASE WHEN :ok THEN now() END,
                   next_attempt_at = now() + make_interval(secs => :retry_in),
                   lease_until = NULL, last_error = CASE WHEN :ok THEN NULL ELSE :error END
             WHERE id = :id AND claim_token = :token AND status = 'delivering'
            RETURNING status
            """
        ),
        {"id": delivery_id, "token": token, "attempt": attempt, "code": status_code, "ms": latency_ms,
         "error": error, "ok": ok, "max": max_attempts, "retry_in": 0.0 if ok else retry_in},
    ).scalar()


def next_due_in(conn: Connection, endpoints: list[str]) -> float | None:
    """Seconds until the next open delivery of ``endpoints`` that heads its ordering key is due (a
    backoff ends, a lease runs out; 0 when one is due now), or None when none is open."""
    value = conn.execute(
        text(
            """
            SELECT GREATEST(0, EXTRACT(EPOCH FROM min(CASE WHEN d.status = 'pending' THEN d.next_attempt_at
                                                              ELSE d.lease_until END) - now()))
              FROM event_deliveries d
             WHERE d.status IN ('pending', 'delivering') AND d.endpoint = ANY(:endpoints)
               AND NOT EXISTS (SELECT 1 FROM event_deliveries p
                                WHERE p.endpoint = d.endpoint AND p.ordering_key = d.ordering_key
                                  AND p.event_seq < d.event_seq AND p.status IN ('pending', 'delivering'))
            """
        ),
        {"endpoints": endpoints},
    ).scalar()
    return None if value is None else float(value)


def retry_dead(conn: Connection, event_id: str) -> int:
    """Make the dead deliveries of event ``event_id`` (``evt_...``) pending again with a fresh count
    of attempts, due now. Returns how many; 0 when the event has none dead."""
    return len(conn.execute(
        text(
            """
            UPDATE event_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                   lease_until = NULL
             WHERE event_seq = (SELECT seq FROM outbox_events WHERE id = :id) AND status = 'dead'
            RETURNING id
            """
        ),
        {"id": event_id},
    ).all())


def make_due(conn: Connection) -> int:
    """Backfill: every pending delivery due now (its backoff cut short). Returns how many."""
    return len(conn.execute(text(
        "UPDATE event_deliveries SET next_attempt_at = now() WHERE status = 'pending' AND next_attempt_at > now() "
        "RETURNING id")).all())


def delivery_counts(conn: Connection) -> dict[str, int]:
    """Deliveries per status (``pending``, ``delivering``, ``delivered``, ``dead``) and ``events``,
    the number of events recorded."""
    counts = {str(r[0]): int(r[1]) for r in conn.execute(
        text("SELECT status, count(*) FROM event_deliveries GROUP BY status"))}
    counts["events"] = int(conn.execute(text("SELECT count(*) FROM outbox_events")).scalar() or 0)
    return counts


def events_of(conn: Connection, *, story_id: str | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
    """The events of a story (its own, its pages' and its orders') or of an order, oldest first,
    each with its deliveries (endpoint, status, attempts, last error)."""
    return [dict(r) for r in conn.execute(
        text(
            """
            SELECT o.id, o.type, o.occurred_at, o.payload,
                   COALESCE(jsonb_agg(jsonb_build_object('endpoint', d.endpoint, 'status', d.status,
                                                         'attempts', d.attempts, 'last_error', d.last_error)
                                      ORDER BY d.endpoint) FILTER (WHERE d.id IS NOT NULL), '[]') AS deliveries
              FROM outbox_events o LEFT JOIN event_deliveries d ON d.event_seq = o.seq
             WHERE (CAST(:story AS uuid) IS NOT NULL AND o.story_id = CAST(:story AS uuid))
                OR (CAST(:order AS uuid) IS NOT NULL AND o.order_id = CAST(:order AS uuid))
             GROUP BY o.seq ORDER BY o.seq
            """
        ),
        {"story": story_id, "order": order_id},
    ).mappings()]
