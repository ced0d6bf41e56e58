"""Operator actions on the pipeline's rows. Every change is a guarded transition (only failed
steps go back to pending; completed work is kept), and tasks are enqueued after commit."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from db.engine import transaction


@dataclass
class RetryPlan:
    story_id: str
    ok: bool
    message: str
    reset_pages: int = 0
    reset_photo: bool = False


def retry_story(story_id: str, *, force: bool = False, dry_run: bool = False) -> RetryPlan:
    """failed story -> pending, its failed steps -> pending, then stories.generate again."""
    with transaction() as c:
        row = c.execute(text(
            """SELECT s.status, s.error_message, p.id AS photo_id, p.ai_processing_status AS photo_status,
                      p.ai_error_message, p.updated_at > COALESCE(
                        (SELECT max(created_at) FROM step_errors e WHERE e.photo_id = p.id), '-infinity')
                        AS photo_changed
                 FROM stories s JOIN photos p ON p.id = s.protagonist_photo_id
                WHERE s.id = :id FOR UPDATE OF s"""), {"id": story_id}).mappings().first()
        if row is None:
            return RetryPlan(story_id, False, "no such story")
        if row["status"] != "failed":
            return RetryPlan(story_id, False, f"story is {row['status']}, not failed: nothing to retry")
        photo_failed = row["photo_status"] == "failed"
        if photo_failed and not force and not row["photo_changed"] and "face" in (row["ai_error_message"] or ""):
            return RetryPlan(story_id, False,
                             f"not retried: the photo failed for a reason a retry cannot fix "
                             f"({row['ai_error_message']}); upload a new photo, or use --force")
        if dry_run:
            n = c.execute(text(
                """SELECT count(*) FROM story_pages WHERE story_id = :id AND 'failed' IN
                   (text_generation_status, image_generation_status, personalization_status)"""),
                {"id": story_id}).scalar() or 0
            return RetryPlan(story_id, True, "would retry", int(n), photo_failed)
        if photo_failed:
            c.execute(text("""UPDATE photos SET ai_processing_status = 'pending', ai_error_message = NULL
                              WHERE id = :p AND ai_processing_status = 'failed'"""), {"p": row["photo_id"]})
        n = c.execute(text(
            """UPDATE story_pages SET
                   text_generation_status = CASE WHEN text_generation_status = 'failed' THEN 'pending'
                                                 ELSE text_generation_status END,
                   image_generation_status = CASE WHEN image_generation_status = 'failed' THEN 'pending'
                                                  ELSE image_generation_status END,
                   personalization_status = CASE WHEN personalization_status = 'failed' THEN 'pending'
                                                 ELSE personalization_status END
             WHERE story_id = :id AND 'failed' IN
                   (text_generation_status, image_generation_status, personalization_status)"""),
            {"id": story_id}).rowcount
        c.execute(text("""UPDATE stories SET status = 'pending', error_message = NULL
                          WHERE id = :id AND status = 'failed'"""), {"id": story_id})
    from workers.tasks import generate_story

    generate_story.apply_async(kwargs={"story_id": story_id})
    return RetryPlan(story_id, True, "retried", n, photo_failed)
