"""When to look at a running remote job next: from how long that model's jobs take.

Every worker shares, per (provider, kind of job), an exponentially weighted moving average of
the jobs' durations in Redis (:func:`observe`, weight ``ALPHA`` for the newest). A step that
started or follows a job comes back (:func:`next_look`) when the average says the job should be
done (plus 2 ms), and once it is overdue, after a quarter of the time it is overdue (soon after
a look that came a little early, less and less often for a job that runs long); always within
[JOB_POLL_MIN, JOB_POLL_INTERVAL]. A slot of the
provider's cap is freed when a look sees the job ended, so looking late keeps a paid slot idle:
at a fixed 3 s interval, 0.5 s jobs kept their slots busy 11 % of the time.

JOB_POLL_ADAPTIVE=false (the default with Replicate's completion webhooks) restores the fixed
JOB_POLL_INTERVAL. Without an average (Redis
unavailable, or no job of the kind ended yet) the next look is after a quarter of the job's age,
at most 0.5 s (within the bounds).
"""
from __future__ import annotations

import redis

from pipeline.config import env_bool, env_float, job_webhooks_configured, settings

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


def next_look(provider: str, kind: str, age: float) -> float:
    """Seconds until the next look at a job of ``provider``'s ``kind`` that has run ``age``
    seconds (see the module's docstring); JOB_POLL_INTERVAL when JOB_POLL_ADAPTIVE is off."""
    hi = settings().job_poll_interval
    if not adaptive():
        return hi
    lo = min(poll_min(), hi)
    est = expected(provider, kind)
    if est is None:
        wait = min(_UNKNOWN, 0.25 * age)
    elif age < est:
        wait = est - age + 0.002
    else:
        # Overdue (or our clock says so: the job's age counts from before it was created): look
        # again soon, then less and less often, a quarter of the time overdue.
        wait = 0.25 * (age - est)
    return round(min(hi, max(lo, wait)), 3)
