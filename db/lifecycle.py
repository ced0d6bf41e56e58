"""SQL of personal data's lifecycle (schema.sql's "Personal data" section; README "Personal data"):
the queue of stored objects to delete (``storage_deletions``, filled by the files-follow-rows
triggers) and the retention periods' batches.

Every function takes ``now`` (a timezone-aware datetime, or None for the database's ``now()``):
tests move time forward by passing it, the sweeper passes None. Batches are claimed with
``FOR UPDATE SKIP LOCKED`` on index-backed queries (ix_storage_deletions_not_before,
ix_photos_retention, ix_stories_retention), so two sweepers, or a sweeper and ``forget``, never
take the same rows and a batch costs the same however large the tables are.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

_NOW = "COALESCE(CAST(:now AS timestamptz), now())"
# Orders still being paid for, printed or shipped: their story's files and photo are kept.
ORDERS_IN_FLIGHT = ("pending_payment", "paid", "fulfilled")
_IN_FLIGHT = "o.status IN ('pending_payment', 'paid', 'fulfilled')"


# --- the deletion queue -------------------------------------------------------------------------

# Due rows claimed (params n, lease, now): on ix_storage_deletions_not_before, oldest first.
CLAIM_DELETIONS = f"""
    UPDATE storage_deletions d SET not_before = {_NOW} + make_interval(secs => :lease),
                                   attempts = d.attempts + 1
     WHERE d.id IN (SELECT id FROM storage_deletions WHERE not_before <= {_NOW}
                     ORDER BY not_before, id LIMIT :n FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.storage, d.bucket, d.key, d.is_prefix, d.passes, d.attempts"""

def claim_deletions(c: Connection, limit: int, lease: float, now: datetime | None) -> list[RowMapping]:
    """Up to ``limit`` due rows (``not_before`` passed), oldest first, each claimed for ``lease``
    seconds (``not_before`` moved on, ``attempts`` + 1), so a drainer that dies leaves them due
    again after the lease. Keys: id, storage, bucket, key, is_prefix, passes, attempts."""
    return list(c.execute(text(CLAIM_DELETIONS), {"n": limit, "lease": lease, "now": now}).mappings())


def finish_deletions(c: Connection, ids: Sequence[int]) -> int:
    """The rows of deletions done for good removed; how many."""
    if not ids:
        return 0
    return int(c.execute(text("DELETE FROM storage_deletions WHERE id = ANY(:ids)"), {"ids": list(ids)}).rowcount)


def recheck_deletions(c: Connection, ids: Sequence[int], after: float, now: datetime | None) -> int:
    """Rows whose first deletion succeeded, due once more in ``after`` seconds (a late writer's
    file is deleted by the second pass); how many."""
    if not ids:
        return 0
    return int(c.execute(text(f"""
        UPDATE storage_deletions SET passes = passes + 1, attempts = 0, last_error = NULL,
                                     not_before = {_NOW} + make_interval(secs => :after)
         WHERE id = ANY(:ids)"""), {"ids": list(ids), "after": after, "now": now}).rowcount)


def fail_deletion(c: Connection, row_id: int, error: str, wait: float, now: datetime | None) -> None:
    """A deletion that failed: ``error`` (at most 500 characters kept) recorded, due again in
    ``wait`` seconds."""
    c.execute(text(f"""
        UPDATE storage_deletions SET last_error = left(:e, 500),
                                     not_before = {_NOW} + make_interval(secs => :wait)
         WHERE id = :id"""), {"id": row_id, "e": error, "wait": wait, "now": now})


def queue_counts(c: Connection, now: datetime | None = None) -> RowMapping:
    """The queue's size: ``queued`` rows in all, ``due`` now, ``failing`` (with a last error)."""
    row = c.execute(text(f"""
        SELECT count(*) AS queued, count(*) FILTER (WHERE not_before <= {_NOW}) AS due,
               count(*) FILTER (WHERE last_error IS NOT NULL) AS failing
          FROM storage_deletions"""), {"now": now}).mappings().first()
    assert row is not None
    return row


# --- retention ----------------------------------------------------------------------------------

_CUTOFF = f"{_NOW} - make_interval(secs => :days * 86400)"
# The batch of photos due (params days, n, now): on ix_photos_retention, oldest first.
DUE_PHOTOS = f"""
    SELECT p.id FROM photos p
     WHERE p.status <> 'deleted' AND p.updated_at < {_CUTOFF}
       AND NOT EXISTS (
            SELECT 1 FROM stories s
             WHERE s.protagonist_photo_id = p.id
               AND (s.status NOT IN ('completed', 'failed') OR s.updated_at >= {_CUTOFF}
                    OR EXISTS (SELECT 1 FROM orders o WHERE o.story_id = s.id AND {_IN_FLIGHT})))
     ORDER BY p.updated_at LIMIT :n FOR UPDATE OF p SKIP LOCKED"""
# The batch of stories due (params days, n, now): on ix_stories_retention, oldest first.
DUE_STORIES = f"""
    SELECT s.id FROM stories s
     WHERE s.files_deleted_at IS NULL AND s.status IN ('completed', 'failed') AND s.updated_at < {_CUTOFF}
       AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.story_id = s.id AND {_IN_FLIGHT})
     ORDER BY s.updated_at LIMIT :n FOR UPDATE OF s SKIP LOCKED"""

def expire_photos(c: Connection, days: float, limit: int, now: datetime | None) -> list[RowMapping]:
    """One batch of photos due under RETENTION_PHOTO_DAYS, in the caller's transaction: photos not
    yet deleted, unchanged for ``days`` days, whose every story finished (completed or failed)
    ``days`` ago or more and has no order in flight (ORDERS_IN_FLIGHT); a photo no story uses
    counts from its own last change. Each is made ``status='deleted'`` with its face data
    (``face_details`` and ``character_profile`` together, as db/photos.py clear_face_data does),
    labels, objects and original filename cleared, its stories' ``protagonist_face`` cleared, and
    its uploaded object queued for deletion. Returns the photos' ids (``id``)."""
    params: dict[str, Any] = {"days": days, "n": limit, "now": now}
    due = [r[0] for r in c.execute(text(DUE_PHOTOS), params)]
    if not due:
        return []
    ids = {"ids": due}
    c.execute(text("""
        INSERT INTO storage_deletions (storage, bucket, key, is_prefix, reason)
        SELECT storage_provider, bucket, object_key, false, 'retention' FROM photos WHERE id = ANY(:ids)"""), ids)
    c.execute(text("""
        UPDATE story_outlines o SET protagonist_face = NULL
          FROM stories s WHERE s.id = o.story_id AND s.protagonist_photo_id = ANY(:ids)
           AND o.protagonist_face IS NOT NULL"""), ids)
    return list(c.execute(text("""
        UPDATE photos SET status = 'deleted', face_details = NULL, character_profile = NULL,
                          detected_labels = NULL, detected_objects = NULL, filename = ''
         WHERE id = ANY(:ids) RETURNING id"""), ids).mappings())


def expire_stories(c: Connection, days: float, limit: int, now: datetime | None) -> list[RowMapping]:
    """One batch of stories due under RETENTION_BOOK_DAYS, in the caller's transaction: finished
    (completed or failed) ``days`` days ago or more, files not yet deleted, and no order in flight.
    Each becomes a tombstone: ``files_deleted_at`` set, ``child_name`` '' (the column is NOT NULL),
    title and book keys NULL; its pages (texts, keys, remote jobs), outline, redo requests (hints)
    and step errors deleted; its folder ``stories/<id>/`` (every revision's pictures and books)
    and its orders' print files ``orders/<id>/print/`` queued for deletion. Returns ``id`` each."""
    params: dict[str, Any] = {"days": days, "n": limit, "now": now}
    due = [r[0] for r in c.execute(text(DUE_STORIES), params)]
    if not due:
        return []
    ids: dict[str, Any] = {"ids": due, "now": now}
    # First the tombstone: the pages' trigger then leaves their folders to the story's prefix.
    gone = list(c.execute(text(f"""
        UPDATE stories SET files_deleted_at = {_NOW}, child_name = '', title = NULL,
                           book_pdf_key = NULL, book_html_key = NULL
         WHERE id = ANY(:ids) RETURNING id"""), ids).mappings())
    c.execute(text("""
        INSERT INTO storage_deletions (storage, key, is_prefix, reason)
        SELECT 'output', 'stories/' || id || '/', true, 'retention' FROM stories WHERE id = ANY(:ids)
        UNION ALL
        SELECT 'output', 'orders/' || id || '/print/', true, 'retention' FROM orders WHERE story_id = ANY(:ids)"""),
        ids)
    for table in ("page_redos", "step_errors", "story_outlines", "story_pages"):
        c.execute(text(f"DELETE FROM {table} WHERE story_id = ANY(:ids)"), ids)
    return gone
