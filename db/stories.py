"""Guarded status transitions: each is one conditional UPDATE, so two copies of a step cannot
both win, and a lost race is a no-op (no row returned), not an error.

A claim takes a column from pending (NULL counts as pending: rows from before the column had a
default) to processing, or takes over a processing claim whose row has not moved for longer
than the lease: that copy's worker died (SIGKILL, OOM, lost node) and its message came back.
A healthy copy keeps its row fresh for less than the lease, so it is never taken over.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

PageColumn = Literal["text_generation_status", "image_generation_status", "personalization_status"]
Stage = Literal["analysis", "outline", "text", "image", "personalization", "finish"]

PAGE_STAGES: dict[Stage, PageColumn] = {
    "text": "text_generation_status",
    "image": "image_generation_status",
    "personalization": "personalization_status",
}
# The column a page step needs completed before it may start (text -> image -> personalization).
PREREQUISITE: dict[PageColumn, PageColumn | None] = {
    "text_generation_status": None,
    "image_generation_status": "text_generation_status",
    "personalization_status": "image_generation_status",
}


def _claimable(col: str, updated_at: str = "updated_at") -> str:
    return (
        f"(COALESCE({col}, 'pending') = 'pending' OR "
        f"({col} = 'processing' AND {updated_at} < now() - make_interval(secs => :lease)))"
    )


# --- photos -----------------------------------------------------------------------------------

# The start of the failure message for a photo analysed before its upload finished. Such a
# failure is not final: once the row says 'uploaded', the photo may be claimed again.
NOT_UPLOADED_PREFIX = "The photo is not ready to analyse"


def claim_photo(conn: Connection, photo_id: str, lease: float) -> RowMapping | None:
    return conn.execute(
        text(
            f"""
            UPDATE photos SET ai_processing_status = 'processing', ai_error_message = NULL
             WHERE id = :id AND status = 'uploaded'
               AND ({_claimable('ai_processing_status')}
                    OR (ai_processing_status = 'failed' AND starts_with(ai_error_message, :not_uploaded)))
            RETURNING id, storage_provider, bucket, object_key, content_type
            """
        ),
        {"id": photo_id, "lease": lease, "not_uploaded": NOT_UPLOADED_PREFIX},
    ).mappings().first()


def photo_state(conn: Connection, photo_id: str) -> RowMapping | None:
    return conn.execute(
        text(
            """
            SELECT status, COALESCE(ai_processing_status, 'pending') AS ai_status, ai_error_message,
                   face_details, storage_provider, bucket, object_key,
                   now() - updated_at AS age
              FROM photos WHERE id = :id
            """
        ),
        {"id": photo_id},
    ).mappings().first()


def complete_photo(
    conn: Connection, photo_id: str, face_details: Any, labels: Any, objects: Any
) -> bool:
    row = conn.execute(
        text(
            """
            UPDATE photos
               SET ai_processing_status = 'completed', ai_error_message = NULL,
                   face_details = CAST(:faces AS jsonb), detected_labels = CAST(:labels AS jsonb),
                   detected_objects = CAST(:objects AS jsonb)
             WHERE id = :id AND ai_processing_status = 'processing'
            RETURNING id
            """
        ),
        {
            "id": photo_id,
            "faces": json.dumps(face_details),
            "labels": json.dumps(labels),
            "objects": json.dumps(objects),
        },
    ).first()
    return row is not None


def fail_photo(
    conn: Connection, photo_id: str, message: str, *, from_statuses: tuple[str, ...] = ("processing",),
    attempt: int = 0, task_id: str | None = None,
) -> bool:
    """processing -> failed (or pending -> failed for a photo that can't be analysed at all)."""
    row = conn.execute(
        text(
            """
            WITH p AS (
                UPDATE photos SET ai_processing_status = 'failed', ai_error_message = :msg
                 WHERE id = :id AND COALESCE(ai_processing_status, 'pending') = ANY(:from)
                RETURNING id
            )
            INSERT INTO step_errors (photo_id, stage, permanent, message, attempt, task_id)
            SELECT id, 'analysis', true, :msg, :attempt, :task FROM p
            RETURNING photo_id
            """
        ),
        {"id": photo_id, "msg": message, "from": list(from_statuses), "attempt": attempt, "task": task_id},
    ).first()
    return row is not None


def release_photo(conn: Connection, photo_id: str, message: str | None, attempt: int, task_id: str | None) -> None:
    """processing -> pending after a transient error: the retried message claims it again."""
    conn.execute(
        text(
            """
            WITH p AS (
                UPDATE photos SET ai_processing_status = 'pending'
                 WHERE id = :id AND ai_processing_status = 'processing' RETURNING id
            )
            INSERT INTO step_errors (photo_id, stage, permanent, message, attempt, task_id)
            SELECT id, 'analysis', false, :msg, :attempt, :task FROM p WHERE CAST(:msg AS text) IS NOT NULL
            """
        ),
        {"id": photo_id, "msg": message, "attempt": attempt, "task": task_id},
    )


# --- stories ----------------------------------------------------------------------------------

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


def _photo_refusal(s: str = "s", ph: str = "ph") -> str:
    """SQL: why story ``s`` may not use its photo ``ph`` (a message), or NULL when it may."""
    return (f"(CASE WHEN {ph}.user_id IS DISTINCT FROM {s}.user_id THEN CAST(:not_yours AS text) "
            f"WHEN {ph}.status = 'deleted' THEN CAST(:photo_deleted AS text) "
            f"WHEN {ph}.status = 'failed' THEN CAST(:upload_failed AS text) END)")


_REFUSALS = {"not_yours": PHOTO_NOT_YOURS, "photo_deleted": PHOTO_DELETED, "upload_failed": PHOTO_UPLOAD_FAILED}

# A story that may start: pending, or processing but untouched for longer than the lease.
_STARTABLE = ("(s.status = 'pending' OR "
              "(s.status = 'processing' AND s.updated_at < now() - make_interval(secs => :lease)))")


def claim_story(conn: Connection, story_id: str, lease: float, upload_wait: float = 900.0,
                attempt: int = 0, task_id: str | None = None) -> RowMapping | None:
    """Claim the story start; returns the story with its photo's state and whether an outline
    exists already (a re-run), all in the one round trip.

    The same statement refuses, by failing the story (``refused`` holds the parent's message,
    also recorded in step_errors, stage 'analysis'), a story whose photo belongs to another
    user, was deleted or failed to upload, or is still 'pending_upload' more than
    ``upload_wait`` seconds after the story became pending (its updated_at: the insert, or an
    operator's retry). A story whose photo is still 'pending_upload' within that wait is left
    pending and not claimed (None: the caller waits, see story_start_state). A story failed for
    an upload that never finished is claimed again once its photo is 'uploaded'.
    None: not claimed (held by another copy, finished, failed, waiting, or no such story)."""
    row = conn.execute(
        text(
            f"""
            WITH cur AS (
                SELECT s.id, ph.status IS DISTINCT FROM 'pending_upload' AS photo_ready,
                       COALESCE({_photo_refusal()},
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
                UPDATE stories s SET status = 'processing', error_message = NULL
                  FROM cur
                 WHERE s.id = cur.id AND cur.refusal IS NULL AND cur.photo_ready
                   AND ({_STARTABLE} OR (s.status = 'failed' AND starts_with(s.error_message, :timeout_prefix)))
                RETURNING s.id, s.user_id, s.child_name, s.child_age, s.story_theme, s.protagonist_photo_id
            )
            SELECT s.*, ph.status AS photo_status, COALESCE(ph.ai_processing_status, 'pending') AS photo_ai_status,
                   ph.ai_error_message AS photo_error, o.story_id IS NOT NULL AS has_outline,
                   ph.face_details AS photo_face_details,
                   (SELECT error_message FROM refused) AS refused
              FROM (SELECT 1) AS one LEFT JOIN s ON true
                   LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
                   LEFT JOIN story_outlines o ON o.story_id = s.id
            """
        ),
        {"id": story_id, "lease": lease, "upload_wait": upload_wait, "attempt": attempt, "task": task_id,
         "upload_timeout": upload_timeout_message(upload_wait), "timeout_prefix": UPLOAD_TIMEOUT_PREFIX,
         **_REFUSALS},
    ).mappings().first()
    if row is None or (row["id"] is None and row["refused"] is None):
        return None
    return row


def story_state(conn: Connection, story_id: str) -> RowMapping | None:
    return conn.execute(
        text("SELECT status, error_message, now() - updated_at AS age FROM stories WHERE id = :id"),
        {"id": story_id},
    ).mappings().first()


def story_start_state(conn: Connection, story_id: str, upload_wait: float) -> RowMapping | None:
    """Why a story start was not claimed: story_state's columns, plus, for a pending story whose
    own photo is still 'pending_upload', ``upload_wait_left`` (seconds until the wait ends; NULL
    otherwise), ``pending_for`` (seconds since the story became pending) and ``pending_since``
    (its updated_at, in µs since the epoch: which pending episode this is)."""
    return conn.execute(
        text(
            """
            SELECT s.status, s.error_message, now() - s.updated_at AS age,
                   CASE WHEN s.status = 'pending' AND ph.status = 'pending_upload' AND ph.user_id = s.user_id
                        THEN CAST(EXTRACT(EPOCH FROM s.updated_at + make_interval(secs => :wait) - now())
                                  AS float8) END AS upload_wait_left,
                   CAST(EXTRACT(EPOCH FROM now() - s.updated_at) AS float8) AS pending_for,
                   CAST(floor(EXTRACT(EPOCH FROM s.updated_at) * 1000000) AS bigint) AS pending_since
              FROM stories s LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
             WHERE s.id = :id
            """
        ),
        {"id": story_id, "wait": upload_wait},
    ).mappings().first()


def release_story(conn: Connection, story_id: str, message: str | None = None, attempt: int = 0,
                  task_id: str | None = None) -> bool:
    """processing -> pending: the story waits (for its photo's analysis) or retries its outline
    after a transient error (then ``message`` records the attempt, as every step's retries do)."""
    return conn.execute(
        text(
            """
            WITH s AS (
                UPDATE stories SET status = 'pending' WHERE id = :id AND status = 'processing' RETURNING id
            ), e AS (
                INSERT INTO step_errors (story_id, stage, permanent, message, attempt, task_id)
                SELECT id, 'outline', false, :msg, :attempt, :task FROM s WHERE CAST(:msg AS text) IS NOT NULL
            )
            SELECT id FROM s
            """
        ),
        {"id": story_id, "msg": message, "attempt": attempt, "task": task_id},
    ).first() is not None


def fail_story(
    conn: Connection, story_id: str, message: str, stage: Stage, *, page_id: str | None = None,
    attempt: int = 0, task_id: str | None = None,
) -> bool:
    """pending|processing -> failed with the reason. A completed story stays completed."""
    row = conn.execute(
        text(
            """
            WITH s AS (
                UPDATE stories SET status = 'failed', error_message = :msg
                 WHERE id = :id AND status IN ('pending', 'processing') RETURNING id
            )
            INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
            SELECT id, :page, :stage, true, :msg, :attempt, :task FROM s
            RETURNING story_id
            """
        ),
        {"id": story_id, "msg": message, "stage": stage, "page": page_id, "attempt": attempt, "task": task_id},
    ).first()
    return row is not None


def save_outline_and_pages(
    conn: Connection, story_id: str, title: str, style: str, beats: list[str], protagonist_face: Any = None
) -> list[str] | None:
    """Outline, title and one page row per beat, in one statement, only while we hold the story;
    returns the new pages' ids in page order (None: the story is no longer ours). A re-run
    keeps the first outline (ON CONFLICT DO NOTHING), so pages stay consistent with it."""
    row = conn.execute(
        text(
            """
            WITH held AS (
                UPDATE stories SET title = COALESCE(title, :title)
                 WHERE id = :id AND status = 'processing' RETURNING id
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
         "face": None if protagonist_face is None else json.dumps(protagonist_face)},
    ).mappings().first()
    if row is None or not row["held"]:
        return None
    return list(row["pages"] or [])


def unfinished_pages(conn: Connection, story_id: str) -> list[str]:
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


def complete_story(conn: Connection, story_id: str) -> bool:
    """processing -> completed, only when every page is personalized. One statement: the
    barrier lives in Postgres, not in a Redis chord counter. Each page's finish runs after its
    own page committed, so the last one to run sees every page done."""
    return conn.execute(
        text(
            """
            UPDATE stories SET status = 'completed', error_message = NULL
             WHERE id = :id AND status = 'processing'
               AND EXISTS (SELECT 1 FROM story_pages WHERE story_id = :id)
               AND NOT EXISTS (SELECT 1 FROM story_pages WHERE story_id = :id
                                AND personalization_status IS DISTINCT FROM 'completed')
            RETURNING id
            """
        ),
        {"id": story_id},
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


def lock_story_if_done(conn: Connection, story_id: str) -> RowMapping | None:
    """Lock a processing story whose pages are all personalized; None if it is not ready, not
    processing, or another finisher holds it (SKIP LOCKED: that one will complete it)."""
    return conn.execute(
        text(
            """
            SELECT s.id, s.title, s.child_name, s.story_theme
              FROM stories s
             WHERE s.id = :id AND s.status = 'processing'
               AND EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM story_pages WHERE story_id = s.id
                                AND personalization_status IS DISTINCT FROM 'completed')
             FOR UPDATE OF s SKIP LOCKED
            """
        ),
        {"id": story_id},
    ).mappings().first()


def book_pages(conn: Connection, story_id: str) -> list[RowMapping]:
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


# --- pages ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PageClaim:
    page_id: str
    story_id: str
    page_number: int
    child_name: str
    child_age: int
    story_theme: str
    title: str
    style: str
    beats: list[str]
    text: str | None
    base_image_key: str | None
    photo: dict[str, Any] | None  # personalization only: the protagonist photo's location + faces
    protagonist_face: dict[str, Any] | None = None  # personalization only: the story's face choice


def claim_page(conn: Connection, page_id: str, col: PageColumn, lease: float) -> PageClaim | None:
    """Claim one page step, in one round trip that also returns all the step needs."""
    prereq = PREREQUISITE[col]
    prereq_sql = f"AND p.{prereq} = 'completed'" if prereq else ""
    want_photo = col == "personalization_status"
    # Only the story's own, live photo is ever handed to the step (its face is cropped and
    # sent on); a story whose photo is not (another user's, deleted, upload failed) is failed
    # by the same statement, and the page is not claimed.
    photo_join = (f"JOIN photos ph ON ph.id = s.protagonist_photo_id AND {_photo_refusal()} IS NULL"
                  if want_photo else "")
    photo_cols = (
        ", ph.storage_provider, ph.bucket, ph.object_key, ph.face_details, o.protagonist_face" if want_photo else ""
    )
    refuse = f"""
            WITH refused AS (
                UPDATE stories s SET status = 'failed', error_message = {_photo_refusal()}
                  FROM story_pages rp, photos ph
                 WHERE rp.id = :id AND s.id = rp.story_id AND ph.id = s.protagonist_photo_id
                   AND s.status = 'processing' AND {_photo_refusal()} IS NOT NULL
                RETURNING s.id, s.error_message
            ), refusal_logged AS (
                INSERT INTO step_errors (story_id, page_id, stage, permanent, message)
                SELECT id, CAST(:id AS uuid), 'personalization', true, error_message FROM refused
            )""" if want_photo else ""
    claimable = _claimable(f"p.{col}", "p.updated_at")
    row = conn.execute(
        text(
            f"""{refuse}
            UPDATE story_pages p SET {col} = 'processing'
              FROM stories s JOIN story_outlines o ON o.story_id = s.id {photo_join}
             WHERE p.id = :id AND s.id = p.story_id AND s.status = 'processing'
               {prereq_sql} AND {claimable}
            RETURNING p.id, p.story_id, p.page_number, p.text, p.base_image_key,
                      s.child_name, s.child_age, s.story_theme, o.title, o.style, o.beats{photo_cols}
            """
        ),
        {"id": page_id, "lease": lease, **(_REFUSALS if want_photo else {})},
    ).mappings().first()
    if row is None:
        return None
    photo = (
        {k: row[k] for k in ("storage_provider", "bucket", "object_key", "face_details")}
        if want_photo
        else None
    )
    return PageClaim(
        page_id=str(row["id"]), story_id=str(row["story_id"]), page_number=row["page_number"],
        child_name=row["child_name"], child_age=row["child_age"], story_theme=row["story_theme"],
        title=row["title"], style=row["style"], beats=list(row["beats"]), text=row["text"],
        base_image_key=row["base_image_key"], photo=photo,
        protagonist_face=row["protagonist_face"] if want_photo else None,
    )


def page_state(conn: Connection, page_id: str, col: PageColumn) -> RowMapping | None:
    prereq = PREREQUISITE[col]
    return conn.execute(
        text(
            f"""
            SELECT p.story_id, p.page_number, COALESCE(p.{col}, 'pending') AS status,
                   {f"COALESCE(p.{prereq}, 'pending')" if prereq else "'completed'"} AS prereq_status,
                   s.status AS story_status, now() - p.updated_at AS age
              FROM story_pages p JOIN stories s ON s.id = p.story_id
             WHERE p.id = :id
            """
        ),
        {"id": page_id},
    ).mappings().first()


def complete_page(conn: Connection, page_id: str, col: PageColumn, values: dict[str, Any]) -> bool:
    """processing -> completed with the step's result columns (text or an image key)."""
    allowed = {"text", "base_image_key", "personalized_image_key"}
    assert set(values) <= allowed, values
    sets = ", ".join(f"{k} = :{k}" for k in values)
    return conn.execute(
        text(
            f"""
            UPDATE story_pages SET {sets}, {col} = 'completed'
             WHERE id = :id AND {col} = 'processing' RETURNING id
            """
        ),
        {"id": page_id, **values},
    ).first() is not None


def fail_page(
    conn: Connection, page_id: str, col: PageColumn, stage: Stage, message: str,
    story_message: str, attempt: int, task_id: str | None,
) -> bool:
    """processing -> failed, and the story failed with the page's reason, in one statement."""
    return conn.execute(
        text(
            f"""
            WITH p AS (
                UPDATE story_pages SET {col} = 'failed'
                 WHERE id = :id AND {col} = 'processing' RETURNING id, story_id, page_number
            ), s AS (
                UPDATE stories SET status = 'failed', error_message = :story_msg
                 WHERE id = (SELECT story_id FROM p) AND status IN ('pending', 'processing')
                RETURNING id
            )
            INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
            SELECT story_id, id, :stage, true, :msg, :attempt, :task FROM p
            RETURNING page_id
            """
        ),
        {"id": page_id, "msg": message, "story_msg": story_message, "stage": stage,
         "attempt": attempt, "task": task_id},
    ).first() is not None


def release_page(
    conn: Connection, page_id: str, col: PageColumn, stage: Stage, message: str | None,
    attempt: int, task_id: str | None,
) -> None:
    """processing -> pending after a transient error, recording the attempt (no record when
    ``message`` is None: the step only waits for a quota, nothing failed)."""
    if message is None:
        conn.execute(text(f"UPDATE story_pages SET {col} = 'pending' WHERE id = :id AND {col} = 'processing'"),
                     {"id": page_id})
        return
    conn.execute(
        text(
            f"""
            WITH p AS (
                UPDATE story_pages SET {col} = 'pending'
                 WHERE id = :id AND {col} = 'processing' RETURNING id, story_id
            )
            INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
            SELECT story_id, id, :stage, false, :msg, :attempt, :task FROM p
            """
        ),
        {"id": page_id, "msg": message, "stage": stage, "attempt": attempt, "task": task_id},
    )


# --- remote provider jobs (Replicate predictions) ---------------------------------------------

JobStage = Literal["image", "personalization"]


def live_job(conn: Connection, page_id: str, stage: JobStage) -> RowMapping | None:
    """The page step's job that is being created or running, if any (at most one: the
    partial unique index uq_provider_jobs_live)."""
    return conn.execute(
        text(
            """
            SELECT id, provider, external_id, status, input_sha256, created_at, errors, polls,
                   recreation, now() - created_at AS age
              FROM provider_jobs
             WHERE page_id = :page AND stage = :stage AND status IN ('creating', 'running')
            """
        ),
        {"page": page_id, "stage": stage},
    ).mappings().first()


def reserve_job(conn: Connection, page_id: str, stage: JobStage, provider: str, sha: str) -> RowMapping | None:
    """Record the intent to create a job *before* asking the provider. None: another run
    holds a live job for this step already (use that one). When the step's latest job expired
    (its output was gone before it was copied), this one replaces it: its ``recreation`` is one
    more; otherwise 0 (a first job, or one after a failure an operator retried)."""
    return conn.execute(
        text(
            """
            INSERT INTO provider_jobs (page_id, stage, provider, input_sha256, recreation)
            SELECT :page, :stage, :provider, :sha,
                   COALESCE((SELECT CASE WHEN status = 'expired' THEN recreation + 1 ELSE 0 END
                               FROM provider_jobs WHERE page_id = :page AND stage = :stage
                              ORDER BY created_at DESC LIMIT 1), 0)
            ON CONFLICT (page_id, stage) WHERE status IN ('creating', 'running') DO NOTHING
            RETURNING id, provider, external_id, status, input_sha256, created_at, errors, polls,
                      recreation, interval '0' AS age
            """
        ),
        {"page": page_id, "stage": stage, "provider": provider, "sha": sha},
    ).mappings().first()


def job_started(conn: Connection, job_id: str, external_id: str, sha: str) -> bool:
    return conn.execute(
        text(
            """
            UPDATE provider_jobs SET external_id = :ext, status = 'running', input_sha256 = :sha
             WHERE id = :id AND status = 'creating' RETURNING id
            """
        ),
        {"id": job_id, "ext": external_id, "sha": sha},
    ).first() is not None


def job_polled(conn: Connection, job_id: str, page_id: str, col: PageColumn) -> None:
    """One more poll, and the page step's lease renewed: a job that is still running remotely
    is healthy work, not a dead worker's claim."""
    conn.execute(
        text(
            f"""
            WITH j AS (
                UPDATE provider_jobs SET polls = polls + 1 WHERE id = :id AND status = 'running'
                RETURNING id
            )
            UPDATE story_pages SET updated_at = now()
             WHERE id = :page AND {col} = 'processing' AND EXISTS (SELECT 1 FROM j)
            """
        ),
        {"id": job_id, "page": page_id},
    )


def job_error(conn: Connection, job_id: str) -> int:
    """Count a transient error while following the job; returns the count so far."""
    row = conn.execute(
        text("UPDATE provider_jobs SET errors = errors + 1 WHERE id = :id RETURNING errors"),
        {"id": job_id},
    ).first()
    return int(row[0]) if row else 0


def job_external_ids(conn: Connection, page_id: str, stage: JobStage) -> list[str]:
    """The provider's ids of every job this page step has had (never to be found again)."""
    return [str(r[0]) for r in conn.execute(
        text("SELECT external_id FROM provider_jobs WHERE page_id = :page AND stage = :stage "
             "AND external_id IS NOT NULL"),
        {"page": page_id, "stage": stage},
    )]


def job_finished(conn: Connection, job_id: str, status: str, error: str | None = None) -> bool:
    """A live job's end: succeeded, failed, canceled, or expired (succeeded, but its output was
    gone before it was copied: ``error`` says how that showed). False if it had ended already."""
    assert status in ("succeeded", "failed", "canceled", "expired"), status
    return conn.execute(
        text(
            """
            UPDATE provider_jobs SET status = :status, error_message = :err
             WHERE id = :id AND status IN ('creating', 'running') RETURNING id
            """
        ),
        {"id": job_id, "status": status, "err": error},
    ).first() is not None
