"""The story flow, declared once: photo analysis -> story start (outline) -> per page text ->
illustration -> personalization -> the book (finish).

Everything that needs to know the flow reads this table instead of repeating it: the Celery chain a
page runs (:func:`page_chain`), each page step's prerequisite, the stuck-work queries
(``pipeline.operations.stuck``), the task routes and the worker's queue list (``celeryconfig``), and
the words shown to people (:data:`STAGE_LABEL`). Task names are the contract with the external API
(``photos.analyze``, ``stories.generate``) and with messages already queued: never rename them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.kernel.stages import Flow, Stage

if TYPE_CHECKING:
    from celery.canvas import Signature

STORY = Flow("story", (
    Stage("analysis", "photos.analyze", "photos", "photo analysis", "photos", "ai_processing_status", "photo_id"),
    Stage("outline", "stories.generate", "stories", "story outline", "stories", "status", "story_id", "analysis"),
    Stage("text", "pages.write_text", "text", "story text", "story_pages", "text_generation_status", "page_id",
          "outline"),
    Stage("image", "pages.draw_base", "images", "illustration", "story_pages", "image_generation_status", "page_id",
          "text"),
    Stage("personalization", "pages.personalize", "personalize", "personalization", "story_pages",
          "personalization_status", "page_id", "image"),
    # Not a link of the page chain: sent once by the personalization that finds every page done
    # (StepResult.story_ready; the barrier is a Postgres query, not a chord).
    Stage("finish", "stories.finish", "stories", "book assembly", "stories", "status", "story_id", "personalization"),
))

# Replicate's completion webhooks, published by the external API (README "The external contract"):
# not a step of the flow; it sends a page step's follow as soon as its remote job ended.
REPLICATE_WEBHOOK_TASK = "images.replicate_webhook"

# The steps one page runs, in order: the page's Celery chain.
PAGE_STAGES: tuple[Stage, ...] = tuple(s for s in STORY if s.table == "story_pages")
STAGE_LABEL: dict[str, str] = STORY.labels()


def page_prerequisite(stage: Stage) -> Stage | None:
    """The page column that must be completed before ``stage`` runs (None for the page's first
    step, whose prerequisite, the outline, is a story's, not a page's)."""
    pre = STORY[stage.prerequisite] if stage.prerequisite else None
    return pre if pre is not None and pre.table == "story_pages" else None


def page_kwargs(page_id: str, story_id: str | None = None) -> dict[str, str]:
    """The kwargs of a page task: ``page_id`` first (backfill resumes from the first value), then
    ``story_id`` when known (a label: Flower's search finds every task of a story by it)."""
    return {"page_id": page_id, **({"story_id": str(story_id)} if story_id else {})}


def page_chain(page_id: str, from_stage: str = "text", story_id: str | None = None,
               priority: int | None = None) -> Signature:
    """The rest of one page's pipeline from ``from_stage`` (``"text"``, ``"image"`` or
    ``"personalization"``) as a ``celery.chain`` of immutable signatures by task name (ids only,
    no result passed on, no result backend). The one way a page's work is enqueued: the story's
    fan-out, the sweeper, ``backfill`` and ``retry`` all send this, so a single re-sent step never
    stalls its page. Publish it with ``pipeline.kernel.publish.send_signature``.

    Each link returns normally when its step is done or was already done (the chain goes on; a
    redelivered copy carries the rest of the chain in its message) and ends the chain with
    ``celery.exceptions.Ignore`` when it failed or stopped (workers/step_task.py).
    ``priority`` (0 first .. 9 last on Redis; None: none sent): every link's message carries it
    (Celery sends each next link with its own options; a retry keeps its message's priority), so a
    page keeps its story's turn from its first step to its last (pipeline/stories/slots.py).
    Raises KeyError for an unknown stage and ValueError for a stage that is not a page step."""
    from celery import chain, signature

    start = STORY[from_stage]
    if start not in PAGE_STAGES:
        raise ValueError(f"{from_stage!r} is not a page step (one of {[s.name for s in PAGE_STAGES]})")
    kwargs = page_kwargs(page_id, story_id)
    options = {} if priority is None else {"priority": priority}
    return chain(*(signature(s.task, kwargs=kwargs, immutable=True, **options) for s in STORY.after(from_stage)
                   if s in PAGE_STAGES))
