"""An order's print steps (schema.sql: order_steps, one row per order and step): claimed like a
page step (lease), completed, released after a transient error; the print job recorded once and
followed (claim_poll), and the provider's job status applied to the order, forward only.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.claims import claim_sets
from db.orders import Step, json_param


def _claim_sql(step: Step, ready: str) -> str:
    """Claim a step: insert it as processing, or take it from pending, or from a processing
    claim untouched for longer than the lease (its worker died). ``ready`` selects the order
    when the step may run. The claim returns ``run``, its fencing token (``claim_token``: the
    step's later writes name it) and ``takeovers`` (claims taken from a silent holder)."""
    return f"""
        WITH o AS ({ready})
        INSERT INTO order_steps (order_id, step, status) SELECT id, '{step}', 'processing' FROM o
        ON CONFLICT (order_id, step) DO UPDATE SET {claim_sets("status", "order_steps")}
         WHERE order_steps.status = 'pending'
            OR (order_steps.status = 'processing'
                AND order_steps.updated_at < now() - make_interval(secs => :lease))
        RETURNING order_id, run, claim_token, takeovers
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
    """The story's pages in order (page_number, text, personalized_image_key), for the print files."""
    return list(conn.execute(
        text("SELECT page_number, text, personalized_image_key FROM story_pages WHERE story_id = :id "
             "ORDER BY page_number"),
        {"id": story_id},
    ).mappings())


def complete_step(conn: Connection, order_id: str, step: Step, result: Any, token: int) -> bool:
    """processing -> completed with its ``result`` (jsonb), only under claim ``token``; False when
    the claim was lost (finished by another copy, or taken over)."""
    return conn.execute(
        text(
            """
            UPDATE order_steps SET status = 'completed', result = CAST(:result AS jsonb), takeovers = 0
             WHERE order_id = :id AND step = :step AND status = 'processing' AND claim_token = :token
            RETURNING order_id
            """
        ),
        {"id": order_id, "step": step, "result": json_param(result), "token": token},
    ).first() is not None


def release_step(conn: Connection, order_id: str, step: Step, message: str | None, attempt: int,
                 task_id: str | None, token: int) -> bool:
    """processing -> pending after a transient error (recorded), or while waiting for a quota
    (``message`` None: nothing failed, nothing recorded), only under claim ``token``; False when
    the claim is no longer this run's (nothing written)."""
    return conn.execute(
        text(
            """
            WITH s AS (
                UPDATE order_steps SET status = 'pending'
                 WHERE order_id = :id AND step = :step AND status = 'processing' AND claim_token = :token
                RETURNING order_id
            ), e AS (
                INSERT INTO order_events (order_id, source, kind, outcome, message, detail)
                SELECT order_id, 'worker', :step, 'retried', :msg,
                       jsonb_build_object('attempt', :attempt, 'task_id', CAST(:task AS text))
                  FROM s WHERE CAST(:msg AS text) IS NOT NULL
            )
            SELECT order_id FROM s
            """
        ),
        {"id": order_id, "step": step, "msg": message, "attempt": attempt, "task": task_id, "token": token},
    ).first() is not None


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
        {"id": order_id, "job": job_id, "provider": provider, "result": json_param(result)},
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
        {"id": order_id, "seen": json_param(seen), "changed": seen.get("changed")},
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


def claim_moved_on(conn: Connection, order_id: str, step: Step, token: int | None) -> bool:
    """Is the order's ``step`` claimed under another token than ``token`` now (another worker took
    it over)? False when it is still this token's or has no row."""
    return bool(conn.execute(
        text("SELECT claim_token <> :token FROM order_steps WHERE order_id = :id AND step = :step"),
        {"id": order_id, "step": step, "token": token},
    ).scalar())
