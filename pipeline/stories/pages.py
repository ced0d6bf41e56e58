"""The three page steps (``pages.write_text``, ``pages.draw_base``, ``pages.personalize``): one
page's text, its base illustration, and the illustration with the child's face. Each runs on the
shared page-step machinery (pipeline/stories/page_step.py) or, when the image provider works as
remote jobs (Replicate), as a remote job step (pipeline/stories/remote_jobs.py).
"""
from __future__ import annotations

from typing import Any

from db import stories as stories_db
from db.engine import autocommit
from db.pages import PageClaim
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.step import FIRST_TRY, Attempt, StepResult, Timer
from pipeline.kernel.storage import page_image_key
from pipeline.providers import registry
from pipeline.stories.fonts import printable_text
from pipeline.stories.page_step import page_request, run_page_step, store_if_held, story_face
from pipeline.stories.remote_jobs import job_step


def write_text(page_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """story_pages.text_generation_status: the page's text from the story writer, made printable
    (characters no font draws dropped or mapped; their counts go to the result's context)."""
    fixed: dict[str, int] = {}  # characters printable_text changed: counts for the log line

    def work(claim: PageClaim, timer: Timer) -> dict[str, Any]:
        with timer.phase("provider"):
            page_text = registry.providers().writer.write_page(page_request(claim))
        # Characters no font draws (emoji, ...): dropped or mapped before the text is stored.
        page = printable_text(page_text or "", claim.child_name, f"Page {claim.page_number}'s text")
        fixed.update(page.counts())
        if not page.text.strip():
            raise PermanentStepError("The story writer returned an empty page.")
        return {"text": page.text.strip()}

    result = run_page_step(page_id, "text", attempt, work)
    result.context.update(fixed)
    return result


def draw_base(page_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """story_pages.image_generation_status: the page's base illustration, stored at its
    deterministic key (base_image_key); a remote job when the provider has image jobs."""
    if registry.providers().image_jobs is not None:
        return job_step(page_id, "image", attempt)

    def work(claim: PageClaim, timer: Timer) -> dict[str, Any]:
        p = registry.providers()
        with timer.phase("provider"):
            png = p.illustrator.draw_base(page_request(claim))
        key = page_image_key(claim.story_id, claim.page_number, "base", claim.revision)
        store_if_held(page_id, "image", claim.token, key, png, "image/png", timer)
        return {"base_image_key": key}

    return run_page_step(page_id, "image", attempt, work)


def personalize(page_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """story_pages.personalization_status: the base illustration with the story's face from the
    photo, stored at its deterministic key (personalized_image_key). When it moves on, the
    result's ``story_ready`` is set (the story's id) when every page of the story is done."""
    def work(claim: PageClaim, timer: Timer) -> dict[str, Any]:
        p = registry.providers()
        assert claim.photo is not None and claim.base_image_key
        face = story_face(claim)
        with timer.phase("read"):
            base = p.storage.get(claim.base_image_key)
            photo = registry.read_photo(claim.photo["storage_provider"], claim.photo["bucket"],
                                        claim.photo["object_key"])
        with timer.phase("provider"):
            png = p.illustrator.personalize(base, photo, face, page_request(claim))
        key = page_image_key(claim.story_id, claim.page_number, "personalized", claim.revision)
        store_if_held(page_id, "personalization", claim.token, key, png, "image/png", timer)
        return {"personalized_image_key": key}

    if registry.providers().image_jobs is not None:
        result = job_step(page_id, "personalization", attempt)
    else:
        result = run_page_step(page_id, "personalization", attempt, work)
    if result.moves_on:
        # The story barrier, checked after this page's completion committed: of the pages that
        # finish at the same moment, at least the last to get here sees them all done. Also on
        # a redelivered copy (already done): its first run may have died before enqueueing.
        with autocommit() as c:
            if stories_db.story_ready(c, result.context["story"]):
                result.story_ready = result.context["story"]
    return result
