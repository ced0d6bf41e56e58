"""``storycreator retry --story``: a failed story's failed steps back to pending, completed work
kept, then ``stories.generate`` again (which sends each unfinished page's chain)."""
from __future__ import annotations

from dataclasses import dataclass

from db import operations as q
from db.engine import transaction
from pipeline.kernel import publish
from pipeline.stories.stages import PAGE_STAGES, STORY

# The page steps' status columns, as the story flow declares them: the ones a retry resets.
PAGE_COLUMNS: tuple[str, ...] = tuple(s.status_column for s in PAGE_STAGES)


@dataclass
class RetryPlan:
    """What a retry did or would do: ``ok`` false with ``message`` saying why when refused."""

    story_id: str
    ok: bool
    message: str
    reset_pages: int = 0
    reset_photo: bool = False


def retry_story(story_id: str, *, force: bool = False, dry_run: bool = False) -> RetryPlan:
    """failed story -> pending, its failed steps -> pending, then stories.generate again (sent
    after the commit). Refused for a story that is not failed, whose photo is another user's
    (even with ``force``), or whose photo failed for a reason a retry cannot fix (no face),
    unless ``force`` or the photo changed since, or whose photo or files were deleted (retention,
    README "Personal data")."""
    with transaction() as c:
        row = q.lock_failed_story(c, story_id)
        if row is None:
            return RetryPlan(story_id, False, "no such story")
        if row["status"] != "failed":
            return RetryPlan(story_id, False, f"story is {row['status']}, not failed: nothing to retry")
        if not row["own_photo"]:
            # Never, not even with --force: the story would be made with another family's child
            # (and the reset below would touch that family's photo). The worker refuses it too.
            return RetryPlan(story_id, False,
                             f"not retried: the story's photo {row['photo_id']} belongs to another user; "
                             "the story must name one of its own user's photos")
        if row["files_deleted_at"] is not None or row["photo_deleted"]:
            # Retention (or the family's request) deleted what the story is made from: a retry
            # could only fail again (README "Personal data").
            what = "pictures and texts were" if row["files_deleted_at"] is not None else "photo was"
            return RetryPlan(story_id, False, f"not retried: the story's {what} deleted (README "
                                              "\"Personal data\"); the family must start a new story")
        photo_failed = row["photo_status"] == "failed"
        if photo_failed and not force and not row["photo_changed"] and "face" in (row["ai_error_message"] or ""):
            return RetryPlan(story_id, False,
                             f"not retried: the photo failed for a reason a retry cannot fix "
                             f"({row['ai_error_message']}); upload a new photo, or use --force")
        if dry_run:
            return RetryPlan(story_id, True, "would retry", q.count_failed_pages(c, story_id, PAGE_COLUMNS),
                             photo_failed)
        if photo_failed:
            q.reset_failed_photo(c, str(row["photo_id"]))
        n = q.reset_failed_story(c, story_id, PAGE_COLUMNS)
    publish.send(STORY["outline"].task, {"story_id": story_id})
    return RetryPlan(story_id, True, "retried", n, photo_failed)


def failed_stories(*, page: str | None = None, photo: str | None = None, since_seconds: float | None = None,
                   stage: str | None = None, theme: str | None = None, limit: int = 1000) -> list[str]:
    """Failed stories selected by a page, a photo, or by when/where they failed.

    A story is the unit of retry: retrying it resets all of its failed steps (a story with a
    failed page can only complete once every page does)."""
    with transaction() as c:
        return q.failed_stories(c, page=page, photo=photo, since_seconds=since_seconds, stage=stage,
                                theme=theme, limit=limit)
