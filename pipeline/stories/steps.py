"""The pipeline's steps as plain functions of ids: claim -> provider -> store -> record.

Built from the step kernel (pipeline.kernel.step). Celery-free on purpose: the task layer
(workers/tasks.py) maps a StepResult to "enqueue the
next step" / "stop here" and RetryLater to a delayed retry; tests and tools can call these
directly. Every step is idempotent: a completed column returns at once, a column another live
copy holds is left alone, and results go to deterministic keys before the column completes.
No database connection is held while a provider works.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import unicodedata
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from db import stories as tx
from db.engine import autocommit, transaction
from db.engine import unavailable as db_unavailable
from pipeline.kernel import cpu
from pipeline.kernel.config import settings
from pipeline.kernel.errors import OutputGoneError, PermanentStepError, TransientStepError
from pipeline.kernel.quota import QuotaWait, quotas
from pipeline.kernel.step import (
    FIRST_TRY,
    Attempt,
    Outcome,
    RetryLater,
    StepFailed,
    StepResult,
    Timer,
    backoff,
    guarded,
    held_elsewhere,
)
from pipeline.kernel.storage import ObjectMissing, book_key, page_image_key
from pipeline.providers.base import Face, Outline, PageRequest, StoryRequest
from pipeline.providers.registry import image_ref, output_storage, providers, read_photo
from pipeline.stories import upload_wait
from pipeline.stories.faces import ProtagonistChoice, choose_protagonist, too_small_message
from pipeline.stories.fonts import printable_text
from pipeline.stories.themes import THEMES, resolve_theme

log = logging.getLogger("pipeline.stories.steps")
T = TypeVar("T")

MAX_NAME_LENGTH = 40

STAGE_LABEL: dict[str, str] = {
    "analysis": "photo analysis",
    "outline": "story outline",
    "text": "story text",
    "image": "illustration",
    "personalization": "personalization",
    "finish": "book assembly",
}


# --- photo analysis ---------------------------------------------------------------------------

NO_FACE = (
    "We could not find a face in this photo. Please upload a clear, well-lit photo of your "
    "child looking towards the camera."
)


def analyze_photo(photo_id: str, attempt: Attempt = FIRST_TRY, analysed: dict[str, Any] | None = None) -> StepResult:
    """photos.ai_processing_status: pending -> processing -> completed | failed. ``analysed``
    (the story start's) receives the stored ``face_details`` when this run completed it."""
    s = settings()
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = tx.claim_photo(c, photo_id, s.step_lease_seconds)
        state = None if claim else tx.photo_state(c, photo_id)
    if claim is None:
        if state is None:
            return StepResult(Outcome.STOPPED, "photo not found", timer.timings)
        if state["ai_status"] == "completed":
            return StepResult(Outcome.ALREADY_DONE, "already analysed", timer.timings)
        if state["ai_status"] == "failed":
            return StepResult(Outcome.STOPPED, "analysis failed earlier", timer.timings)
        if state["status"] != "uploaded":
            msg = (
                f"{tx.NOT_UPLOADED_PREFIX}: its upload status is '{state['status']}', "
                "not 'uploaded'. Finish the upload, then retry."
            )
            with autocommit() as c:
                tx.fail_photo(c, photo_id, msg, from_statuses=("pending", "processing"),
                              attempt=attempt.number, task_id=attempt.task_id)
            return StepResult(Outcome.FAILED, msg, timer.timings)
        return held_elsewhere("photo analysis in progress", state["age"], attempt, timer)

    def fail(msg: str) -> None:
        with autocommit() as c:
            tx.fail_photo(c, photo_id, msg, attempt=attempt.number, task_id=attempt.task_id)

    def release(msg: str | None) -> None:
        with autocommit() as c:
            tx.release_photo(c, photo_id, msg, attempt.number, attempt.task_id)

    def work() -> tuple[Any, Any, Any]:
        with timer.phase("read"):
            try:
                image = read_photo(claim["storage_provider"], claim["bucket"], claim["object_key"])
            except ObjectMissing:
                raise PermanentStepError(
                    "The photo file is missing from storage (the upload may not have finished)."
                ) from None
        with timer.phase("provider"):
            analysis = providers().vision.analyze_photo(image)
        if analysis.primary_face is None:
            if analysis.small_faces:  # faces found, all too small to use: ask for a closer photo
                raise PermanentStepError(too_small_message(
                    analysis.small_faces[0], analysis.image_width, analysis.image_height))
            raise PermanentStepError(NO_FACE)
        from pipeline.providers.local_vision import analysis_to_json

        return analysis_to_json(analysis)

    try:
        faces, labels, objects = guarded(work, attempt=attempt, fail=fail, release=release,
                                          what="Photo analysis")
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings)
    with timer.phase("record"), autocommit() as c:
        done = tx.complete_photo(c, photo_id, faces, labels, objects)
    if done and analysed is not None:
        analysed["face_details"] = faces
    return StepResult(Outcome.DONE if done else Outcome.ALREADY_DONE, "", timer.timings)


# --- story start ------------------------------------------------------------------------------

def _validate_story(name: str, age: int, theme_raw: str) -> tuple[str, str]:
    """(clean name, theme id) or PermanentStepError with what to fix."""
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
    return uuid.UUID(story_id).int % (2**31)


def generate_story(story_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """stories.status pending -> processing; the photo analysed (inline if nobody has); the
    outline, title and page rows written once; returns the pages to run (fan-out)."""
    s = settings()
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        # The claim also refuses (fails) a story whose photo is not its own user's, was deleted,
        # or whose upload failed or never finished within PHOTO_UPLOAD_WAIT_SECONDS.
        claim = tx.claim_story(c, story_id, s.step_lease_seconds, s.photo_upload_wait_seconds,
                               attempt.number, attempt.task_id)
        state = None if claim else tx.story_start_state(c, story_id, s.photo_upload_wait_seconds)
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
        return held_elsewhere("story start in progress", state["age"], attempt, timer)
    if claim["refused"]:
        return StepResult(Outcome.FAILED, claim["refused"], timer.timings)

    def fail(msg: str, stage: tx.Stage = "outline") -> StepResult:
        with autocommit() as c:
            tx.fail_story(c, story_id, msg, stage, attempt=attempt.number, task_id=attempt.task_id)
        return StepResult(Outcome.FAILED, msg, timer.timings)

    try:
        name, theme_id = _validate_story(claim["child_name"], claim["child_age"], claim["story_theme"])
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
                      and (ai_error or "").startswith(tx.NOT_UPLOADED_PREFIX))
    analysed: dict[str, Any] = {}
    if ai_status in ("pending", "processing") or uploaded_since:
        with timer.phase("analysis"):
            try:
                result = analyze_photo(photo_id, attempt, analysed)
            except RetryLater:
                with autocommit() as c:  # the photo was released; release the story with it
                    tx.release_story(c, story_id)
                raise
        if result.moves_on:
            ai_status = "completed"
            face_details = analysed.get("face_details") or face_details
        else:  # failed here, or held by another worker: read what it is now
            with autocommit() as c:
                photo = tx.photo_state(c, photo_id)
            assert photo is not None
            ai_status, ai_error = photo["ai_status"], photo["ai_error_message"]
        if ai_status in ("pending", "processing"):
            # Held by another worker, or released for a transient retry: wait, not fail.
            with autocommit() as c:
                tx.release_story(c, story_id)
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

        def release(msg: str | None) -> None:
            with autocommit() as c:
                tx.release_story(c, story_id, msg, attempt.number, attempt.task_id)

        def write() -> Outline:
            with timer.phase("provider"):
                outline = providers().writer.write_outline(req)
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

        def record_failure(msg: str) -> None:
            fail(msg)

        try:
            outline = guarded(write, attempt=attempt, fail=record_failure, release=release,
                               what="Story outline")
        except StepFailed as e:
            return StepResult(Outcome.FAILED, str(e), timer.timings)
        with timer.phase("record"), autocommit() as c:
            pages = tx.save_outline_and_pages(c, story_id, outline.title, outline.style, list(outline.beats),
                                              choice.to_json())
        if pages is None:
            return StepResult(Outcome.STOPPED, "story changed while writing the outline", timer.timings)
        return StepResult(Outcome.DONE, f"{len(pages)} pages to run", timer.timings, fanout=pages, context=fixed)
    with autocommit() as c:  # a re-run: the pages exist; run those not finished
        pages = tx.unfinished_pages(c, story_id)
    return StepResult(Outcome.DONE, f"{len(pages)} pages to run", timer.timings, fanout=pages)


def _protagonist_choice(photo_id: str, face_details: Any, child_age: int) -> ProtagonistChoice:
    """The story's face (pipeline/stories/faces.py) from its analysed photo; PermanentStepError with the
    parent's message when the face that is the child's cannot be used."""
    from pipeline.providers.local_vision import analysis_from_json

    if not face_details:  # completed by another worker after our claim read the row
        with autocommit() as c:
            photo = tx.photo_state(c, photo_id)
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


def _story_face(claim: tx.PageClaim) -> Face:
    """The face this story uses: the one its start recorded (story_outlines.protagonist_face), or,
    for a story started before choices were recorded, the photo's primary face."""
    from pipeline.providers.local_vision import face_from_json

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


# --- page steps -------------------------------------------------------------------------------

def _page_request(claim: tx.PageClaim) -> PageRequest:
    story = StoryRequest(
        " ".join(claim.child_name.split()), claim.child_age,
        (resolve_theme(claim.story_theme) or THEMES["space_adventure"]).id,
        len(claim.beats), story_seed(claim.story_id),
    )
    return PageRequest(story, Outline(claim.title, tuple(claim.beats), claim.style), claim.page_number)


def _not_claimed(state: Any, attempt: Attempt, timer: Timer) -> StepResult:
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


def _page_step(
    page_id: str, stage: tx.Stage, attempt: Attempt, work: Callable[[tx.PageClaim, Timer], dict[str, Any]]
) -> StepResult:
    s = settings()
    col = tx.PAGE_STAGES[stage]
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = tx.claim_page(c, page_id, col, s.step_lease_seconds)
        state = None if claim else tx.page_state(c, page_id, col)
    if claim is None:
        if state is None:
            return StepResult(Outcome.STOPPED, "page not found", timer.timings)
        return _not_claimed(state, attempt, timer)

    label = STAGE_LABEL[stage]
    ctx = {"story": claim.story_id, "page_number": claim.page_number}

    def fail(msg: str) -> None:
        with autocommit() as c:
            tx.fail_page(c, page_id, col, stage, msg, f"Page {claim.page_number} ({label}): {msg}",
                         attempt.number, attempt.task_id)

    def release(msg: str | None) -> None:
        with autocommit() as c:
            tx.release_page(c, page_id, col, stage, msg, attempt.number, attempt.task_id)

    try:
        values = guarded(lambda: work(claim, timer), attempt=attempt, fail=fail, release=release,
                          what=label.capitalize())
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    with timer.phase("record"), autocommit() as c:
        done = tx.complete_page(c, page_id, col, values)
    return StepResult(Outcome.DONE if done else Outcome.ALREADY_DONE, "", timer.timings, context=ctx)


def write_text(page_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    fixed: dict[str, int] = {}  # characters printable_text changed: counts for the log line

    def work(claim: tx.PageClaim, timer: Timer) -> dict[str, Any]:
        with timer.phase("provider"):
            page_text = providers().writer.write_page(_page_request(claim))
        # Characters no font draws (emoji, ...): dropped or mapped before the text is stored.
        page = printable_text(page_text or "", claim.child_name, f"Page {claim.page_number}'s text")
        fixed.update(page.counts())
        if not page.text.strip():
            raise PermanentStepError("The story writer returned an empty page.")
        return {"text": page.text.strip()}

    result = _page_step(page_id, "text", attempt, work)
    result.context.update(fixed)
    return result


def draw_base(page_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    if providers().image_jobs is not None:
        return _job_step(page_id, "image", attempt)

    def work(claim: tx.PageClaim, timer: Timer) -> dict[str, Any]:
        p = providers()
        with timer.phase("provider"):
            png = p.illustrator.draw_base(_page_request(claim))
        key = page_image_key(claim.story_id, claim.page_number, "base")
        with timer.phase("store"):
            p.storage.put(key, png, "image/png")
        return {"base_image_key": key}

    return _page_step(page_id, "image", attempt, work)


def personalize(page_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    def work(claim: tx.PageClaim, timer: Timer) -> dict[str, Any]:
        p = providers()
        assert claim.photo is not None and claim.base_image_key
        face = _story_face(claim)
        with timer.phase("read"):
            base = p.storage.get(claim.base_image_key)
            photo = read_photo(claim.photo["storage_provider"], claim.photo["bucket"], claim.photo["object_key"])
        with timer.phase("provider"):
            png = p.illustrator.personalize(base, photo, face, _page_request(claim))
        key = page_image_key(claim.story_id, claim.page_number, "personalized")
        with timer.phase("store"):
            p.storage.put(key, png, "image/png")
        return {"personalized_image_key": key}

    if providers().image_jobs is not None:
        result = _job_step(page_id, "personalization", attempt)
    else:
        result = _page_step(page_id, "personalization", attempt, work)
    if result.moves_on:
        # The story barrier, checked after this page's completion committed: of the pages that
        # finish at the same moment, at least the last to get here sees them all done. Also on
        # a redelivered copy (already done): its first run may have died before enqueueing.
        with autocommit() as c:
            result.context["story_ready"] = tx.story_ready(c, result.context["story"])
    return result


# --- page steps run as remote jobs (Replicate) --------------------------------------------------
#
# A prediction can take minutes, so a step does not wait for it in a worker slot. It records the
# job *before* creating it (provider_jobs, one live job per page step), creates it, and returns;
# the same task comes back every JOB_POLL_INTERVAL to look at it (no claim needed: the live job
# row is the guard, and each look renews the page's lease), and when the job has succeeded it
# copies the output into our storage at once (the provider deletes it within the hour) and
# completes the column. A run that dies anywhere finds the job again: by its id, or, if it died
# between the provider's reply and recording the id, by listing the provider's recent jobs for
# the same (deterministic) input. The shared cap on concurrent jobs is held for the job's life.

def _job_input(stage: str, claim: tx.PageClaim, timer: Timer) -> dict[str, Any]:
    p = providers()
    jobs = p.image_jobs
    assert jobs is not None
    req = _page_request(claim)
    if stage == "image":
        return jobs.base_input(req)
    assert claim.photo is not None and claim.base_image_key
    face = _story_face(claim)
    from pipeline.providers.replicate_images import face_photo_data_uri

    with timer.phase("read"):
        base_ref = image_ref(p.storage, claim.base_image_key, "image/png")
        photo = read_photo(claim.photo["storage_provider"], claim.photo["bucket"], claim.photo["object_key"])
    # Only the child's face leaves us, cropped (not the whole family photo), and the swap
    # model cannot pick a sibling's face.
    return jobs.personalize_input(base_ref, face_photo_data_uri(photo, face), face, req)


def _input_sha(model_input: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(model_input, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _job_step(page_id: str, stage: tx.JobStage, attempt: Attempt) -> StepResult:
    s = settings()
    col = tx.PAGE_STAGES[stage]
    jobs = providers().image_jobs
    assert jobs is not None
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = tx.claim_page(c, page_id, col, s.step_lease_seconds)
        state = None if claim else tx.page_state(c, page_id, col)  # why not, when not
        job = tx.live_job(c, page_id, stage)
    if claim is not None:
        ctx: dict[str, Any] = {"story": claim.story_id, "page_number": claim.page_number}
    elif state is not None:
        ctx = {"story": str(state["story_id"]), "page_number": state["page_number"]}
    else:
        return StepResult(Outcome.STOPPED, "page not found", timer.timings)
    label = STAGE_LABEL[stage]

    def fail(msg: str) -> None:
        with autocommit() as c:
            if job is not None:
                tx.job_finished(c, str(job["id"]), "failed", msg)
            tx.fail_page(c, page_id, col, stage, msg, f"Page {ctx['page_number']} ({label}): {msg}",
                         attempt.number, attempt.task_id)
        quotas().release(jobs.name, f"{page_id}:{stage}")

    if claim is None:
        assert state is not None
        if state["status"] == "processing" and job is not None and job["external_id"]:
            return _follow_job(page_id, stage, job, attempt, timer, ctx, fail)
        return _not_claimed(state, attempt, timer)

    if job is not None and job["external_id"]:  # a dead run's job: follow it, don't pay twice
        return _follow_job(page_id, stage, job, attempt, timer, ctx, fail)

    holder = f"{page_id}:{stage}"

    def release(msg: str | None) -> None:
        with autocommit() as c:
            tx.release_page(c, page_id, col, stage, msg, attempt.number, attempt.task_id)

    def start() -> tuple[str, str]:
        nonlocal job
        model_input = _job_input(stage, claim, timer)
        sha = _input_sha(model_input)
        wait = quotas().acquire(jobs.name, holder, s.job_max_seconds + 60)
        if wait > 0:
            raise QuotaWait(jobs.name, f"{jobs.name} has its maximum of concurrent jobs running", min(wait, 10.0))
        reserved_now = False
        if job is None:
            with autocommit() as c:
                job = tx.reserve_job(c, page_id, stage, jobs.name, sha)
                reserved_now = job is not None
                if job is None:  # lost a race to another run of this step: follow its job
                    job = tx.live_job(c, page_id, stage)
            if job is None or job["external_id"]:
                return "", ""
        kind = "base" if stage == "image" else "personalize"
        with timer.phase("provider"):
            # An intent recorded by an earlier run that has no id: that run died (or timed out)
            # between asking the provider and recording the reply. Its job may exist: find it
            # (never an earlier job of this step, such as one whose output expired).
            found = None
            if not reserved_now:
                with autocommit() as c:
                    earlier = tx.job_external_ids(c, page_id, stage)
                found = jobs.find(kind, model_input, job["created_at"] - timedelta(minutes=5), exclude=earlier)
            external_id = found or jobs.create(kind, model_input)
        return external_id, sha

    try:
        external_id, sha = guarded(start, attempt=attempt, fail=fail, release=release, what=label.capitalize())
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    assert job is not None
    if external_id:
        with autocommit() as c:
            tx.job_started(c, str(job["id"]), external_id, sha)
    # Come back when the job has had time to run; the page keeps its claim meanwhile.
    raise RetryLater(s.job_poll_interval, f"{label} job started", waiting=True)


def _follow_job(page_id: str, stage: tx.JobStage, job: Any, attempt: Attempt, timer: Timer,
                ctx: dict[str, Any], fail: Callable[[str], None]) -> StepResult:
    s = settings()
    p = providers()
    jobs = p.image_jobs
    assert jobs is not None
    col = tx.PAGE_STAGES[stage]
    job_id, external_id = str(job["id"]), str(job["external_id"])
    label = STAGE_LABEL[stage]

    def note_error(msg: str | None) -> None:
        # The job keeps running remotely: the page keeps its claim; only the error is counted.
        if msg is not None:
            with autocommit() as c:
                tx.job_error(c, job_id)

    def look() -> tuple[str, bytes | None, str | None]:
        with timer.phase("provider"):
            st = jobs.status(external_id)
        if st.state == "succeeded":
            if not st.output_url:
                return "expired", None, "the output was empty"
            with timer.phase("download"):
                try:
                    return "succeeded", jobs.download(st.output_url), None
                except OutputGoneError as e:
                    return "expired", None, str(e)
        return st.state, None, st.error

    try:
        state, image, error = guarded(look, attempt=attempt, fail=fail, release=note_error,
                                       what=label.capitalize())
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)

    if state == "expired":
        return _replace_expired_job(page_id, stage, job, attempt, timer, ctx, fail, error or "the output was gone")

    if state == "running":
        if job["age"].total_seconds() > s.job_max_seconds:
            with contextlib.suppress(Exception):
                jobs.cancel(external_id)  # best effort: stop paying for it
            msg = (f"The {label} job did not finish within {int(s.job_max_seconds)} s "
                   f"(job {external_id}); an operator can retry it.")
            fail(msg)
            return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
        with autocommit() as c:
            tx.job_polled(c, job_id, page_id, col)
        quotas().acquire(jobs.name, f"{page_id}:{stage}", s.job_max_seconds + 60)  # renew the slot
        raise RetryLater(s.job_poll_interval, f"{label} job {external_id} still running", waiting=True)

    if state != "succeeded":
        from pipeline.providers.base import JobStatus
        from pipeline.providers.replicate_images import failure_message, is_retryable_failure

        msg = failure_message(error) if state == "failed" else f"The {label} job was {state}: {error or 'no reason'}"
        if is_retryable_failure(JobStatus(state, None, error)) and not attempt.last:
            # The provider's own hiccup (interrupted, out of memory): a new job may pass. The
            # dead job is closed first, so the next run creates a new one rather than finding it.
            with autocommit() as c:
                tx.job_finished(c, job_id, "failed", msg)
                tx.release_page(c, page_id, col, stage, msg, attempt.number, attempt.task_id)
            raise RetryLater(backoff(attempt.number, None), msg)
        fail(msg)
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)

    assert image is not None
    variant = "base" if stage == "image" else "personalized"
    key = page_image_key(ctx["story"], ctx["page_number"], variant)
    with timer.phase("store"):
        p.storage.put(key, image, "image/png")
    with timer.phase("record"), transaction() as c:
        tx.job_finished(c, job_id, "succeeded")
        done = tx.complete_page(c, page_id, col, {f"{variant}_image_key": key})
    quotas().release(jobs.name, f"{page_id}:{stage}")
    return StepResult(Outcome.DONE if done else Outcome.ALREADY_DONE, "", timer.timings, context=ctx)


# What a page step's remote job makes, for the message when its outputs kept expiring.
JOB_PRODUCT = {"image": "illustration", "personalization": "personalized picture"}


def _replace_expired_job(page_id: str, stage: tx.JobStage, job: Any, attempt: Attempt, timer: Timer,
                         ctx: dict[str, Any], fail: Callable[[str], None], why: str) -> StepResult:
    """The job succeeded but its output was gone before we copied it (Replicate deletes outputs
    after about an hour: a backlog or an outage is enough). Only a new job can make the picture
    again: the old one is marked 'expired' (with why) and the page step released in one
    transaction, and the step's next run records a new job *before* creating it (recreation + 1),
    as any first job. Bounded by JOB_OUTPUT_RECREATIONS, then the page fails saying so."""
    s = settings()
    jobs = providers().image_jobs
    assert jobs is not None
    col = tx.PAGE_STAGES[stage]
    provider = jobs.name.capitalize()
    made = int(job["recreation"]) + 1  # jobs this step has made in a row, this one included
    if made > s.job_output_recreations:
        msg = (f"The {JOB_PRODUCT[stage]} for page {ctx['page_number']} was made but expired at {provider} "
               f"before it could be saved, {made} time{'s' if made > 1 else ''}; last: {why}. "
               "An operator can retry it.")
        fail(msg)
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
    note = (f"{STAGE_LABEL[stage].capitalize()} job {job['external_id']} finished but its output expired at "
            f"{provider} before it was saved: {why}. Making a new one ({made + 1} of at most "
            f"{s.job_output_recreations + 1}).")
    with transaction() as c:
        if not tx.job_finished(c, str(job["id"]), "expired", why):
            # Another copy of this step ended the job first and decides what follows.
            return StepResult(Outcome.STOPPED, "job already ended", timer.timings, context=ctx)
        tx.release_page(c, page_id, col, stage, note, attempt.number, attempt.task_id)
    quotas().release(jobs.name, f"{page_id}:{stage}")  # this job is over; the next one queues anew
    log.warning("page %s %s: job %s output expired (%s); re-creating (%d of %d)", page_id, stage,
                job["external_id"], why, made, s.job_output_recreations)
    raise RetryLater(min(s.job_poll_interval, 1.0), note, waiting=True)


# --- story completion -------------------------------------------------------------------------

def finish_story(story_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """processing -> completed once every page is personalized, after writing the book.

    Enqueued by the personalization that finds every page done (two may, at the same moment):
    only the one that wins the row lock assembles the book and completes the story."""
    timer = Timer()
    try:
        with transaction() as c:
            with timer.phase("lock"):
                story = tx.lock_story_if_done(c, story_id)
            if story is None:
                state = tx.story_state(c, story_id)
                if state is not None and state["status"] == "completed":
                    return StepResult(Outcome.ALREADY_DONE, "story already completed", timer.timings)
                if attempt.redelivered and tx.story_ready(c, story_id):
                    # Ready but locked: another finisher holds the row. A fresh duplicate leaves it
                    # to that one; a re-sent copy may be the only one left (its first run was cut
                    # off mid-transaction and the lock belongs to a session PostgreSQL has not yet
                    # ended), so it looks again rather than leave the story processing.
                    raise RetryLater(backoff(0, None), "story row locked by another finisher", waiting=True)
                return StepResult(Outcome.STOPPED, "pages still running or story not processing",
                                  timer.timings)
            with timer.phase("book"):
                pages = [dict(p) for p in tx.book_pages(c, story_id)]
                timer.timings.update(cpu.run(write_book, story_id, story["title"] or "",
                                             story["child_name"], story["story_theme"], pages))
            with timer.phase("record"):
                tx.complete_story(c, story_id)
    except PermanentStepError as e:  # e.g. which page has a character no font draws: says what
        msg = f"The book could not be assembled: {e}"
        with autocommit() as c:
            tx.fail_story(c, story_id, msg, "finish", attempt=attempt.number, task_id=attempt.task_id)
        return StepResult(Outcome.FAILED, msg, timer.timings)
    except TransientStepError as e:
        if attempt.last:
            msg = f"The book could not be assembled after {attempt.number + 1} tries: {e}"
            with autocommit() as c:
                tx.fail_story(c, story_id, msg, "finish", attempt=attempt.number, task_id=attempt.task_id)
            return StepResult(Outcome.FAILED, msg, timer.timings)
        raise RetryLater(backoff(attempt.number, None), str(e)) from None
    except RetryLater:
        raise
    except Exception as e:  # noqa: BLE001 - record, don't loop: an operator can retry
        if db_unavailable(e):
            raise  # not the book's fault: the task layer re-sends the step (workers/tasks.py)
        log.exception("book assembly failed for story %s", story_id)
        msg = f"The book could not be assembled ({type(e).__name__}); an operator can retry it."
        with autocommit() as c:
            tx.fail_story(c, story_id, msg, "finish", attempt=attempt.number, task_id=attempt.task_id)
        return StepResult(Outcome.FAILED, msg, timer.timings)
    return StepResult(Outcome.DONE, "story completed", timer.timings)


def write_book(story_id: str, title: str, child_name: str, theme_raw: str,
               pages: list[Any]) -> dict[str, float]:
    """The book as PDF and HTML at deterministic keys beside the page images; returns its
    phase timings (ms). Runs in a CPU process (pipeline.kernel.cpu): plain arguments, its own
    storage client."""
    from pipeline.stories.book import Book, BookPage, render_html, render_pdf

    timer = Timer()
    storage = output_storage()
    with timer.phase("book_read"):
        images = [storage.get(p["personalized_image_key"]) for p in pages]
    theme = resolve_theme(theme_raw)
    book = Book(
        title=title, child_name=" ".join(child_name.split()),
        theme_title=theme.title if theme else theme_raw,
        pages=[BookPage(p["page_number"], p["text"] or "", img) for p, img in zip(pages, images, strict=True)],
        cover_image=images[0] if images else None,
    )
    prefix = f"stories/{story_id}/"
    urls = [p["personalized_image_key"].removeprefix(prefix) for p in pages]
    with timer.phase("book_pdf"):
        pdf = render_pdf(book)
    with timer.phase("book_html"):
        page = render_html(book, urls, urls[0] if urls else None).encode()
    with timer.phase("book_store"):
        storage.put(book_key(story_id, "pdf"), pdf, "application/pdf")
        storage.put(book_key(story_id, "html"), page, "text/html; charset=utf-8")
    return timer.timings
