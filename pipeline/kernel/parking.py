"""Waiting steps that an event can wake at once: a step waiting on something outside (a remote job
it follows) raises ``RetryLater(park=key)``; the task layer then parks its message under ``key``
(:func:`park`) and sends the delayed retry with the parking's ticket. Whoever learns that the
awaited thing happened (a provider's completion webhook) calls :func:`wake` with the key: the
parked message is sent now (a fresh message: the same task, kwargs and chain) and the ticket
marked woken, so the delayed copy drops itself when it comes (the quota line's mark and check,
pipeline/kernel/quota_line.py). A wake that comes while nothing is parked (the step is running
right now) is remembered for a minute: the step's next park then runs it again at once.

Best effort on both sides: without Redis nothing is parked and the delayed retry runs as before.
"""
from __future__ import annotations

import logging

import redis

log = logging.getLogger("pipeline.kernel.parking")

PREFIX = "storycreator:parked"
WOKEN_EARLY_SECONDS = 60

# KEYS: parked message, early-wake flag. ARGV: ticket\nmessage, ttl ms. 1: parked; 0: woken early.
_PARK = """
if redis.call('DEL', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""

# KEYS: parked message, early-wake flag. ARGV: flag ttl s. The parked message, if any (taken).
_WAKE = """
local msg = redis.call('GET', KEYS[1])
if msg then
  redis.call('DEL', KEYS[1])
  return msg
end
redis.call('SET', KEYS[2], 1, 'EX', tonumber(ARGV[1]))
return false
"""


def _client() -> redis.Redis:
    from pipeline.kernel.quota import quotas

    return quotas().client


def park(key: str, ticket: str, message: str, ttl: float) -> bool:
    """Park ``message`` (JSON of a Celery signature) under ``key`` for ``ttl`` seconds with
    ``ticket``. True when parked (send the delayed retry with the ticket); False when a wake came
    for ``key`` meanwhile, or Redis is unavailable (False then too: run the retry as usual)."""
    c = _client()
    try:
        return int(c.eval(_PARK, 2, f"{PREFIX}:{key}", f"{PREFIX}:{key}:early",  # type: ignore[no-untyped-call]
                          f"{ticket}\n{message}", int(ttl * 1000) + 60_000)) == 1
    except redis.RedisError:
        return True  # nothing parked, nothing lost: the delayed retry runs as before


def wake(key: str) -> bool:
    """Send the message parked under ``key`` now (True), or remember the wake for a minute when
    nothing is parked (False). Never raises for Redis or the broker (logged)."""
    from pipeline.kernel import quota_line
    from pipeline.kernel.quota import quotas

    try:
        raw = _client().eval(_WAKE, 2, f"{PREFIX}:{key}", f"{PREFIX}:{key}:early",  # type: ignore[no-untyped-call]
                             WOKEN_EARLY_SECONDS)
    except redis.RedisError as e:
        log.warning("could not wake %s: %s", key, type(e).__name__)
        return False
    if not raw:
        return False
    quota_line.wake(quotas().line, [raw.decode() if isinstance(raw, bytes) else str(raw)])
    return True
