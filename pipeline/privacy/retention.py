"""Retention periods (README "Personal data"): personal data deleted once it is no longer needed,
by the sweeper (``ops.sweep`` under celery beat), in bounded batches.

- RETENTION_PHOTO_DAYS after the last story using a photo finished (completed or failed; a photo
  no story uses: after its own last change), unless a story using it is still pending or being
  made or one of their orders is in flight: the uploaded object (queued, then deleted by the
  drain), its face data (``face_details``, ``character_profile``), labels and objects, the
  stories' ``protagonist_face`` and its original filename; the row stays, ``status='deleted'``,
  so a story sent or retried for it later fails with "…it was deleted…" before any work.
- RETENTION_BOOK_DAYS after a story finished, unless an order of it is in flight: every
  revision's pictures, the books, the print files of its orders, its page rows (texts), outline,
  redo requests and step errors. The story row stays as a tombstone (``files_deleted_at``; the
  child's name and title cleared) for the web app and the orders' accounting.

"In flight": an order ``pending_payment``, ``paid`` or ``fulfilled`` (db.lifecycle.ORDERS_IN_FLIGHT):
its story is still to be printed or shipped. Each batch is one transaction whose rows are locked
``FOR UPDATE SKIP LOCKED``: a story a worker holds is skipped this time, never waited for.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db import lifecycle as q
from db.engine import transaction
from pipeline.privacy import metrics
from pipeline.privacy.drain import DrainResult, drain_all
from pipeline.privacy.settings import RetentionSettings, retention_settings

log = logging.getLogger("storycreator.privacy")


@dataclass
class RetentionResult:
    """What one retention run expired: ``photos`` and ``stories`` (rows), and what the drain
    after it did (``drained``)."""

    photos: int = 0
    stories: int = 0
    drained: DrainResult | None = None


def _batches(kind: str, expire: Callable[..., list[Any]], days: float, s: RetentionSettings,
             now: datetime | None, deadline: float) -> int:
    total = 0
    while True:
        started = time.monotonic()
        with transaction() as c:
            n = len(expire(c, days, s.batch_size, now))
        total += n
        if n:
            metrics.RETENTION.labels(kind).inc(n)
            log.info("retention %s", json.dumps({"kind": kind, "expired": n, "days": days,
                                                 "ms": round((time.monotonic() - started) * 1000)}))
        if n < s.batch_size or time.monotonic() >= deadline:
            return total


def expire(*, now: datetime | None = None, s: RetentionSettings | None = None) -> RetentionResult:
    """Run both retention periods once (photos, then stories), batch after batch until none is
    due or RETENTION_RUN_SECONDS have passed; a period set to 0 is skipped. ``now``: the clock
    (tests move it forward; None: the database's). The objects are only queued here: ``drain``
    deletes them. Database errors are raised."""
    s = s or retention_settings()
    deadline = time.monotonic() + s.run_seconds
    result = RetentionResult()
    if s.photos_on:
        result.photos = _batches("photo", q.expire_photos, s.photo_days, s, now, deadline)
    if s.books_on:
        result.stories = _batches("story", q.expire_stories, s.book_days, s, now, deadline)
    return result


def lifecycle_pass(*, now: datetime | None = None) -> RetentionResult:
    """The sweeper's part (``ops.sweep``): ``expire``, then drain the storage deletion queue
    (``drain_all``), each within RETENTION_RUN_SECONDS. Returns the counts."""
    result = expire(now=now)
    result.drained = drain_all(now=now)
    return result
