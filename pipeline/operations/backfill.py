"""``storycreator backfill``: re-enqueue all stuck work in bounded, resumable batches."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.operations.stuck import KINDS, NO_CURSOR, Stuck, resend, stuck_batch


@dataclass
class BackfillProgress:
    """How far a backfill got: messages sent, batches, whether it resumed an earlier run and
    whether it finished; ``items`` lists what a dry run would send."""

    enqueued: int = 0
    batches: int = 0
    resumed: bool = False
    done: bool = False
    items: list[Stuck] = field(default_factory=list)  # dry runs only: what would be sent


CURSOR_KEY = "storycreator:backfill:cursor"


def backfill(*, lease: float, pending_after: float, batch_size: int = 200, rate: float = 100.0,
             max_items: int | None = None, dry_run: bool = False, restart: bool = False,
             on_batch: Callable[[BackfillProgress, str, int], None] | None = None) -> BackfillProgress:
    """Re-enqueue all stuck work, one kind after another, in batches of ``batch_size`` and at no
    more than ``rate`` messages a second (a backfill over old rows must not flood the queues
    that live stories use). A stuck page step is sent as the rest of its page's chain.

    Resumable: after each batch the position (the last id, per kind of stuck work) is saved in
    Redis; an interrupted run (Ctrl-C, a lost terminal, ``max_items`` reached) continues from
    there when run again with the same thresholds, and a finished run clears it; ``restart``
    starts over. Safe beside live workers and when run twice at once, as ``sweep`` is."""
    import redis

    from pipeline.config import settings

    r = redis.Redis.from_url(settings().redis_url, decode_responses=True)
    signature = f"lease={lease}|pending_after={pending_after}"
    saved: dict[str, str] = {} if (restart or dry_run) else dict(r.hgetall(CURSOR_KEY))  # type: ignore[arg-type]
    cursor = saved if saved.get("signature") == signature else {}
    progress = BackfillProgress(resumed=bool(cursor))
    interval = 1.0 / rate if rate > 0 else 0.0
    next_send = time.monotonic()
    for kind, stage in enumerate(KINDS):
        after = cursor.get(str(kind), NO_CURSOR)
        while after != "done":
            room = batch_size if max_items is None else min(batch_size, max_items - progress.enqueued)
            if room <= 0:
                return progress
            batch = stuck_batch(kind, lease=lease, pending_after=pending_after, limit=room, after=after)
            for item in batch:
                if dry_run:
                    progress.items.append(item)
                    continue
                if interval:
                    time.sleep(max(0.0, next_send - time.monotonic()))
                    next_send = max(next_send, time.monotonic()) + interval
                resend(item)
            progress.enqueued += len(batch)
            progress.batches += 1
            after = next(iter(batch[-1].kwargs.values())) if len(batch) == room else "done"
            if not dry_run:
                r.hset(CURSOR_KEY, mapping={"signature": signature, str(kind): after})
            if on_batch is not None and batch:
                on_batch(progress, stage.task, len(batch))
    if not dry_run:
        r.delete(CURSOR_KEY)
    progress.done = True
    return progress
