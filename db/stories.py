"""Story transitions (stories.status) and the story's reads: the start's claim (which also
refuses a photo that is not the story's to use), the outline and its pages, the barrier and the
finish. Each status move is one guarded statement (see db/claims.py).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.claims import Stage
from db.slots import cap_clause, in_flight, lock_account

# The start's claim (stories.status) counts a takeover only while the story has no outline: once
# the outline is saved the start is done, and a later re-claim (a re-sent start) is a re-run.
_TAKEOVER = ("takeovers = CASE WHEN s.status = 'processing' AND s.claim_token IS DISTINCT FROM CAST(:held AS bigint) "
             "AND NOT EXISTS "
             "(SELECT 1 FROM story_outlines so WHERE so.story_id = s.id) THEN s.takeovers + 1 ELSE s.takeovers END")

__all__ = [
    "PHOTO_DELETED", "PHOTO_NOT_YOURS", "PHOTO_UPLOAD_FAILED", "REFUSALS", "UPLOAD_TIMEOUT_PREFIX", "Stage",
    "book_pages", "claim_finish", "claim_story", "complete_story", "fail_finish", "fail_story", "finish_state",
    "photo_refusal",
    "release_story", "save_outline_and_pages", "story_ready", "story_state",
    "unfinished_pages", "upload_timeout_message",
]

# Whose photo, and is it there. A story may only ever use a photo of its own user (defence in
# depth: the API should never send another family's photo, and the worker must never obey it),
# and never one whose upload failed or that was deleted. Checked inside the guarded statements
# that hand a photo to a step (the story's claim, which also runs the inline analysis, and the
# personalization's claim, which reads the face), so no path can skip it. The messages are for
# the parent and name nothing of anyone else's.
PHOTO_NOT_YOURS = (
    "The photo could not be used: it is not one of the photos of the account that asked for this "
    "story. Please choose one of your own photos and start the story again."
)
PHOTO_DELETED = (
    "The photo could not be used: it was deleted. Please choose another photo and start the story again."
)
PHOTO_UPLOAD_FAILED = (
    "The photo could not be used: its upload failed. Please upload the photo again and start the story again."
)
# A story whose photo's upload never finished within PHOTO_UPLOAD_WAIT_SECONDS fails with a
# message starting so. That failure is not final: once the photo says 'uploaded', the story may
# be claimed again (the API sending stories.generate again starts it, as `retry` does).
UPLOAD_TIMEOUT_PREFIX = "The photo could not be used: its upload did not finish"


def upload_timeout_message(wait_seconds: float) -> str:
    """The parent's message for a photo whose upload never arrived (``wait_seconds``: the wait)."""
    minutes = wait_seconds / 60
    span = (f"{minutes:g} minute{'s' if minutes != 1 else ''}" if wait_seconds >= 60 and minutes == int(minutes)
            else f"{wait_seconds:g} seconds")
    return (f"{UPLOAD_TIMEOUT_PREFIX} within {span} of the story being requested. "
            "Please upload the photo again, then start the story again.")


def photo_refusal(s: str = "s", ph: str = "ph") -> str:
    """SQL: why story ``s`` may not use its photo ``ph`` (a message), or NULL when it may."""
    return (f"(CASE WHEN {ph}.user_id IS DISTINCT FROM {s}.user_id THEN CAST(:not_yours AS text) "
            f"WHEN {ph}.status = 'deleted' THEN CAST(:photo_deleted AS text) "
            f"WHEN {ph}.status = 'failed' THEN CAST(:upload_failed AS text) END)")


REFUSALS = {"not_yours": PHOTO_NOT_YOURS, "photo_deleted": PHOTO_DELETED, "upload_failed": PHOTO_UPLOAD_FAILED}

# A story that may start: pending, or processing but untouched for longer than the lease; never one
# being redone (redo_id: a duplicate generate neither takes it over nor fails it; "Redoing a page").
_STARTABLE = ("(s.status = 'pending' OR "
              "(s.status = 'processing' AND s.redo_id IS NULL AND (s.updated_at < now() - make_interval(secs => "
              ":lease) OR s.claim_token = CAST(:held AS bigint))))")


def claim_story(conn: Connection, story_id: str, lease: float, upload_wait: float = 900.0,
                attempt: int = 0, task_id: str | None = None, held: int | None = None,
                cap: int = 0) -> RowMapping | None:
    """Claim the story start; returns the story with its photo's state and whether an outline
    exists already (a re-run), all in the one round trip.

    The same statement refuses, by failing the story (``refused`` holds the parent's message,
    also recorded in step_errors, stage 'analysis'), a story whose photo belongs to another
    user, was deleted or failed to upload, or is still 'pending_upload' more than
    ``upload_wait`` seconds after the story became pending (its updated_at: the insert, or an
    operator's retry). A story whose photo is still 'pending_upload' within that wait is left
    pending and not claimed (None: the caller waits, see story_start_state). A story failed for
    an upload that never finished is claimed again once its photo is 'uploaded'.
    The claim returns its fencing token (``claim_token``: the start's later writes name it) and
    ``takeovers`` (claims of the start taken from a silent holder, before its outline was saved).
    ``cap`` > 0 (USER_STORIES_IN_FLIGHT): the story takes a slot of its account only while fewer
    than ``cap`` of the account's stories are in flight (db/slots.py), under the account's lock:
    ``conn`` must then be a transaction (db.engine.transaction), committed by the caller. Also
    returns ``in_flight_before`` and ``backlog``: the account's other stories in flight and pending.
    None: not claimed (held by another copy, finished, failed, waiting (its photo, or a slot: see
    db.slots.story_start_state), or no such story)."""
    if cap > 0:
        user = conn.execute(text("SELECT user_id FROM stories WHERE id = :id"), {"id": story_id}).scalar()
        if user is not None:
            lock_account(conn, str(user))
    row = conn.execute(
        text(
            f"""
            WITH cur AS (
                SELECT s.id, ph.status IS DISTINCT FROM 'pending_upload' AS photo_ready,
                       COALESCE({photo_refusal()},
                                CASE WHEN ph.status = 'pending_upload' AND s.status = 'pending'
                                      AND s.updated_at < now() - make_interval(secs => :upload_wait)
                                     THEN CAST(:upload_timeout AS text) END) AS refusal
                  FROM stories s LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
                 WHERE s.id = :id AND ph.id IS NOT NULL
            ), refused AS (
                UPDATE stories s SET status = 'failed', error_message = cur.refusal
                  FROM cur
                 WHERE s.id = cur.id AND cur.refusal IS NOT NULL AND {_STARTABLE}
                RETURNING s.id, s.error_message
            ), refusal_logged AS (
                INSERT INTO step_errors (story_id, stage, permanent, message, attempt, task_id)
                SELECT id, 'analysis', true, error_message, :attempt, :task FROM refused
            ), s AS (
                UPDATE stories s SET status = 'processing', error_message = NULL, claim_token = s.claim_token + 1,
                       {_TAKEOVER}
                  FROM cur
                 WHERE s.id = cur.id AND cur.refusal IS NULL AND cur.photo_ready
                   AND ({_STARTABLE} OR (s.status = 'failed' AND starts_with(s.error_message, :timeout_prefix)))
                   AND (s.status = 'processing' OR {cap_clause()})
                RETURNING s.id, s.user_id, s.child_name, s.child_age, s.story_theme, s.protagonist_photo_id,
                          s.claim_token, s.takeovers
            )
            SELECT s.*, ph.status AS photo_status, COALESCE(ph.ai_processing_status, 'pending') AS photo_ai_status,
                   ph.ai_error_message AS photo_error, o.story_id IS NOT NULL AS has_outline,
                   ph.face_details AS photo_face_details, {in_flight(excluding="s.id")} AS in_flight_before,
                   (SELECT count(*) FROM stories w WHERE w.user_id = s.user_id AND w.status = 'pending'
                       AND w.id <> s.id) AS backlog, (SELECT error_message FROM refused) AS refused
              FROM (SELECT 1) AS one LEFT JOIN s ON true
                   LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
                   LEFT JOIN story_outlines o ON o.story_id = s.id
            """
        ),
        {"id": story_id, "lease": lease, "upload_wait": upload_wait, "attempt": attempt, "task": task_id,
         "held": held, "cap": cap,
         "upload_timeout": upload_timeout_message(upload_wait), "timeout_prefix": UPLOAD_TIMEOUT_PREFIX,
         **REFUSALS},
    ).mappings().first()
    if row is None or (row["id"] is None and row["refused"] is None):
        return None
    return row


def story_state(conn: Connection, story_id: str) -> RowMapping | None:
    """The story's status, error message and ``age`` (interval since its row moved); None: no story."""
    return conn.execute(
        text("SELECT status, error_message, now() - updated_at AS age FROM stories WHERE id = :id"),
        {"id": story_id},
    ).mappings().first()


def release_story(conn: Connection, story_id: str, message: str | None = None, attempt: int = 0,
                  task_id: str | None = None, *, token: int) -> bool:
    """processing -> pending under the start's claim ``token``: the story waits (for its photo's
    analysis) or retries its outline after a transient error (then ``message`` records the
    attempt, as every step's retries do). False when the claim is no longer this run's."""
    return conn.execute(
        text(
            """
            WITH s AS (
                UPDATE stories SET status = 'pending'
                 WHERE id = :id AND status = 'processing' AND claim_token = :token RETURNING id
            ), e AS (
                INSERT INTO step_errors (story_id, stage, permanent, message, attempt, task_id)
                SELECT id, 'outline', false, :msg, :attempt, :task FROM s WHERE CAST(:msg AS text) IS NOT NULL
            )
            SELECT id FROM s
            """
        ),
        {"id": story_id, "msg": message, "attempt": attempt, "task": task_id, "token": token},
    ).first() is not None


def fail_story(
    conn: Connection, story_id: str, message: str, stage: Stage, *, page_id: str | None = None,
    attempt: int = 0, task_id: str | None = None, token: int | None = None,
) -> bool:
    """pending|processing -> failed with the reason. A completed story stays completed. With
    ``token`` (the start's claim), only while that claim holds the story. False: nothing failed."""
    row = conn.execute(
        text(
            """
            WITH s AS (
                UPDATE stories SET status = 'failed', error_message = :msg
                 WHERE id = :id AND status IN ('pending', 'processing')
                   AND (CAST(:token AS bigint) IS NULL OR (status = 'processing' AND claim_token = :token))
                RETURNING id
            )
            INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
            SELECT id, :page, :stage, true, :msg, :attempt, :task FROM s
            RETURNING story_id
            """
        ),
        {"id": story_id, "msg": message, "stage": stage, "page": page_id, "attempt": attempt, "task": task_id,
         "token": token},
    ).first()
    return row is not None


def save_outline_and_pages(
    conn: Connection, story_id: str, title: str, style: str, beats: list[str], protagonist_face: Any = None,
    *, token: int,
) -> list[str] | None:
    """Outline, title and one page row per beat, in one statement, only while the start's claim
    ``token`` holds the story (its takeover count reset: the start is done); returns the new pages'
    ids in page order (None: the story is no longer ours). A re-run
    keeps the first outline (ON CONFLICT DO NOTHING), so pages stay consistent with it."""
    row = conn.execute(
        text(
            """
            WITH held AS (
                UPDATE stories SET title = COALESCE(title, :title), takeovers = 0
                 WHERE id = :id AND status = 'processing' AND claim_token = :token RETURNING id
            ), o AS (
                INSERT INTO story_outlines (story_id, title, style, beats, protagonist_face)
                SELECT id, :title, :style, CAST(:beats AS jsonb), CAST(:face AS jsonb) FROM held
                ON CONFLICT (story_id) DO NOTHING
            ), p AS (
                INSERT INTO story_pages (story_id, page_number)
                SELECT held.id, n FROM held, generate_series(1, :count) AS n
                ON CONFLICT (story_id, page_number) DO NOTHING
                RETURNING id, page_number
            )
            SELECT (SELECT count(*) FROM held) AS held,
                   (SELECT array_agg(id::text ORDER BY page_number) FROM (
                        SELECT id, page_number FROM p
                        UNION  -- pages already there (the statement's snapshot does not see p's)
                        SELECT id, page_number FROM story_pages
                         WHERE story_id = :id AND personalization_status IS DISTINCT FROM 'completed'
                           AND EXISTS (SELECT 1 FROM held)) AS todo) AS pages
            """
        ),
        {"id": story_id, "title": title, "style": style, "beats": json.dumps(beats), "count": len(beats),
         "face": None if protagonist_face is None else json.dumps(protagonist_face), "token": token},
    ).mappings().first()
    if row is None or not row["held"]:
        return None
    return list(row["pages"] or [])


def unfinished_pages(conn: Connection, story_id: str) -> list[str]:
    """Ids of the story's pages not yet personalized, in page order (a re-run's fan-out)."""
    return [
        str(r[0])
        for r in conn.execute(
            text(
                """
                SELECT id FROM story_pages
                 WHERE story_id = :id AND personalization_status IS DISTINCT FROM 'completed'
                 ORDER BY page_number
                """
            ),
            {"id": story_id},
        )
    ]


def complete_story(conn: Connection, story_id: str, finish_token: int) -> bool:
    """processing -> completed, only when every page is personalized and only for the holder of
    the completion's claim ``finish_token`` (:func:`claim_finish`: a finisher that froze past its
    lease and woke after another took over completes nothing). One statement: the barrier lives
    in Postgres, not in a Redis chord counter. Each page's finish runs after its own page
    committed, so the last one to run sees every page done. The completion's claim is cleared."""
    return conn.execute(
        text(
            """
            WITH f AS (
                UPDATE story_outlines SET finish_claimed_at = NULL, finish_takeovers = 0
                 WHERE story_id = :id AND finish_token = :token RETURNING story_id
            )
            UPDATE stories SET status = 'completed', error_message = NULL
             WHERE id = (SELECT story_id FROM f) AND status = 'processing'
               AND EXISTS (SELECT 1 FROM story_pages WHERE story_id = :id)
               AND NOT EXISTS (SELECT 1 FROM story_pages WHERE story_id = :id
                                AND personalization_status IS DISTINCT FROM 'completed')
            RETURNING id
            """
        ),
        {"id": story_id, "token": finish_token},
    ).first() is not None


def fail_finish(conn: Connection, story_id: str, message: str, finish_token: int, *, attempt: int = 0,
                task_id: str | None = None) -> bool:
    """The story failed by its completion (stage 'finish'), only for the holder of ``finish_token``
    (a stale finisher's error fails nothing). False: nothing failed."""
    return conn.execute(
        text(
            """
            WITH s AS (
                UPDATE stories SET status = 'failed', error_message = :msg
                 WHERE id = :id AND status = 'processing'
                   AND EXISTS (SELECT 1 FROM story_outlines WHERE story_id = :id AND finish_token = :token)
                RETURNING id
            )
            INSERT INTO step_errors (story_id, stage, permanent, message, attempt, task_id)
            SELECT id, 'finish', true, :msg, :attempt, :task FROM s
            RETURNING story_id
            """
        ),
        {"id": story_id, "msg": message, "token": finish_token, "attempt": attempt, "task": task_id},
    ).first() is not None


def story_ready(conn: Connection, story_id: str) -> bool:
    """Is the story processing with every page personalized (time for stories.finish)?"""
    return bool(conn.execute(
        text(
            """
            SELECT s.status = 'processing'
                   AND NOT EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id
                                    AND personalization_status IS DISTINCT FROM 'completed')
              FROM stories s WHERE s.id = :id
            """
        ),
        {"id": story_id},
    ).scalar())


def claim_finish(conn: Connection, story_id: str, lease: float, held: int | None = None) -> RowMapping | None:
    """Claim a processing story's completion once every page is personalized: a new fencing token
    (``finish_token``) and the claim's time on its outline row (story_outlines.finish_claimed_at),
    unless another finisher claimed it less than ``lease`` seconds ago; ``finish_takeovers`` counts
    claims taken from a finisher that went silent (a claim never completed). Returns the story's
    id, title, child_name, story_theme, finish_token, finish_takeovers and revision; None if not ready, not
    processing, or held by another finisher (see :func:`finish_state`). No lock is held while the
    book is written: a frozen finisher cannot keep the story processing past the lease. ``held``:
    the finish token the caller's message held when the database went away (resumed at once)."""
    return conn.execute(
        text(
            """
            UPDATE story_outlines o
               SET finish_token = o.finish_token + 1, finish_claimed_at = now(),
                   finish_takeovers = CASE WHEN o.finish_claimed_at IS NOT NULL
                                                AND o.finish_token IS DISTINCT FROM CAST(:held AS bigint)
                                           THEN o.finish_takeovers + 1 ELSE o.finish_takeovers END
              FROM stories s
             WHERE o.story_id = :id AND s.id = o.story_id AND s.status = 'processing'
               AND (o.finish_claimed_at IS NULL OR o.finish_claimed_at < now() - make_interval(secs => :lease)
                    OR o.finish_token = CAST(:held AS bigint))
               AND EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id
                                AND personalization_status IS DISTINCT FROM 'completed')
            RETURNING s.id, s.title, s.child_name, s.story_theme, o.finish_token, o.finish_takeovers, s.revision
            """
        ),
        {"id": story_id, "lease": lease, "held": held},
    ).mappings().first()


def finish_state(conn: Connection, story_id: str) -> RowMapping | None:
    """Why a completion was not claimed: the story's ``status``, ``ready`` (every page
    personalized) and ``claim_age`` (interval since another finisher claimed it; NULL when none
    holds it). None: no such story."""
    return conn.execute(
        text(
            """
            SELECT s.status,
                   EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id)
                   AND NOT EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id
                                    AND personalization_status IS DISTINCT FROM 'completed') AS ready,
                   now() - o.finish_claimed_at AS claim_age
              FROM stories s LEFT JOIN story_outlines o ON o.story_id = s.id
             WHERE s.id = :id
            """
        ),
        {"id": story_id},
    ).mappings().first()


def book_pages(conn: Connection, story_id: str) -> list[RowMapping]:
    """page_number, text and personalized_image_key of every page, in page order (the book)."""
    return list(
        conn.execute(
            text(
                """
                SELECT page_number, text, personalized_image_key FROM story_pages
                 WHERE story_id = :id ORDER BY page_number
                """
            ),
            {"id": story_id},
        ).mappings()
    )

