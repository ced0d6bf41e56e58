"""Guarded transitions of orders and their steps (schema.sql: order_steps, order_events), in the style of
db/stories.py: each status move is one conditional UPDATE, so two copies of a task cannot
both win and a lost race is a no-op (no row), not an error.

orders.status: pending_payment -> paid -> fulfilled -> shipped, or -> failed from any but
shipped. The spec's orders row has no error column: a failure's reason is an order_events row
(outcome 'failed'), written in the same statement as the status move.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

Step = Literal["print_files", "print_job"]
Source = Literal["stripe", "lulu", "local", "worker", "operator"]
Outcome = Literal["applied", "ignored", "rejected", "failed", "retried", "noted"]

# Moving on from these is the workers' business; shipped and failed are final for them.
OPEN = ("pending_payment", "paid", "fulfilled")


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


# --- history -----------------------------------------------------------------------------------

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
         "msg": message, "detail": _j(detail)},
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
        {"id": order_id, "kind": kind, "msg": message, "detail": _j(detail), "event": detail["event"]},
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


# --- payment -----------------------------------------------------------------------------------

def lock_order(conn: Connection, order_id: str) -> RowMapping | None:
    """The order row, locked for this transaction: concurrent events for one order apply one
    after the other (each still guarded by its own conditional UPDATE)."""
    return conn.execute(
        text(
            """
            SELECT o.id, o.status, o.story_id, o.amount, lower(o.currency) AS currency, o.payment_intent_id,
                   o.paid_at, o.pod_order_id, j.status AS job_step
              FROM orders o LEFT JOIN order_steps j ON j.order_id = o.id AND j.step = 'print_job'
             WHERE o.id = :id
               FOR UPDATE OF o
            """
        ),
        {"id": order_id},
    ).mappings().first()


def order_by_payment_intent(conn: Connection, payment_intent_id: str) -> str | None:
    row = conn.execute(text("SELECT id FROM orders WHERE payment_intent_id = :pi"), {"pi": payment_intent_id}).first()
    return str(row[0]) if row else None


def mark_paid(conn: Connection, order_id: str, payment_intent_id: str, provider: str) -> bool:
    """pending_payment -> paid. The intent is recorded if the API had not stored it; an order
    already tied to another intent does not move (the caller checked, the guard makes sure)."""
    return conn.execute(
        text(
            """
            UPDATE orders SET status = 'paid', paid_at = now(),
                   payment_provider = COALESCE(payment_provider, :provider),
                   payment_intent_id = COALESCE(payment_intent_id, :pi)
             WHERE id = :id AND status = 'pending_payment'
               AND (payment_intent_id IS NULL OR payment_intent_id = :pi)
            RETURNING id
            """
        ),
        {"id": order_id, "pi": payment_intent_id, "provider": provider},
    ).first() is not None


def fail_order(conn: Connection, order_id: str, message: str, *, from_statuses: tuple[str, ...] = OPEN,
               source: Source = "worker", kind: str = "failed", detail: Any = None,
               event_id: str | None = None, step: Step | None = None, pod_order_id: str | None = None) -> bool:
    """-> failed with the reason, in one statement; the step that failed (if any) too. A shipped
    order is never failed; neither is one whose status moved on meanwhile, nor (``pod_order_id``)
    one whose current print job is another (a late word about an earlier run's job)."""
    return conn.execute(
        text(
            """
            WITH o AS (
                UPDATE orders SET status = 'failed'
                 WHERE id = :id AND status = ANY(:from)
                   AND (CAST(:job AS text) IS NULL OR pod_order_id = :job)
                RETURNING id
            ), s AS (
                UPDATE order_steps SET status = 'failed'
                 WHERE order_id = (SELECT id FROM o) AND step = :step AND status <> 'completed'
                RETURNING order_id
            )
            INSERT INTO order_events (order_id, source, event_id, kind, outcome, message, detail)
            SELECT id, :source, :event, :kind, 'failed', :msg, CAST(:detail AS jsonb) FROM o
            ON CONFLICT (source, event_id) DO NOTHING
            RETURNING order_id
            """
        ),
        {"id": order_id, "from": list(from_statuses), "msg": message, "source": source, "kind": kind,
         "detail": _j(detail), "event": event_id, "step": step, "job": pod_order_id},
    ).first() is not None


# --- whose book: an order prints only its own user's story ---------------------------------------

# The order's story exists and is its user's (a story's owner is stories.user_id). Part of every
# guarded statement that lets an order be paid into print or printed (claim_print_files,
# claim_print_job, refuse_not_printable), so no path skips it: a redelivery, the sweep, backfill,
# an operator's retry.
OWN_STORY = "EXISTS (SELECT 1 FROM stories os WHERE os.id = o.story_id AND os.user_id = o.user_id)"

# Kind of the order_events row that says why an order was refused (status --order shows it;
# order_summary counts the paid ones: each needs a refund decision).
NOT_PRINTABLE = "order.not_printable"


def refuse_not_printable(conn: Connection, order_id: str, from_statuses: tuple[str, ...] = ("paid",), *,
                         payment: tuple[str, str] | None = None) -> str | None:
    """Fail the order, in one guarded statement, if its story is not its user's or no longer
    exists; returns the reason recorded (an ``order_events`` row, outcome ``failed``, kind
    NOT_PRINTABLE), or None when the story is the order's own (nothing changes). A paid order
    says that its payment was taken and needs a refund decision; ids only, no names.

    ``payment`` = (payment_intent_id, provider): the order is being paid by this statement
    (pending_payment -> failed with paid_at, as mark_paid records a payment), so a payment for
    an order that will not be printed is kept on the row, never dropped."""
    return conn.execute(
        text(
            f"""
            WITH o AS (
                UPDATE orders o SET status = 'failed',
                       paid_at = CASE WHEN :paying THEN now() ELSE o.paid_at END,
                       payment_provider = CASE WHEN :paying THEN COALESCE(o.payment_provider, :provider)
                                               ELSE o.payment_provider END,
                       payment_intent_id = CASE WHEN :paying THEN COALESCE(o.payment_intent_id, :pi)
                                                ELSE o.payment_intent_id END
                 WHERE o.id = :id AND o.status = ANY(:from) AND NOT {OWN_STORY}
                   AND (NOT :paying OR o.payment_intent_id IS NULL OR o.payment_intent_id = :pi)
                RETURNING o.id, o.user_id, o.story_id, o.paid_at, o.amount, upper(o.currency) AS currency,
                          o.payment_intent_id, (SELECT s.user_id FROM stories s WHERE s.id = o.story_id) AS owner
            )
            INSERT INTO order_events (order_id, source, kind, outcome, message, detail)
            SELECT id, 'worker', :kind, 'failed',
                   CASE WHEN owner IS NULL
                        THEN format('Not printed: the order''s story %s no longer exists.', story_id)
                        ELSE format('Not printed: the order''s user %s is not the owner of its story %s '
                                    '(the story is user %s''s).', user_id, story_id, owner) END
                   || CASE WHEN paid_at IS NULL THEN ' Nothing was paid; correct the order (user_id, story_id).'
                           ELSE format(' The payment of %s %s (%s) was taken: refund it, or correct the order '
                                       '(user_id, story_id) and retry it (retry --order).',
                                       amount, currency, coalesce(payment_intent_id, 'no intent id')) END,
                   jsonb_build_object('user_id', user_id, 'story_id', story_id, 'story_user_id', owner,
                                      'paid', paid_at IS NOT NULL)
              FROM o
            RETURNING message
            """
        ),
        {"id": order_id, "from": list(from_statuses), "kind": NOT_PRINTABLE, "paying": payment is not None,
         "pi": payment[0] if payment else None, "provider": payment[1] if payment else None},
    ).scalar()


# --- print steps -------------------------------------------------------------------------------

def _claim_sql(step: Step, ready: str) -> str:
    """Claim a step: insert it as processing, or take it from pending, or from a processing
    claim untouched for longer than the lease (its worker died). ``ready`` selects the order
    when the step may run."""
    return f"""
        WITH o AS ({ready})
        INSERT INTO order_steps (order_id, step, status) SELECT id, '{step}', 'processing' FROM o
        ON CONFLICT (order_id, step) DO UPDATE SET status = 'processing'
         WHERE order_steps.status = 'pending'
            OR (order_steps.status = 'processing'
                AND order_steps.updated_at < now() - make_interval(secs => :lease))
        RETURNING order_id, run
    """


def claim_print_files(conn: Connection, order_id: str, lease: float) -> RowMapping | None:
    """Only for a paid order whose story is completed and its user's: never a half book, never
    another family's."""
    return conn.execute(
        text(_claim_sql("print_files", """
            SELECT o.id FROM orders o JOIN stories s ON s.id = o.story_id
             WHERE o.id = :id AND o.status = 'paid' AND s.status = 'completed' AND s.user_id = o.user_id""")),
        {"id": order_id, "lease": lease},
    ).mappings().first()


def claim_print_job(conn: Connection, order_id: str, lease: float) -> RowMapping | None:
    """Only for a paid order with its print files and no print job yet, whose story is (still)
    completed and its user's."""
    return conn.execute(
        text(_claim_sql("print_job", """
            SELECT o.id FROM orders o
              JOIN order_steps f ON f.order_id = o.id AND f.step = 'print_files' AND f.status = 'completed'
              JOIN stories s ON s.id = o.story_id AND s.status = 'completed' AND s.user_id = o.user_id
             WHERE o.id = :id AND o.status = 'paid' AND o.pod_order_id IS NULL""")),
        {"id": order_id, "lease": lease},
    ).mappings().first()


def print_state(conn: Connection, order_id: str) -> RowMapping | None:
    """Everything a print step needs to decide what to do when it could not claim."""
    return conn.execute(
        text(
            """
            SELECT o.id, o.status, o.story_id, o.product_type, o.shipping_address, o.pod_provider,
                   o.pod_order_id, o.created_at, o.paid_at, now() - o.paid_at AS paid_for,
                   s.status AS story_status, s.error_message AS story_error, s.title, s.child_name,
                   s.story_theme, u.email, o.user_id, s.user_id AS story_user_id,
                   f.status AS files_status, f.result AS files, now() - f.updated_at AS files_age,
                   j.status AS job_status, j.result AS job, j.run AS job_run, j.checked_at,
                   now() - j.updated_at AS job_age
              FROM orders o LEFT JOIN stories s ON s.id = o.story_id LEFT JOIN users u ON u.id = o.user_id
              LEFT JOIN order_steps f ON f.order_id = o.id AND f.step = 'print_files'
              LEFT JOIN order_steps j ON j.order_id = o.id AND j.step = 'print_job'
             WHERE o.id = :id
            """
        ),
        {"id": order_id},
    ).mappings().first()


def book_pages(conn: Connection, story_id: str) -> list[RowMapping]:
    return list(conn.execute(
        text("SELECT page_number, text, personalized_image_key FROM story_pages WHERE story_id = :id "
             "ORDER BY page_number"),
        {"id": story_id},
    ).mappings())


def complete_step(conn: Connection, order_id: str, step: Step, result: Any) -> bool:
    return conn.execute(
        text(
            """
            UPDATE order_steps SET status = 'completed', result = CAST(:result AS jsonb)
             WHERE order_id = :id AND step = :step AND status = 'processing' RETURNING order_id
            """
        ),
        {"id": order_id, "step": step, "result": _j(result)},
    ).first() is not None


def release_step(conn: Connection, order_id: str, step: Step, message: str | None, attempt: int,
                 task_id: str | None) -> None:
    """processing -> pending after a transient error (recorded), or while waiting for a quota
    (``message`` None: nothing failed, nothing recorded)."""
    conn.execute(
        text(
            """
            WITH s AS (
                UPDATE order_steps SET status = 'pending'
                 WHERE order_id = :id AND step = :step AND status = 'processing' RETURNING order_id
            )
            INSERT INTO order_events (order_id, source, kind, outcome, message, detail)
            SELECT order_id, 'worker', :step, 'retried', :msg,
                   jsonb_build_object('attempt', :attempt, 'task_id', CAST(:task AS text))
              FROM s WHERE CAST(:msg AS text) IS NOT NULL
            """
        ),
        {"id": order_id, "step": step, "msg": message, "attempt": attempt, "task": task_id},
    )


def record_print_job(conn: Connection, order_id: str, provider: str, job_id: str, result: Any) -> bool:
    """The print job is ours: pod_order_id set once (guarded: never overwritten with another
    job), and the print_job step completed, in one statement. Also used by a webhook that
    reports the job before the worker that created it could record it (it died)."""
    return conn.execute(
        text(
            """
            WITH o AS (
                UPDATE orders SET pod_order_id = :job, pod_provider = :provider
                 WHERE id = :id AND status = 'paid' AND (pod_order_id IS NULL OR pod_order_id = :job)
                RETURNING id
            )
            INSERT INTO order_steps (order_id, step, status, result)
            SELECT id, 'print_job', 'completed', CAST(:result AS jsonb) FROM o
            ON CONFLICT (order_id, step) DO UPDATE
               SET status = 'completed', result = EXCLUDED.result, checked_at = NULL
             WHERE order_steps.status <> 'completed'
            RETURNING order_id
            """
        ),
        {"id": order_id, "job": job_id, "provider": provider, "result": _j(result)},
    ).first() is not None


def claim_poll(conn: Connection, order_id: str, gap: float) -> RowMapping | None:
    """Take the turn to ask the provider: only one poll per ``gap`` seconds per order, so
    duplicate poll chains (a sweep's, a redelivered one's) die out instead of multiplying."""
    return conn.execute(
        text(
            """
            UPDATE order_steps j SET checked_at = now()
              FROM orders o
             WHERE j.order_id = :id AND j.step = 'print_job' AND j.status = 'completed'
               AND o.id = j.order_id AND o.status IN ('paid', 'fulfilled') AND o.pod_order_id IS NOT NULL
               AND (j.checked_at IS NULL OR j.checked_at < now() - make_interval(secs => :gap))
            RETURNING o.pod_order_id, o.pod_provider, o.status, j.result
            """
        ),
        {"id": order_id, "gap": gap},
    ).mappings().first()


def note_job_seen(conn: Connection, order_id: str, seen: dict[str, Any]) -> None:
    """The provider's latest word on the job, kept with the print_job step (newest wins)."""
    conn.execute(
        text(
            """
            UPDATE order_steps SET result = CAST(:seen AS jsonb)
             WHERE order_id = :id AND step = 'print_job'
               AND (result->>'changed' IS NULL OR CAST(:changed AS text) IS NULL
                    OR result->>'changed' <= CAST(:changed AS text))
            """
        ),
        {"id": order_id, "seen": _j(seen), "changed": seen.get("changed")},
    )


def apply_job_status(conn: Connection, order_id: str, job_id: str, status: str, at: str | None,
                     tracking: str | None, seen: dict[str, Any]) -> str:
    """Move the order as the provider's job status says; returns what happened
    ("fulfilled", "shipped", "unchanged"). Forward only, and only for this order's own job:
    a late or repeated status changes nothing. Problem statuses go through fail_order.

    ``at``: the provider's time of the change (ISO 8601) for fulfilled_at / shipped_at."""
    note_job_seen(conn, order_id, seen)
    params = {"id": order_id, "job": job_id, "at": at, "tracking": tracking}
    if status == "IN_PRODUCTION":
        moved = conn.execute(
            text(
                """
                UPDATE orders SET status = 'fulfilled',
                       fulfilled_at = COALESCE(fulfilled_at, CAST(:at AS timestamptz), now())
                 WHERE id = :id AND status = 'paid' AND pod_order_id = :job RETURNING id
                """
            ),
            params,
        ).first()
        return "fulfilled" if moved else "unchanged"
    if status == "SHIPPED":
        moved = conn.execute(
            text(
                """
                UPDATE orders SET status = 'shipped',
                       fulfilled_at = COALESCE(fulfilled_at, CAST(:at AS timestamptz), now()),
                       shipped_at = COALESCE(CAST(:at AS timestamptz), now()),
                       tracking_number = COALESCE(:tracking, tracking_number)
                 WHERE id = :id AND status IN ('paid', 'fulfilled') AND pod_order_id = :job RETURNING id
                """
            ),
            params,
        ).first()
        return "shipped" if moved else "unchanged"
    return "unchanged"


# --- operators ---------------------------------------------------------------------------------

def summary(conn: Connection) -> dict[str, int]:
    return {str(k): int(v) for k, v in conn.execute(text("SELECT status, count(*) FROM orders GROUP BY 1"))}


def report(conn: Connection, order_id: str) -> dict[str, Any] | None:
    order = conn.execute(
        text(
            """
            SELECT id, user_id, story_id, product_type, status, amount, currency, payment_provider,
                   payment_intent_id, pod_provider, pod_order_id, tracking_number, paid_at,
                   fulfilled_at, shipped_at, created_at, updated_at
              FROM orders WHERE id = :id
            """
        ),
        {"id": order_id},
    ).mappings().first()
    if order is None:
        return None
    steps = conn.execute(
        text("SELECT step, status, run, result, checked_at, updated_at FROM order_steps WHERE order_id = :id "
             "ORDER BY step DESC"),
        {"id": order_id},
    ).mappings().all()
    events = conn.execute(
        text("SELECT created_at, source, kind, outcome, message, event_id FROM order_events WHERE order_id = :id "
             "ORDER BY created_at, id"),
        {"id": order_id},
    ).mappings().all()
    return {"order": dict(order), "steps": [dict(s) for s in steps], "events": [dict(e) for e in events],
            "error": last_failure(conn, order_id) if order["status"] == "failed" else None}
