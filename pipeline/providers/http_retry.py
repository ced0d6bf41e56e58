"""Short in-call retries of one idempotent HTTP request, with tenacity (vendor-neutral).

Where it fits: reading a print job's status or an OAuth token (Lulu), downloading a provider's
output file (Replicate). A dropped connection or a gateway's 502/503 there is usually gone a
fraction of a second later, so trying again at once is cheaper than re-scheduling the whole step.
Where it does not: anything that is not idempotent (creating a job), throttling (HTTP 429: the
shared quota and the step's backoff own that), a read timeout (the call already waited its full
timeout), and any wait longer than ``MAX_WAIT``: long waits stay re-scheduled tasks
(``RetryLater`` / TransientStepError in the step layer), never sleeps in a worker slot.

The adapters raise ``RetryableError`` (a TransientStepError) for the failures one more try may
fix; ``retry_transient`` tries again at most ``ATTEMPTS`` times in all, waiting
``FIRST_WAIT``..``MAX_WAIT`` seconds (exponential with jitter, or the server's ``Retry-After``
when it is within ``MAX_WAIT``). After the last try the error propagates unchanged, so the step
layer sees exactly the TransientStepError it saw before and retries with its own backoff.
Worst case added to one call: (ATTEMPTS - 1) * MAX_WAIT = 1 s of waiting plus the requests.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

from pipeline.kernel.errors import TransientStepError

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3  # tries in all, the first included
FIRST_WAIT = 0.1  # seconds before the second try (then doubled, with jitter)
MAX_WAIT = 0.5  # seconds: the longest wait between two tries, and the longest Retry-After honoured here
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


class RetryableError(TransientStepError):
    """A transient failure that one more immediate try of the same idempotent request may fix:
    the connection was refused, reset or dropped before a whole reply, the connect timed out, a
    server or gateway answered 500/502/503/504 without asking to wait longer than ``MAX_WAIT``,
    or a body arrived cut short. Raised by the adapters; ``retry_transient`` retries it."""


def retryable_status(status: int, retry_after: float | None) -> bool:
    """Is an HTTP error ``status`` (with the server's ``Retry-After`` in seconds, or None) worth
    an immediate retry? 500/502/503/504 unless the server asks for more than ``MAX_WAIT``; never
    429 (throttling is the quota's and the step's business) nor any 4xx."""
    return status in RETRYABLE_STATUSES and (retry_after is None or retry_after <= MAX_WAIT)


# FIRST_WAIT, 2 * FIRST_WAIT, ... plus up to FIRST_WAIT of jitter (tenacity 8.2 and 9 alike).
_BACKOFF = tenacity.wait_exponential(multiplier=FIRST_WAIT, min=FIRST_WAIT, max=MAX_WAIT) + tenacity.wait_random(
    0, FIRST_WAIT)


def _wait(state: tenacity.RetryCallState) -> float:
    """Seconds before the next try: the backoff, or the server's Retry-After if longer, never
    more than MAX_WAIT."""
    backoff = _BACKOFF(state)
    exc = state.outcome.exception() if state.outcome is not None else None
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, int | float) and hint > 0:
        return float(min(max(backoff, hint), MAX_WAIT))
    return float(min(backoff, MAX_WAIT))


def _log_retry(what: str) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info("%s: try %d failed (%s); trying again", what, state.attempt_number, exc)

    return before_sleep


def retry_transient(fn: Callable[[], T], what: str, *, attempts: int = ATTEMPTS) -> T:
    """``fn()``, tried again while it raises RetryableError, at most ``attempts`` tries in all
    (waits between tries: module doc). Returns ``fn``'s result; raises the last RetryableError
    when every try failed, and anything else ``fn`` raises at once (not retried). ``what`` names
    the request in the log line written before each retry."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=_wait,
        retry=tenacity.retry_if_exception_type(RetryableError),
        reraise=True,
        before_sleep=_log_retry(what),
    )
    return retrying(fn)
