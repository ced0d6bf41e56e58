"""Redoing one page of a completed story (README "Redoing a page"; pipeline/stories/redo.py): the
request rows (page_redos), the start of a revision, and its two ends, completed (the new book) or
failed (the page's previous version put back, the story completed again, as it was).

The start is one transaction on the story's row lock (``FOR UPDATE``), so two redo requests for one
story, or a redo and anything else that moves the story, are decided one after the other. The ends
are guarded like every step's write: the page step's claim token (a failure) or the completion's
``finish_token`` (the book), so a stale worker ends nothing. Nothing here ever fails a story: a
redo that cannot finish leaves the completed book the parent already had.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.claims import held
from db.pages import page_column
from db.stories import REFUSALS, photo_refusal

# The page's values a redo replaces, kept in story_pages.previous until the redo ends.
_SAVE_PREVIOUS = ("jsonb_build_object('text', p.text, 'base_image_key', p.base_image_key, "
                  "'personalized_image_key', p.personalized_image_key, 'revision', p.revision, "
                  "'hint', p.redo_hint)")
_RESTORE = """text = sp.previous->>'text', base_image_key = sp.previous->>'base_image_key',
              personalized_image_key = sp.previous->>'personalized_image_key',
              revision = CAST(sp.previous->>'revision' AS integer), redo_hint = sp.previous->>'hint',
              text_generation_status = 'completed', image_generation_status = 'completed',
              personalization_status = 'completed', previous = NULL, takeovers = 0"""


@dataclass(frozen=True)
class RedoRequest:
    """One ``stories.redo_page`` call, validated: the story, the page (by id or number), the stage
    the page is made again from, the hint (already checked: None when there is none), the caller's
    idempotency key (None: derived), the Celery task id, and ``refusal``: the parent's message when
    the request itself is refused (a hint too long or unprintable) before the story is looked at."""

    story_id: str
    page_id: str | None
    page_number: int | None
    from_stage: str
    hint: str | None
    request_id: str | None
    task_id: str | None
    refusal: str | None = None


def _auto_key(req: RedoRequest, page_id: str, base_revision: int) -> str:
    """A request without a ``request_id``: the same page, stage and hint asked for against the same
    revision of the story is the same request (a duplicate message)."""
    hint = hashlib.sha256((req.hint or "").encode()).hexdigest()[:16]
    return f"auto:{page_id}:{req.from_stage}:{hint}:r{base_revision}"


def _refusal(story: RowMapping, page: RowMapping | None, used: int, limit: int) -> str | None:
    """Why this redo may not run (the parent's message), or None."""
    if story["status"] != "completed":
        if story["redo_id"] is not None:
            return ("Another page of this story is being redone right now. Please wait until it is "
                    "finished, then ask again.")
        if story["status"] == "failed":
            return "This story could not be finished, so its pages cannot be redone. Please start the story again."
        return "This story is still being made. Pages can be redone once the whole story is finished."
    if page is None:
        return "This story has no such page."
    if "failed" in page["statuses"]:
        return (f"Page {page['page_number']} could not be made, so it cannot be redone. "
                "Please contact us so we can make it again.")
    if any(s != "completed" for s in page["statuses"]):
        return f"Page {page['page_number']} is still being made. Please wait until it is finished, then ask again."
    if story["photo_refusal"] is not None:
        return story["photo_refusal"]
    if used >= limit:
        return (f"This story has already been changed {used} time{'s' if used != 1 else ''}, the most we can "
                "do for one story. The current version of the book is kept.")
    return None


def start_redo(c: Connection, req: RedoRequest, *, limit: int, stage_columns: list[str]) -> RowMapping | None:
    """Record the request and, unless refused, start the revision, in the caller's transaction.

    ``stage_columns``: the page's status columns from ``req.from_stage`` on (the story flow's,
    pipeline/stories/stages.py), set back to pending. Started: the story goes ``processing`` with
    its ``revision`` one more and ``redo_id`` set; the page keeps its current values in
    ``previous``, takes the hint and the new revision; the completion's claim is cleared; paid
    orders whose print job was not sent yet have their print files set to be made again (under a
    new claim token: a print-files run in flight writes nothing), so they print the new version.
    Returns the page_redos row (``id, status, message, page_id, page_number, revision``) plus
    ``duplicate`` (this request was already recorded: nothing done now); None: no such story.
    A ``request_id`` whose earlier request was refused is not a duplicate when it comes back in a
    new message (another Celery task id): nothing ran, so it is decided again now."""
    for col in stage_columns:
        page_column(col)
    story = c.execute(text(f"""
        SELECT s.id, s.status, s.revision, s.redo_id, {photo_refusal()} AS photo_refusal
          FROM stories s LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
         WHERE s.id = :id FOR UPDATE OF s"""), {"id": req.story_id, **REFUSALS}).mappings().first()
    if story is None:
        return None
    page = c.execute(text("""
        SELECT id, page_number, ARRAY[COALESCE(text_generation_status, 'pending'),
                                      COALESCE(image_generation_status, 'pending'),
                                      COALESCE(personalization_status, 'pending')] AS statuses
          FROM story_pages WHERE story_id = :story
           AND (id = CAST(:page AS uuid) OR (CAST(:page AS uuid) IS NULL AND page_number = :n))"""),
        {"story": req.story_id, "page": req.page_id, "n": req.page_number}).mappings().first()
    running = c.execute(text("SELECT revision FROM page_redos WHERE id = :r"),
                        {"r": story["redo_id"]}).scalar() if story["redo_id"] else None
    base = int(running) - 1 if running else int(story["revision"])
    key = req.request_id or (_auto_key(req, str(page["id"]), base) if page is not None else None)
    found = c.execute(text("""
        SELECT id, status, message, page_id, page_number, revision, true AS duplicate, task_id FROM page_redos
         WHERE story_id = :story AND (request_key = :key OR (CAST(:task AS text) IS NOT NULL AND task_id = :task))
         ORDER BY created_at LIMIT 1"""), {"story": req.story_id, "key": key, "task": req.task_id}).mappings().first()
    if (found is not None and found["status"] == "refused" and req.request_id
            and (req.task_id is None or found["task_id"] != req.task_id)):
        # A refused request ran nothing ("…then ask again."): the same request_id sent again later,
        # as a new message, is decided afresh; the refusal stays recorded under a key of its own.
        c.execute(text("UPDATE page_redos SET request_key = 'refused:' || id || ':' || request_key WHERE id = :id"),
                  {"id": found["id"]})
        found = None
    if found is not None:
        return found
    used = int(c.execute(text("SELECT count(*) FROM page_redos WHERE story_id = :s AND status IN "
                              "('running', 'completed')"), {"s": req.story_id}).scalar() or 0)
    refusal = req.refusal or _refusal(story, page, used, limit)
    if refusal is not None and not req.request_id:
        key = f"refused:{req.task_id or ''}:{key or ''}:{hashlib.sha256(refusal.encode()).hexdigest()[:8]}"
        key += f":{c.execute(text('SELECT gen_random_uuid()')).scalar()}"  # a refusal is never a duplicate
    row = c.execute(text("""
        INSERT INTO page_redos (story_id, page_id, page_number, from_stage, hint, request_key, task_id, status, message)
        VALUES (:story, :page, :n, :stage, :hint, :key, :task, :status, :msg)
        RETURNING id, status, message, page_id, page_number, revision, false AS duplicate"""),
        {"story": req.story_id, "page": page["id"] if page is not None else None,
         "n": page["page_number"] if page is not None else req.page_number, "stage": req.from_stage,
         "hint": req.hint, "key": key, "task": req.task_id,
         "status": "refused" if refusal else "running", "msg": refusal}).mappings().one()
    if refusal is not None:
        return row
    assert page is not None
    sets = ", ".join(f"{col} = 'pending'" for col in stage_columns)
    revision = c.execute(text("""
        UPDATE stories SET status = 'processing', revision = revision + 1, redo_id = :redo, error_message = NULL
         WHERE id = :story RETURNING revision"""), {"story": req.story_id, "redo": row["id"]}).scalar()
    c.execute(text(f"""
        UPDATE story_pages p SET previous = {_SAVE_PREVIOUS}, redo_hint = :hint, revision = :rev, {sets}, takeovers = 0
         WHERE id = :page"""), {"page": page["id"], "hint": req.hint, "rev": revision})
    c.execute(text("UPDATE story_outlines SET finish_claimed_at = NULL, finish_takeovers = 0 WHERE story_id = :s"),
              {"s": req.story_id})
    c.execute(text("""
        UPDATE order_steps f SET status = 'pending', claim_token = f.claim_token + 1, takeovers = 0
          FROM orders o
         WHERE f.order_id = o.id AND f.step = 'print_files' AND o.story_id = :s AND o.status = 'paid'
           AND o.pod_order_id IS NULL
           AND NOT EXISTS (SELECT 1 FROM order_steps j WHERE j.order_id = o.id AND j.step = 'print_job')"""),
              {"s": req.story_id})
    return c.execute(text("""
        UPDATE page_redos SET revision = :rev WHERE id = :id
        RETURNING id, status, message, page_id, page_number, revision, false AS duplicate"""),
        {"rev": revision, "id": row["id"]}).mappings().one()


def fail_revision_page(c: Connection, page_id: str, col: str, stage: str, message: str, attempt: int,
                       task_id: str | None, token: int) -> bool:
    """A page step of a running redo failed (``message``: "Page N (label): reason"): only for the
    holder of claim ``token`` on status column ``col``, the page gets its previous text, keys,
    revision and statuses back, the story is completed again (its book never changed), the redo
    row says why, and the failure is recorded in step_errors. False: the page is not in a running
    redo, or the claim is no longer ``token``'s (nothing written: the caller fails it as usual, or
    stops). ValueError for a column that is not a story_pages status column."""
    col = page_column(col)
    return c.execute(text(f"""
        WITH p AS (
            UPDATE story_pages sp SET {_RESTORE}
              FROM stories s
             WHERE sp.id = :id AND {held(col, "sp")} AND s.id = sp.story_id AND s.status = 'processing'
               AND s.redo_id IS NOT NULL AND sp.previous IS NOT NULL
            RETURNING sp.id, sp.story_id, s.redo_id
        ), s AS (
            UPDATE stories SET status = 'completed', redo_id = NULL WHERE id = (SELECT story_id FROM p) RETURNING id
        ), r AS (
            UPDATE page_redos SET status = 'failed', message = :why WHERE id = (SELECT redo_id FROM p)
        ), e AS (
            INSERT INTO step_errors (story_id, page_id, stage, permanent, message, attempt, task_id)
            SELECT story_id, id, :stage, true, :msg, :attempt, :task FROM p
        )
        SELECT id FROM p"""),
        {"id": page_id, "token": token, "stage": stage, "msg": message, "why": failed_message(message),
         "attempt": attempt, "task": task_id}).first() is not None


def fail_revision_finish(c: Connection, story_id: str, message: str, finish_token: int, *, attempt: int = 0,
                         task_id: str | None = None) -> bool:
    """The book of a running redo could not be made: under the completion's claim ``finish_token``,
    the redone page gets its previous version back and the story is completed again with the book
    it had (book_pdf_key / book_html_key never moved), the redo row says why. False: the story is
    not in a running redo, or the completion is no longer this token's."""
    return c.execute(text(f"""
        WITH cur AS (
            SELECT s.id, s.redo_id, r.page_id FROM stories s
              JOIN page_redos r ON r.id = s.redo_id JOIN story_outlines o ON o.story_id = s.id
             WHERE s.id = :id AND s.status = 'processing' AND o.finish_token = :token
        ), p AS (
            UPDATE story_pages sp SET {_RESTORE} FROM cur WHERE sp.id = cur.page_id AND sp.previous IS NOT NULL
        ), s AS (
            UPDATE stories SET status = 'completed', redo_id = NULL WHERE id = (SELECT id FROM cur) RETURNING id
        ), o AS (
            UPDATE story_outlines SET finish_claimed_at = NULL, finish_takeovers = 0
             WHERE story_id = (SELECT id FROM s)
        ), r AS (
            UPDATE page_redos SET status = 'failed', message = :why WHERE id = (SELECT redo_id FROM cur)
        ), e AS (
            INSERT INTO step_errors (story_id, stage, permanent, message, attempt, task_id)
            SELECT id, 'finish', true, :msg, :attempt, :task FROM s
        )
        SELECT id FROM s"""),
        {"id": story_id, "token": finish_token, "msg": message, "why": failed_message(message),
         "attempt": attempt, "task": task_id}).first() is not None


def failed_message(reason: str) -> str:
    """The parent's message for a redo that failed with ``reason``."""
    return f"The page could not be redone: {reason} The previous version of the page and the book are kept."


def book_made(c: Connection, story_id: str, pdf_key: str, html_key: str) -> RowMapping | None:
    """Inside the transaction that completed the story (db.stories.complete_story returned True):
    the book's keys recorded, and a running redo completed (its page's previous version let go,
    ``redo_id`` cleared). Returns the redo row completed (``id, page_id, revision``), or None."""
    return c.execute(text("""
        WITH cur AS (
            SELECT redo_id FROM stories WHERE id = :id
        ), s AS (
            UPDATE stories SET book_pdf_key = :pdf, book_html_key = :html, redo_id = NULL
             WHERE id = :id AND status = 'completed' RETURNING id
        ), p AS (
            UPDATE story_pages SET previous = NULL
             WHERE id = (SELECT page_id FROM page_redos WHERE id = (SELECT redo_id FROM cur))
               AND EXISTS (SELECT 1 FROM s)
        )
        UPDATE page_redos SET status = 'completed', message = NULL
         WHERE id = (SELECT redo_id FROM cur) AND status = 'running' AND EXISTS (SELECT 1 FROM s)
        RETURNING id, page_id, revision"""), {"id": story_id, "pdf": pdf_key, "html": html_key}).mappings().first()


def orders_to_print_again(c: Connection, story_id: str) -> list[str]:
    """Paid orders of the story whose print files are to be made again (set pending by a redo's
    start) and whose print job was not sent: their ``orders.prepare_print`` is due now that the
    story is completed again."""
    return [str(r[0]) for r in c.execute(text("""
        SELECT o.id FROM orders o JOIN order_steps f ON f.order_id = o.id AND f.step = 'print_files'
         WHERE o.story_id = :s AND o.status = 'paid' AND o.pod_order_id IS NULL AND f.status = 'pending'
           AND NOT EXISTS (SELECT 1 FROM order_steps j WHERE j.order_id = o.id AND j.step = 'print_job')"""),
        {"s": story_id})]


def story_redos(c: Connection, story_id: str) -> list[dict[str, Any]]:
    """The story's redo requests, oldest first: page_number, from_stage, hint, status, message,
    revision, created_at (``storycreator status``)."""
    return [dict(r) for r in c.execute(text("""
        SELECT page_number, from_stage, hint, status, message, revision, created_at FROM page_redos
         WHERE story_id = :s ORDER BY created_at"""), {"s": story_id}).mappings()]


def story_revision(c: Connection, story_id: str) -> dict[str, Any] | None:
    """The story's revision, running redo (``redo_id``) and current book keys (``book_pdf_key``,
    ``book_html_key``; NULL for a book made before they were recorded), and its redo requests
    (``redos``, :func:`story_redos`); None: no such story."""
    row = c.execute(text("SELECT revision, redo_id, book_pdf_key, book_html_key FROM stories WHERE id = :s"),
                    {"s": story_id}).mappings().first()
    return None if row is None else {**row, "redos": story_redos(c, story_id)}
