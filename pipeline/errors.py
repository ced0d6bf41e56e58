"""Errors a step can raise. The task layer decides retry vs. fail from the type alone."""
from __future__ import annotations


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
