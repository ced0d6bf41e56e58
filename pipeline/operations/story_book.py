"""What ``storycreator status <story>`` shows of a story's book and its redone pages (README
"Redoing a page"): where to read the current book, and each redo request with its outcome.
"""
from __future__ import annotations

from typing import Any


def book_links(story_id: str, revision: dict[str, Any] | None) -> dict[str, str]:
    """Where to read the story's current book: a time-limited URL (S3, PRESIGNED_URL_SECONDS) or the local file, by
    format ("pdf", "html"). ``revision``: db.redo.story_revision's row (its book keys; a book
    made before they were recorded is at the first revision's keys)."""
    from pipeline.kernel.storage import book_key
    from pipeline.providers.registry import output_storage

    storage = output_storage()
    links = {}
    for ext in ("pdf", "html"):
        key = (revision or {}).get(f"book_{ext}_key") or book_key(story_id, ext)
        url = getattr(storage, "url", None)
        if callable(url):
            links[ext] = str(url(key))
        elif hasattr(storage, "path"):
            links[ext] = str(storage.path(key))
    return links


def revision_lines(story: dict[str, Any], revision: dict[str, Any] | None) -> list[str]:
    """The status lines of a story's revisions: the one being made (the book shown is the previous
    one until it completes) and each redo request, oldest first, with its outcome or refusal."""
    if not revision:
        return []
    lines = []
    if revision["redo_id"] is not None and story["status"] == "processing":
        lines.append(f"  revision {revision['revision']} being made (the book below is the previous one)")
    for r in revision["redos"]:
        hint = f" “{r['hint']}”" if r["hint"] else ""
        made = f", revision {r['revision']}" if r["revision"] else ""
        why = f": {r['message']}" if r["message"] else ""
        lines.append(f"  {r['created_at']:%H:%M:%S} redo page {r['page_number']} from {r['from_stage']}{hint} "
                     f"{r['status']}{made}{why}")
    return lines
