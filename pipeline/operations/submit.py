"""Submitting a story exactly as the external API does, and the counts an operator reads."""
from __future__ import annotations

import uuid

from db import operations as q
from db.engine import transaction
from pipeline.kernel import publish
from pipeline.stories.stages import PAGE_STAGES, STORY

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
               "image/heic": "heic", "image/heif": "heic", "image/avif": "avif"}


def submit_story(photo: bytes, content_type: str, filename: str, name: str, age: int, theme: str,
                 *, email: str = "cli@localhost") -> str:
    """Store the photo, insert user/photo/story rows and publish stories.generate by name:
    exactly what the external API does (the same validation happens in the worker). Returns the
    story id."""
    from pipeline.config import settings
    from pipeline.kernel.storage import LocalStorage

    key = f"uploads/{uuid.uuid4()}.{_EXTENSIONS.get(content_type.split(';')[0].strip().lower(), 'bin')}"
    LocalStorage(settings().local_storage_root).put(key, photo, content_type)
    with transaction() as c:
        story = q.insert_story(c, email, key, filename, content_type, name, age, theme)
    publish.send(STORY["outline"].task, {"story_id": story})  # after the commit
    return story


def summary() -> dict[str, dict[str, int]]:
    """Counts per stage and status: the photo analysis (keyed by its label), the story, and each
    page step by its name, as the story flow declares their columns (pipeline/stories/stages.py)."""
    analysis, story = STORY["analysis"], STORY["outline"]
    counted = {analysis.label: (analysis.table, analysis.status_column), "story": (story.table, story.status_column),
               **{s.name: (s.table, s.status_column) for s in PAGE_STAGES}}
    with transaction() as c:
        return q.summary(c, counted)
