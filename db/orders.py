"""Guarded transitions of orders (schema.sql: orders), in the style of db/stories.py: each status
move is one conditional UPDATE, so two copies of a task cannot both win and a lost race is a
no-op (no row), not an error. The order's steps are in db/order_steps.py, its history in
db/order_events.py, the operators' queries in db/order_repair.py.

orders.status: pending_payment -> paid -> fulfilled -> shipped, or -> failed from any but
shipped. The spec's orders row has no error column: a failure's reason is an order_events row
(outcome 'failed'), written in the same statement as the status move.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

Step = Literal["print_files", "print_job"]  # order_steps.step
Source = Literal["stripe", "lulu", "local", "worker", "operator"]  # order_events.source
Outcome = Literal["applied", "ignored", "rejected", "failed", "retried", "noted"]  # order_events.outcome

# Moving on from these is the workers' business; shipped and failed are final for them.
OPEN = ("pending_payment", "paid", "fulfilled")


def json_param(value: Any) -> str | None:
    """``value`` as a JSON text for a ``CAST(:x AS jsonb)`` parameter (None stays NULL; dates and
    other values json cannot write become their str())."""
    return None if value is None else json.dumps(value, default=str)


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
    """The id of the order tied to a Stripe payment intent (``pi_...``), or None."""
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
               event_id: str | None = None, step: Step | None = None, pod_order_id: str | None = None,
               token: int | None = None) -> bool:
    """-> failed with the reason, in one statement; the step that failed (if any) too. A shipped
    order is never failed; neither is one whose status moved on meanwhile, nor (``pod_order_id``)
    one whose current print job is another (a late word about an earlier run's job), nor (``token``:
    the failing run's claim of ``step``) one whose step another worker took over meanwhile."""
    return conn.execute(
        text(
            """
            WITH o AS (
                UPDATE orders SET status = 'failed'
                 WHERE id = :id AND status = ANY(:from)
                   AND (CAST(:job AS text) IS NULL OR pod_order_id = :job)
                   AND (CAST(:token AS bigint) IS NULL
                        OR EXISTS (SELECT 1 FROM order_steps WHERE order_id = :id AND step = :step
                                    AND status = 'processing' AND claim_token = :token))
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
         "detail": json_param(detail), "event": event_id, "step": step, "job": pod_order_id, "token": token},
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
