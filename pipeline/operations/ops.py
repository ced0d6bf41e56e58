"""The operator actions' public names in one place, for callers that import them from here
(the CLI, the orders domain's ``Stuck``). Each lives in its own module: stuck-work queries
(``stuck``), the periodic sweep (``sweep``), ``backfill``, ``retry``, ``submit``."""
from __future__ import annotations

from pipeline.operations.backfill import CURSOR_KEY, BackfillProgress, backfill
from pipeline.operations.retry import RetryPlan, failed_stories, retry_story
from pipeline.operations.stuck import KINDS, NO_CURSOR, Stuck, find_stuck, resend, stuck_batch
from pipeline.operations.submit import submit_story, summary
from pipeline.operations.sweep import sweep

__all__ = ["CURSOR_KEY", "KINDS", "NO_CURSOR", "BackfillProgress", "RetryPlan", "Stuck", "backfill",
           "failed_stories", "find_stuck", "resend", "retry_story", "stuck_batch", "submit_story", "summary",
           "sweep"]
