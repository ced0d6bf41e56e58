"""Provider quotas shared by every worker process and machine, held in Redis.

Celery's ``rate_limit`` is per worker (per process, even), so N workers would send N times the
limit. Here each provider has, all optional:

- a request rate per second and per minute: GCRA (a leaky bucket kept as one timestamp per
  limit, the "theoretical arrival time"), checked and advanced atomically in one Lua script
  against Redis's own clock, so machines with skewed clocks agree;
- a cap on concurrent jobs: a sorted set of holders scored by their expiry, so a holder whose
  worker died frees its slot when its lease runs out instead of leaking it forever.

A caller that would have to wait briefly (``QUOTA_MAX_INLINE_WAIT``, default 1 s) sleeps; a
longer wait raises QuotaWait, which the step layer turns into a re-scheduled task (the worker
slot is not held while the quota refills). Limits come from the environment:
``QUOTA_<PROVIDER>_RPS``, ``QUOTA_<PROVIDER>_RPM``, ``QUOTA_<PROVIDER>_CONCURRENT`` (0 = no limit).
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import redis

from pipeline.config import settings
from pipeline.kernel import quota_line
from pipeline.kernel.errors import TransientStepError

# Defaults sit below each provider's documented starting limits, so a fresh account is not
# throttled by the provider itself (429s cost a round trip and a retry; waiting here is free).
# The concurrent caps also keep a slow provider from taking every worker thread: with the
# default 32 threads, at most 8 can wait on OpenAI and 4 on Rekognition; a step over the cap is
# re-scheduled (QuotaWait), not parked in a thread, so the other stages keep their threads.
DEFAULTS: dict[str, tuple[float, float, int]] = {  # provider -> (rps, rpm, concurrent)
    "rekognition": (5.0, 0.0, 4),  # DetectFaces/DetectLabels: 5 TPS in most regions
    "s3": (0.0, 0.0, 0),
    "openai": (0.0, 450.0, 8),  # tier-1 RPM is 500
    "replicate": (8.0, 0.0, 8),  # 600 predictions/min create; running jobs capped for cost
    "replicate_api": (40.0, 0.0, 0),  # every other API endpoint (status, list, cancel): 3000/min
    "replicate_files": (0.0, 0.0, 0),  # output files, on Replicate's file host: no API limit
}

# Which rate limit a request spends: Replicate documents separate limits for creating predictions
# (600/min) and for every other endpoint (3000/min), so a status poll or an output download must
# not spend the create limit (https://replicate.com/docs/topics/predictions/rate-limits).
# Other providers: one limit for every request.
_RATE_BUCKETS = {("replicate", "create"): "replicate", ("replicate", "download"): "replicate_files"}
_OTHER_REQUESTS = {"replicate": "replicate_api"}


def rate_bucket(provider: str, operation: str) -> str:
    """The quota name whose rate limits request ``operation`` of ``provider`` spends: for
    Replicate, "replicate" for ``create``, "replicate_files" for ``download``, "replicate_api"
    for the rest; else ``provider`` itself."""
    return _RATE_BUCKETS.get((provider, operation), _OTHER_REQUESTS.get(provider, provider))


SAFETY = 1.1


@dataclass(frozen=True)
class Limits:
    """A provider's limits: requests per second and per minute, concurrent calls or jobs (0: none)."""

    rps: float
    rpm: float
    concurrent: int

    @property
    def any(self) -> bool:
        """Is any limit set?"""
        return self.rps > 0 or self.rpm > 0 or self.concurrent > 0


def _limit(name: str, default: float) -> float:
    from pipeline.config import env_float

    return env_float(name, default, 0.0, float("inf"), note="0 = no limit")


@cache
def limits(provider: str) -> Limits:
    """``provider``'s limits: QUOTA_<PROVIDER>_RPS / _RPM / _CONCURRENT, else DEFAULTS (cached).
    Raises SystemExit("configuration error: ...") for a value that is not a number >= 0."""
    rps, rpm, conc = DEFAULTS.get(provider, (0.0, 0.0, 0))
    p = provider.upper()
    return Limits(_limit(f"QUOTA_{p}_RPS", rps), _limit(f"QUOTA_{p}_RPM", rpm),
                  int(_limit(f"QUOTA_{p}_CONCURRENT", conc)))


class QuotaWait(TransientStepError):
    """The shared quota is spent for now: come back after ``retry_after`` seconds. Not a
    provider failure, so it does not use up a step's retries."""

    def __init__(self, provider: str, message: str, retry_after: float, holder: str | None = None) -> None:
        super().__init__(message, retry_after)
        self.provider = provider
        # Set by a step waiting for a concurrent-job slot under this holder name: the task layer
        # then queues the step in the provider's line (pipeline/kernel/quota_line.py).
        self.holder = holder


# GCRA for several limits at once: allowed only if every limit allows, and then all advance.
# KEYS: one per limit; ARGV: pairs of (emission interval ms, burst tolerance ms).
# Returns 0 when allowed, else the ms to wait before the request would be allowed.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat - burst
  if allow_at > now and allow_at - now > wait then wait = allow_at - now end
  tats[i] = tat + interval
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', math.ceil(tats[i] - now + 1000))
end
return 0
"""

def max_inline_wait() -> float:
    """QUOTA_MAX_INLINE_WAIT: seconds a step waits for its quota in its thread (default 1);
    longer, it is re-scheduled. Raises SystemExit("configuration error: …") outside 0–3600."""
    from pipeline.config import env_float

    return env_float("QUOTA_MAX_INLINE_WAIT", 1.0, 0.0, 3600.0)


class Quotas:
    """The shared limits of every provider. One per process (``quotas()``)."""

    def __init__(self, url: str, prefix: str = "storycreator:quota") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                           health_check_interval=30)
        self._prefix = prefix
        self._gcra = self._redis.register_script(_GCRA)
        self._line = quota_line.Line(self._redis, prefix)
        self._fifo = quota_line.enabled()
        self.max_inline_wait = max_inline_wait()

    def _call(self, fn: object, *args: object) -> int:
        try:
            return int(fn(*args))  # type: ignore[operator]
        except redis.RedisError as e:
            # Fail closed: without the shared counter we could exceed the provider's limit on
            # every worker at once (and be banned); a short retry is the cheaper mistake.
            raise TransientStepError(f"the quota store (Redis) is unavailable: {type(e).__name__}",
                                     retry_after=2.0) from None

    def wait_ms(self, provider: str) -> int:
        """Take one request from the provider's rate limits; 0 = go, else ms to wait."""
        lim = limits(provider)
        keys: list[str] = []
        argv: list[float] = []
        for per_s, window in ((lim.rps, "s"), (lim.rpm / 60.0, "m")):
            if per_s > 0:
                # No burst allowance: requests are spaced evenly, so no sliding window of a
                # second (or a minute) sees more than the limit (a bucket with a burst of N
                # would let 2N-1 through in some one-second window). And spaced SAFETY wider
                # than 1/limit: at exactly 1/limit, N+1 grants span exactly one window, and the
                # jitter between our grant and the provider's clock (a GIL switch, the network)
                # would put them inside one. 10% of the window absorbs up to 100 ms of it.
                keys.append(f"{self._prefix}:{provider}:rate:{window}")
                argv += [1000.0 / per_s * SAFETY, 0]
        if not keys:
            return 0
        return self._call(self._gcra, keys, argv)

    def take(self, provider: str) -> None:
        """Block briefly, or raise QuotaWait, until a request to ``provider`` is allowed."""
        deadline = time.monotonic() + self.max_inline_wait
        while True:
            wait = self.wait_ms(provider) / 1000.0
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise QuotaWait(provider, f"{provider} request quota is spent for now", wait)
            time.sleep(wait)

    def acquire(self, provider: str, holder: str, lease: float) -> float:
        """Hold one of the provider's concurrent-job slots for ``holder`` (idempotent for the
        same holder; renews its lease). A free slot goes to the steps waiting in the provider's
        line first (pipeline/kernel/quota_line.py), in order. Returns 0 when held, else seconds
        until the earliest holder's lease runs out (an upper bound on the wait)."""
        cap = limits(provider).concurrent
        if cap <= 0:
            return 0.0
        return self._call(self._line.acquire, quota_line.keys(self._prefix, provider),
                          [cap, holder, int(lease * 1000), "1" if self._fifo else "0"]) / 1000.0

    def wait_in_line(self, provider: str, holder: str, ticket: str, message: str) -> bool:
        """Queue ``holder`` in ``provider``'s line with the message to send on its turn (JSON of a
        Celery signature; ``ticket`` names this wait). True when queued, False when a slot is free
        for it now (or there is no cap, or the line is off: QUOTA_WAKE=false). Raises
        TransientStepError when Redis is unavailable."""
        cap = limits(provider).concurrent
        if cap <= 0 or not self._fifo:
            return False
        return bool(self._call(lambda: int(self._line.enqueue(provider, cap, holder, ticket, message))))

    def wait_turn(self, provider: str, holder: str, lease: float, ready: Callable[[], None] | None = None) -> bool:
        """A pre-woken step first in ``provider``'s line waits in its thread (at most
        QUOTA_MAX_INLINE_WAIT seconds, one thread per holder, two per process) for the next
        release to grant it a slot, after ``ready()`` (called only when it is first in line: it
        builds the job's input meanwhile); then holds it for ``lease`` seconds. True when held,
        else False (queue again: its place is kept). Never raises for Redis (False when it is
        unavailable); raises what ``ready`` raises."""
        cap = limits(provider).concurrent
        if cap <= 0 or not self._fifo:
            return False
        try:
            if not self._line.wait_turn(provider, holder, self.max_inline_wait, ready):
                return False
        except redis.RedisError:
            return False
        return self.acquire(provider, holder, lease) == 0

    def superseded(self, ticket: str) -> bool:
        """Was the wait ``ticket`` woken already (its backstop copy is then not needed)?"""
        return self._line.superseded(ticket)

    def release(self, provider: str, holder: str) -> None:
        """Give back ``holder``'s concurrent-job slot and hand the freed slot to the oldest
        waiting step at once (its message is sent: quota_line.wake). Best effort: the slot's
        lease frees it anyway, and a waiter's backstop retry runs it anyway."""
        cap = limits(provider).concurrent
        if cap <= 0:
            return
        try:
            woken = self._line.release(provider, cap, holder, self._fifo)
        except redis.RedisError:
            return
        quota_line.wake(self._line, woken)

    @property
    def line(self) -> quota_line.Line:
        """The scripts of the waiting lines (and the woken marks) on this connection."""
        return self._line

    @property
    def client(self) -> redis.Redis:
        """The Redis connection the quotas live on (shared per process)."""
        return self._redis

    def waiting(self, provider: str) -> list[str]:
        """The holders waiting in ``provider``'s line, oldest first."""
        return self._line.waiting(provider)

    def holders(self, provider: str) -> int:
        """How many of ``provider``'s concurrent-job slots are held now."""
        return int(self._redis.zcard(f"{self._prefix}:{provider}:jobs"))


_lock = threading.Lock()
_cached: tuple[int, Quotas] | None = None


def quotas() -> Quotas:
    """The process's :class:`Quotas` on REDIS_URL (one per process: a forked child makes its own)."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        with _lock:
            if _cached is None or _cached[0] != pid:
                _cached = (pid, Quotas(settings().redis_url))
    return _cached[1]


class QuotaHooks:
    """RequestHooks for real adapters: the shared rate limit before each request, a slot of
    the concurrent cap around synchronous calls, and per-provider request metrics after.

    Concurrent caps on remote *jobs* (Replicate predictions) are held by the step for the job's
    whole life instead (pipeline/stories/remote_jobs.py), so ``concurrent_calls`` is off for those providers."""

    def __init__(self, concurrent_calls: bool = True, call_lease: float = 120.0) -> None:
        self._local = threading.local()
        self._concurrent_calls = concurrent_calls
        self._call_lease = call_lease

    def before(self, provider: str, operation: str) -> None:
        """Before a request: a concurrent slot (when capped) and one request of the rate limits;
        raises QuotaWait when they are not free within the inline wait."""
        q = quotas()
        if self._concurrent_calls and limits(provider).concurrent > 0:
            holder = uuid.uuid4().hex
            deadline = time.monotonic() + q.max_inline_wait
            while (wait := q.acquire(provider, holder, self._call_lease)) > 0:
                if time.monotonic() + min(wait, 0.05) > deadline:
                    raise QuotaWait(provider, f"{provider} has its maximum of concurrent requests running",
                                    min(wait, 5.0))
                time.sleep(0.05)
            self._local.__dict__.setdefault("held", []).append((provider, holder))
        try:
            q.take(rate_bucket(provider, operation))
        except BaseException:
            self._drop(provider)
            raise

    def after(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        """After a request: its concurrent slot freed and its metrics recorded (``seconds``: its time)."""
        from pipeline.kernel import metrics

        self._drop(provider)
        metrics.provider_request(provider, operation, outcome, seconds)

    def _drop(self, provider: str) -> None:
        held: list[tuple[str, str]] = self._local.__dict__.get("held", [])
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] == provider:
                quotas().release(provider, held.pop(i)[1])
                return
