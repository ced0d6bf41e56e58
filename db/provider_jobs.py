"""Remote provider jobs (provider_jobs: Replicate predictions), recorded before they are
created, one live job per page step (the partial unique index uq_provider_jobs_live), each under
the page step's claim (its fencing token, provider_jobs.claim_token): only the current holder of
the step may reserve, start or end its job; a takeover adopts the live job.
"""
from __future__ import annotations

from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from db.claims import held
from db.pages import PageColumn, page_column
from db.slots import in_flight

JobStage = Literal["image", "personalization"]

# How an orphan job's row (record_orphan) starts its error_message: a job a worker created after
# its claim was taken over; never counted as the step's job (its recreation count).
ORPHAN_PREFIX = "Made by a worker that had lost its claim"


def live_job(conn: Connection, page_id: str, stage: JobStage) -> RowMapping | None:
    """The page step's job that is being created or running, if any (at most one: the
    partial unique index uq_provider_jobs_live)."""
    return conn.execute(
        text(
            """
            SELECT id, provider, external_id, status, input_sha256, created_at, errors, polls,
                   recreation, claim_token, now() - created_at AS age
              FROM provider_jobs
             WHERE page_id = :page AND stage = :stage AND status IN ('creating', 'running')
            """
        ),
        {"page": page_id, "stage": stage},
    ).mappings().first()


def adopt_job(conn: Connection, page_id: str, stage: JobStage, token: int) -> RowMapping | None:
    """The page step's live job (creating or running), if any, now under claim ``token`` (the claim
    just taken: a takeover adopts the silent holder's job, so that holder can no longer start or
    end it). None: no live job."""
    return conn.execute(
        text(
            """
            UPDATE provider_jobs SET claim_token = :token
             WHERE page_id = :page AND stage = :stage AND status IN ('creating', 'running')
            RETURNING id, provider, external_id, status, input_sha256, created_at, errors, polls,
                      recreation, claim_token, now() - created_at AS age
            """
        ),
        {"page": page_id, "stage": stage, "token": token},
    ).mappings().first()


def reserve_job(conn: Connection, page_id: str, stage: JobStage, col: PageColumn, provider: str, sha: str,
                token: int) -> RowMapping | None:
    """Record the intent to create a job *before* asking the provider, only while claim ``token``
    still holds the page step (status column ``col``). None: another run holds a live job for this
    step already (use that one), or the claim was lost (nothing recorded: make no job). When the
    step's latest job expired (its output was gone before it was copied), this one replaces it: its
    ``recreation`` is one more; otherwise 0 (a first job, or one after a failure an operator
    retried). ValueError for a column that is not a story_pages status column."""
    col = page_column(col)
    return conn.execute(
        text(
            f"""
            INSERT INTO provider_jobs (page_id, stage, provider, input_sha256, recreation, claim_token)
            SELECT :page, :stage, :provider, :sha,
                   COALESCE((SELECT CASE WHEN status = 'expired' THEN recreation + 1 ELSE 0 END
                               FROM provider_jobs WHERE page_id = :page AND stage = :stage
                                AND NOT starts_with(COALESCE(error_message, ''), :orphan)
                              ORDER BY created_at DESC LIMIT 1), 0), :token
             WHERE EXISTS (SELECT 1 FROM story_pages WHERE id = :page AND {held(col)})
            ON CONFLICT (page_id, stage) WHERE status IN ('creating', 'running') DO NOTHING
            RETURNING id, provider, external_id, status, input_sha256, created_at, errors, polls,
                      recreation, claim_token, interval '0' AS age
            """
        ),
        {"page": page_id, "stage": stage, "provider": provider, "sha": sha, "token": token, "orphan": ORPHAN_PREFIX},
    ).mappings().first()


def job_started(conn: Connection, job_id: str, external_id: str, sha: str, token: int, *,
                by: str | None = None) -> bool:
    """creating -> running with the provider's id, only under claim ``token`` (the job's); ``by``: the
    Celery task id of this run (started_by: its message polls the job). False when
    the job was no longer creating, was adopted by a newer claim, or that provider id is recorded
    already (another holder found and recorded the same job): then this run must not follow it, and
    the job it made is an orphan (:func:`record_orphan`)."""
    try:
        return conn.execute(
            text(
                """
                UPDATE provider_jobs j SET external_id = :ext, status = 'running', input_sha256 = :sha,
                                          started_by = :by
                 WHERE j.id = :id AND j.status = 'creating' AND j.claim_token = :token
                   AND NOT EXISTS (SELECT 1 FROM provider_jobs o
                                    WHERE o.provider = j.provider AND o.external_id = :ext)
                RETURNING j.id
                """
            ),
            {"id": job_id, "ext": external_id, "sha": sha, "token": token, "by": by},
        ).first() is not None
    except IntegrityError:  # uq_provider_jobs_external_id: recorded by another holder meanwhile
        return False


def record_orphan(conn: Connection, page_id: str, stage: JobStage, provider: str, external_id: str, sha: str,
                  token: int) -> bool:
    """Record a job this run created after its claim (``token``) was lost (it paused past the lease
    and another worker took the step over), as 'canceled' (error_message ORPHAN_PREFIX...): never a prediction nobody
    knows of. True: recorded now, so the caller must cancel it at the provider; False: that
    provider id is recorded already (the new holder found it and follows it: leave it running)."""
    return conn.execute(
        text(
            """
            INSERT INTO provider_jobs (page_id, stage, provider, external_id, input_sha256, status,
                                       error_message, claim_token)
            VALUES (:page, :stage, :provider, :ext, :sha, 'canceled', :why, :token)
            ON CONFLICT (provider, external_id) WHERE external_id IS NOT NULL DO NOTHING
            RETURNING id
            """
        ),
        {"page": page_id, "stage": stage, "provider": provider, "ext": external_id, "sha": sha,
         "token": token, "why": f"{ORPHAN_PREFIX} (claim {token}); canceled at the provider."},
    ).first() is not None


def orphan_cancel_failed(conn: Connection, provider: str, external_id: str, error: str) -> None:
    """Note on an orphan job's row that cancelling it at the provider failed (``error``): an
    operator can cancel it by its id there."""
    conn.execute(
        text("UPDATE provider_jobs SET error_message = error_message || ' Cancelling it failed: ' || :err "
             "WHERE provider = :provider AND external_id = :ext"),
        {"provider": provider, "ext": external_id, "err": error},
    )


def job_polled(conn: Connection, job_id: str, page_id: str, col: PageColumn) -> None:
    """One more poll, and the page step's lease renewed while the job is the current claim's (the
    page's claim_token is the job's): a job that is still running remotely is healthy work, not a
    dead worker's claim. ``col``: the page step's status column (ValueError when it is not a
    story_pages status column)."""
    col = page_column(col)
    conn.execute(
        text(
            f"""
            WITH j AS (
                UPDATE provider_jobs SET polls = polls + 1 WHERE id = :id AND status = 'running'
                RETURNING id
            )
            UPDATE story_pages p SET updated_at = now()
              FROM provider_jobs pj
             WHERE p.id = :page AND p.{col} = 'processing' AND pj.id = :id
               AND p.claim_token = pj.claim_token AND EXISTS (SELECT 1 FROM j)
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


def job_by_external_id(conn: Connection, provider: str, external_id: str) -> RowMapping | None:
    """The job ``provider`` knows as ``external_id`` (``page_id``, ``stage``, ``status``), or None."""
    return conn.execute(
        text("SELECT page_id::text AS page_id, stage, status FROM provider_jobs "
             "WHERE provider = :provider AND external_id = :external_id ORDER BY created_at DESC LIMIT 1"),
        {"provider": provider, "external_id": external_id},
    ).mappings().first()


def job_external_ids(conn: Connection, page_id: str, stage: JobStage) -> list[str]:
    """The provider's ids of every job this page step has had (never to be found again)."""
    return [str(r[0]) for r in conn.execute(
        text("SELECT external_id FROM provider_jobs WHERE page_id = :page AND stage = :stage "
             "AND external_id IS NOT NULL"),
        {"page": page_id, "stage": stage},
    )]


def job_finished(conn: Connection, job_id: str, status: str, error: str | None = None, *,
                 token: int | None = None, by: str | None = None) -> bool:
    """A live job's end: succeeded, failed, canceled, or expired (succeeded, but its output was
    gone before it was copied: ``error`` says how that showed). With ``token``: only while the job
    is still under that claim (a newer holder adopted it: this run decides nothing). ``by``: the
    Celery task id of the run that ends it (finished_by: see :func:`handed_to_other`). False if it
    had ended already or was adopted."""
    assert status in ("succeeded", "failed", "canceled", "expired"), status
    return conn.execute(
        text(
            """
            UPDATE provider_jobs SET status = :status, error_message = :err, finished_by = :by
             WHERE id = :id AND status IN ('creating', 'running')
               AND (CAST(:token AS bigint) IS NULL OR claim_token = :token) RETURNING id
            """
        ),
        {"id": job_id, "status": status, "err": error, "token": token, "by": by},
    ).first() is not None


def handed_to_other(conn: Connection, page_id: str, stage: str, task_id: str | None) -> str | None:
    """The task id of the message that completed the page step (finished_by of its latest succeeded
    job), when message ``task_id`` is another one that raced it and so must not move the page's
    chain on: a webhook sent a follow (woken_by) for one of the step's jobs besides that job's poll
    (started_by), and ``task_id`` is one of those two (the job may since have been replaced by one
    of them: a failed-but-retryable job, an expired output). None otherwise: this message completed
    the step (a redelivery of the completer moves on), no webhook's follow was ever sent for the
    step, or ``task_id`` is a later chain that merely passes the completed step (a retry, a
    backfill: it moves on, as before)."""
    if task_id is None:
        return None
    row = conn.execute(
        text(
            """
            SELECT l.finished_by FROM (
                SELECT finished_by FROM provider_jobs
                 WHERE page_id = :page AND stage = :stage AND status = 'succeeded'
                 ORDER BY created_at DESC LIMIT 1) AS l
             WHERE l.finished_by IS NOT NULL AND l.finished_by <> :me
               AND EXISTS (SELECT 1 FROM provider_jobs r
                            WHERE r.page_id = :page AND r.stage = :stage AND r.woken_by IS NOT NULL
                              AND :me IN (r.started_by, r.woken_by))
            """
        ),
        {"page": page_id, "stage": stage, "me": task_id},
    ).first()
    return str(row[0]) if row is not None else None


def wake_job(conn: Connection, provider: str, external_id: str, follow_id: str) -> RowMapping | None:
    """A provider's completion webhook for job ``external_id``: marks it woken (woken_at, and
    woken_by = ``follow_id``, the task id the caller will send its follow with) once, while it is
    running, and returns what the page step's early follow needs (``page_id``,
    ``stage``, ``story_id``, ``status``, ``woken``: True only for the first delivery that found it
    running; ``in_flight_before`` and ``backlog``: the account's other stories in flight and
    pending now, for the follow's broker priority, as at a story's start). None: no such job
    recorded (not ours, or recorded under another provider)."""
    return conn.execute(
        text(
            f"""
            WITH j AS (
                SELECT id, page_id, stage, status, woken_at FROM provider_jobs
                 WHERE provider = :provider AND external_id = :ext
            ), w AS (
                UPDATE provider_jobs SET woken_at = now(), woken_by = :follow
                 WHERE id = (SELECT id FROM j) AND status = 'running' AND woken_at IS NULL
                RETURNING id
            )
            SELECT j.page_id, j.stage, j.status, p.story_id, EXISTS (SELECT 1 FROM w) AS woken,
                   {in_flight(excluding="s.id")} AS in_flight_before,
                   (SELECT count(*) FROM stories b WHERE b.user_id = s.user_id AND b.status = 'pending'
                       AND b.id <> s.id) AS backlog
              FROM j JOIN story_pages p ON p.id = j.page_id JOIN stories s ON s.id = p.story_id
            """
        ),
        {"provider": provider, "ext": external_id, "follow": follow_id},
    ).mappings().first()
