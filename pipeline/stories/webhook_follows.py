"""Learn that a remote job ended as soon as it ends: a provider's completion webhook sends the page
step's follow at once, instead of letting the job's end wait for the next poll (JOB_POLL_INTERVAL)
while its paid concurrency slot stays taken.

Replicate POSTs a prediction's JSON to the external web API when it has ended (created with
``webhook`` and ``webhook_events_filter: ["completed"]``: pipeline/providers/replicate_webhooks.py),
which publishes the raw body and headers as the task ``images.replicate_webhook`` (README "The
external contract"). :func:`handle_replicate_webhook` then:

1. verifies the signature (REPLICATE_WEBHOOK_SIGNING_SECRET, Standard Webhooks): a forged, expired
   or malformed delivery is logged and counted (storycreator_job_webhooks_total) and dropped, never
   retried;
2. finds the job in provider_jobs by the prediction's id and marks it woken (once, while it is
   running: a second delivery, or one for a job whose step ended, is a no-op);
3. sends the page step's task again at once, as the rest of the page's chain from that step
   (``page_chain``: ``pages.draw_base`` then ``pages.personalize``, or ``pages.personalize``),
   what the pending poll (the step's ``RetryLater`` copy, due in JOB_POLL_INTERVAL) carries, with
   the priority the story's start would give it now (the start's own is not recorded).
   Its run is a follow: it sees the end, copies the output, completes the step and frees the slot.

Two messages of one step now carry the same chain; the rest of the chain must run once. The job
records both task ids (started_by: the run that created it, whose message polls it; woken_by: the
follow, its id chosen before it is sent and recorded with the mark), and the run that completes
the step records its own (finished_by, in the completion's transaction). A copy that later finds
the step completed stops if it is the other of the two (:func:`handed_on`): whichever comes second
is a no-op. The completer's own redelivery (its first run may have died before sending the next
link) and any later chain that passes the completed step (a retry, a backfill) move on as before.
Polling stays as the fallback: a lost, rejected or late webhook only means the end is seen at the
next poll.
"""
from __future__ import annotations

import logging
import os
import uuid

from db import provider_jobs as jobs_db
from db.engine import autocommit
from pipeline.kernel import metrics, publish
from pipeline.kernel.step import Attempt, Outcome, RetryLater, StepResult, Timer
from pipeline.providers.replicate_webhooks import ENDED, WebhookRejected, verify
from pipeline.stories import slots
from pipeline.stories.stages import page_chain

log = logging.getLogger("pipeline.stories.webhook_follows")

PROVIDER = "replicate"
# A delivery for a prediction we have not recorded yet (it ended before its create's reply was
# recorded) is looked at again this many times, UNKNOWN_RETRY_SECONDS apart, then dropped: polling
# finds the job anyway.
UNKNOWN_RETRIES = 2
UNKNOWN_RETRY_SECONDS = 2.0


def _count(outcome: str) -> None:
    metrics.JOB_WEBHOOKS.labels(PROVIDER, outcome).inc()


def handle_replicate_webhook(payload: str, headers: dict[str, object], attempt: Attempt) -> StepResult:
    """One delivery of Replicate's completion webhook: ``payload`` the raw body (str, as received),
    ``headers`` the HTTP headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; any
    case). DONE: the page step's follow was sent; ALREADY_DONE: a no-op (a duplicate, an event for a
    step that ended, a status that is not an end); STOPPED: rejected (bad signature, expired,
    malformed, no secret configured) or not one of our jobs. Raises :class:`RetryLater` (a few
    times, bounded by ``attempt``) for a prediction not recorded yet; database errors propagate
    (the task layer re-sends the delivery after a backoff)."""
    timer = Timer()
    secret = os.environ.get("REPLICATE_WEBHOOK_SIGNING_SECRET", "").strip()
    if not secret:
        _count("unconfigured")
        log.error("replicate webhook dropped: REPLICATE_WEBHOOK_SIGNING_SECRET is not set, nothing can be verified")
        return StepResult(Outcome.STOPPED, "rejected: no signing secret configured", timer.timings)
    with timer.phase("verify"):
        try:
            done = verify(payload, headers, secret)
        except WebhookRejected as e:
            _count(e.reason)
            log.warning("replicate webhook rejected (%s): %s", e.reason, e.detail)
            return StepResult(Outcome.STOPPED, f"rejected: {e}", timer.timings)
    ctx = {"prediction": done.prediction_id, "webhook_id": done.webhook_id}
    if done.status not in ENDED:  # only "completed" events are asked for; anything else is ignored
        _count("not_ended")
        return StepResult(Outcome.ALREADY_DONE, f"prediction is {done.status[:40]}", timer.timings, context=ctx)
    follow_id = str(uuid.uuid4())  # recorded with the mark before the follow is sent with it
    with timer.phase("record"), autocommit() as c:
        job = jobs_db.wake_job(c, PROVIDER, done.prediction_id, follow_id)
    if job is None:
        if attempt.number < UNKNOWN_RETRIES:
            raise RetryLater(UNKNOWN_RETRY_SECONDS, f"prediction {done.prediction_id} is not recorded (yet)")
        _count("unknown")
        log.warning("replicate webhook for prediction %s, which is none of our jobs; ignored", done.prediction_id)
        return StepResult(Outcome.STOPPED, "unknown prediction", timer.timings, context=ctx)
    ctx.update(page=str(job["page_id"]), job_stage=str(job["stage"]))  # "stage" is the log line's own
    if not job["woken"]:
        _count("duplicate" if job["status"] == "running" else "done")
        return StepResult(Outcome.ALREADY_DONE, f"job is {job['status']} (woken before, or ended)", timer.timings,
                          context=ctx)
    # The rest of the page's chain from this step, as the pending poll carries it, with the broker
    # priority the story's start would give it now (its account's stories in flight and pending:
    # the start's own is not recorded). Published after the mark committed; if publishing fails,
    # the task layer sees the error and the poll still comes (the mark only spares duplicates).
    priority = slots.page_priority(int(job["in_flight_before"]), int(job["backlog"]))
    follow = page_chain(str(job["page_id"]), str(job["stage"]), str(job["story_id"]), priority=priority)
    follow.tasks[0].set(task_id=follow_id)
    with timer.phase("send"):
        publish.send_signature(follow)
    _count("woken")
    return StepResult(Outcome.DONE, f"{job['stage']} step sent (prediction {done.status})", timer.timings,
                      context=ctx)


def handed_on(result: StepResult, page_id: str, stage: str, attempt: Attempt) -> StepResult:
    """``result`` unless it is ALREADY_DONE and this message raced another for the step's job
    (the job's poll and a webhook's follow) and the other one completed the step
    (db.provider_jobs.handed_to_other): then STOPPED, because that message carries the rest of the
    page's chain and this copy must not send it a second time."""
    if result.outcome is not Outcome.ALREADY_DONE:
        return result
    with autocommit() as c:
        other = jobs_db.handed_to_other(c, page_id, stage, attempt.task_id)
    if other is None:
        return result
    return StepResult(Outcome.STOPPED, f"already done by message {other}, which carries the rest of the chain",
                      result.timings, context=result.context)
