"""Errors a step can raise. The task layer decides retry vs. fail from the type alone."""
from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime


class StepError(Exception):
    """Base for errors a pipeline step reports on purpose."""


class PermanentStepError(StepError):
    """Will fail again on the next try (bad input, no face, refusal). Recorded, not retried.

    The message is shown to parents and operators: write it for a person.
    """


class TransientStepError(StepError):
    """May pass on the next try (timeout, 429, 5xx, connection reset). Retried with backoff.

    ``retry_after`` is the provider's own hint in seconds (HTTP ``Retry-After``), if any.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutputGoneError(PermanentStepError):
    """A remote job's output is gone before we copied it (Replicate deletes API predictions'
    outputs after about an hour, https://replicate.com/docs/topics/predictions/data-retention).

    Retrying the download cannot help; only a new job can make the picture again. Page steps
    that run remote jobs re-create the job (bounded by ``JOB_OUTPUT_RECREATIONS``); anywhere
    else it is permanent. The message says what was seen, for an operator."""


def retry_after_seconds(raw: str | None) -> float | None:
    """An HTTP ``Retry-After`` value (seconds, or an HTTP date) as seconds from now; None when
    absent or unusable. Every adapter reads its provider's hint through this."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return value if math.isfinite(value) and value >= 0 else None
