"""When to look at a running remote job next: from how long that model's jobs take.

Every worker shares, per (provider, kind of job), an exponentially weighted moving average of
the jobs' durations in Redis (:func:`observe`, weight ``ALPHA`` for the newest). A step that
started or follows a job comes back (:func:`next_look`) when the average says the job should be
done (plus 2 ms), and once it is overdue, after a quarter of the time it is overdue (soon after
a look that came a little early, less and less often for a job that runs long); always within
[JOB_POLL_MIN, JOB_POLL_INTERVAL]. A slot of the
provider's cap is freed when a look sees the job ended, so looking late keeps a paid slot idle:
at a fixed 3 s interval, 0.5 s jobs kept their slots busy 11 % of the time.

Waiting out the end in the thread (JOB_INLINE_WAIT, default 1 s): a step that created or looked
at a job whose expected end is at most JOB_INLINE_WAIT seconds away does not re-schedule itself
through the broker (a retry message, its ETA, a claim, ~18 ms after the end at 0.5 s jobs): it
sleeps in its thread until the expected end and looks again, on the same schedule as the
re-scheduled looks (:func:`next_look`: so it spends no more of the provider's status-request
budget, e.g. Replicate's ``replicate_api``, per second than they would), for at most
JOB_INLINE_WAIT seconds in all, then re-schedules as before. At most JOB_INLINE_THREADS threads
of a process wait so (:func:`inline_turn`); the others re-schedule. A re-scheduled look comes
JOB_LOOK_LEAD seconds before the expected end (default 0.05), so the broker's and the claim's
cost is paid before the end and the rest is waited out in the thread.

JOB_POLL_ADAPTIVE=false (the default with Replicate's completion webhooks) restores the fixed
JOB_POLL_INTERVAL, with no waiting in the thread and no lead. Without an average (Redis
unavailable, or no job of the kind ended yet) the next look is after a quarter of the job's age,
at most 0.5 s (within the bounds).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis

from pipeline.config import env_bool, env_float, env_int, job_webhooks_configured, settings

T = TypeVar("T")

ALPHA = 0.3  # weight of the newest duration in the average
_UNKNOWN = 0.5  # seconds: the longest wait to the next look while no duration is known


def adaptive() -> bool:
    """JOB_POLL_ADAPTIVE: looks scheduled from observed durations. Default true, except with
    Replicate's completion webhooks configured (pipeline.config.job_webhooks_configured): the
    webhook says when a job ended, and looks are only the fallback, every JOB_POLL_INTERVAL."""
    return env_bool("JOB_POLL_ADAPTIVE", not job_webhooks_configured())


def poll_min() -> float:
    """JOB_POLL_MIN: the shortest wait between two looks at a job, seconds (default 0.02; 0.01-60).
    SystemExit("configuration error: ...") outside that range."""
    return env_float("JOB_POLL_MIN", 0.02, 0.01, 60.0)


def _key(provider: str, kind: str) -> str:
    return f"storycreator:jobtime:{provider}:{kind}"


def _client() -> redis.Redis:
    from pipeline.kernel.quota import quotas

    return quotas().client


def expected(provider: str, kind: str) -> float | None:
    """The average duration of ``provider``'s ``kind`` jobs in seconds, or None when unknown (no
    job ended yet, or Redis unavailable)."""
    try:
        raw = _client().get(_key(provider, kind))
    except redis.RedisError:
        return None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def observe(provider: str, kind: str, seconds: float) -> None:
    """Fold one ended job's duration (seconds from create to its end, as the provider reports
    it, else as we saw it) into the average (best effort: Redis unavailable -> nothing)."""
    if not seconds > 0:
        return
    try:
        c = _client()
        old = expected(provider, kind)
        new = seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds
        c.set(_key(provider, kind), f"{new:.4f}", ex=7 * 24 * 3600)
    except redis.RedisError:
        return


def inline_wait() -> float:
    """JOB_INLINE_WAIT: the longest a step waits in its thread for a job's end, seconds (default 1;
    0-60, 0: never, every look re-scheduled). 0 when JOB_POLL_ADAPTIVE is off. SystemExit
    ("configuration error: ...") outside that range."""
    return env_float("JOB_INLINE_WAIT", 1.0, 0.0, 60.0) if adaptive() else 0.0


def inline_threads() -> int:
    """JOB_INLINE_THREADS: threads of one worker process that may wait for a job's end at once
    (default 16, half of the Procfile's 32 threads; 1-1024)."""
    return env_int("JOB_INLINE_THREADS", 16, 1, 1024)


def look_lead() -> float:
    """JOB_LOOK_LEAD: seconds before a job's expected end its re-scheduled look comes, when the
    rest can be waited out in the thread (default 0.05; 0-5). 0 without JOB_INLINE_WAIT."""
    return min(env_float("JOB_LOOK_LEAD", 0.05, 0.0, 5.0), inline_wait())


_sem_lock = threading.Lock()
_sem: tuple[int, threading.BoundedSemaphore] | None = None


def _threads() -> threading.BoundedSemaphore:
    global _sem
    n = inline_threads()
    with _sem_lock:
        if _sem is None or _sem[0] != n:
            _sem = (n, threading.BoundedSemaphore(n))
        return _sem[1]


@contextmanager
def inline_turn() -> Iterator[bool]:
    """One of the process's JOB_INLINE_THREADS turns to wait in the thread: yields True when taken
    (given back on leaving), False when JOB_INLINE_WAIT is 0 or every turn is taken."""
    if inline_wait() <= 0:
        yield False
        return
    sem = _threads()
    if not sem.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        sem.release()


def wait_end(provider: str, kind: str, age: float, look: Callable[[], T | None],
             sleep: Callable[[float], None] = time.sleep) -> T | None:
    """Wait in this thread for a job of ``provider``'s ``kind`` that has run ``age`` seconds to
    end, when its expected end (the kind's average) is at most JOB_INLINE_WAIT seconds away (or
    past): sleep until each next look (:func:`next_look`, without the lead), call ``look`` (None:
    still running), for at most JOB_INLINE_WAIT seconds in all and only while the next look is
    within what is left of it. Returns ``look``'s first answer that is not None, or None when the
    job did not end in time, its end is further away or unknown (no job of the kind ended yet),
    or the wait is off or every thread turn is taken: the caller then re-schedules as before.
    ``look`` raises what it raises."""
    budget = inline_wait()
    if budget <= 0:
        return None
    est = expected(provider, kind)
    if est is None or est - age > budget:
        return None
    t0 = time.monotonic()
    with inline_turn() as mine:
        if not mine:
            return None
        while True:
            spent = time.monotonic() - t0
            wait = next_look(provider, kind, age + spent, lead=False)
            if spent + wait > budget:
                return None
            sleep(wait)
            got = look()
            if got is not None:
                return got


def next_look(provider: str, kind: str, age: float, *, lead: bool = True) -> float:
    """Seconds until the next look at a job of ``provider``'s ``kind`` that has run ``age``
    seconds (see the module's docstring); JOB_POLL_INTERVAL when JOB_POLL_ADAPTIVE is off. With
    ``lead`` (a re-scheduled look), JOB_LOOK_LEAD seconds before the expected end."""
    hi = settings().job_poll_interval
    if not adaptive():
        return hi
    lo = min(poll_min(), hi)
    est = expected(provider, kind)
    if est is None:
        wait = min(_UNKNOWN, 0.25 * age)
    elif age < est:
        wait = est - age + 0.002
        if lead and wait - look_lead() >= lo:  # the rest is waited out in the thread (wait_end)
            wait -= look_lead()
    else:
        # Overdue (or our clock says so: the job's age counts from before it was created): look
        # again soon, then less and less often, a quarter of the time overdue.
        wait = 0.25 * (age - est)
    return round(min(hi, max(lo, wait)), 3)
