"""Remote provider jobs (provider_jobs: Replicate predictions), recorded before they are
created, one live job per page step (the partial unique index uq_provider_jobs_live).
"""
from __future__ import annotations

from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.pages import PageColumn, page_column

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
    """creating -> running with the provider's id; False when the job was no longer creating."""
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
    is healthy work, not a dead worker's claim. ``col``: the page step's status column (ValueError
    when it is not a story_pages status column)."""
    col = page_column(col)
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
