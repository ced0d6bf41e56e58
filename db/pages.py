"""Page step transitions (story_pages' three status columns, text -> image -> personalization):
the claim that returns all a step needs, why a claim failed, completion, failure and release.
Each one guarded statement (see db/claims.py), sent on the pool's DBAPI connection with a plain
psycopg2 cursor (db.engine.first_row: the page steps are 36 of a 12-page story's 38 steps).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.claims import Stage, claim_sets, claimable, held
from db.engine import first_row
from db.models import StoryPage
from db.stories import REFUSALS, photo_refusal

# The story_pages status columns (db/models.py StoryPage: each ``*_status`` column, one per page
# step). The flow itself (which step moves which column, and which column must be completed
# first) is declared once in pipeline/stories/stages.py; callers pass its columns here by name,
# and every statement checks them against this set, so no SQL is built from unchecked text.
PAGE_STATUS_COLUMNS: frozenset[str] = frozenset(
    c.name for c in StoryPage.__table__.columns if c.name.endswith("_status"))
PageColumn = str  # one of PAGE_STATUS_COLUMNS


def page_column(col: str) -> str:
    """``col`` itself when it is a story_pages status column (PAGE_STATUS_COLUMNS); raises
    ValueError otherwise (a column name is about to become SQL text)."""
    if col not in PAGE_STATUS_COLUMNS:
        raise ValueError(f"{col!r} is not a story_pages status column (one of {sorted(PAGE_STATUS_COLUMNS)})")
    return col


def _prerequisite(col: str | None) -> str | None:
    return None if col is None else page_column(col)


@dataclass(frozen=True)
class PageClaim:
    """A claimed page step and everything it needs, read by the claim's own statement."""

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
    character: dict[str, Any] | None = None  # the story's face's profile (photos.character_profile)
    token: int = 0  # the claim's fencing token: every later write of the step names it
    takeovers: int = 0  # claims taken from a silent holder since the step last completed
    revision: int = 1  # the revision this step makes (story_pages.revision; >1: a redone page)
    hint: str = ""  # a redo's hint from the parent (story_pages.redo_hint): data, never instructions


def claim_page(conn: Connection, page_id: str, col: PageColumn, lease: float, *,
               prerequisite: PageColumn | None, with_photo: bool = False, held: int | None = None) -> PageClaim | None:
    """Claim one page step (status column ``col``, pending -> processing, or a processing claim
    older than ``lease`` seconds) once its ``prerequisite`` column is completed (None: the page's
    first step), in one round trip that also returns all the step needs; ``with_photo``: also
    the story's protagonist photo and face choice (the personalization), failing the story
    instead when its photo is refused (db.stories.photo_refusal); ``held``: the token of the claim
    the caller's message held when the database went away (resumed at once, not a takeover).
    None when not claimed.
    Raises ValueError for a column that is not a story_pages status column."""
    col, prereq = page_column(col), _prerequisite(prerequisite)
    row = first_row(conn, _claim_sql(col, prereq, with_photo),
                    {"id": page_id, "lease": lease, "held": held, **(REFUSALS if with_photo else {})})
    if row is None:
        return None
    photo = (
        {k: row[k] for k in ("storage_provider", "bucket", "object_key", "face_details")}
        if with_photo
        else None
    )
    return PageClaim(
        page_id=str(row["id"]), story_id=str(row["story_id"]), page_number=row["page_number"],
        child_name=row["child_name"], child_age=row["child_age"], story_theme=row["story_theme"],
        title=row["title"], style=row["style"], beats=list(row["beats"]), text=row["text"],
        base_image_key=row["base_image_key"], photo=photo,
        protagonist_face=row["protagonist_face"] if with_photo else None,
        token=int(row["claim_token"]), takeovers=int(row["takeovers"]),
        revision=int(row["revision"]), hint=row["redo_hint"] or "",
        character=_chosen_profile(row["character_profile"]),
    )


@functools.lru_cache(maxsize=64)
def _claim_sql(col: str, prereq: str | None, with_photo: bool) -> str:
    """The claim statement of :func:`claim_page` (``:name`` binds), built once per step kind."""
    prereq_sql = f"AND p.{prereq} = 'completed'" if prereq else ""
    # Only the story's own, live photo is ever handed to the step (its face is cropped and
    # sent on); a story whose photo is not (another user's, deleted, upload failed) is failed
    # by the same statement, and the page is not claimed.
    photo_join = (f"JOIN photos ph ON ph.id = s.protagonist_photo_id AND {photo_refusal()} IS NULL"
                  if with_photo else "")
    photo_cols = (
        ", ph.storage_provider, ph.bucket, ph.object_key, ph.face_details, o.protagonist_face" if with_photo else ""
    )
    refuse = f"""
            WITH refused AS (
                UPDATE stories s SET status = 'failed', error_message = {photo_refusal()}
                  FROM story_pages rp, photos ph
                 WHERE rp.id = :id AND s.id = rp.story_id AND ph.id = s.protagonist_photo_id
                   AND s.status = 'processing' AND {photo_refusal()} IS NOT NULL
                RETURNING s.id, s.error_message
            ), refusal_logged AS (
                INSERT INTO step_errors (story_id, page_id, stage, permanent, message)
                SELECT id, CAST(:id AS uuid), 'personalization', true, error_message FROM refused
            )""" if with_photo else ""
    claimable_sql = claimable(f"p.{col}", "p.updated_at", "p.claim_token")
    # The character profiles of the story's photo and which face the story uses (the start's
    # choice; a story started before choices were recorded: the photo's primary face), for every
    # page step alike: the same child on every page (picked in Python: a malformed index must not
    # make the claim itself fail). Only the story's own user's photo.
    character_sql = """(SELECT jsonb_build_object('profiles', cp.character_profile -> 'faces',
                                                  'chosen', o.protagonist_face -> 'index',
                                                  'primary', cp.face_details -> 'primary_face_index')
                          FROM photos cp WHERE cp.id = s.protagonist_photo_id AND cp.user_id = s.user_id)"""
    return (f"""{refuse}
            UPDATE story_pages p SET {claim_sets(col, "p")}
              FROM stories s JOIN story_outlines o ON o.story_id = s.id {photo_join}
             WHERE p.id = :id AND s.id = p.story_id AND s.status = 'processing'
               {prereq_sql} AND {claimable_sql}
            RETURNING p.id, p.story_id, p.page_number, p.text, p.base_image_key, p.claim_token, p.takeovers,
                      p.revision, p.redo_hint,
                      s.child_name, s.child_age, s.story_theme, o.title, o.style, o.beats{photo_cols},
                      {character_sql} AS character_profile
            """)


def _chosen_profile(found: Any) -> dict[str, Any] | None:
    """The profile of the story's face from ``{"profiles", "chosen", "primary"}`` (claim_page's
    character_sql), or None (no profile, no face, an index that is not one)."""
    if not isinstance(found, dict) or not isinstance(found.get("profiles"), list):
        return None
    for index in (found.get("chosen"), found.get("primary")):
        if isinstance(index, int) and not isinstance(index, bool):
            profiles = found["profiles"]
            chosen = profiles[index] if 0 <= index < len(profiles) else None
            return chosen if isinstance(chosen, dict) else None
    return None


def page_state(conn: Connection, page_id: str, col: PageColumn, *,
               prerequisite: PageColumn | None) -> Mapping[str, Any] | None:
    """Why a page step (status column ``col``, after column ``prerequisite`` or None) was not
    claimed: its status, its prerequisite's (``prereq_status``), the story's (``story_status``),
    ``story_id``, ``page_number``, ``revision`` and ``age`` (interval since the page row moved); None when there
    is no such page. Raises ValueError for a column that is not a story_pages status column."""
    col, prereq = page_column(col), _prerequisite(prerequisite)
    return first_row(
        conn,
        f"""
            SELECT p.story_id, p.page_number, COALESCE(p.{col}, 'pending') AS status,
                   {f"COALESCE(p.{prereq}, 'pending')" if prereq else "'completed'"} AS prereq_status,
                   s.status AS story_status, now() - p.updated_at AS age, p.revision
              FROM story_pages p JOIN stories s ON s.id = p.story_id
             WHERE p.id = :id
            """,
        {"id": page_id},
    )


def complete_page(conn: Connection, page_id: str, col: PageColumn, values: dict[str, Any], token: int) -> bool:
    """processing -> completed with the step's result columns (text or an image key), only for the
    holder of claim ``token`` (the fencing token its claim returned); False when the column was not
    processing under that token (another copy finished it, or took the claim over). Raises
    ValueError for a column that is not a story_pages status column."""
    col = page_column(col)
    allowed = {"text", "base_image_key", "personalized_image_key"}
    assert set(values) <= allowed, values
    sets = ", ".join(f"{k} = :{k}" for k in values)
    return first_row(
        conn,
        f"""
            UPDATE story_pages SET {sets}, {col} = 'completed', takeovers = 0
             WHERE id = :id AND {held(col)} RETURNING id
            """,
        {"id": page_id, "token": token, **values},
    ) is not None


def fail_page(
    conn: Connection, page_id: str, col: PageColumn, stage: Stage, message: str,
    story_message: str, attempt: int, task_id: str | None, token: int,
) -> bool:
    """processing -> failed, and the story failed with the page's reason, in one statement, only
    for the holder of claim ``token``; False when the column was not processing under that token
    (a stale holder's failure must not fail a page another holder is finishing). Raises
    ValueError for a column that is not a story_pages status column."""
    col = page_column(col)
    return first_row(
        conn,
        f"""
            WITH p AS (
                UPDATE story_pages SET {col} = 'failed'
                 WHERE id = :id AND {held(col)} RETURNING id, story_id, page_number
            ), s AS (
                UPDATE stories SET status = 'failed', error_message = :story_msg
                 WHERE id = (SELECT story_id FROM p) AND status IN ('pending', 'processing')
                RETURNING id
            )
            INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
            SELECT story_id, id, :stage, true, :msg, :attempt, :task FROM p
            RETURNING page_id
            """,
        {"id": page_id, "msg": message, "story_msg": story_message, "stage": stage,
         "attempt": attempt, "task": task_id, "token": token},
    ) is not None


def release_page(
    conn: Connection, page_id: str, col: PageColumn, stage: Stage, message: str | None,
    attempt: int, task_id: str | None, token: int,
) -> bool:
    """processing -> pending after a transient error, recording the attempt (no record when
    ``message`` is None: the step only waits for a quota, nothing failed), only for the holder of
    claim ``token``; False when it no longer holds it (nothing written). Raises ValueError for a
    column that is not a story_pages status column."""
    col = page_column(col)
    return first_row(
        conn,
        f"""
            WITH p AS (
                UPDATE story_pages SET {col} = 'pending'
                 WHERE id = :id AND {held(col)} RETURNING id, story_id
            ), e AS (
                INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
                SELECT story_id, id, :stage, false, :msg, :attempt, :task FROM p
                 WHERE CAST(:msg AS text) IS NOT NULL
            )
            SELECT id FROM p
            """,
        {"id": page_id, "msg": message, "stage": stage, "attempt": attempt, "task": task_id, "token": token},
    ) is not None



def holds(conn: Connection, page_id: str, col: PageColumn, token: int) -> bool:
    """Does claim ``token`` still hold page step ``col`` (processing under that token)? Asked just
    before a step writes its artefact to storage, which cannot check a fencing token itself: a
    holder that paused past its lease and woke finds it has lost the step before overwriting the
    new holder's picture. ValueError for a column that is not a story_pages status column."""
    col = page_column(col)
    return first_row(conn, f"SELECT 1 AS held FROM story_pages WHERE id = :id AND {held(col)}",
                     {"id": page_id, "token": token}) is not None


def page_story(conn: Connection, page_id: str) -> str | None:
    """The id of page ``page_id``'s story (None: no such page)."""
    row = conn.execute(text("SELECT story_id FROM story_pages WHERE id = :id"), {"id": page_id}).first()
    return str(row[0]) if row is not None else None
