"""The line of steps waiting for a provider's concurrent-job slot: first come, first served.

A step that finds a provider's cap full (pipeline/kernel/quota.py ``Quotas.acquire``) does not
come back on a countdown to race the others for the next free slot. The task layer puts it in the
provider's line (:func:`enqueue`): a Redis sorted set of holders scored by when each first queued
(idempotent per holder: a holder queued again keeps its place), with the message to send when its
turn comes (the step's own message: its task, kwargs, chain, queue and priority, as JSON). Whoever
frees a slot (``Quotas.release``) grants it to the oldest waiter at once (the slot is held for the
waiter, for QUOTA_WAKE_GRANT seconds until its step renews it) and sends that message
(:func:`wake`). A slot is therefore handed on the moment a job ends, in order.

Pre-waking (QUOTA_PREWAKE, default true): each release also sends the message of the waiter next
in line, which stays in line. That step claims its page and, finding itself first in line, waits
in its thread (at most QUOTA_MAX_INLINE_WAIT seconds, two threads per process) on a Redis list the
next release pushes to when it grants it the slot: the hand-on then costs no message, no claim.
Its time up, it queues its message again (its place kept).

Crash safety: the waiting step's message is also re-sent after QUOTA_WAKE_BACKSTOP seconds (a
plain delayed retry carrying the wait's ticket). If the waiter was woken meanwhile, that copy
finds the ticket's mark (:func:`superseded`) and drops itself; if the releaser died before
sending, the copy runs and takes its slot in turn (the grant, or the line's order). A waiter whose
messages are all gone leaves the line when its entry expires (3 backstops without a renewal), so
a lost message cannot block the line for ever. QUOTA_WAKE=false restores countdown retries.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger("pipeline.kernel.quota_line")


def enabled() -> bool:
    """QUOTA_WAKE (default true): waiting steps queue in line and are woken by releases."""
    from pipeline.config import env_bool

    return env_bool("QUOTA_WAKE", True)


def backstop() -> float:
    """QUOTA_WAKE_BACKSTOP: seconds after which a waiting step's message comes back anyway
    (default 30; 1-3600). SystemExit("configuration error: ...") outside that range."""
    from pipeline.config import env_float

    return env_float("QUOTA_WAKE_BACKSTOP", 30.0, 1.0, 3600.0)


def grant_seconds() -> float:
    """QUOTA_WAKE_GRANT: seconds a slot granted to a woken waiter is kept for it before its step
    renews it with the job's lease (default 30; 1-3600)."""
    from pipeline.config import env_float

    return env_float("QUOTA_WAKE_GRANT", 30.0, 1.0, 3600.0)


def keys(prefix: str, provider: str) -> list[str]:
    """The provider's Redis keys: [holders zset, waiters zset (first queued ms), waiters' expiry
    zset (ms), waiters' messages hash]."""
    base = f"{prefix}:{provider}"
    return [f"{base}:jobs", f"{base}:line", f"{base}:line:until", f"{base}:line:msg"]


# Shared by the scripts: expired holders and expired waiters leave.
_CLEAN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, w in ipairs(gone) do
  redis.call('ZREM', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
  redis.call('HDEL', KEYS[4], w)
end
"""

# Take a slot, in line. ARGV: limit, holder, lease ms, fifo (1/0). A holder already holding renews
# it; else it takes a free slot only if the waiters ahead of it (all, when it is not in line) leave
# one. Returns 0 when held, else the ms until the earliest holder's lease runs out.
ACQUIRE = _CLEAN + """
local limit, holder, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local held = redis.call('ZSCORE', KEYS[1], holder)
local ahead = 0
if not held and ARGV[4] == '1' then
  ahead = redis.call('ZRANK', KEYS[2], holder) or redis.call('ZCARD', KEYS[2])
end
if held or redis.call('ZCARD', KEYS[1]) + ahead < limit then
  redis.call('ZADD', KEYS[1], now + lease, holder)
  redis.call('PEXPIRE', KEYS[1], lease + 60000)
  redis.call('ZREM', KEYS[2], holder)
  redis.call('ZREM', KEYS[3], holder)
  redis.call('HDEL', KEYS[4], holder)
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return 1000 end  -- free slots, but waiters ahead of this holder
return math.max(1, tonumber(first[2]) - now)
"""

# Join the line. ARGV: limit, holder, entry ttl ms, message. Returns 1 when a slot is free for this
# holder now (nothing queued: run again at once), 0 when queued (a holder already in line keeps its
# place; its message is replaced by the newer one).
_ENQUEUE = _CLEAN + """
local limit, holder, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], holder) then return 1 end
local ahead = redis.call('ZRANK', KEYS[2], holder) or redis.call('ZCARD', KEYS[2])
if redis.call('ZCARD', KEYS[1]) + ahead < limit then return 1 end
redis.call('ZADD', KEYS[2], 'NX', now, holder)
redis.call('ZADD', KEYS[3], now + ttl, holder)
redis.call('HSET', KEYS[4], holder, ARGV[4])
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl + 60000) end
return 0
"""

# Give a slot back and grant the freed slots to the oldest waiters. ARGV: holder, limit, grant ms,
# fifo, prewake, the grant lists' key prefix. Returns the messages to send: the woken waiters' (each
# its holder's slot now held for grant ms) and, with prewake, the next waiter's (left in line).
# A waiter's entry is its message, or INLINE (its step waits in a thread: pushed to its grant list),
# or PREWOKEN (its message is on its way: granted, nothing to send).
_RELEASE = _CLEAN + """
redis.call('ZREM', KEYS[1], ARGV[1])
local out = {}
if ARGV[4] ~= '1' then return out end
local limit, grant = tonumber(ARGV[2]), tonumber(ARGV[3])
while redis.call('ZCARD', KEYS[1]) < limit do
  local w = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #w == 0 then break end
  local msg = redis.call('HGET', KEYS[4], w[1])
  redis.call('ZREM', KEYS[2], w[1])
  redis.call('ZREM', KEYS[3], w[1])
  redis.call('HDEL', KEYS[4], w[1])
  if msg then
    redis.call('ZADD', KEYS[1], now + grant, w[1])
    if msg == 'INLINE' then
      redis.call('RPUSH', ARGV[6] .. w[1], 1)
      redis.call('EXPIRE', ARGV[6] .. w[1], 60)
    elseif msg ~= 'PREWOKEN' then
      table.insert(out, msg)
    end
  end
end
if ARGV[5] == '1' then
  local w = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #w > 0 then
    local msg = redis.call('HGET', KEYS[4], w[1])
    if msg and msg ~= 'INLINE' and msg ~= 'PREWOKEN' then
      redis.call('HSET', KEYS[4], w[1], 'PREWOKEN')
      table.insert(out, msg)
    end
  end
end
return out
"""

# A step first in line waits in its thread for its turn. ARGV: holder. 1: its entry now says
# INLINE (a release pushes to its grant list); 0: it is not first in line.
_INLINE = _CLEAN + """
local w = redis.call('ZRANGE', KEYS[2], 0, 0)
if #w == 0 or w[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[4], ARGV[1], 'INLINE')
return 1
"""


# A waiter leaves the line. ARGV: holder.
_LEAVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""


def prewake() -> bool:
    """QUOTA_PREWAKE (default true): each release also sends the next waiter's message, so that step
    is ready (claimed, its input built) and waits in its thread for the next free slot."""
    from pipeline.config import env_bool

    return env_bool("QUOTA_PREWAKE", True)


_parked = threading.BoundedSemaphore(2)  # threads of this process waiting in line inline, at most


class Line:
    """The scripts of one Redis connection (``Quotas`` owns one)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self.acquire = client.register_script(ACQUIRE)
        self._enqueue = client.register_script(_ENQUEUE)
        self._release = client.register_script(_RELEASE)
        self._inline = client.register_script(_INLINE)
        self._leave = client.register_script(_LEAVE)
        self._prewake = prewake()

    def enqueue(self, provider: str, limit: int, holder: str, ticket: str, message: str) -> bool:
        """Queue ``holder`` for one of ``provider``'s ``limit`` slots with ``message`` (JSON, sent on
        its turn) under ``ticket``. True when queued; False when a slot is free for it now (run
        again at once). Raises redis.RedisError."""
        ttl = int(backstop() * 3 * 1000)
        payload = f"{ticket}\n{message}"
        return int(self._enqueue(keys(self._prefix, provider), [limit, holder, ttl, payload])) == 0

    def release(self, provider: str, limit: int, holder: str, fifo: bool) -> list[str]:
        """Drop ``holder``'s slot and grant freed slots to the oldest waiters (``fifo``); returns
        their messages (``ticket\\nJSON``) for :func:`wake`. Raises redis.RedisError."""
        out = self._release(keys(self._prefix, provider),
                            [holder, limit, int(grant_seconds() * 1000), "1" if fifo else "0",
                             "1" if fifo and self._prewake else "0", f"{self._prefix}:grant:"])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in out or []]

    def wait_turn(self, provider: str, holder: str, timeout: float,
                  ready: Callable[[], None] | None = None) -> bool:
        """If ``holder`` is first in ``provider``'s line (a pre-woken step), wait in this thread up to
        ``timeout`` seconds for a release to grant it the next slot, after calling ``ready`` (the
        step gets ready to start its job while the running one ends: it is next). True when it was
        granted (the caller then renews it with ``acquire``); False when it is not first in line,
        this process already has its limit of threads waiting, or the time ran out (its place is
        kept: the task layer queues its message again). Raises redis.RedisError, and what
        ``ready`` raises (a grant that came meanwhile is then kept for the step's next run)."""
        if not self._prewake or timeout <= 0 or not _parked.acquire(blocking=False):
            return False
        try:
            grants = f"{self._prefix}:grant:{holder}"
            self._redis.delete(grants)
            if not int(self._inline(keys(self._prefix, provider), [holder])):
                return False
            t0 = time.monotonic()
            if ready is not None:
                try:
                    ready()
                except BaseException:
                    # It cannot start its job now (its run fails or retries): it leaves the line, so
                    # no slot is granted to a step that is not waiting (a grant already made stays
                    # its: its next run holds it, or its failure releases it).
                    with contextlib.suppress(redis.RedisError):
                        self._leave(keys(self._prefix, provider), [holder])
                    raise
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                return self._redis.lpop(grants) is not None
            return self._redis.blpop([grants], timeout=left) is not None
        finally:
            _parked.release()

    def waiting(self, provider: str) -> list[str]:
        """The holders in ``provider``'s line, oldest first."""
        raw: Any = self._redis.zrange(keys(self._prefix, provider)[1], 0, -1)
        return [h.decode() for h in raw]

    def mark_woken(self, ticket: str) -> None:
        """Mark ``ticket``'s wait as woken: its backstop copy drops itself (:func:`superseded`)."""
        with contextlib.suppress(redis.RedisError):
            self._redis.set(f"{self._prefix}:woken:{ticket}", 1, ex=int(backstop() * 4) + 60)

    def superseded(self, ticket: str) -> bool:
        """Was the wait under ``ticket`` woken by a release (so its backstop copy is not needed)?
        False when Redis cannot say (the copy then runs: a duplicate, never a loss)."""
        try:
            return bool(self._redis.exists(f"{self._prefix}:woken:{ticket}"))
        except redis.RedisError:
            return False


def wake(line: Line, messages: list[str]) -> None:
    """Send each woken waiter's message (``ticket\\nJSON`` of a Celery signature, built by the task
    layer) as a fresh message (new task id), then mark its ticket woken. A message that cannot be
    sent is left to its backstop copy (logged)."""
    if not messages:
        return
    from celery.canvas import Signature

    from pipeline.kernel.publish import app

    for m in messages:
        ticket, _, body = m.partition("\n")
        try:
            sig: dict[str, Any] = json.loads(body)
            Signature(sig, app=app()).apply_async(task_id=str(uuid.uuid4()))
        except Exception as e:  # noqa: BLE001 - the backstop copy comes anyway
            log.warning("could not wake a waiting step (%s: %s); its backstop retry will run it",
                        type(e).__name__, e)
            continue
        line.mark_woken(ticket)
