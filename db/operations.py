"""SQL of the operator actions (pipeline/operations): retrying a failed story, the stuck-work
queries, submitting a story as the external API does, and the counts an operator reads.

Every change is a guarded transition (only failed steps go back to pending; completed work is
kept). Functions take an open connection (``db.engine.transaction``/``autocommit``) and commit
nothing themselves.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.models import Base
from db.pages import page_column
from db.slots import in_flight, turn_clause

# --- retry ---------------------------------------------------------------------------------------


def lock_failed_story(c: Connection, story_id: str) -> RowMapping | None:
    """The story's status and its photo's (``FOR UPDATE`` of the story row), or None when there is
    no such story. Keys: status, error_message, photo_id, photo_status, own_photo (the photo is its
    user's), ai_error_message, photo_changed (the photo row moved since its last recorded error),
    photo_deleted (photos.status 'deleted'), files_deleted_at (retention deleted the story's files)."""
    return c.execute(text(
        """SELECT s.status, s.error_message, p.id AS photo_id, p.ai_processing_status AS photo_status,
                  p.status = 'deleted' AS photo_deleted, s.files_deleted_at,
                  p.user_id = s.user_id AS own_photo,
                  p.ai_error_message, p.updated_at > COALESCE(
                    (SELECT max(created_at) FROM step_errors e WHERE e.photo_id = p.id), '-infinity')
                    AS photo_changed
             FROM stories s JOIN photos p ON p.id = s.protagonist_photo_id
            WHERE s.id = :id FOR UPDATE OF s"""), {"id": story_id}).mappings().first()


def count_failed_pages(c: Connection, story_id: str, columns: Sequence[str]) -> int:
    """Pages of the story with at least one failed step (``columns``: the page steps' story_pages
    status columns, from the story flow's table; ValueError for any other column)."""
    cols = ", ".join(page_column(col) for col in columns)
    return int(c.execute(text(
        f"SELECT count(*) FROM story_pages WHERE story_id = :id AND 'failed' IN ({cols})"),
        {"id": story_id}).scalar() or 0)


def reset_failed_photo(c: Connection, photo_id: str) -> None:
    """A failed photo analysis back to pending (its takeover count reset: STEP_MAX_TAKEOVERS)."""
    c.execute(text("""UPDATE photos SET ai_processing_status = 'pending', ai_error_message = NULL, takeovers = 0
                      WHERE id = :p AND ai_processing_status = 'failed'"""), {"p": photo_id})


def reset_failed_story(c: Connection, story_id: str, columns: Sequence[str]) -> int:
    """Every failed page step of the story back to pending (completed ones kept), then the story
    failed -> pending. ``columns``: the page steps' story_pages status columns, from the story
    flow's table (ValueError for any other column). Returns how many pages were reset. Takeover
    counts (STEP_MAX_TAKEOVERS: a step that crashed its worker) and the completion's claim are
    reset with them: an operator's retry gives every step a fresh start."""
    cols = [page_column(col) for col in columns]
    sets = ", ".join(f"{col} = CASE WHEN {col} = 'failed' THEN 'pending' ELSE {col} END" for col in cols)
    n = c.execute(text(
        f"""UPDATE story_pages SET {sets}, takeovers = 0
             WHERE story_id = :id AND 'failed' IN ({", ".join(cols)})"""),
        {"id": story_id}).rowcount
    c.execute(text("""UPDATE story_outlines SET finish_claimed_at = NULL, finish_takeovers = 0
                      WHERE story_id = :id
                        AND EXISTS (SELECT 1 FROM stories WHERE id = :id AND status = 'failed')"""),
              {"id": story_id})
    c.execute(text("""UPDATE stories SET status = 'pending', error_message = NULL, takeovers = 0
                      WHERE id = :id AND status = 'failed'"""), {"id": story_id})
    return int(n)


def failed_stories(c: Connection, *, page: str | None = None, photo: str | None = None,
                   since_seconds: float | None = None, stage: str | None = None, theme: str | None = None,
                   limit: int = 1000) -> list[str]:
    """Ids of failed stories selected by a page, a photo, or by when/where they failed (their
    latest permanent error, the story's own or its photo's), oldest update first."""
    where = ["s.status = 'failed'"]
    params: dict[str, object] = {"limit": limit}
    if page is not None:
        where.append("s.id = (SELECT story_id FROM story_pages WHERE id = :page)")
        params["page"] = page
    if photo is not None:
        where.append("s.protagonist_photo_id = :photo")
        params["photo"] = photo
    if theme is not None:
        where.append("s.story_theme = :theme")
        params["theme"] = theme
    if since_seconds is not None or stage is not None:
        cond = ["e.permanent"]
        if since_seconds is not None:
            cond.append("e.created_at >= now() - make_interval(secs => :since)")
            params["since"] = since_seconds
        if stage is not None:
            cond.append("e.stage = :stage")
            params["stage"] = stage
        where.append(f"""EXISTS (SELECT 1 FROM step_errors e
                                 WHERE (e.story_id = s.id OR e.photo_id = s.protagonist_photo_id)
                                   AND {' AND '.join(cond)})""")
    sql = f"SELECT s.id FROM stories s WHERE {' AND '.join(where)} ORDER BY s.updated_at LIMIT :limit"
    return [str(r[0]) for r in c.execute(text(sql), params)]


# --- stuck work ----------------------------------------------------------------------------------
# Each query finds one kind of stuck work. "processing" older than the lease: the worker holding
# it died (its message may only come back after the broker's visibility timeout). "pending"
# older than :pending_after with everything it needs done: its message was lost (enqueue failed
# after commit, a broker restart, a row inserted by a backfill of old data).
#
# At 100,000+ stories almost every row is finished, so each query is driven by a partial index
# that holds only unfinished rows (schema.sql: ix_*_unfinished) and pages through it by id
# (keyset: "id > :after ORDER BY id LIMIT :limit"), which is what lets a backfill resume where
# it stopped. Each WHERE repeats its index's predicate word for word, so the planner can use it.
# Parameters: :after, :limit, :lease, :pending_after, :upload_wait (seconds), :cap (stories).

# Photos: an analysis whose claim expired (someone asked: its holder died), or a pending photo that
# an unfinished story needs. photos.analyze is optional (the story's start analyses its photo
# inline), so an upload nobody asked to analyse (its story refused or failed validation, or no
# story at all) is never sent: that would be a paid vision call per unused upload.
_STUCK_PHOTOS = """
        SELECT id FROM photos
         WHERE ai_processing_status IS DISTINCT FROM 'completed' AND id > :after AND status = 'uploaded'
           AND ((ai_processing_status = 'processing' AND updated_at < now() - make_interval(secs => :lease))
             OR (COALESCE(ai_processing_status, 'pending') = 'pending'
                 AND updated_at < now() - make_interval(secs => :pending_after)
                 AND EXISTS (SELECT 1 FROM stories s WHERE s.protagonist_photo_id = photos.id
                                AND s.status IN ('pending', 'processing'))))
         ORDER BY id LIMIT :limit"""

_STUCK_STORY_STARTS = f"""
        SELECT s.id FROM stories s
         WHERE s.status IN ('pending', 'processing') AND s.id > :after
           AND ((s.status = 'pending' AND s.updated_at < now() - make_interval(secs => :pending_after)
                 -- not while it waits for its photo's upload (its message looks again by itself);
                 -- once the photo is uploaded, or the wait is over, a lost message is re-sent
                 AND NOT EXISTS (SELECT 1 FROM photos ph WHERE ph.id = s.protagonist_photo_id
                                    AND ph.status = 'pending_upload'
                                    AND s.updated_at >= now() - make_interval(secs => :upload_wait))
                 -- nor while it waits for a slot of its account (USER_STORIES_IN_FLIGHT): not its
                 -- turn yet; the hand-off or the sweep's waiting pass sends it (db/slots.py)
                 AND {turn_clause()})
             OR (s.status = 'processing' AND s.updated_at < now() - make_interval(secs => :lease)
                 AND NOT EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id)))
         ORDER BY s.id LIMIT :limit"""

def _stuck_page_steps(column: str, prerequisite: str | None) -> str:
    col = page_column(column)
    pre = f"AND p.{page_column(prerequisite)} = 'completed'" if prerequisite is not None else ""
    return f"""
        SELECT p.id, p.story_id FROM story_pages p JOIN stories s ON s.id = p.story_id
         WHERE p.{col} IS DISTINCT FROM 'completed' AND p.id > :after
           AND s.status = 'processing' {pre}
           AND ((p.{col} = 'processing' AND p.updated_at < now() - make_interval(secs => :lease))
             OR (COALESCE(p.{col}, 'pending') = 'pending'
                 AND p.updated_at < now() - make_interval(secs => :pending_after)))
         ORDER BY p.id LIMIT :limit"""


def _stuck_finishes(last_page_column: str) -> str:
    # Every page done, the story not: the step that should have sent the finish died first (or
    # its message was lost).
    col = page_column(last_page_column)
    return f"""
        SELECT s.id FROM stories s
         WHERE s.status IN ('pending', 'processing') AND s.id > :after AND s.status = 'processing'
           AND s.updated_at < now() - make_interval(secs => :pending_after)
           AND EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id)
           AND NOT EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id
                            AND (p.{col} IS DISTINCT FROM 'completed'
                                 OR p.updated_at > now() - make_interval(secs => :pending_after)))
         ORDER BY s.id LIMIT :limit"""


def _rows(c: Connection, sql: str, params: dict[str, Any]) -> list[tuple[str, ...]]:
    return [tuple(str(v) for v in r) for r in c.execute(text(sql), params)]


def stuck_photos(c: Connection, params: dict[str, Any]) -> list[tuple[str, ...]]:
    """Photos whose analysis is stuck: rows (photo id,): uploaded, and either claimed
    ('processing') longer than ``lease`` s ago, or pending for ``pending_after`` s while a pending
    or processing story has it as its photo (an upload no story needs is not analysed).
    ``params``: after, limit, lease, pending_after (seconds)."""
    return _rows(c, _STUCK_PHOTOS, params)


def stuck_story_starts(c: Connection, params: dict[str, Any]) -> list[tuple[str, ...]]:
    """Stories whose start (outline, page rows) is stuck: rows (story id,). ``params``: after,
    limit, lease, pending_after, upload_wait (seconds), cap (USER_STORIES_IN_FLIGHT: a pending
    story without its turn in its account waits for a slot and is not stuck, db.slots.turn_clause;
    0: no cap)."""
    return _rows(c, _STUCK_STORY_STARTS, params)


def stuck_finishes(c: Connection, last_page_column: str, params: dict[str, Any]) -> list[tuple[str, ...]]:
    """Processing stories whose every page has its last step (status column ``last_page_column``,
    from the story flow's table; ValueError for any other column) completed, and which never
    finished: rows (story id,). ``params``: after, limit, pending_after (seconds)."""
    return _rows(c, _stuck_finishes(last_page_column), params)


def stuck_page_steps(c: Connection, column: str, prerequisite: str | None,
                     params: dict[str, Any]) -> list[tuple[str, ...]]:
    """Stuck steps of one page stage: its status column ``column`` unfinished (the partial index
    ix_story_pages_<column>_unfinished's predicate), its ``prerequisite`` column completed (None
    for the page's first step), the story processing. Rows: (page id, story id). Columns come from
    the stage table (pipeline/stories/stages.py) and are checked against story_pages' status
    columns (ValueError otherwise). ``params``: after, limit, lease, pending_after (seconds)."""
    return _rows(c, _stuck_page_steps(column, prerequisite), params)


# --- submit, as the external API does ------------------------------------------------------------

def insert_story(c: Connection, email: str, object_key: str, filename: str, content_type: str,
                 name: str, age: int, theme: str) -> str:
    """The user (by email, created if new), an uploaded local photo at ``object_key`` and a pending
    story of it. Returns the story id."""
    user = c.execute(text(
        """INSERT INTO users (email) VALUES (:e)
           ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id"""), {"e": email}).scalar()
    photo_id = c.execute(text(
        """INSERT INTO photos (user_id, storage_provider, object_key, filename, content_type, status)
           VALUES (:u, 'local', :k, :f, :ct, 'uploaded') RETURNING id"""),
        {"u": user, "k": object_key, "f": filename, "ct": content_type}).scalar()
    return str(c.execute(text(
        """INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id)
           VALUES (:u, :n, :a, :t, :p) RETURNING id"""),
        {"u": user, "n": name, "a": age, "t": theme, "p": photo_id}).scalar())


# --- one story, for people -----------------------------------------------------------------------

def story_report(c: Connection, story_id: str, page_columns: dict[str, str]) -> dict[str, Any] | None:
    """What ``storycreator status <story>`` shows, or None when there is no such story:
    ``{"story": row, "pages": [...], "errors": [...], "jobs": [...]}``.

    ``story``: id, status, title, error_message, child_age, story_theme, updated_at,
    account_in_flight (how many other stories of its account are in flight: a pending story waits
    for a slot at USER_STORIES_IN_FLIGHT), protagonist_face, and its photo's photo_id,
    photo_status (upload: 'pending_upload', 'uploaded', ...) and photo_analysis
    (ai_processing_status, None read as 'pending').
    ``pages``: page_number, updated_at and, per ``page_columns`` (stage name -> story_pages status
    column, from the story flow's table; ValueError for any other column), the stage's status
    under the stage's name, in page order. ``errors``: the story's and its photo's step_errors
    (stage, page_number, permanent, message, created_at, and of_photo: true for the photo's own
    records), oldest first. ``jobs``: its remote jobs (page_number, stage, provider, external_id,
    status, recreation, error_message, created_at), oldest first."""
    story = c.execute(text(
        f"""SELECT s.id, s.status, s.title, s.error_message, s.child_age, s.story_theme, s.updated_at,
                  {in_flight(excluding="s.id")} AS account_in_flight,
                  o.protagonist_face, ph.id AS photo_id, ph.status AS photo_status,
                  COALESCE(ph.ai_processing_status, 'pending') AS photo_analysis
             FROM stories s LEFT JOIN story_outlines o ON o.story_id = s.id
                  LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
            WHERE s.id = :s"""), {"s": story_id}).mappings().first()
    if story is None:
        return None
    return {"story": dict(story), "pages": page_statuses(c, story_id, page_columns),
            "errors": [dict(e) for e in c.execute(text(
                """SELECT e.stage, p.page_number, e.permanent, e.message, e.created_at,
                          e.photo_id IS NOT NULL AS of_photo
                     FROM step_errors e LEFT JOIN story_pages p ON p.id = e.page_id
                    WHERE e.story_id = :s
                       OR e.photo_id = (SELECT protagonist_photo_id FROM stories WHERE id = :s)
                    ORDER BY e.created_at"""), {"s": story_id}).mappings()],
            "jobs": [dict(j) for j in c.execute(text(
                """SELECT p.page_number, j.stage, j.provider, j.external_id, j.status, j.recreation,
                          j.error_message, j.created_at
                     FROM provider_jobs j JOIN story_pages p ON p.id = j.page_id
                    WHERE p.story_id = :s ORDER BY j.created_at"""), {"s": story_id}).mappings()]}


def page_statuses(c: Connection, story_id: str, page_columns: dict[str, str]) -> list[dict[str, Any]]:
    """The story's pages in order: page_number, updated_at and each stage's status under its name
    (``page_columns``: stage name -> story_pages status column; ValueError for any other column or
    a name that is not an identifier). NULL statuses are returned as None (waiting)."""
    cols = ", ".join(f"{page_column(col)} AS {_name(stage)}" for stage, col in page_columns.items())
    return [dict(r) for r in c.execute(text(
        f"""SELECT page_number, {cols}, updated_at FROM story_pages
             WHERE story_id = :s ORDER BY page_number"""), {"s": story_id}).mappings()]


def story_progress(c: Connection, story_id: str, page_columns: dict[str, str]) -> dict[str, Any] | None:
    """A story as its progress is watched (the demo): ``{"story": {status, title, error_message},
    "photo_status": its photo's ai_processing_status (None while pending), "pages":
    page_statuses(...)}``, or None when there is no such story."""
    story = c.execute(text("SELECT status, title, error_message FROM stories WHERE id = :s"),
                      {"s": story_id}).mappings().first()
    if story is None:
        return None
    photo = c.execute(text(
        """SELECT ph.ai_processing_status FROM photos ph JOIN stories s ON s.protagonist_photo_id = ph.id
            WHERE s.id = :s"""), {"s": story_id}).scalar()
    return {"story": dict(story), "photo_status": photo, "pages": page_statuses(c, story_id, page_columns)}


def _name(stage: str) -> str:
    """A stage name fit to be a column alias (an identifier); ValueError otherwise."""
    if not stage.isidentifier():
        raise ValueError(f"{stage!r} is not a stage name")
    return stage


# --- the whole picture ---------------------------------------------------------------------------

def summary(c: Connection, counted: dict[str, tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Counts per stage and status: {"story": {"completed": 3, ...}, ...}. ``counted``: key ->
    (table, status column), from the flow's table (ValueError for a table or column that is not
    in db/models.py); a NULL status counts as pending."""
    out: dict[str, dict[str, int]] = {}
    for key, (table, column) in counted.items():
        t, col = _status_column(table, column)
        out[key] = {str(k): int(v) for k, v in c.execute(text(
            f"SELECT COALESCE({col}, 'pending'), count(*) FROM {t} GROUP BY 1")).all()}
    return out


def _status_column(table: str, column: str) -> tuple[str, str]:
    """(table, column) when db/models.py declares that column of that table; ValueError otherwise."""
    t = Base.metadata.tables.get(table)
    if t is None or column not in t.columns:
        raise ValueError(f"{table}.{column} is not a column of the schema (db/models.py)")
    return table, column
