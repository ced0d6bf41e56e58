"""Photo analysis (``photos.analyze``; also run inline by the story's start): claim the photo, read
it, find the child's face with the vision provider, measure each usable face's character profile
(pipeline/providers/character.py: face data, stored with face_details), record the analysis.

photos.ai_processing_status: pending -> processing -> completed | failed. Idempotent: a completed
photo returns at once; a photo another live copy holds is left to it.
"""
from __future__ import annotations

from typing import Any

from db import photos as photos_db
from db.claims import poison_message
from db.engine import autocommit
from pipeline.config import settings
from pipeline.kernel import usage
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.step import (
    FIRST_TRY,
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
from pipeline.kernel.storage import ObjectMissing
from pipeline.providers import registry
from pipeline.stories.faces import too_small_message
from pipeline.stories.recorders import PhotoRecorder

NO_FACE = (
    "We could not find a face in this photo. Please upload a clear, well-lit photo of your "
    "child looking towards the camera."
)


def analyze_photo(photo_id: str, attempt: Attempt = FIRST_TRY, analysed: dict[str, Any] | None = None) -> StepResult:
    """photos.ai_processing_status: pending -> processing -> completed | failed. ``analysed``
    (the story start's) receives the stored ``face_details`` when this run completed it.

    Returns DONE / ALREADY_DONE / STOPPED (not found, failed earlier, held by another copy) /
    FAILED (no usable face, photo not uploaded or missing: the parent's message recorded).
    Raises RetryLater after a transient provider error (the claim released) or for a redelivered
    copy waiting for another's lease."""
    s = settings()
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = photos_db.claim_photo(c, photo_id, s.step_lease_seconds, attempt.held)
        state = None if claim else photos_db.photo_state(c, photo_id)
    if claim is None:
        if state is None:
            return StepResult(Outcome.STOPPED, "photo not found", timer.timings)
        if state["ai_status"] == "completed":
            return StepResult(Outcome.ALREADY_DONE, "already analysed", timer.timings)
        if state["ai_status"] == "failed":
            return StepResult(Outcome.STOPPED, "analysis failed earlier", timer.timings)
        if state["status"] != "uploaded":
            msg = (
                f"{photos_db.NOT_UPLOADED_PREFIX}: its upload status is '{state['status']}', "
                "not 'uploaded'. Finish the upload, then retry."
            )
            with autocommit() as c:
                photos_db.fail_photo(c, photo_id, msg, from_statuses=("pending", "processing"),
                                     attempt=attempt.number, task_id=attempt.task_id)
            return StepResult(Outcome.FAILED, msg, timer.timings)
        return held_elsewhere("photo analysis in progress", state["age"], attempt, timer)

    def work() -> tuple[Any, Any, Any, Any]:
        with timer.phase("read"):
            try:
                image = registry.read_photo(claim["storage_provider"], claim["bucket"], claim["object_key"])
            except ObjectMissing:
                raise PermanentStepError(
                    "The photo file is missing from storage (the upload may not have finished)."
                ) from None
        with timer.phase("provider"):
            analysis = registry.providers().vision.analyze_photo(image)
        if analysis.primary_face is None:
            if analysis.small_faces:  # faces found, all too small to use: ask for a closer photo
                raise PermanentStepError(too_small_message(
                    analysis.small_faces[0], analysis.image_width, analysis.image_height))
            raise PermanentStepError(NO_FACE)
        from pipeline.providers.character import profiles_from_photo
        from pipeline.providers.face_json import analysis_to_json

        with timer.phase("profile"):  # how each usable face looks, for the illustrations (face data)
            profile = profiles_from_photo(image, analysis.faces)
        return (*analysis_to_json(analysis), profile)

    token = int(claim["claim_token"])
    note_claim(token)
    record = PhotoRecorder(photo_id, attempt, token)
    if claim["takeovers"] >= s.max_takeovers:  # a poison photo: it took its workers down
        msg = poison_message("The photo's analysis", int(claim["takeovers"]), s.step_lease_seconds)
        record.fail(msg)
        return StepResult(Outcome.FAILED, msg, timer.timings)
    try:
        # Its cost is the photo's (the story's, when the story's start runs it: the meter around it)
        with usage.metered("analysis", f"photo:{photo_id}:a{attempt.number}", budgeted=False):
            faces, labels, objects, profile = guarded(work, attempt=attempt, record=record, what="Photo analysis")
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings)
    with timer.phase("record"), autocommit() as c:
        done = photos_db.complete_photo(c, photo_id, faces, labels, objects, token, character_profile=profile)
    if not done:  # fenced: another worker took the analysis over while this run was away
        raise ClaimLost(f"photo {photo_id}: analysis not recorded")
    if analysed is not None:
        analysed["face_details"] = faces
    return StepResult(Outcome.DONE, "", timer.timings)
