"""The story's start (``stories.generate``): validate what the parent asked for, make sure its photo
is analysed (inline when nobody has), write the outline, title and page rows once, and return the
pages to run (the fan-out).

stories.status pending -> processing; a start that fails records the parent's message. A story
whose photo's upload is not confirmed yet waits (pipeline/stories/upload_wait.py) without a claim,
and so does a story whose account has USER_STORIES_IN_FLIGHT stories in flight: it stays pending
until one of them ends (pipeline/stories/slots.py; README "Fair turns between families").
"""
from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from db import photos as photos_db
from db import slots as slots_db
from db import stories as stories_db
from db.claims import poison_message
from db.engine import autocommit, transaction
from pipeline.config import settings
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.step import (
    FIRST_TRY,
    Attempt,
    ClaimLost,
    Outcome,
    RetryLater,
    StepFailed,
    StepResult,
    Timer,
    guarded,
    held_elsewhere,
    inline_attempt,
    note_claim,
)
from pipeline.providers import registry
from pipeline.providers.base import Outline, StoryRequest
from pipeline.providers.themes import THEMES, resolve_theme
from pipeline.stories import slots, upload_wait
from pipeline.stories.faces import ProtagonistChoice, choose_protagonist
from pipeline.stories.fonts import printable_text
from pipeline.stories.photo_step import NO_FACE, analyze_photo
from pipeline.stories.recorders import StoryRecorder

MAX_NAME_LENGTH = 40


def validate_story(name: str, age: int, theme_raw: str) -> tuple[str, str]:
    """(clean name, theme id) for the child's name, age and theme as the parent gave them, or
    PermanentStepError with what to fix (empty, too long, unprintable name; age out of range;
    unknown theme)."""
    clean = " ".join((name or "").split())
    if not clean:
        raise PermanentStepError("The child's name is empty. Please enter the child's first name.")
    if len(clean) > MAX_NAME_LENGTH:
        raise PermanentStepError(
            f"The child's name is too long ({len(clean)} characters; at most {MAX_NAME_LENGTH})."
        )
    from pipeline.stories.fonts import JOINERS, unprintable, unprintable_message

    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") and ch not in JOINERS for ch in clean):
        raise PermanentStepError("The child's name contains control characters.")
    if bad := unprintable(clean):  # before any provider work: never a book with "?" for a name
        raise PermanentStepError(unprintable_message(bad))
    s = settings()
    if not s.min_child_age <= age <= s.max_child_age:
        raise PermanentStepError(
            f"The child's age must be between {s.min_child_age} and {s.max_child_age} "
            f"(got {age}). Our stories are written for young children."
        )
    theme = resolve_theme(theme_raw or "")
    if theme is None:
        raise PermanentStepError(
            f"Unknown story theme {theme_raw[:60]!r}. Choose one of: {', '.join(sorted(THEMES))}."
        )
    return clean, theme.id


def story_seed(story_id: str) -> int:
    """The story's random seed for its providers (0 <= seed < 2**31), fixed by its id."""
    return uuid.UUID(story_id).int % (2**31)


def generate_story(story_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """stories.status pending -> processing; the photo analysed (inline if nobody has); the
    outline, title and page rows written once; returns the pages to run (fan-out)."""
    s = settings()
    timer = Timer()
    cap = s.user_stories_in_flight
    # With a cap (USER_STORIES_IN_FLIGHT), the claim takes a slot of the account under its advisory
    # lock: one transaction, committed at the end of this block (db/slots.py).
    with timer.phase("claim"), (transaction() if cap > 0 else autocommit()) as c:
        # The claim also refuses (fails) a story whose photo is not its own user's, was deleted,
        # or whose upload failed or never finished within PHOTO_UPLOAD_WAIT_SECONDS.
        claim = stories_db.claim_story(c, story_id, s.step_lease_seconds, s.photo_upload_wait_seconds,
                                       attempt.number, attempt.task_id, held=attempt.held, cap=cap)
        state = None if claim else slots_db.story_start_state(c, story_id, s.photo_upload_wait_seconds)
    if claim is None:
        if state is None:
            return StepResult(Outcome.STOPPED, "story not found", timer.timings)
        if state["status"] == "completed":
            return StepResult(Outcome.ALREADY_DONE, "story already completed", timer.timings)
        if state["status"] == "failed":
            return StepResult(Outcome.STOPPED, "story failed earlier; use retry", timer.timings)
        if state["upload_wait_left"] is not None:  # its photo's upload is not confirmed yet: wait
            countdown = upload_wait.poll_interval(state["pending_for"], state["upload_wait_left"])
            if not upload_wait.hold(story_id, state["pending_since"], attempt.task_id, countdown):
                return StepResult(Outcome.STOPPED, "another message waits for the photo's upload", timer.timings)
            raise RetryLater(countdown, "waiting for the photo's upload", waiting=True)
        if state["status"] == "pending" and cap > 0:
            # Its account is at its cap: the story stays pending, without a claim or an error; the
            # hand-off of the account's next story to end sends it again (the sweep if that is lost).
            return StepResult(Outcome.STOPPED, slots.waiting_detail(int(state["in_flight"]), cap), timer.timings)
        return held_elsewhere("story start in progress", state["age"], attempt, timer)
    if claim["refused"]:
        return StepResult(Outcome.FAILED, claim["refused"], timer.timings)

    token = int(claim["claim_token"])
    note_claim(token)
    # Its pages' turn in the broker: later than a less busy family's (README "Fair turns between families").
    priority = slots.page_priority(int(claim["in_flight_before"]), int(claim["backlog"]))
    record = StoryRecorder(story_id, attempt, token)

    def fail(msg: str, stage: stories_db.Stage = "outline") -> StepResult:
        record.fail(msg, stage)
        return StepResult(Outcome.FAILED, msg, timer.timings)

    if claim["takeovers"] >= s.max_takeovers:  # the start took its workers down, time after time
        return fail(poison_message("The story's start", int(claim["takeovers"]), s.step_lease_seconds))

    try:
        name, theme_id = validate_story(claim["child_name"], claim["child_age"], claim["story_theme"])
    except PermanentStepError as e:
        return fail(str(e))

    # The photo: analysed already, or analysed here (same claim as photos.analyze, so the two
    # never both run it), or being analysed by another worker right now (then wait for it).
    photo_id = str(claim["protagonist_photo_id"])
    if claim["photo_status"] is None:  # the FK makes this impossible unless the row is deleted meanwhile
        return fail("The story's photo no longer exists.", "analysis")
    ai_status, ai_error = claim["photo_ai_status"], claim["photo_error"]
    face_details = claim["photo_face_details"]
    uploaded_since = (ai_status == "failed" and claim["photo_status"] == "uploaded"
                      and (ai_error or "").startswith(photos_db.NOT_UPLOADED_PREFIX))
    analysed: dict[str, Any] = {}
    if ai_status in ("pending", "processing") or uploaded_since:
        with timer.phase("analysis"):
            try:
                # Not the story's own attempt: its redelivery (our own retry) is not the photo
                # message's, so a live holder's claim is answered "held by another worker" and we
                # look again in ~2 s below, instead of waiting out the rest of its lease.
                result = analyze_photo(photo_id, inline_attempt(attempt), analysed)
            except ClaimLost as lost:  # another worker took the photo's analysis over: wait for it
                result = StepResult(Outcome.STOPPED, f"photo analysis taken over ({lost})")
            except RetryLater:
                record.release(None)  # the photo was released; release the story with it
                raise
        if result.moves_on:
            ai_status = "completed"
            face_details = analysed.get("face_details") or face_details
        else:  # failed here, or held by another worker: read what it is now
            with autocommit() as c:
                photo = photos_db.photo_state(c, photo_id)
            assert photo is not None
            ai_status, ai_error = photo["ai_status"], photo["ai_error_message"]
        if ai_status in ("pending", "processing"):
            # Held by another worker, or released for a transient retry: wait, not fail.
            record.release(None)
            raise RetryLater(2.0, f"waiting for photo analysis ({result.detail})", waiting=True)
    if ai_status == "failed":
        return fail(f"The photo could not be used: {ai_error}", "analysis")

    existing = claim["has_outline"]
    fixed: dict[str, int] = {}  # characters printable_text changed: counts for the log line
    if not existing:
        try:
            choice = _protagonist_choice(photo_id, face_details, claim["child_age"])
        except PermanentStepError as e:
            return fail(f"The photo could not be used: {e}", "analysis")
        req = StoryRequest(name, claim["child_age"], theme_id, s.page_count, story_seed(story_id))

        def write() -> Outline:
            with timer.phase("provider"):
                outline = registry.providers().writer.write_outline(req)
            # A title character no font draws (emoji, ...): dropped or mapped now, not at the end.
            title = printable_text(outline.title, name, "The title the story writer returned")
            fixed.update(title.counts("title_"))
            outline = Outline(title.text, outline.beats, outline.style)
            if not outline.title.strip() or len(outline.beats) != req.page_count:
                raise PermanentStepError(
                    f"The story writer returned an unusable outline ({len(outline.beats)} pages "
                    f"for {req.page_count})."
                )
            return outline

        try:
            outline = guarded(write, attempt=attempt, record=record, what="Story outline")
        except StepFailed as e:
            return StepResult(Outcome.FAILED, str(e), timer.timings)
        with timer.phase("record"), autocommit() as c:
            pages = stories_db.save_outline_and_pages(c, story_id, outline.title, outline.style,
                                                      list(outline.beats), choice.to_json(), token=token)
        if pages is None:  # fenced: failed meanwhile, or another worker took the start over
            raise ClaimLost(f"story {story_id}: outline not saved")
        return StepResult(Outcome.DONE, f"{len(pages)} pages to run", timer.timings, fanout=pages, context=fixed,
                          priority=priority)
    with autocommit() as c:  # a re-run: the pages exist; run those not finished
        pages = stories_db.unfinished_pages(c, story_id)
    return StepResult(Outcome.DONE, f"{len(pages)} pages to run", timer.timings, fanout=pages, priority=priority)


def _protagonist_choice(photo_id: str, face_details: Any, child_age: int) -> ProtagonistChoice:
    """The story's face (pipeline/stories/faces.py) from its analysed photo; PermanentStepError with the
    parent's message when the face that is the child's cannot be used."""
    from pipeline.providers.face_json import analysis_from_json

    if not face_details:  # completed by another worker after our claim read the row
        with autocommit() as c:
            photo = photos_db.photo_state(c, photo_id)
        face_details = photo["face_details"] if photo else None
    if not face_details:
        raise PermanentStepError(NO_FACE)
    try:
        a = analysis_from_json(face_details, [], [])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise PermanentStepError(f"The photo's stored analysis is unreadable ({exc!r}); re-run the analysis.") from exc
    choice = choose_protagonist(list(a.faces), list(a.small_faces), child_age, a.image_width, a.image_height)
    if choice is None:
        raise PermanentStepError(NO_FACE)
    if choice.refusal:
        raise PermanentStepError(choice.refusal)
    return choice
