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
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from db.engine import unavailable as db_unavailable
from pipeline.config import settings
from pipeline.kernel import metrics
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.kernel.quota import QuotaWait
from pipeline.kernel.storage import StorageUnavailable

log = logging.getLogger("pipeline.kernel.step")
T = TypeVar("T")


class Outcome(StrEnum):
    """How a step run ended, for the task layer: move the flow on (DONE, ALREADY_DONE) or not."""

    DONE = "done"  # did the work; the next step is enqueued
    ALREADY_DONE = "already_done"  # idempotent no-op; the next step is still enqueued
    STOPPED = "stopped"  # nothing to do now (failed, held by another copy, not ready)
    FAILED = "failed"  # recorded a permanent failure; the page stops here


@dataclass
class StepResult:
    """What one step run did: its :class:`Outcome`, a detail for the log line, its phase timings."""

    outcome: Outcome
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # phase -> ms
    fanout: list[str] = field(default_factory=list)  # stories.generate: pages to run
    # stories.generate: the broker priority of the fan-out's page chains (0 first .. 9 last, Redis;
    # pipeline/stories/slots.py page_priority), None: the default (no priority sent)
    priority: int | None = None
    context: dict[str, Any] = field(default_factory=dict)  # ids for the log line (story, page number)
    # pages.personalize: the id of this page's story when every one of its pages is done (the
    # Postgres barrier, checked after this page's commit): the task layer sends stories.finish.
    story_ready: str | None = None
    # A step that waits (an order for its story, a print job in production): send a fresh message
    # of this same task after this many seconds (not a retry: no growing retry count).
    again_in: float | None = None

    @property
    def moves_on(self) -> bool:
        """Does the flow go on to the next step (DONE or ALREADY_DONE)?"""
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
    # The fencing token of the claim this message's previous run held when the database (or the
    # storage) went away under it (the task layer carries it in the re-sent message, see
    # :func:`note_claim`): the claim may be resumed at once, without waiting out its lease and
    # without counting a takeover. None: no claim in hand.
    held: int | None = None

    @property
    def last(self) -> bool:
        """Is this the last try (no retries left)?"""
        return self.number >= self.max_retries


FIRST_TRY = Attempt()  # frozen: one shared default for steps called directly (tests, tools)

# The claim this step run took (its fencing token), for the task layer: when the database goes
# away mid-run, the re-sent message carries it (Attempt.held) so the next run resumes the claim.
# A context variable: each worker thread (threads pool) has its own.
_claim_in_hand: ContextVar[int | None] = ContextVar("claim_in_hand", default=None)


def note_claim(token: int) -> None:
    """Record that this run now holds its step's claim under ``token`` (the first claim a run takes
    is its own step's; an inline claim of another step, such as the start's photo analysis, does
    not replace it)."""
    if _claim_in_hand.get() is None:
        _claim_in_hand.set(token)


def claim_in_hand() -> int | None:
    """The token :func:`note_claim` recorded in this run, or None."""
    return _claim_in_hand.get()


def forget_claim() -> None:
    """A new run starts with no claim in hand (the task layer calls it before each run)."""
    _claim_in_hand.set(None)


class RetryLater(Exception):
    """The step released its claim after a transient error; run it again after ``countdown``."""

    def __init__(self, countdown: float, reason: str, *, waiting: bool = False,
                 line: tuple[str, str] | None = None, park: str | None = None) -> None:
        super().__init__(reason)
        self.countdown = countdown
        self.reason = reason
        self.waiting = waiting  # waiting on another step, not an error: not counted as a failure
        # (provider, holder): waiting for one of the provider's concurrent-job slots; the task
        # layer queues the step in the provider's line (pipeline/kernel/quota_line.py) and the
        # countdown is only the backstop.
        self.line = line
        # A key under which the task layer parks this message: an event (a provider's completion
        # webhook) can send it at once (pipeline/kernel/parking.py wake); the countdown still holds.
        self.park = park


class ClaimLost(Exception):
    """A fenced write (a step's completion, release or failure, or its remote job's reservation or
    start, each naming the claim's fencing token) found that the step is no longer this run's: the
    run paused or was cut off past its lease and another worker took the step over, or the step
    ended meanwhile. Nothing was written; the run stops (the task layer reports it STOPPED) and the
    current holder carries the step. Raised by recorders and steps, never caught by :func:`guarded`."""


class Timer:
    """Wall time per named phase of one step run, in milliseconds: ``with timer.phase("provider"):``.
    ``timings`` (phase -> ms, rounded to 0.1) goes into the step's log line and metrics."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def phase(self, name: str) -> Phase:
        """A context manager timing phase ``name`` (repeated phases add up)."""
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
    lease has expired and takes over then, or finds the step done by a healthy holder.

    Only for the step's own message: a step that runs another step's work inline passes
    :func:`inline_attempt` instead of its own attempt, so that it hears "held by another worker"
    (STOPPED) and looks again on its own schedule rather than sleeping out that work's lease."""
    if not attempt.redelivered:
        return StepResult(Outcome.STOPPED, f"{what} (held by another worker)", timer.timings)
    left = settings().step_lease_seconds - (age.total_seconds() if age is not None else 0.0)
    raise RetryLater(max(0.5, left) + random.uniform(0.2, 1.0), f"{what}: waiting for its lease",
                     waiting=True)


def inline_attempt(attempt: Attempt) -> Attempt:
    """The :class:`Attempt` to pass when a step runs another step's work inline (the story's start
    analysing its photo): the same try number and task id (its errors count against this step's
    tries), but never ``redelivered``. That flag is about this step's own message; the other work's
    message is not this one, so a claim found on that work is another holder's: STOPPED from
    :func:`held_elsewhere`, and the caller polls (a live holder finishes it; a dead holder's claim
    expires after the lease and the caller's next look takes it over)."""
    return replace(attempt, redelivered=False, held=None) if attempt.redelivered or attempt.held else attempt


def valid_uuid(value: object) -> str | None:
    """``value`` as a canonical UUID string (lower case, hyphenated), or None when it is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        return None


class Recorder(Protocol):
    """Where a step's provider call records what happened to its claim, for :func:`guarded`.

    ``fail(message)``: record a permanent failure (the claimed column -> failed, the reason in
    step_errors and, where the flow says so, on the parent row). ``release(note)``: give the claim
    back (processing -> pending) so a retried message claims it again; ``note`` is the transient
    error to record, or None when nothing failed (a quota wait: nothing is recorded). Both are
    fenced where the claim has a token: they raise :class:`ClaimLost` when the claim is no longer
    this run's (nothing written).
    Implementations: pipeline/stories/recorders.py (photo, story, page step, remote job);
    :class:`Callbacks` wraps two plain functions."""

    def fail(self, message: str) -> None:
        """Record a permanent failure with ``message`` (the words people will read)."""

    def release(self, note: str | None) -> None:
        """Give the claim back; record ``note`` (a transient error) unless it is None."""


@dataclass(frozen=True)
class Callbacks:
    """A :class:`Recorder` made of two functions (``fail(message)``, ``release(note)``)."""

    on_fail: Callable[[str], None]
    on_release: Callable[[str | None], None]

    def fail(self, message: str) -> None:
        """Call ``on_fail(message)``."""
        self.on_fail(message)

    def release(self, note: str | None) -> None:
        """Call ``on_release(note)``."""
        self.on_release(note)


def guarded(
    fn: Callable[[], T],
    *,
    attempt: Attempt,
    record: Recorder,
    what: str,
) -> T:
    """Run a provider call under the error policy: permanent -> recorded failure; transient ->
    release and retry with backoff until the tries run out; anything else is a bug or an
    unexpected reply: recorded as a failure (an operator can retry), never a crash loop.
    The database unavailable (db.engine.unavailable) is none of these: re-raised as it is; the
    storage unavailable too, after giving the claim back.

    ``record`` says where failures and releases go (a :class:`Recorder`; :class:`Callbacks` makes
    one of two functions). Raises :class:`StepFailed` after recording a failure, :class:`RetryLater`
    after a release; lets :class:`ClaimLost` through (the run no longer holds the step)."""
    try:
        return fn()
    except ClaimLost:
        raise
    except QuotaWait as e:
        # The shared provider quota, not the provider, said "not now": free the step for
        # whoever comes first when it refills, without using up a try or recording an error.
        record.release(None)
        metrics.QUOTA_WAITS.labels(e.provider).inc()
        line = (e.provider, e.holder) if e.holder is not None else None
        raise RetryLater(backoff(0, e.retry_after), str(e), waiting=True, line=line) from None
    except PermanentStepError as e:
        record.fail(str(e))
        raise StepFailed(str(e)) from None
    except TransientStepError as e:
        if attempt.last:
            msg = f"{what} kept failing after {attempt.number + 1} tries: {e}"
            record.fail(msg)
            raise StepFailed(msg) from None
        record.release(str(e))
        raise RetryLater(backoff(attempt.number, e.retry_after), str(e)) from None
    except StorageUnavailable:
        # Our storage, not the provider (a permission lost, a full or read-only filesystem): the
        # database works, so the claim is given back now (the re-sent step claims it at once,
        # without waiting out its lease) and nothing is recorded; the task layer re-sends the
        # step with the outage backoff, with no bound. (If the release fails too, that error goes.)
        record.release(None)
        raise
    except Exception as e:  # noqa: BLE001 - the policy above is the point of this function
        if db_unavailable(e):
            # The database, not the provider (a job step's own statements run in here): nothing
            # to record; the task layer re-sends the step, which finds its claim again.
            raise
        log.exception("unexpected error in %s", what)
        msg = f"{what} failed with an internal error ({type(e).__name__}); an operator can retry it."
        record.fail(msg)
        raise StepFailed(msg) from None


class StepFailed(Exception):
    """Raised by :func:`guarded` after the failure was recorded (through its recorder's ``fail``):
    the step stops and returns a FAILED result; the message is the recorded one."""
