"""The step kernel: what every step of every flow (stories, orders) is made of.

A step is a plain function of ids and an :class:`Attempt` returning a :class:`StepResult`; it
raises :class:`RetryLater` to be run again later (the task layer turns that into a delayed retry of
the same message) and records permanent failures itself. :func:`guarded` applies the one error
policy to a provider call; :func:`held_elsewhere` is the answer to a claim another copy holds.
Celery-free: nothing here imports Celery or the task layer.
"""
from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from db.engine import unavailable as db_unavailable
from pipeline.kernel import metrics
from pipeline.kernel.config import settings
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.kernel.quota import QuotaWait

log = logging.getLogger("pipeline.kernel.step")
T = TypeVar("T")


class Outcome(StrEnum):
    DONE = "done"  # did the work; the next step is enqueued
    ALREADY_DONE = "already_done"  # idempotent no-op; the next step is still enqueued
    STOPPED = "stopped"  # nothing to do now (failed, held by another copy, not ready)
    FAILED = "failed"  # recorded a permanent failure; the page stops here


@dataclass
class StepResult:
    outcome: Outcome
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # phase -> ms
    fanout: list[str] = field(default_factory=list)  # stories.generate: pages to run
    context: dict[str, Any] = field(default_factory=dict)  # ids for the log line (story, page number)

    @property
    def moves_on(self) -> bool:
        return self.outcome in (Outcome.DONE, Outcome.ALREADY_DONE)


@dataclass(frozen=True)
class Attempt:
    """Which try of a step this is (0 = first), as the task layer knows it."""

    number: int = 0
    max_retries: int = 5
    task_id: str | None = None
    # The broker delivered this message before (its worker died, or on Redis the visibility
    # timeout passed), or this is our own retry: the claim we find may be our own dead one.
    redelivered: bool = False

    @property
    def last(self) -> bool:
        return self.number >= self.max_retries


FIRST_TRY = Attempt()  # frozen: one shared default for steps called directly (tests, tools)


class RetryLater(Exception):
    """The step released its claim after a transient error; run it again after ``countdown``."""

    def __init__(self, countdown: float, reason: str, *, waiting: bool = False) -> None:
        super().__init__(reason)
        self.countdown = countdown
        self.reason = reason
        self.waiting = waiting  # waiting on another step, not an error: not counted as a failure


class Timer:
    """Wall time per named phase of one step run, in milliseconds: ``with timer.phase("provider"):``.
    ``timings`` (phase -> ms, rounded to 0.1) goes into the step's log line and metrics."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def phase(self, name: str) -> Phase:
        return Phase(self, name)


class Phase:
    """One timed phase of a :class:`Timer` (a context manager); repeated phases add up."""

    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        ms = (time.perf_counter() - self.t0) * 1000
        self.timer.timings[self.name] = round(self.timer.timings.get(self.name, 0.0) + ms, 1)


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, capped; a provider's Retry-After is a floor."""
    cap = settings().retry_backoff_cap
    delay = random.uniform(0.5, 1.0) * min(cap, 1.0 * 2**attempt)
    if retry_after is not None and retry_after > 0:
        # Honour the provider's hint, plus a little jitter so released workers don't stampede.
        delay = max(delay, retry_after + random.uniform(0, min(1.0, retry_after * 0.1)))
    return round(delay, 3)


def held_elsewhere(what: str, age: Any, attempt: Attempt, timer: Timer) -> StepResult:
    """A live-looking claim by another copy. A fresh duplicate leaves it to that copy. A
    redelivered message may be the only copy left (its first run died holding the claim: on
    RabbitMQ it comes back at once, long before the lease runs out), so it comes back when the
    lease has expired and takes over then, or finds the step done by a healthy holder."""
    if not attempt.redelivered:
        return StepResult(Outcome.STOPPED, f"{what} (held by another worker)", timer.timings)
    left = settings().step_lease_seconds - (age.total_seconds() if age is not None else 0.0)
    raise RetryLater(max(0.5, left) + random.uniform(0.2, 1.0), f"{what}: waiting for its lease",
                     waiting=True)


def valid_uuid(value: object) -> str | None:
    """``value`` as a canonical UUID string (lower case, hyphenated), or None when it is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        return None


def guarded(
    fn: Callable[[], T],
    *,
    attempt: Attempt,
    fail: Callable[[str], None],
    release: Callable[[str | None], None],
    what: str,
) -> T:
    """Run a provider call under the error policy: permanent -> recorded failure; transient ->
    release and retry with backoff until the tries run out; anything else is a bug or an
    unexpected reply: recorded as a failure (an operator can retry), never a crash loop.
    The database unavailable (db.engine.unavailable) is none of these: re-raised as it is."""
    try:
        return fn()
    except QuotaWait as e:
        # The shared provider quota, not the provider, said "not now": free the step for
        # whoever comes first when it refills, without using up a try or recording an error.
        release(None)
        metrics.QUOTA_WAITS.labels(e.provider).inc()
        raise RetryLater(backoff(0, e.retry_after), str(e), waiting=True) from None
    except PermanentStepError as e:
        fail(str(e))
        raise StepFailed(str(e)) from None
    except TransientStepError as e:
        if attempt.last:
            msg = f"{what} kept failing after {attempt.number + 1} tries: {e}"
            fail(msg)
            raise StepFailed(msg) from None
        release(str(e))
        raise RetryLater(backoff(attempt.number, e.retry_after), str(e)) from None
    except Exception as e:  # noqa: BLE001 - the policy above is the point of this function
        if db_unavailable(e):
            # The database, not the provider (a job step's own statements run in here): nothing
            # to record; the task layer re-sends the step, which finds its claim again.
            raise
        log.exception("unexpected error in %s", what)
        msg = f"{what} failed with an internal error ({type(e).__name__}); an operator can retry it."
        fail(msg)
        raise StepFailed(msg) from None


class StepFailed(Exception):
    """Raised by :func:`guarded` after the failure was recorded (through its ``fail`` callback):
    the step stops and returns a FAILED result; the message is the recorded one."""
