"""Stuck work: steps that should be moving and are not, one query per stage of the story flow
(pipeline/stories/stages.py; the SQL is in db/operations.py), and how each is sent again.

A stuck page step is re-sent as the rest of its page's chain (``page_chain`` from that stage), so a
single re-sent step never stalls its page; other steps are re-sent alone by task name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from db import operations as q
from db.engine import transaction
from pipeline.kernel import publish
from pipeline.kernel.stages import Stage
from pipeline.stories.stages import PAGE_STAGES, STORY, page_chain, page_prerequisite


@dataclass(frozen=True)
class Stuck:
    """One step that should be moving and is not, and the task that moves it."""

    task: str  # Celery task name
    kwargs: dict[str, str]
    why: str


def _rows(stage: Stage, c: Connection, params: dict[str, Any]) -> list[tuple[str, ...]]:
    """The stuck rows of one stage, by the query its kind of row needs (db/operations.py), with
    the columns the story flow declares."""
    if stage.name == "analysis":
        return q.stuck_photos(c, params)
    if stage.name == "outline":
        return q.stuck_story_starts(c, params)
    if stage.name == "finish":  # every page's last step completed, the story never finished
        return q.stuck_finishes(c, PAGE_STAGES[-1].status_column, params)
    pre = page_prerequisite(stage)
    return q.stuck_page_steps(c, stage.status_column, pre.status_column if pre else None, params)


# The kinds of stuck work: one per stage, in the flow's order; a kind's index is its backfill cursor.
KINDS: tuple[Stage, ...] = tuple(STORY)
NO_CURSOR = "00000000-0000-0000-0000-000000000000"


def stuck_batch(kind: int, *, lease: float, pending_after: float, limit: int,
                after: str = NO_CURSOR) -> list[Stuck]:
    """Up to ``limit`` stuck steps of one kind (an index into KINDS) with ids after ``after``;
    ``lease`` and ``pending_after`` in seconds (see db/operations.py)."""
    from pipeline.config import settings

    stage = KINDS[kind]
    with transaction() as c:
        rows = _rows(stage, c, {"lease": lease, "pending_after": pending_after, "limit": limit,
                                     "after": after, "upload_wait": settings().photo_upload_wait_seconds,
                                     "cap": settings().user_stories_in_flight})
    # The id first (backfill resumes from it); page tasks also name their story (Flower's search).
    return [Stuck(stage.task, {stage.id_kwarg: r[0], **({"story_id": r[1]} if len(r) > 1 else {})}, "stale")
            for r in rows]


def find_stuck(*, lease: float, pending_after: float, limit: int = 500) -> list[Stuck]:
    """What should be moving and is not (read-only): up to ``limit`` of each kind."""
    return [item for kind in range(len(KINDS))
            for item in stuck_batch(kind, lease=lease, pending_after=pending_after, limit=limit)]


def resend(item: Stuck) -> None:
    """Send a stuck step again: a page step as the rest of its page's chain, anything else alone."""
    stage = STORY.by_task(item.task)
    if stage is not None and stage in PAGE_STAGES:
        publish.send_signature(page_chain(item.kwargs["page_id"], stage.name, item.kwargs.get("story_id")))
    else:
        publish.send(item.task, item.kwargs)
