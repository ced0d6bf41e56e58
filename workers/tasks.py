"""The Celery tasks: thin wrappers around pipeline.stories.steps. Each one moves only its own status
column, is safe to run twice, and logs one line per run.

Names are the contract with the external API: ``photos.analyze(photo_id)`` and
``stories.generate(story_id)`` are published by name to the default queue; the rest are
internal and routed to per-stage queues (celeryconfig.task_routes).
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from celery import Task

from db.engine import reason as db_reason
from db.engine import unavailable as db_unavailable
from pipeline.kernel import metrics, step
from pipeline.kernel.config import settings
from pipeline.stories import steps
from workers.app import app

log = logging.getLogger("storycreator.step")


class StepTask(Task):  # type: ignore[misc]
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    # A step the database kept from starting (or finishing: PostgreSQL restarting, a dropped
    # connection, a database renamed, the schema missing) is re-sent by _run with capped backoff
    # and no bound, never acked as failed: its message is the only record that the work is due.
    # Provider errors are classified inside pipeline.stories.steps, not here.
    # Our own re-schedules (RetryLater) are bounded by the step (tries, leases, a job's time
    # limit), not by Celery: `task.retry(max_retries=None)` means "the task's max_retries",
    # so with a number here a step that polls a long remote job would die after that many looks.
    max_retries = None
    # Enforced by the prefork pool only; provider calls carry their own timeouts for threads.
    soft_time_limit = 240
    time_limit = 300


def _log_line(stage: str, ids: dict[str, Any], attempt: int, result: step.StepResult | None,
              outcome: str, total_ms: float) -> None:
    metrics.observe(stage, outcome, total_ms / 1000, result.timings if result is not None else None)
    level = logging.WARNING if outcome in ("failed", "retry") else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {"stage": stage, **ids, "attempt": attempt, "outcome": outcome,
              "ms": round(total_ms, 1)}
    if result is not None:
        fields.update(result.context)
        fields["phases"] = result.timings
        if result.detail:
            fields["detail"] = result.detail[:300]
    log.log(level, "step %s", json.dumps(fields, ensure_ascii=False, default=str))


def _run(task: Task, stage: str, ids: dict[str, Any],
         body: Callable[[step.Attempt], step.StepResult],
         after: Callable[[step.StepResult], None] | None = None) -> str:
    """Run one step; ``after`` enqueues what comes next (only after the step committed), and
    RetryLater becomes a delayed retry of this same task."""
    req = task.request
    redelivered = bool((req.delivery_info or {}).get("redelivered")) or req.retries > 0
    # Tries count transient errors only, carried in the message: Celery's own retry count also
    # counts the re-schedules of a step that waits (a quota, a running remote job, a lease).
    tries = _tries((req.kwargs or {}).get("tries"))
    attempt = step.Attempt(tries, settings().max_retries, req.id, redelivered)
    t0 = time.perf_counter()
    try:
        result = body(attempt)
    except step.RetryLater as r:
        _log_line(stage, ids, attempt.number, None, "waiting" if r.waiting else "retry",
                  (time.perf_counter() - t0) * 1000)
        # Errors are bounded by the tries (steps give up at Attempt.last); waiting is bounded by
        # what is waited for (a lease, a job's time limit), so Celery's own cap is off.
        kwargs = {**(req.kwargs or {}), "tries": tries if r.waiting else tries + 1}
        raise task.retry(countdown=r.countdown, kwargs=kwargs, max_retries=None, exc=None) from None
    except Exception as e:
        if not db_unavailable(e):
            raise
        # Nothing recorded (the database is where we would record it): the same message again
        # after a capped, jittered backoff, for as long as it takes (max_retries=None: no bound).
        countdown = db_backoff(req.retries)
        log.warning("step %s", json.dumps({"stage": stage, **ids, "attempt": attempt.number, "outcome": "retry",
                                           "detail": f"database unavailable: {db_reason(e)}"[:300],
                                           "retries": req.retries, "retry_in": countdown}, ensure_ascii=False))
        metrics.observe(stage, "retry", time.perf_counter() - t0, None)
        raise task.retry(countdown=countdown, kwargs=dict(req.kwargs or {}), max_retries=None, exc=None) from None
    if after is not None:
        after(result)
    _log_line(stage, ids, attempt.number, result, result.outcome.value, (time.perf_counter() - t0) * 1000)
    return f"{result.outcome.value}: {result.detail}" if result.detail else result.outcome.value


def db_backoff(retries: int) -> float:
    """Seconds before a step the database kept from running goes again: exponential from 1 s,
    full jitter, capped at DB_RETRY_BACKOFF_MAX (default 60 s)."""
    cap = settings().db_retry_backoff_max
    return round(random.uniform(0.5, 1.0) * min(cap, 2.0 ** min(retries, 20)), 3)


def _tries(value: Any) -> int:
    try:
        return max(0, min(int(value or 0), 1000))
    except (TypeError, ValueError):
        return 0


def _bad_args(stage: str, name: str, key: str, value: Any, extra: dict[str, Any]) -> str | None:
    """A readable complaint for a malformed external call (nothing in Postgres to mark)."""
    if extra:
        log.error("%s: ignoring unexpected arguments %s", name, sorted(extra))
    if step.valid_uuid(value) is None:
        log.error("%s needs kwargs {'%s': '<uuid>'}; got %s=%r", name, key, key, str(value)[:80])
        return f"rejected: {key} must be a UUID"
    return None


# --- the external contract ---------------------------------------------------------------------

@app.task(base=StepTask, bind=True, name="photos.analyze")
def analyze_photo(self: Task, photo_id: str | None = None, tries: int = 0, **extra: Any) -> str:
    if (bad := _bad_args("analysis", "photos.analyze", "photo_id", photo_id, extra)):
        return bad
    pid = step.valid_uuid(photo_id)
    assert pid is not None
    return _run(self, "analysis", {"photo": pid}, lambda a: steps.analyze_photo(pid, a))


@app.task(base=StepTask, bind=True, name="stories.generate")
def generate_story(self: Task, story_id: str | None = None, tries: int = 0, **extra: Any) -> str:
    if (bad := _bad_args("outline", "stories.generate", "story_id", story_id, extra)):
        return bad
    sid = step.valid_uuid(story_id)
    assert sid is not None

    def fan_out(result: step.StepResult) -> None:
        # Only now: every row the pages need is committed. All pages start at once and each
        # moves on by itself (text -> illustration -> personalization): pipelined, no stage
        # barrier. A page with nothing left but the story's completion goes straight there.
        for page_id in result.fanout:
            write_text.apply_async(kwargs={"page_id": page_id, "story_id": sid})
        if result.outcome is step.Outcome.DONE and not result.fanout:
            finish_story.apply_async(kwargs={"story_id": sid})

    return _run(self, "outline", {"story": sid}, lambda a: steps.generate_story(sid, a), fan_out)


# --- internal steps ------------------------------------------------------------------------------

# Page tasks carry their story's id too (optional: messages queued before it existed have none),
# so an operator finds every task of a story by its id in Flower's search.

@app.task(base=StepTask, bind=True, name="pages.write_text")
def write_text(self: Task, page_id: str, tries: int = 0, story_id: str | None = None) -> str:
    story = _story_label("pages.write_text", story_id)
    return _run(self, "text", {"page": page_id}, lambda a: steps.write_text(page_id, a),
                _then(lambda r: draw_base.apply_async(kwargs=page_kwargs(page_id, r, story))))


@app.task(base=StepTask, bind=True, name="pages.draw_base")
def draw_base(self: Task, page_id: str, tries: int = 0, story_id: str | None = None) -> str:
    story = _story_label("pages.draw_base", story_id)
    return _run(self, "image", {"page": page_id}, lambda a: steps.draw_base(page_id, a),
                _then(lambda r: personalize.apply_async(kwargs=page_kwargs(page_id, r, story))))


@app.task(base=StepTask, bind=True, name="pages.personalize")
def personalize(self: Task, page_id: str, tries: int = 0, story_id: str | None = None) -> str:
    _story_label("pages.personalize", story_id)

    def maybe_finish(result: step.StepResult) -> None:
        # The barrier is a Postgres query (steps.personalize), not a Redis chord counter:
        # only a personalization that finds every page done enqueues the story's completion.
        if result.moves_on and result.context.get("story_ready"):
            finish_story.apply_async(kwargs={"story_id": result.context["story"]})

    return _run(self, "personalization", {"page": page_id}, lambda a: steps.personalize(page_id, a),
                maybe_finish)


def _story_label(name: str, story_id: Any) -> str | None:
    """A page task's ``story_id``: a label for operators (the page's row says which story it is
    in, and the successors get that one). A malformed one is logged and ignored."""
    if story_id is None:
        return None
    sid = step.valid_uuid(story_id)
    if sid is None:
        log.error("%s: ignoring story_id %r (not a UUID)", name, str(story_id)[:80])
    return sid


def page_kwargs(page_id: str, result: step.StepResult | None = None, story_id: str | None = None) -> dict[str, str]:
    """The kwargs of a page task: ``page_id`` first (backfill resumes from the first value), then
    ``story_id``: the story the step's claim read from the page's row, else the one received."""
    story = (result.context.get("story") if result is not None else None) or story_id
    return {"page_id": page_id, **({"story_id": str(story)} if story else {})}


@app.task(base=StepTask, bind=True, name="stories.finish")
def finish_story(self: Task, story_id: str, tries: int = 0) -> str:
    return _run(self, "finish", {"story": story_id}, lambda a: steps.finish_story(story_id, a))


def _then(enqueue: Callable[[step.StepResult], Any]) -> Callable[[step.StepResult], None]:
    """The next step of this page, when this one is done (or was already done: a redelivered
    copy whose first run died before enqueueing must still move the page on). Ids only."""

    def after(result: step.StepResult) -> None:
        if result.moves_on:
            enqueue(result)

    return after


@app.task(name="ops.sweep", acks_late=True, ignore_result=True, expires=120)
def sweep() -> str:
    """Periodic (celery beat, celeryconfig.beat_schedule): re-enqueue stuck work, so a story
    never waits for the broker's visibility timeout after a worker dies."""
    from pipeline.operations.ops import sweep as run_sweep

    found = run_sweep()
    if found:
        log.warning("sweep %s", json.dumps({"requeued": len(found),
                                            "tasks": sorted({i.task for i in found})}))
    return f"requeued {len(found)}"
