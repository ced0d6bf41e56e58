"""The machinery every page step shares (write_text, draw_base, personalize; pipeline/stories/pages.py
and, for remote jobs, pipeline/stories/remote_jobs.py): claim the page's column, explain a claim
that failed, run the provider work under the error policy with a :class:`PageRecorder`, record
the result.

story_pages has one status column per stage (text -> image -> personalization); a step claims its
own column only once the previous one is completed (db/pages.py). Results go to deterministic
storage keys before the column completes, so a re-run overwrites rather than duplicates.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection

from db import pages as pages_db
from db.claims import Stage, poison_message
from db.engine import autocommit
from pipeline.config import settings
from pipeline.kernel import usage
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.step import (
    Attempt,
    ClaimLost,
    Outcome,
    StepFailed,
    StepResult,
    Timer,
    guarded,
    held_elsewhere,
    note_claim,
)
from pipeline.providers import registry
from pipeline.providers.base import Face, Outline, PageRequest, StoryRequest
from pipeline.providers.profile import CharacterProfile
from pipeline.providers.themes import THEMES, resolve_theme
from pipeline.stories.recorders import PageRecorder
from pipeline.stories.stages import STAGE_LABEL, STORY, page_prerequisite
from pipeline.stories.start import story_seed

# Each stage as people read it (logs, the story's failure message "Page 2 (illustration): ...").

# What a page step's work returns: the story_pages columns to set with the completion.
Work = Callable[[pages_db.PageClaim, Timer], dict[str, Any]]


def story_face(claim: pages_db.PageClaim) -> Face:
    """The face this story uses: the one its start recorded (story_outlines.protagonist_face), or,
    for a story started before choices were recorded, the photo's primary face."""
    from pipeline.providers.face_json import face_from_json

    assert claim.photo is not None
    details = claim.photo["face_details"] or {}
    chosen = claim.protagonist_face
    try:
        face = (face_from_json({**details, "primary_face_index": int(chosen["index"])}) if chosen
                else face_from_json(details))
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentStepError(f"The story's recorded face does not match its photo's analysis ({exc}).") from exc
    if face is None:
        raise PermanentStepError("The photo has no analysed face; re-run the photo analysis.")
    if chosen and face.box.to_json() != chosen.get("bounding_box"):
        raise PermanentStepError("The photo was analysed again after the story started; retry the story.")
    return face


def page_request(claim: pages_db.PageClaim) -> PageRequest:
    """What the providers are asked for this page: the story (name, age, theme, pages, seed, the
    character profile of the story's face), its outline, the page number and, for a redone page,
    the parent's hint and the revision."""
    story = StoryRequest(
        " ".join(claim.child_name.split()), claim.child_age,
        (resolve_theme(claim.story_theme) or THEMES["space_adventure"]).id,
        len(claim.beats), story_seed(claim.story_id), CharacterProfile.from_json(claim.character),
    )
    return PageRequest(story, Outline(claim.title, tuple(claim.beats), claim.style), claim.page_number,
                       hint=claim.hint, revision=claim.revision)


def not_claimed(state: Any, attempt: Attempt, timer: Timer) -> StepResult:
    """Why a page step could not be claimed, and what that means for this copy."""
    if state["status"] == "completed":
        return StepResult(Outcome.ALREADY_DONE, "already done", timer.timings,
                          context={"story": str(state["story_id"]), "page_number": state["page_number"]})
    if state["story_status"] != "processing":
        return StepResult(Outcome.STOPPED, f"story is {state['story_status']}", timer.timings)
    if state["prereq_status"] != "completed":
        return StepResult(Outcome.STOPPED, f"previous step is {state['prereq_status']}", timer.timings)
    if state["status"] == "processing":
        return held_elsewhere("step in progress", state["age"], attempt, timer)
    return StepResult(Outcome.STOPPED, f"step is {state['status']}", timer.timings)


def page_columns(stage: Stage) -> tuple[str, str | None]:
    """The story_pages status column page step ``stage`` moves and the column that must be
    completed before it (None for the page's first step), as the story flow declares them
    (pipeline/stories/stages.py STORY). Raises KeyError for an unknown stage."""
    step = STORY[stage]
    pre = page_prerequisite(step)
    return step.status_column, pre.status_column if pre is not None else None


def claim_or_state(c: Connection, page_id: str, stage: Stage, lease: float,
                   held: int | None = None) -> tuple[pages_db.PageClaim | None, Mapping[str, Any] | None]:
    """Claim page ``page_id``'s ``stage`` column (``lease`` seconds) and, when that fails, read why:
    ``(claim, None)``, ``(None, state)`` (db.pages.page_state) or ``(None, None)`` for no such page.
    The personalization's claim also reads the story's photo and face choice. ``held``: the
    claim's token this step's message held when the database went away (resumed at once)."""
    col, prereq = page_columns(stage)
    claim = pages_db.claim_page(c, page_id, col, lease, prerequisite=prereq, with_photo=stage == "personalization",
                                held=held)
    if claim is not None:
        note_claim(claim.token)
    return claim, None if claim else pages_db.page_state(c, page_id, col, prerequisite=prereq)


def run_page_step(page_id: str, stage: Stage, attempt: Attempt, work: Work) -> StepResult:
    """Claim page ``page_id``'s ``stage`` column, run ``work(claim, timer)`` under the error policy,
    complete the column with the values it returns. STOPPED / ALREADY_DONE when not claimed (see
    :func:`not_claimed`); FAILED with the recorded message; raises RetryLater after a transient
    error (the claim released). The result's context carries the story id and page number."""
    s = settings()
    col, _ = page_columns(stage)
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim, state = claim_or_state(c, page_id, stage, s.step_lease_seconds, attempt.held)
    if claim is None:
        if state is None:
            return StepResult(Outcome.STOPPED, "page not found", timer.timings)
        return not_claimed(state, attempt, timer)

    label = STAGE_LABEL[stage]
    ctx = {"story": claim.story_id, "page_number": claim.page_number}

    record = PageRecorder(page_id, stage, claim.page_number, label, attempt, claim.token)
    poisoned = poison_failure(record, claim.takeovers, timer, ctx)
    if poisoned is not None:
        return poisoned
    try:
        with usage.metered(stage, f"{page_id}:{stage}:r{claim.revision}:a{attempt.number}", story_id=claim.story_id,
                           page_number=claim.page_number):
            values = guarded(lambda: work(claim, timer), attempt=attempt, record=record, what=label.capitalize())
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    with timer.phase("record"), autocommit() as c:
        done = pages_db.complete_page(c, page_id, col, values, claim.token)
    if not done:  # fenced: another worker took the step over while this run was away
        raise ClaimLost(f"page {claim.page_number} {stage}: result not recorded")
    return StepResult(Outcome.DONE, "", timer.timings, context=ctx)


def store_if_held(page_id: str, stage: Stage, token: int, key: str, data: bytes, content_type: str,
                  timer: Timer) -> None:
    """Write a page step's artefact to storage at ``key``, only while claim ``token`` still holds the
    step (db.pages.holds, checked just before: storage cannot check a fencing token itself, so a
    holder that woke after a takeover must not overwrite the new holder's picture at the same
    key). Raises ClaimLost when the step was taken over. What remains is the moment between the
    check and the write: a pause exactly there can still overwrite, with a picture of the same
    page step (documented in the README's at-least-once section)."""
    col, _ = page_columns(stage)
    with autocommit() as c:
        if not pages_db.holds(c, page_id, col, token):
            raise ClaimLost(f"page {page_id} {stage}: not stored (taken over)")
    with timer.phase("store"):
        registry.providers().storage.put(key, data, content_type)


def poison_failure(record: PageRecorder, takeovers: int, timer: Timer, ctx: dict[str, Any]) -> StepResult | None:
    """A page step just claimed after ``takeovers`` takeovers in a row (db.pages.PageClaim.takeovers):
    at STEP_MAX_TAKEOVERS it is failed with the story ("crashed its worker N times", recorded in
    step_errors; ``retry`` runs it again) instead of being run once more: FAILED. None: run it."""
    s = settings()
    if takeovers < s.max_takeovers:
        return None
    msg = poison_message(f"The {record.label} step", takeovers, s.step_lease_seconds)
    record.fail(msg)
    return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
