"""How ``storycreator status STORY`` words a story's errors and waits (pipeline/operations/cli.py)."""
from __future__ import annotations

from typing import Any


def distinct_failures(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The story's error records with each failure once: a photo's failed analysis is recorded on
    the photo and again on each story it failed, quoting it ("The photo could not be used: <the
    photo's reason>"); the photo's own record is dropped when a story record quotes it."""
    quoted = [e["message"] for e in errors if e["permanent"] and not e["of_photo"]]
    return [e for e in errors
            if not (e["of_photo"] and e["permanent"] and any(e["message"] in m for m in quoted))]


def waiting_for(story: dict[str, Any]) -> str | None:
    """What a story without pages waits for, in words (None: it is not waiting: failed, or
    completed). Its order is the story start's (db/stories.py claim_story): the photo's upload,
    a slot of its account, then its analysis, then a worker taking the queued message (or making the outline)."""
    from pipeline.stories import slots

    if story["status"] == "processing":
        return "its outline (being written)"
    if story["status"] != "pending":
        return None
    if story["photo_status"] == "pending_upload":
        return f"its photo's upload (photo {story['photo_id']} pending_upload)"
    if slots.waits_for_slot(story.get("account_in_flight")):  # its account at USER_STORIES_IN_FLIGHT
        return slots.waiting_reason(story["account_in_flight"])
    if story["photo_analysis"] != "completed":
        return f"its photo's analysis ({story['photo_analysis']})"
    return "a worker (queued)"
