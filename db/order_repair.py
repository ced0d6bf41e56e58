"""The operators' queries on orders (pipeline/operations/orders.py): stuck orders, the retry's
resets, the status report and summary, and an order inserted as the external API does it.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.order_events import OPEN_HELD_SQL, last_failure
from db.orders import NOT_PRINTABLE, OWN_STORY, json_param

# --- stuck orders ------------------------------------------------------------------------------

# Orders that should be moving into a stage of the order flow and are not. The flow (which step
# follows which, what each row is) is declared once in pipeline/orders/stages.py: callers pass the
# step names, bound as parameters (never SQL text). Three shapes, by what the stage waits on.
# Parameters: :step / :prereq (order_steps.step names), :pending_after and :lease (seconds),
# :poll_stale (seconds), :limit.
_STUCK_AFTER_PAYMENT = f"""
        SELECT o.id FROM orders o LEFT JOIN stories s ON s.id = o.story_id
          LEFT JOIN order_steps f ON f.order_id = o.id AND f.step = :step
         WHERE o.status = 'paid' AND (s.status IN ('completed', 'failed') OR NOT {OWN_STORY}) AND (
               (f.order_id IS NULL AND o.updated_at < now() - make_interval(secs => :pending_after))
            OR (f.status = 'pending' AND f.updated_at < now() - make_interval(secs => :pending_after))
            OR (f.status = 'processing' AND f.updated_at < now() - make_interval(secs => :lease)))
         LIMIT :limit"""
_STUCK_AFTER_STEP = """
        SELECT o.id FROM orders o
          JOIN order_steps f ON f.order_id = o.id AND f.step = :prereq AND f.status = 'completed'
          LEFT JOIN order_steps j ON j.order_id = o.id AND j.step = :step
         WHERE o.status = 'paid' AND o.pod_order_id IS NULL AND (
               (j.order_id IS NULL AND f.updated_at < now() - make_interval(secs => :pending_after))
            OR (j.status = 'pending' AND j.updated_at < now() - make_interval(secs => :pending_after))
            OR (j.status = 'processing' AND j.updated_at < now() - make_interval(secs => :lease)))
         LIMIT :limit"""
_STUCK_FOLLOWING = """
        SELECT o.id FROM orders o
          JOIN order_steps j ON j.order_id = o.id AND j.step = :prereq AND j.status = 'completed'
         WHERE o.status IN ('paid', 'fulfilled') AND o.pod_order_id IS NOT NULL
           AND COALESCE(j.checked_at, j.updated_at) < now() - make_interval(secs => :poll_stale)
         LIMIT :limit"""


def stuck_order_query(table: str, step: str, column: str, prerequisite: str | None) -> str:
    """The stuck-order query of one order stage (``table``: the row it moves, ``"order_steps"``;
    ``step``: its name; ``column``: the order_steps
    column it moves, ``"status"`` or ``"checked_at"``; ``prerequisite``: the order_steps row that
    must be completed first, None when it follows the payment), as pipeline/orders/stages.py
    declares them:

    - after the payment (print files): paid, its story finished (either way) or not the order's
      own (its claim refuses it), the step's row never made, pending, or its worker died;
    - after a step (the print job): the prerequisite completed, no print job recorded
      (pod_order_id), the step's row never made, pending, or its worker died (the re-run finds a
      job it may have created);
    - following (``checked_at``): the prerequisite's print job nobody has asked about for
      :poll_stale seconds, the order not yet shipped: its poll chain was lost.

    Raises ValueError for any other combination (the payment, on ``orders``, is Stripe's to resend)."""
    if table != "order_steps":
        raise ValueError(f"no stuck-order query for {step!r} (a row of {table}, not a step row)")
    if column == "checked_at" and prerequisite is not None:
        return _STUCK_FOLLOWING
    if column == "status":
        return _STUCK_AFTER_PAYMENT if prerequisite is None else _STUCK_AFTER_STEP
    raise ValueError(f"no stuck-order query for {step!r} ({column}, after {prerequisite!r})")


def stuck_orders(conn: Connection, table: str, step: str, column: str, prerequisite: str | None,
                 params: dict[str, Any]) -> list[str]:
    """Ids of the orders stuck before the order flow's stage ``step`` (see
    :func:`stuck_order_query`; ValueError for a stage it has no query for). ``params``: lease,
    pending_after, poll_stale (seconds) and limit."""
    sql = stuck_order_query(table, step, column, prerequisite)
    return [str(r[0]) for r in conn.execute(text(sql), {**params, "step": step, "prereq": prerequisite})]


def unconfirmed_payments(conn: Connection, kind: str, limit: int) -> list[tuple[str, str]]:
    """(order id, event id) of genuine payment events that wait for confirmation (``kind``, see
    db.order_events.record_held), for orders still waiting for a payment."""
    return [(str(r[0]), str(r[1])) for r in conn.execute(text(
        f"""SELECT x.order_id, x.event_id FROM ({OPEN_HELD_SQL}) x JOIN orders o ON o.id = x.order_id
             WHERE o.status = 'pending_payment' LIMIT :limit"""), {"kind": kind, "limit": limit})]


# --- retry -------------------------------------------------------------------------------------

def lock_for_retry(conn: Connection, order_id: str) -> RowMapping | None:
    """The order, locked, with what a retry decides on: status, paid_at, fulfilled_at,
    pod_order_id, story_status, the print_job step's job_status / provider_status / run, and
    own_story (its story exists and is its user's)."""
    return conn.execute(text(
        f"""SELECT o.status, o.paid_at, o.fulfilled_at, o.pod_order_id, s.status AS story_status,
                  j.status AS job_status, j.result->>'status' AS provider_status, j.run,
                  {OWN_STORY} AS own_story
             FROM orders o LEFT JOIN stories s ON s.id = o.story_id
             LEFT JOIN order_steps j ON j.order_id = o.id AND j.step = 'print_job'
            WHERE o.id = :id FOR UPDATE OF o"""), {"id": order_id}).mappings().first()


def restart_print_run(conn: Connection, order_id: str, *, new_run: bool) -> None:
    """A failed order back to paid with its steps pending, from its print files: the print job's
    result forgotten and (``new_run``: a recorded job that is dead) a new print run counted."""
    conn.execute(text(
        """UPDATE order_steps SET status = 'pending', checked_at = NULL, takeovers = 0,
                  run = run + CASE WHEN step = 'print_job' AND :new_run THEN 1 ELSE 0 END,
                  result = CASE WHEN step = 'print_job' THEN NULL ELSE result END
            WHERE order_id = :id"""), {"id": order_id, "new_run": new_run})
    conn.execute(text(
        """UPDATE orders SET status = 'paid', pod_order_id = NULL, fulfilled_at = NULL
            WHERE id = :id AND status = 'failed'"""), {"id": order_id})


def resume_following(conn: Connection, order_id: str) -> None:
    """A failed order whose print job is fine back to paid (or fulfilled), its next poll due now."""
    conn.execute(text("UPDATE order_steps SET checked_at = NULL WHERE order_id = :id AND step = 'print_job'"),
                 {"id": order_id})
    conn.execute(text(
        """UPDATE orders SET status = CASE WHEN fulfilled_at IS NULL THEN 'paid' ELSE 'fulfilled' END
            WHERE id = :id AND status = 'failed'"""), {"id": order_id})


# --- status ------------------------------------------------------------------------------------

def orders_with_held_payments(conn: Connection, kind: str) -> int:
    """How many orders have a genuine payment event waiting for confirmation (``kind``)."""
    return int(conn.execute(text(f"SELECT count(DISTINCT x.order_id) FROM ({OPEN_HELD_SQL}) x"),
                            {"kind": kind}).scalar() or 0)


def wrong_mode_events(conn: Connection) -> int:
    """How many Stripe events were ignored for their mode (livemode vs STRIPE_MODE)."""
    return int(conn.execute(text(
        "SELECT count(*) FROM order_events WHERE source = 'stripe' AND detail->>'ignored' = 'mode'")).scalar() or 0)


def paid_not_printable(conn: Connection) -> int:
    """How many paid orders were failed as not printable (db.orders.NOT_PRINTABLE) and not
    retried since: each needs a refund decision."""
    return int(conn.execute(text(
        """SELECT count(*) FROM orders o WHERE o.status = 'failed' AND o.paid_at IS NOT NULL
              AND EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.kind = :kind)
              AND NOT EXISTS (SELECT 1 FROM order_events r WHERE r.order_id = o.id AND r.kind = 'retry'
                                 AND r.created_at > (SELECT max(e.created_at) FROM order_events e
                                                      WHERE e.order_id = o.id AND e.kind = :kind))"""),
        {"kind": NOT_PRINTABLE}).scalar() or 0)


# --- as the external API does it ---------------------------------------------------------------

def insert_order(conn: Connection, story_id: str, *, product_type: str, amount: int, currency: str,
                 shipping_address: dict[str, Any], payment_intent_id: str) -> str:
    """An order for a story, as the external API inserts it when checkout starts (the story's
    user orders it, paid with Stripe); returns its id."""
    return str(conn.execute(text(
        """INSERT INTO orders (user_id, story_id, product_type, amount, currency, shipping_address,
                               payment_provider, payment_intent_id)
           SELECT user_id, id, :product, :amount, :currency, CAST(:address AS jsonb), 'stripe', :pi
             FROM stories WHERE id = :story RETURNING id"""),
        {"story": story_id, "product": product_type, "amount": amount, "currency": currency,
         "address": json_param(shipping_address), "pi": payment_intent_id}).scalar())


def order_progress(conn: Connection, order_id: str) -> dict[str, Any]:
    """An order as its progress is watched (the demo): status, pod_provider, pod_order_id,
    tracking_number, ``print_status`` (the provider's status of its print job as last recorded,
    None before one) and ``error`` (the message of its latest failed event, None when none).
    Raises sqlalchemy.exc.NoResultFound when there is no such order."""
    row = dict(conn.execute(text(
        "SELECT status, pod_provider, pod_order_id, tracking_number FROM orders WHERE id = :o"),
        {"o": order_id}).mappings().one())
    row["print_status"] = conn.execute(text(
        "SELECT result->>'status' FROM order_steps WHERE order_id = :o AND step = 'print_job'"),
        {"o": order_id}).scalar()
    row["error"] = conn.execute(text(
        "SELECT message FROM order_events WHERE order_id = :o AND outcome = 'failed' ORDER BY id DESC LIMIT 1"),
        {"o": order_id}).scalar()
    return row


def summary(conn: Connection) -> dict[str, int]:
    """Orders by status (only the statuses that have any)."""
    return {str(k): int(v) for k, v in conn.execute(text("SELECT status, count(*) FROM orders GROUP BY 1"))}


def report(conn: Connection, order_id: str) -> dict[str, Any] | None:
    """An order for people: ``{"order": row, "steps": [...], "events": [...], "error": reason or
    None}``, or None when there is no such order."""
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
