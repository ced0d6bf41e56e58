"""The periodic sweep (``ops.sweep`` under celery beat): one bounded pass over stuck work."""
from __future__ import annotations

from datetime import datetime

from pipeline.operations.stuck import Stuck, find_stuck, resend


def sweep(*, lease: float | None = None, pending_after: float | None = None, limit: int = 500,
          dry_run: bool = False) -> list[Stuck]:
    """Re-enqueue stuck work (up to ``limit`` of each kind; thresholds in seconds, default
    STEP_LEASE_SECONDS), and the stories waiting for a slot their account has free again
    (pipeline/stories/slots.py sweep_waiting), and return what was found. Safe beside live workers
    and safe to run twice: each step's own guarded claim decides (a stale claim is taken over, a
    live or finished one is left alone), so a duplicate message is a no-op, never duplicate work."""
    from pipeline.config import settings
    from pipeline.stories.slots import sweep_waiting

    s = settings()
    stuck = find_stuck(lease=lease if lease is not None else s.step_lease_seconds,
                       pending_after=pending_after if pending_after is not None else s.step_lease_seconds,
                       limit=limit)
    if not dry_run:
        for item in stuck:
            resend(item)
    # Stories waiting for a slot of an account that has one free (USER_STORIES_IN_FLIGHT): a
    # hand-off lost with its worker. Those just sent as stuck are not sent twice.
    sent = {item.kwargs.get("story_id") for item in stuck if item.task == "stories.generate"}
    waiting = [Stuck("stories.generate", {"story_id": sid}, "waiting for a slot")
               for sid in sweep_waiting(limit, dry_run=True) if sid not in sent]
    if not dry_run:
        for item in waiting:
            resend(item)
    return stuck + waiting


def privacy_pass(*, now: datetime | None = None) -> str:
    """Personal data's lifecycle, run by ``ops.sweep`` after the stuck work: the retention periods
    (RETENTION_PHOTO_DAYS, RETENTION_BOOK_DAYS) and the storage deletion queue
    (pipeline/privacy/retention.py, drain.py), each bounded by RETENTION_RUN_SECONDS. Returns
    "expired P photos, S stories; deleted N objects" (counts only)."""
    from pipeline.privacy.forget import finish_due
    from pipeline.privacy.retention import lifecycle_pass

    r = lifecycle_pass(now=now)
    objects = r.drained.objects if r.drained else 0
    erased = finish_due()  # erasures whose second pass over the files is due (README "Forgetting a family")
    return f"expired {r.photos} photos, {r.stories} stories; deleted {objects} objects; completed {erased} erasures"
