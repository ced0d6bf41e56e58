"""Stories sent before their photo's upload was confirmed: they wait, without holding a worker.

The external API often confirms an upload asynchronously, so ``stories.generate`` may arrive
while the photo row still says ``pending_upload``. The story then stays ``pending`` and its
message is re-scheduled (pipeline.kernel.step.RetryLater with ``waiting=True``: no error try is used) until
the photo says ``uploaded`` (the story starts) or ``PHOTO_UPLOAD_WAIT_SECONDS`` have passed
since the story became pending (its claim fails it, db/transitions.claim_story). The wait is
measured from the story's row, not from the message, so worker restarts and redeliveries do
not extend it.

Only one message waits per story: a duplicate ``stories.generate`` (the API sending it twice, a
sweeper's copy) that finds another message waiting stops at once, so duplicates do not multiply
the polling. The waiting message is recognised by its Celery task id, which a re-scheduled task
keeps (also when a restarted worker's message comes back), held in Redis for a little longer
than its next look; a waiter that was lost frees its place when that runs out.
"""
from __future__ import annotations

import logging
import os

import redis

from pipeline.kernel.config import settings

log = logging.getLogger("pipeline.stories.upload_wait")

MIN_POLL = 1.0  # seconds: the first looks, when an upload confirmation is most likely

# Take the place if it is free or already ours, and keep it for ARGV[2] ms.
_HOLD = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_client: tuple[int, redis.Redis] | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():  # one client per (forked) process
        _client = (os.getpid(), redis.Redis.from_url(settings().redis_url, socket_timeout=5,
                                                     socket_connect_timeout=5))
    return _client[1]


def poll_interval(pending_for: float, wait_left: float) -> float:
    """Seconds until the next look at the photo: every second at first, then a tenth of the
    time waited so far, at most ``PHOTO_UPLOAD_POLL_INTERVAL``; never much past the wait's end
    (``pending_for``, ``wait_left``: seconds)."""
    interval = min(settings().photo_upload_poll_interval, max(MIN_POLL, pending_for / 10))
    return round(max(0.2, min(interval, wait_left + 0.2)), 3)


def hold(story_id: str, pending_since: int, task_id: str | None, countdown: float) -> bool:
    """May this message be the one that waits for the story's photo? True for the first
    message, and for it again on each of its looks; False for another message while that one
    waits (it may stop). ``pending_since`` (the story's updated_at in µs) makes each pending
    episode its own place: after an operator's retry the old waiter does not block the new
    one. Without a task id (an in-process call) or without Redis, every message may wait."""
    if not task_id:
        return True
    key = f"storycreator:upload-wait:{story_id}:{pending_since}"
    ttl_ms = int((2 * countdown + 10) * 1000)
    try:
        return bool(_redis().eval(_HOLD, 1, key, task_id, ttl_ms))
    except redis.RedisError as e:
        log.warning("upload wait: Redis unavailable (%s); story %s waits without de-duplication",
                    type(e).__name__, story_id)
        return True
