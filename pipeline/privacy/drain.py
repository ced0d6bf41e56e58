"""Files follow rows: the queue of stored objects whose rows were deleted (schema.sql's
``storage_deletions``, filled by triggers in the deleting statement itself), drained in bounded
batches by the sweeper and, synchronously, by whoever needs the files gone now (``forget``).

Each queued row names an object or a folder prefix in the output storage (``storage='output'``:
pictures, books, print files) or an uploaded photo in its own storage (the photo row's
``storage_provider`` and ``bucket``). A row is deleted in two passes: at once, and again
``recheck_after()`` seconds later (STEP_LEASE_SECONDS + 60 s), because a step that was in flight
when its row was deleted (its claim read before the deletion, its provider call after) may still
write its file: the step's lease bounds how long a healthy one can take. Failures are recorded on
the row (``last_error``) and tried again with capped exponential backoff; deleting an absent
object is not an error, so every pass is idempotent and a drainer that dies mid-batch loses nothing
(its claimed rows come back after the lease).
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db import lifecycle as q
from db.engine import autocommit
from pipeline.config import settings
from pipeline.privacy import metrics
from pipeline.privacy.settings import retention_settings

log = logging.getLogger("storycreator.privacy")

RECHECK_MARGIN = 60.0  # seconds past the lease before the second pass
BACKOFF_BASE = 30.0  # seconds: a failed deletion waits up to base * 2^(attempt-1) ...
BACKOFF_CAP = 6 * 3600.0  # ... and at most six hours


@dataclass
class DrainResult:
    """What one ``drain`` did: rows ``claimed``; ``objects`` (files) removed; rows ``finished``
    (deleted for good), ``rechecks`` (first pass done, second due later), ``failed`` (error
    recorded, tried again later)."""

    claimed: int = 0
    objects: int = 0
    finished: int = 0
    rechecks: int = 0
    failed: int = 0

    def add(self, other: DrainResult) -> None:
        """Add ``other``'s counts to these."""
        for f in ("claimed", "objects", "finished", "rechecks", "failed"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def recheck_after() -> float:
    """Seconds between a row's two passes: STEP_LEASE_SECONDS + RECHECK_MARGIN."""
    return settings().step_lease_seconds + RECHECK_MARGIN


def backoff(attempt: int) -> float:
    """Seconds before a deletion that failed on its ``attempt``-th try (1, 2, ...) is tried again:
    a random time between half and all of base * 2^(attempt-1), capped (BACKOFF_BASE, BACKOFF_CAP)."""
    full = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, min(attempt, 30) - 1))
    return random.uniform(full / 2, full)


def _delete(row: Any, output: Any) -> int:
    """Delete what ``row`` names; the number of objects removed. Raises what the storage raises."""
    from pipeline.providers import registry

    if row["storage"] == "output":
        if row["is_prefix"]:
            return int(output().delete_prefix(row["key"]))
        return int(bool(output().delete(row["key"])))
    if row["is_prefix"]:
        raise ValueError(f"a folder prefix in storage {row['storage']!r} (only the output storage has folders)")
    return int(registry.delete_photo(row["storage"], row["bucket"], row["key"]))


def drain(limit: int | None = None, *, now: datetime | None = None, recheck: bool = True) -> DrainResult:
    """One batch of due queued deletions (at most ``limit``, default RETENTION_BATCH_SIZE): each
    object or prefix deleted, then its row removed (or, after a first pass with ``recheck``, due
    again in ``recheck_after()`` s). ``recheck=False`` removes the row after one pass: for a caller
    that has itself made sure no step can still write there. ``now``: the clock (tests; None: the
    database's). Never raises for a storage error: it is recorded on the row (``last_error``) and
    tried again after ``backoff``. Database errors are raised (the sweeper's next run goes on)."""
    n = limit if limit is not None else retention_settings().batch_size
    started = time.monotonic()
    with autocommit() as c:
        rows = q.claim_deletions(c, n, settings().step_lease_seconds, now)
    result = DrainResult(claimed=len(rows))
    if not rows:
        return result
    storage: list[Any] = []

    def output() -> Any:
        if not storage:
            from pipeline.providers.registry import output_storage

            storage.append(output_storage())
        return storage[0]

    done: list[int] = []
    again: list[int] = []
    for row in rows:
        try:
            result.objects += _delete(row, output)
        except Exception as exc:  # noqa: BLE001 - any storage failure is recorded and tried again
            result.failed += 1
            with autocommit() as c:
                q.fail_deletion(c, row["id"], f"{type(exc).__name__}: {exc}", backoff(row["attempts"]), now)
            continue
        (again if recheck and row["passes"] == 0 else done).append(row["id"])
    with autocommit() as c:
        result.finished = q.finish_deletions(c, done)
        result.rechecks = q.recheck_deletions(c, again, recheck_after(), now)
        queued = q.queue_counts(c, now)["queued"]
    metrics.OBJECTS.inc(result.objects)
    for outcome, count in (("deleted", result.finished), ("rechecked", result.rechecks), ("failed", result.failed)):
        if count:
            metrics.DELETIONS.labels(outcome).inc(count)
    metrics.QUEUED.set(queued)
    log.info("storage deletions %s", json.dumps({
        "claimed": result.claimed, "objects_deleted": result.objects, "finished": result.finished,
        "rechecks": result.rechecks, "failed": result.failed, "queued": queued,
        "ms": round((time.monotonic() - started) * 1000)}))
    return result


def drain_all(*, now: datetime | None = None, recheck: bool = True, seconds: float | None = None) -> DrainResult:
    """``drain`` batch after batch until nothing is due or ``seconds`` (default
    RETENTION_RUN_SECONDS) have passed; the counts of all of them. Rows that failed in this run
    wait out their backoff, so this always ends."""
    budget = seconds if seconds is not None else retention_settings().run_seconds
    deadline = time.monotonic() + budget
    total = DrainResult()
    while True:
        batch = drain(now=now, recheck=recheck)
        total.add(batch)
        if batch.claimed < retention_settings().batch_size or time.monotonic() >= deadline:
            return total
