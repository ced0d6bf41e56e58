"""The HTTP layer of the Replicate adapter: error replies as StepErrors.

An httpx response hook (``raise_for_status``) turns every error reply into ``HTTPStatusError``
before the SDK sees it, so the status, Replicate's problem details (``title: detail``, RFC 7807)
and ``Retry-After`` survive (the SDK's ReplicateError drops headers); ``status_error`` then maps
it onto the pipeline's error policy.
"""
from __future__ import annotations

import json

import httpx

from pipeline.kernel.errors import PermanentStepError, StepError, TransientStepError, retry_after_seconds
from pipeline.providers.http_retry import RetryableError, retryable_status
from pipeline.providers.replicate_predictions import REASON_CHARS, ModelTarget, OutputExpiredError


class HTTPStatusError(Exception):
    """An HTTP error response, raised from httpx's response hook (before the SDK sees it) so
    the status, the provider's reason and Retry-After survive; ReplicateError drops headers."""

    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class TooLarge(Exception):
    """A download went over its byte limit (raised while reading it)."""


def raise_for_status(response: httpx.Response) -> None:
    """httpx response hook: HTTPStatusError for any status >= 400, with the reason and Retry-After."""
    if response.status_code >= 400:
        response.read()
        raise HTTPStatusError(response.status_code, reason(response), _retry_after(response.headers))


def reason(response: httpx.Response) -> str:
    """Replicate's problem details (title: detail), or the start of whatever body came back."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:REASON_CHARS]
    if not isinstance(data, dict):
        return json.dumps(data)[:REASON_CHARS]
    detail = data.get("detail")
    if detail is not None and not isinstance(detail, str):
        detail = json.dumps(detail)
    parts = [str(p) for p in (data.get("title"), detail) if p]
    return (": ".join(parts) or json.dumps(data))[:REASON_CHARS]


def _retry_after(headers: httpx.Headers) -> float | None:
    """The ``Retry-After`` header in seconds, or None."""
    return retry_after_seconds(headers.get("retry-after"))


def status_error(op: str, status: int, reason: str, retry_after: float | None,
                 target: ModelTarget | None, job_id: str | None) -> StepError:
    """The StepError for an HTTP error ``status`` on operation ``op`` ("create", "get", "list",
    "cancel", "download"): 429 and 5xx/408/425 transient (RetryableError for 500/502/503/504
    without a long Retry-After), a gone output file or prediction OutputExpiredError, bad
    credentials, unknown models and rejected inputs permanent. ``reason`` must already be free of
    the token; it is quoted, at most 300 characters. Status codes:
    https://replicate.com/docs/reference/http#errors."""
    reason = (reason or "no details")[:REASON_CHARS]
    if status == 429:
        return TransientStepError(f"Replicate is rate-limiting requests (HTTP 429, {op}): {reason}",
                                  retry_after=retry_after)
    if status >= 500 or status in (408, 425):
        error = RetryableError if retryable_status(status, retry_after) else TransientStepError
        return error(f"Replicate had a server error (HTTP {status}, {op}): {reason}", retry_after=retry_after)
    if op == "download" and status in (401, 403, 404, 410):
        # The output host is asked without our token: 401/403 is an expired signed URL, not
        # our credentials; 404/410 a deleted file.
        return OutputExpiredError(f"the output file answered HTTP {status}")
    if op == "get" and status == 404 and job_id is not None:
        return OutputExpiredError(f"Replicate no longer has prediction {job_id} (HTTP 404)")
    if status in (401, 403):
        return PermanentStepError(
            f"Replicate refused our credentials (HTTP {status}, {op}): {reason}. Check REPLICATE_API_TOKEN."
        )
    if status == 404 and op == "create" and target is not None:
        return PermanentStepError(
            f"Replicate does not know the model {target.spec!r} set in {target.source} (HTTP 404): {reason}"
        )
    if status == 404 and job_id is not None:
        return PermanentStepError(f"Replicate has no prediction {job_id!r} (HTTP 404, {op}): {reason}")
    if status == 422:
        what = f" for {target.spec}" if target is not None else ""
        return PermanentStepError(f"Replicate rejected the input{what} (HTTP 422): {reason}")
    return PermanentStepError(f"Replicate refused the request (HTTP {status}, {op}): {reason}")


def status_outcome(status: int) -> str:
    """The hooks' outcome name for an HTTP error status."""
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "client_error"
