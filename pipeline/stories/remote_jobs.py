"""Page steps run as remote jobs (Replicate predictions): ``draw_base`` and ``personalize`` when
the image provider has image jobs.

A prediction can take minutes, so a step does not wait for it in a worker slot. It records the
job *before* creating it (provider_jobs, one live job per page step), creates it, and returns
(a job expected to end within JOB_INLINE_WAIT is waited out in the thread instead:
pipeline/kernel/job_timing.py ``wait_end``); the same task comes back when the job should be done
(adaptive looks, else every JOB_POLL_INTERVAL) to look at it (no claim needed: the live job
row is the guard, and each look renews the page's lease), and when the job has succeeded it
copies the output into our storage at once (the provider deletes it within the hour) and
completes the column. A run that dies anywhere finds the job again: by its id, or, if it died
between the provider's reply and recording the id, by listing the provider's recent jobs for
the same (deterministic) input. The shared cap on concurrent jobs is held for the job's life.

A job step's recorder (pipeline/stories/recorders.py: JobRecorder) fails the job with the page
and frees the job's quota slot; while following a running job, a transient error is only counted.
"""
from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from db import pages as pages_db
from db import provider_jobs as jobs_db
from db.engine import autocommit, transaction
from pipeline.config import settings
from pipeline.kernel import job_timing, parking, usage
from pipeline.kernel.errors import OutputGoneError
from pipeline.kernel.quota import QuotaWait, quotas
from pipeline.kernel.step import (
    Attempt,
    ClaimLost,
    Outcome,
    RetryLater,
    StepFailed,
    StepResult,
    Timer,
    backoff,
    guarded,
)
from pipeline.kernel.storage import page_image_key
from pipeline.providers import registry
from pipeline.stories.job_input import input_sha, job_input
from pipeline.stories.page_step import (
    STAGE_LABEL,
    claim_or_state,
    not_claimed,
    page_columns,
    poison_failure,
    store_if_held,
)
from pipeline.stories.recorders import JobRecorder
from pipeline.stories.webhook_follows import handed_on

log = logging.getLogger("pipeline.stories.remote_jobs")

# What a page step's remote job makes, for the message when its outputs kept expiring.
JOB_PRODUCT = {"image": "illustration", "personalization": "personalized picture"}


def quota_of(jobs: Any) -> str:
    """The concurrency quota a job provider's jobs hold slots of: its ``quota`` attribute (the
    simulated provider stands in for another's), else its name ("replicate")."""
    return str(getattr(jobs, "quota", jobs.name))


def job_step(page_id: str, stage: jobs_db.JobStage, attempt: Attempt) -> StepResult:
    """Run page step ``stage`` of ``page_id`` as a remote job: claim the page, reserve the job row,
    create the job (or find the one a dead run created), and come back later: raises RetryLater
    (waiting) every JOB_POLL_INTERVAL s until the job ends. Then the output is stored and the
    column completed (DONE), or the page fails (FAILED, recorded), or, when the output expired,
    a new job is made (bounded by JOB_OUTPUT_RECREATIONS). The job's cost is recorded against the
    story and page (pipeline/kernel/usage.py; the meter is filled in once the page is known)."""
    with usage.metered(stage, f"{page_id}:{stage}:a{attempt.number}") as meter:
        return _job_step(page_id, stage, attempt, meter)


def _job_step(page_id: str, stage: jobs_db.JobStage, attempt: Attempt, meter: usage.Meter) -> StepResult:
    s = settings()
    jobs = registry.providers().image_jobs
    assert jobs is not None
    timer = Timer()
    col, _ = page_columns(stage)
    with timer.phase("claim"), autocommit() as c:
        claim, state = claim_or_state(c, page_id, stage, s.step_lease_seconds, attempt.held)  # why not, when not
        # Claimed: the step's live job (a silent holder's, if any) is adopted under the new claim,
        # so that holder can neither start nor end it any more. Not claimed: just look.
        job = (jobs_db.adopt_job(c, page_id, stage, claim.token) if claim is not None
               else jobs_db.live_job(c, page_id, stage))
    if claim is not None:
        ctx: dict[str, Any] = {"story": claim.story_id, "page_number": claim.page_number}
    elif state is not None:
        ctx = {"story": str(state["story_id"]), "page_number": state["page_number"]}
    else:
        return StepResult(Outcome.STOPPED, "page not found", timer.timings)
    revision = claim.revision if claim is not None else int(state["revision"]) if state is not None else 1
    meter.story_id, meter.page_number = ctx["story"], ctx["page_number"]
    if revision > 1:  # a redone page (README "Redoing a page"): its pictures go to that revision's keys
        ctx["revision"] = revision
    label = STAGE_LABEL[stage]

    # A run that follows a job acts under the job's claim (its token): the page's current holder's.
    token = claim.token if claim is not None else int(job["claim_token"]) if job is not None else 0
    record = JobRecorder(page_id, stage, ctx["page_number"], label, attempt, token, provider=quota_of(jobs), job=job)

    if claim is None:
        assert state is not None
        if state["status"] == "processing" and job is not None and job["external_id"]:
            return _follow_job(record.following(), timer, ctx)
        return handed_on(not_claimed(state, attempt, timer), page_id, stage, attempt)

    poisoned = poison_failure(record, claim.takeovers, timer, ctx)
    if poisoned is not None:
        return poisoned
    if job is not None and job["external_id"]:  # a dead run's job: follow it, don't pay twice
        return _follow_job(record.following(), timer, ctx)

    holder = record.holder

    kind = "base" if stage == "image" else "personalize"
    made_at: list[float] = []  # when the job was created or found (monotonic)

    built: list[tuple[dict[str, Any], str]] = []  # the job's input and its digest, once built

    def build() -> None:
        if not built:
            model_input = job_input(stage, claim, timer)
            built.append((model_input, input_sha(model_input, claim.revision)))

    def start() -> tuple[str, str]:
        wait = quotas().acquire(quota_of(jobs), holder, s.job_max_seconds + 60)
        # First in line (pre-woken): the input is built while the running job ends, and the next
        # release grants this step its slot (pipeline/kernel/quota_line.py).
        if wait > 0 and quotas().wait_turn(quota_of(jobs), holder, s.job_max_seconds + 60, ready=build):
            wait = 0.0
        if wait > 0:
            # Queued in the provider's line (holder): woken when a slot is handed on to it.
            raise QuotaWait(quota_of(jobs), f"{jobs.name} has its maximum of concurrent jobs running", min(wait, 10.0),
                            holder=holder)
        # Built once the slot is held (or is next): a step waiting further back decodes no photo.
        build()
        model_input, sha = built[0]
        reserved_now = False
        if record.job is None:
            with autocommit() as c:
                record.job = jobs_db.reserve_job(c, page_id, stage, col, jobs.name, sha, claim.token)
                reserved_now = record.job is not None
                if record.job is None:  # lost a race to another run of this step, or the claim
                    record.job = jobs_db.live_job(c, page_id, stage)
            if record.job is None or record.job["claim_token"] != claim.token:
                raise ClaimLost(f"page {claim.page_number} {stage}: no job reserved")
            if record.job["external_id"]:
                return "", ""
        with timer.phase("provider"):
            # An intent recorded by an earlier run that has no id: that run died (or timed out)
            # between asking the provider and recording the reply. Its job may exist: find it
            # (never an earlier job of this step, such as one whose output expired).
            found = None
            if not reserved_now:
                with autocommit() as c:
                    earlier = jobs_db.job_external_ids(c, page_id, stage)
                found = jobs.find(kind, model_input, record.job["created_at"] - timedelta(minutes=5), exclude=earlier)
            external_id = found or jobs.create(kind, model_input)
        made_at.append(time.monotonic())
        return external_id, sha

    try:
        external_id, sha = guarded(start, attempt=attempt, record=record, what=label.capitalize())
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    job = record.job
    assert job is not None
    if external_id:
        with autocommit() as c:
            started = jobs_db.job_started(c, str(job["id"]), external_id, sha, claim.token, by=attempt.task_id)
        if not started:
            _orphaned(page_id, stage, jobs, external_id, sha, claim.token)
            raise ClaimLost(f"page {claim.page_number} {stage}: job {external_id} made after the claim was lost")
    # Come back when the job should be done (job_timing); the page keeps its claim meanwhile. A
    # short job is waited out in this thread instead (job_timing.wait_end): the follow at once.
    age = time.monotonic() - made_at[-1] if made_at else 0.0
    if external_id and job_timing.inline_wait() > 0:
        record.job = {**dict(job), "external_id": external_id, "age": timedelta(seconds=age)}
        return _follow_job(record.following(), timer, ctx, looked=True)
    raise RetryLater(job_timing.next_look(jobs.name, kind, age), f"{label} job started", waiting=True,
                     park=_follow_key(page_id, stage))


def _follow_key(page_id: str, stage: str) -> str:
    return f"follow:{page_id}:{stage}"


def wake_follow(page_id: str, stage: jobs_db.JobStage) -> bool:
    """Look at the page step's running job now instead of at its next scheduled look (for a
    provider's completion webhook): the step's parked message is sent at once (its delayed copy
    then drops itself). True when one was parked; False when none was (the step is running now:
    its next look is then made at once, within a minute). Never raises for Redis or the broker."""
    return parking.wake(_follow_key(page_id, stage))


def wake_job(provider: str, external_id: str) -> bool:
    """:func:`wake_follow` for the page step whose job ``provider`` knows as ``external_id`` (e.g.
    a Replicate prediction id from a webhook); False when no such job is recorded."""
    with autocommit() as c:
        row = jobs_db.job_by_external_id(c, provider, external_id)
    if row is None:
        return False
    return wake_follow(str(row["page_id"]), row["stage"])


def _orphaned(page_id: str, stage: jobs_db.JobStage, jobs: Any, external_id: str, sha: str, token: int) -> None:
    """A job this run created after its claim (``token``) was taken over: recorded (never a job
    nobody knows of) and cancelled at the provider, unless the new holder found and recorded the
    same job (then it is that holder's to follow)."""
    with autocommit() as c:
        mine = jobs_db.record_orphan(c, page_id, stage, jobs.name, external_id, sha, token)
    if not mine:
        return
    log.warning("page %s %s: job %s was made after this run lost its claim; cancelling it", page_id, stage,
                external_id)
    try:
        jobs.cancel(external_id)
    except Exception as e:  # noqa: BLE001 - recorded on the row; an operator can cancel it by id
        log.error("page %s %s: could not cancel orphan job %s: %s", page_id, stage, external_id, e)
        with autocommit() as c:
            jobs_db.orphan_cancel_failed(c, jobs.name, external_id, f"{type(e).__name__}: {e}"[:300])


def _follow_job(record: JobRecorder, timer: Timer, ctx: dict[str, Any], looked: bool = False) -> StepResult:
    """Look at the page step's running job (``record.job``; ``looked``: known running, just
    created): still running -> wait for its end in this thread when it is near
    (job_timing.wait_end), else come back later (RetryLater, the page's lease renewed); succeeded
    -> store its output and complete the column; expired -> :func:`_replace_expired_job`; failed
    -> retry with a new job or fail the page."""
    page_id, stage, job, attempt = record.page_id, record.stage, record.job, record.attempt
    s = settings()
    p = registry.providers()
    jobs = p.image_jobs
    assert jobs is not None
    col, _ = page_columns(stage)
    job_id, external_id = str(job["id"]), str(job["external_id"])
    label = STAGE_LABEL[stage]
    kind = "base" if stage == "image" else "personalize"

    def look() -> tuple[str, bytes | None, str | None]:
        with timer.phase("provider"):
            st = jobs.status(external_id)
        if st.state != "running":
            # The job no longer runs at the provider: its slot is handed on now, before the copy.
            quotas().release(quota_of(jobs), f"{page_id}:{stage}")
            if st.state == "succeeded":
                job_timing.observe(jobs.name, kind, st.seconds or job["age"].total_seconds())
        if st.state == "succeeded":
            if not st.output_url:
                return "expired", None, "the output was empty"
            with timer.phase("download"):
                try:
                    return "succeeded", jobs.download(st.output_url), None
                except OutputGoneError as e:
                    return "expired", None, str(e)
        return st.state, None, st.error

    def ended() -> tuple[str, bytes | None, str | None] | None:
        got = guarded(look, attempt=attempt, record=record, what=label.capitalize())
        return None if got[0] == "running" else got

    try:
        got = None if looked else ended()
        if got is None:
            t0 = time.monotonic()
            with timer.phase("wait"):
                got = job_timing.wait_end(jobs.name, kind, job["age"].total_seconds(), ended)
            if got is None:
                job = record.job = {**dict(job), "age": job["age"] + timedelta(seconds=time.monotonic() - t0)}
        state, image, error = got if got is not None else ("running", None, None)
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)

    if state == "expired":
        return _replace_expired_job(record, timer, ctx, error or "the output was gone")

    if state == "running":
        if job["age"].total_seconds() > s.job_max_seconds:
            with contextlib.suppress(Exception):
                jobs.cancel(external_id)  # best effort: stop paying for it
            msg = (f"The {label} job did not finish within {int(s.job_max_seconds)} s "
                   f"(job {external_id}); an operator can retry it.")
            record.fail(msg)
            return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
        with autocommit() as c:
            jobs_db.job_polled(c, job_id, page_id, col)
        quotas().acquire(quota_of(jobs), f"{page_id}:{stage}", s.job_max_seconds + 60)  # renew the slot
        raise RetryLater(job_timing.next_look(jobs.name, kind, job["age"].total_seconds()),
                         f"{label} job {external_id} still running", waiting=True, park=_follow_key(page_id, stage))

    if state != "succeeded":
        from pipeline.providers.base import JobStatus
        from pipeline.providers.replicate_predictions import failure_message, is_retryable_failure

        msg = failure_message(error) if state == "failed" else f"The {label} job was {state}: {error or 'no reason'}"
        if is_retryable_failure(JobStatus(state, None, error)) and not attempt.last:
            # The provider's own hiccup (interrupted, out of memory): a new job may pass. The
            # dead job is closed first, so the next run creates a new one rather than finding it;
            # both only under the job's claim (a stale follower decides nothing).
            with transaction() as c:
                if not (jobs_db.job_finished(c, job_id, "failed", msg, token=record.token)
                        and pages_db.release_page(c, page_id, col, stage, msg, attempt.number, attempt.task_id,
                                                  record.token)):
                    raise ClaimLost(f"{label} job {external_id}: ended by another run")
            raise RetryLater(backoff(attempt.number, None), msg)
        record.fail(msg)
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)

    assert image is not None
    variant = "base" if stage == "image" else "personalized"
    key = page_image_key(ctx["story"], ctx["page_number"], variant, ctx.get("revision", 1))
    store_if_held(page_id, stage, record.token, key, image, "image/png", timer)
    with timer.phase("record"), transaction() as c:
        done = pages_db.complete_page(c, page_id, col, {f"{variant}_image_key": key}, record.token)
        if done:
            jobs_db.job_finished(c, job_id, "succeeded", by=attempt.task_id)  # this message moves the chain on
    if not done:  # another run of this step completed it first, or a takeover holds it now
        with autocommit() as c:
            now = pages_db.page_state(c, page_id, col, prerequisite=page_columns(stage)[1])
        if now is not None and now["status"] == "completed":
            return handed_on(StepResult(Outcome.ALREADY_DONE, "", timer.timings, context=ctx), page_id, stage, attempt)
        raise ClaimLost(f"{label} job {external_id}: result not recorded")
    quotas().release(quota_of(jobs), f"{page_id}:{stage}")
    return StepResult(Outcome.DONE, "", timer.timings, context=ctx)


def _replace_expired_job(record: JobRecorder, timer: Timer, ctx: dict[str, Any], why: str) -> StepResult:
    """The job succeeded but its output was gone before we copied it (Replicate deletes outputs
    after about an hour: a backlog or an outage is enough). Only a new job can make the picture
    again: the old one is marked 'expired' (with why) and the page step released in one
    transaction, and the step's next run records a new job *before* creating it (recreation + 1),
    as any first job. Bounded by JOB_OUTPUT_RECREATIONS, then the page fails saying so."""
    page_id, stage, job, attempt = record.page_id, record.stage, record.job, record.attempt
    s = settings()
    jobs = registry.providers().image_jobs
    assert jobs is not None
    col, _ = page_columns(stage)
    provider = jobs.name.capitalize()
    made = int(job["recreation"]) + 1  # jobs this step has made in a row, this one included
    if made > s.job_output_recreations:
        msg = (f"The {JOB_PRODUCT[stage]} for page {ctx['page_number']} was made but expired at {provider} "
               f"before it could be saved, {made} time{'s' if made > 1 else ''}; last: {why}. "
               "An operator can retry it.")
        record.fail(msg)
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
    note = (f"{STAGE_LABEL[stage].capitalize()} job {job['external_id']} finished but its output expired at "
            f"{provider} before it was saved: {why}. Making a new one ({made + 1} of at most "
            f"{s.job_output_recreations + 1}).")
    with transaction() as c:
        if not (jobs_db.job_finished(c, str(job["id"]), "expired", why, token=record.token)
                and pages_db.release_page(c, page_id, col, stage, note, attempt.number, attempt.task_id,
                                          record.token)):
            # Another copy of this step ended the job first (or took the step over) and decides
            # (raised inside the transaction: nothing of this run's is committed).
            raise ClaimLost(f"{STAGE_LABEL[stage]} job {job['external_id']}: already ended")
    quotas().release(quota_of(jobs), f"{page_id}:{stage}")  # this job is over; the next one queues anew
    log.warning("page %s %s: job %s output expired (%s); re-creating (%d of %d)", page_id, stage,
                job["external_id"], why, made, s.job_output_recreations)
    raise RetryLater(min(s.job_poll_interval, 1.0), note, waiting=True)
