"""The declarative task layer: :func:`step_task` turns a function that validates a message's
kwargs and names its step into a Celery task, and owns everything every step task shares.

A decorated function takes the task's kwargs (its signature is the task's, checked by Celery) and
returns either the step to run, a callable ``Attempt -> StepResult`` (usually
``functools.partial(steps.write_text, page_id)``), or a string: the reason a malformed call is
dropped (already logged; nothing in Postgres to mark). The decorator then:

- runs the step once, logs one line and observes its metrics;
- ``RetryLater`` -> ``task.retry`` with the step's countdown (the same message, its chain and
  ``tries`` carried along: a waiting step inside a page's chain keeps the rest of the chain);
- the database unusable, or the storage (db.engine.unavailable) -> the same message again after a
  capped, jittered backoff, unbounded;
- the step returned a result -> the optional ``then(id, result)`` hook (successors outside a
  chain: the story's fan-out, the book once every page is done, the order flow; it looks at the
  outcome itself), then, done or already done, returns normally, so the next link of the chain,
  carried in this message, is sent by Celery;
- ``ClaimLost`` (a fenced write found the step taken over by another worker) -> stopped;
- failed or stopped -> ``celery.exceptions.Ignore`` when the message carries a chain (the failure
  is recorded in Postgres already; the rest of the page's chain must not run), else a plain return.

Task options that differ from celeryconfig are set here, and only those (see :class:`StepTask`).
"""
from __future__ import annotations

import inspect
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from db.engine import ServiceUnavailable
from db.engine import reason as db_reason
from db.engine import unavailable as db_unavailable
from pipeline.config import settings
from pipeline.events.delivery import kick as kick_events
from pipeline.kernel import metrics, step, tracing
from workers.app import app

log = logging.getLogger("storycreator.step")

# Outcomes and stages that can have written an event (README "Events (webhooks)"): a text or
# picture step never does; a failure, a page's personalization, the book, an order's move can.
_MOVED = (step.Outcome.DONE, step.Outcome.FAILED)
_NO_EVENTS = ("text", "image", "job_webhook")

Body = Callable[[step.Attempt], step.StepResult]
Then = Callable[[str | None, step.StepResult], None]


class StepTask(Task):  # type: ignore[misc]
    """Only what differs from celeryconfig (acks_late, reject_on_worker_lost and ignore_result
    are set there for every task)."""

    # A step the database kept from starting (or finishing: PostgreSQL restarting, a dropped
    # connection, a database renamed, the schema missing) is re-sent with capped backoff and no
    # bound, never acked as failed: its message is the only record that the work is due.
    # Our own re-schedules (RetryLater) are bounded by the step (tries, leases, a job's time
    # limit), not by Celery: `task.retry(max_retries=None)` means "the task's max_retries",
    # so with a number here a step that polls a long remote job would die after that many looks.
    max_retries = None
    # Enforced by the prefork pool only; provider calls carry their own timeouts for threads.
    soft_time_limit = 240
    time_limit = 300


def step_task(name: str, stage: str, *, key: str | None = None,
              then: Then | None = None) -> Callable[[Callable[..., Body | str]], Task]:
    """Register the decorated function as the step task ``name`` (the message's task name: a
    contract, never renamed). ``stage`` names the step in logs, metrics and ``step_errors``;
    ``key`` is the kwarg whose id labels the log line (``"page_id"`` -> ``{"page": ...}``);
    its queue comes from celeryconfig's task_routes (the flows' stage tables); ``then(id, result)`` runs
    after the step returned a result (any outcome), before the task returns."""

    def decorate(fn: Callable[..., Body | str]) -> Task:
        params = list(inspect.signature(fn).parameters.values())

        def run(self: Task, *args: Any, **kwargs: Any) -> str:
            kwargs.pop("held", None)  # ours, carried by a re-send (see _run), not the step's
            queued = kwargs.pop("queued", None)  # ours: the backstop copy of a wait in a quota's line
            if isinstance(queued, str) and _woken_already(self, queued):
                return "stopped: woken from its quota's line by another message"
            body = fn(*args, **kwargs)
            if isinstance(body, str):
                return body
            ident = None
            if key is not None:
                raw = kwargs.get(key, args[0] if args else None)
                ident = step.valid_uuid(raw) or (str(raw) if raw is not None else None)
            ids = {key.removesuffix("_id"): ident} if key is not None else {}
            return _run(self, stage, ids, body, ident, then)

        run.__name__ = run.__qualname__ = fn.__name__
        run.__module__ = fn.__module__
        run.__doc__ = fn.__doc__
        # Celery reads the task's call signature from the function (bind=True: `self` first).
        # ``held`` (a claim's token a re-send carries, see _run) is accepted by every step task,
        # whatever its own parameters: Celery checks a retry's kwargs against this signature.
        named = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        rest = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        for ours in ("held", "queued"):
            if not any(p.name == ours for p in params):
                named.append(inspect.Parameter(ours, inspect.Parameter.KEYWORD_ONLY, default=None))
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *named, *rest])
        return app.task(base=StepTask, bind=True, name=name)(run)  # type: ignore[no-any-return]

    return decorate


def _log_line(stage: str, ids: dict[str, Any], attempt: int, result: step.StepResult | None,
              outcome: str, total_ms: float) -> None:
    metrics.observe(stage, outcome, total_ms / 1000, result.timings if result is not None else None)
    level = logging.WARNING if outcome in ("failed", "retry") else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {"stage": stage, **ids, "attempt": attempt, "outcome": outcome, "ms": round(total_ms, 1)}
    if result is not None:
        fields.update(result.context)
        if result.again_in is not None:  # a waiting step: when it runs again (seconds)
            fields["again_in"] = result.again_in
        fields["phases"] = result.timings
        if result.detail:
            fields["detail"] = result.detail[:300]
    log.log(level, "step %s", json.dumps(fields, ensure_ascii=False, default=str))


def _run(task: Task, stage: str, ids: dict[str, Any], body: Body, ident: str | None, then: Then | None) -> str:
    """Run one step (see the module's docstring for what each outcome becomes)."""
    req = task.request
    redelivered = bool((req.delivery_info or {}).get("redelivered")) or req.retries > 0
    # Tries count transient errors only, carried in the message: Celery's own retry count also
    # counts the re-schedules of a step that waits (a quota, a running remote job, a lease).
    tries = _tries((req.kwargs or {}).get("tries"))
    held = _token((req.kwargs or {}).get("held"))
    attempt = step.Attempt(tries, settings().max_retries, req.id, redelivered, held)
    step.forget_claim()
    if req.root_id and req.root_id != req.id:
        # The message that started this chain of work (a page's chain, the story's fan-out): the
        # id Flower groups the task under, so an operator finds a page's steps together.
        ids = {**ids, "root": req.root_id}
    if tracing.ON:  # off by default: this check is all it costs
        tracing.annotate(stage, req.kwargs or {})
    t0 = time.perf_counter()
    try:
        result = body(attempt)
    except step.ClaimLost as lost:
        # A fenced write found the step taken over (this run paused past its lease): nothing was
        # written, the current holder carries the step; this copy stops like a duplicate.
        result = step.StepResult(step.Outcome.STOPPED, f"claim lost to another worker: {lost}")
    except step.RetryLater as r:
        _log_line(stage, ids, attempt.number, None, "waiting" if r.waiting else "retry",
                  (time.perf_counter() - t0) * 1000)
        # Errors are bounded by the tries (steps give up at Attempt.last); waiting is bounded by
        # what is waited for (a lease, a job's time limit), so Celery's own cap is off.
        kwargs = {**(req.kwargs or {}), "tries": tries if r.waiting else tries + 1}
        kwargs.pop("queued", None)
        countdown = r.countdown
        if r.line is not None:
            countdown, kwargs = _wait_in_line(task, r.line, kwargs, countdown)
        elif r.park is not None:
            countdown, kwargs = _park(task, r.park, kwargs, countdown)
        raise task.retry(countdown=countdown, kwargs=kwargs, max_retries=None, exc=None) from None
    except Exception as e:
        if not db_unavailable(e):
            raise
        # Nothing recorded (the database is where we would record it; the storage's outage is
        # not the step's failure): the same message again after a capped, jittered backoff, for
        # as long as it takes (max_retries=None: no bound).
        countdown = db_backoff(req.retries)
        # The claim this run held (if any) goes with the re-sent message: the next run resumes it
        # at once instead of waiting out its lease, and it does not count as a takeover.
        resend = dict(req.kwargs or {})
        if (in_hand := step.claim_in_hand()) is not None:
            resend["held"] = in_hand
        service = e.service if isinstance(e, ServiceUnavailable) else "database"
        log.warning("step %s", json.dumps({"stage": stage, **ids, "attempt": attempt.number, "outcome": "retry",
                                           "detail": f"{service} unavailable: {db_reason(e)}"[:300],
                                           "retries": req.retries, "retry_in": countdown}, ensure_ascii=False))
        metrics.observe(stage, "retry", time.perf_counter() - t0, None)
        raise task.retry(countdown=countdown, kwargs=resend, max_retries=None, exc=None) from None
    if then is not None:
        then(ident, result)
    if result.outcome in _MOVED and stage not in _NO_EVENTS:
        kick_events()  # its commit may have written events (schema.sql's triggers): deliver them soon
    _log_line(stage, ids, attempt.number, result, result.outcome.value, (time.perf_counter() - t0) * 1000)
    if tracing.ON:
        tracing.annotate(stage, req.kwargs or {}, result.outcome.value)
    summary = f"{result.outcome.value}: {result.detail}" if result.detail else result.outcome.value
    if not result.moves_on and req.chain:
        # Recorded (failed) or nobody's to do now (stopped): the rest of this page's chain must
        # not run. Ignore acks the message and drops its chain (no failure state, no retry).
        _final_event(task, result, summary, time.perf_counter() - t0)
        raise Ignore(summary)
    return summary


def _wait_in_line(task: Task, line: tuple[str, str], kwargs: dict[str, Any],
                  countdown: float) -> tuple[float, dict[str, Any]]:
    """A step waiting for a concurrent-job slot (RetryLater.line = (provider, holder)): queue it in
    the provider's line with this very message (its chain, queue, priority) as the one to send on
    its turn (pipeline/kernel/quota_line.py), and return (countdown, kwargs) of the backstop
    retry: QUOTA_WAKE_BACKSTOP seconds, carrying the wait's ticket (``queued``). A slot free by
    now: at once. The line off or Redis unavailable: the step's own countdown (as before)."""
    from pipeline.kernel import quota_line
    from pipeline.kernel.errors import TransientStepError
    from pipeline.kernel.quota import quotas

    if not quota_line.enabled():
        return countdown, kwargs
    provider, holder = line
    ticket = uuid.uuid4().hex
    message = json.dumps(dict(task.signature_from_request(task.request, task.request.args, kwargs)), default=str)
    try:
        queued = quotas().wait_in_line(provider, holder, ticket, message)
    except TransientStepError:
        return countdown, kwargs
    if not queued:
        return 0.0, kwargs
    return quota_line.backstop(), {**kwargs, "queued": ticket}


def _park(task: Task, key: str, kwargs: dict[str, Any], countdown: float) -> tuple[float, dict[str, Any]]:
    """A step waiting on an event (RetryLater.park = key): park this message under ``key``
    (pipeline/kernel/parking.py) so the event can send it at once, and return (countdown, kwargs)
    of the delayed retry, carrying the parking's ticket. A wake already came: at once."""
    from pipeline.kernel import parking

    ticket = uuid.uuid4().hex
    message = json.dumps(dict(task.signature_from_request(task.request, task.request.args, kwargs)), default=str)
    if not parking.park(key, ticket, message, countdown):
        return 0.0, kwargs
    return countdown, {**kwargs, "queued": ticket}


def _woken_already(task: Task, ticket: str) -> bool:
    """Is this message the delayed copy of a wait that was woken (by a release of a quota slot, or
    by an event: another message carries the step on)? Then it is acked and its chain dropped (the
    woken message carries it)."""
    from pipeline.kernel.quota import quotas

    if not quotas().superseded(ticket):
        return False
    if task.request.chain:
        raise Ignore("woken from its quota's line by another message")
    return True


def _final_event(task: Task, result: step.StepResult, summary: str, runtime: float) -> None:
    """The task event Celery does not send for a task that raised ``Ignore``: without it Flower
    shows a link that ended its page's chain as STARTED for ever. A failed step is reported as
    ``task-failed`` (its recorded reason as the exception), a stopped one as ``task-succeeded``
    with the step's summary, as before pages ran as chains. Only with task events on
    (celeryconfig ``worker_send_task_events``, the Procfile's ``-E``); never fails the step."""
    if not task.app.conf.worker_send_task_events:
        return
    try:
        if result.outcome is step.Outcome.FAILED:
            task.send_event("task-failed", exception=f"StepFailed({summary!r})", traceback=None, retry=False)
        else:
            task.send_event("task-succeeded", result=repr(summary), runtime=round(runtime, 6), retry=False)
    except Exception:  # noqa: BLE001 - an event is for people watching, the step is done either way
        log.warning("could not send the final task event for %s", task.request.id, exc_info=True)


def db_backoff(retries: int) -> float:
    """Seconds before a step the database kept from running goes again: exponential from 1 s,
    full jitter, capped at DB_RETRY_BACKOFF_MAX (default 60 s)."""
    cap = settings().db_retry_backoff_max
    return round(random.uniform(0.5, 1.0) * min(cap, 2.0 ** min(retries, 20)), 3)


def _token(value: Any) -> int | None:
    """A claim's fencing token carried by a re-sent message (a positive PostgreSQL bigint), else None."""
    try:
        token = int(value)
    except (TypeError, ValueError):
        return None
    return token if 0 < token < 2**63 and not isinstance(value, bool) else None


def _tries(value: Any) -> int:
    try:
        return max(0, min(int(value or 0), 1000))
    except (TypeError, ValueError):
        return 0


def bad_id(name: str, key: str, value: Any, extra: dict[str, Any]) -> str | None:
    """A readable complaint for a malformed external call (nothing in Postgres to mark), or None
    when ``value`` is a UUID. Unexpected kwargs are logged and ignored."""
    if extra:
        log.error("%s: ignoring unexpected arguments %s", name, sorted(extra))
    if step.valid_uuid(value) is None:
        log.error("%s needs kwargs {'%s': '<uuid>'}; got %s=%r", name, key, key, str(value)[:80])
        return f"rejected: {key} must be a UUID"
    return None
