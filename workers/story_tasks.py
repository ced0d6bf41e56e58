"""The story flow's Celery tasks (pipeline/stories/stages.py declares the flow): thin
declarations around pipeline.stories.steps. Each moves only its own status column, is safe to
run twice, and logs one line per run (workers/step_task.py).

Names are the contract with the external API: ``photos.analyze(photo_id)`` and
``stories.generate(story_id)`` are published by name to the default queue; the rest are internal
and routed to per-stage queues (celeryconfig.task_routes, from the stage table). A page's steps
run as one Celery chain (``pipeline.stories.stages.page_chain``): text -> illustration ->
personalization, each link sent by Celery when the previous one returned.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Any

from pipeline.kernel import publish, step
from pipeline.stories import slots, steps
from pipeline.stories.stages import STORY, page_chain
from workers.step_task import Body, Then, bad_id, step_task

log = logging.getLogger("storycreator.step")


def fan_out(story_id: str | None, result: step.StepResult) -> None:
    """After the story's start committed every row the pages need: each unfinished page's chain,
    all at once (pipelined, no stage barrier). A story with nothing left but its completion (a
    re-run after every page finished) goes straight to stories.finish."""
    assert story_id is not None
    for page_id in result.fanout:  # each link with the story's priority (README "Fair turns between families")
        publish.send_signature(page_chain(page_id, "text", story_id, priority=result.priority))
    if result.outcome is step.Outcome.DONE and not result.fanout:
        publish.send(STORY["finish"].task, {"story_id": story_id})


def finish_when_ready(_page_id: str | None, result: step.StepResult) -> None:
    """The barrier is a Postgres query (steps.personalize), not a chord: only a personalization
    that finds every page of its story done (also a redelivered, already-done copy: its first run
    may have died before sending) sends the story's completion."""
    if result.moves_on and result.story_ready:
        publish.send(STORY["finish"].task, {"story_id": result.story_ready})


_ENDS = (step.Outcome.FAILED,)


def freeing(then: Then | None = None, *, by_page: bool = False,
            ends: tuple[step.Outcome, ...] = _ENDS) -> Then:
    """A step's ``then`` hook that, after ``then`` (if any), hands its account's freed slot on
    when the step's outcome is one of ``ends`` (it may have ended its story: completed, or failed):
    pipeline.stories.slots.ended_story sends the account's oldest waiting stories
    (USER_STORIES_IN_FLIGHT). ``by_page``: the step's id is a page's (its story looked up)."""

    def hook(ident: str | None, result: step.StepResult) -> None:
        if then is not None:
            then(ident, result)
        if result.outcome in ends and ident is not None:
            if by_page:
                slots.ended_story(page_id=ident)
            else:
                slots.ended_story(story_id=ident)

    return hook


# --- the external contract ---------------------------------------------------------------------

@step_task("photos.analyze", "analysis", key="photo_id")
def analyze_photo(photo_id: str | None = None, tries: int = 0, **extra: Any) -> Body | str:
    """Analyse an uploaded photo (faces, labels, objects): photos.ai_processing_status."""
    if bad := bad_id("photos.analyze", "photo_id", photo_id, extra):
        return bad
    return partial(steps.analyze_photo, str(step.valid_uuid(photo_id)))


@step_task("stories.generate", "outline", key="story_id", then=freeing(fan_out))
def generate_story(story_id: str | None = None, tries: int = 0, **extra: Any) -> Body | str:
    """Start a story: claim it, its photo analysed, the outline and page rows; then every
    page's chain (fan_out)."""
    if bad := bad_id("stories.generate", "story_id", story_id, extra):
        return bad
    return partial(steps.generate_story, str(step.valid_uuid(story_id)))


@step_task("stories.redo_page", "redo", key="story_id", then=freeing())
def redo_page(story_id: str | None = None, page_number: Any = None, from_stage: str | None = None,
              hint: Any = None, request_id: Any = None, page_id: str | None = None, tries: int = 0,
              **extra: Any) -> Body | str:
    """Redo one page of a completed story from ``from_stage`` (text, image or personalization),
    with an optional hint from the parent (README "Redoing a page"): the page by ``page_number``
    or ``page_id``; ``request_id`` makes a re-sent request run once. A page number the story does
    not have (0, 99) is a refusal the web app reads in page_redos ("This story has no such page.");
    arguments of the wrong shape (no page number or id, an unknown ``from_stage``, a bad
    ``request_id``) are dropped with one logged line and no row."""
    if bad := bad_id("stories.redo_page", "story_id", story_id, extra):
        return bad
    from pipeline.stories.redo import REDO_STAGES

    page = step.valid_uuid(page_id) if page_id is not None else None
    number = page_number if isinstance(page_number, int) and not isinstance(page_number, bool) else None
    why = ("page_id must be a UUID" if page_id is not None and page is None
           else "page_number must be a whole number, or page_id a UUID" if page is None and number is None
           else f"from_stage must be one of {list(REDO_STAGES)}" if from_stage not in REDO_STAGES
           else "request_id must be a string of at most 200 characters"
           if request_id is not None and not (isinstance(request_id, str) and 0 < len(request_id) <= 200)
           else None)
    if why is not None:
        log.error("stories.redo_page: %s; dropped", why)
        return f"rejected: {why}"
    assert from_stage is not None
    return partial(steps.redo_page, str(step.valid_uuid(story_id)), page, number if page is None else None,
                   from_stage, hint, request_id)


# --- internal steps: the links of a page's chain -------------------------------------------------
# Page tasks carry their story's id too (optional: messages queued before it existed have none),
# so an operator finds every task of a story by its id in Flower's search.

@step_task("pages.write_text", "text", key="page_id", then=freeing(by_page=True))
def write_text(page_id: str, tries: int = 0, story_id: str | None = None) -> Body:
    """A page's text (story_pages.text_generation_status)."""
    _story_label("pages.write_text", story_id)
    return partial(steps.write_text, page_id)


@step_task("pages.draw_base", "image", key="page_id", then=freeing(by_page=True))
def draw_base(page_id: str, tries: int = 0, story_id: str | None = None) -> Body:
    """A page's illustration (story_pages.image_generation_status)."""
    _story_label("pages.draw_base", story_id)
    return partial(steps.draw_base, page_id)


@step_task("pages.personalize", "personalization", key="page_id",
           then=freeing(finish_when_ready, by_page=True))
def personalize(page_id: str, tries: int = 0, story_id: str | None = None) -> Body:
    """The child's face in a page's illustration (story_pages.personalization_status); the
    story's completion when every page is done."""
    _story_label("pages.personalize", story_id)
    return partial(steps.personalize, page_id)


# Completed or failed; a duplicate that finds it completed hands on too (the first copy may have
# died between its commit and the hand-off).
@step_task("stories.finish", "finish", key="story_id",
           then=freeing(ends=(step.Outcome.DONE, step.Outcome.ALREADY_DONE, step.Outcome.FAILED)))
def finish_story(story_id: str, tries: int = 0) -> Body:
    """The book, then stories.status completed (a SKIP LOCKED row lock: one finisher)."""
    return partial(steps.finish_story, story_id)


def _story_label(name: str, story_id: Any) -> str | None:
    """A page task's ``story_id``: a label for operators (the page's row says which story it is
    in). A malformed one is logged and ignored."""
    if story_id is None:
        return None
    sid = step.valid_uuid(story_id)
    if sid is None:
        log.error("%s: ignoring story_id %r (not a UUID)", name, str(story_id)[:80])
    return sid
