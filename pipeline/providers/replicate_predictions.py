"""Replicate predictions as JSON: statuses, outputs, failures, and which model a job runs.

Read from Replicate's JSON, not through the SDK's ``Prediction`` model: the SDK (1.0.7) rejects
the documented ``aborted`` status (a pydantic error on an otherwise good reply, and on a whole
page of ``list``) and drops ``data_removed``. Sources: prediction statuses
https://replicate.com/docs/topics/predictions/lifecycle (``starting``, ``processing``,
``succeeded``, ``failed``, ``canceled``, ``aborted``); data retention
https://replicate.com/docs/topics/predictions/data-retention ("input parameters, output values,
output files, and logs are automatically removed after an hour").
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.kernel.errors import OutputGoneError, TransientStepError
from pipeline.providers.base import JobStatus

REASON_CHARS = 300

_CONTENT_POLICY = re.compile(r"nsfw|content polic|safety|sensitive content|flagged|moderation", re.I)
_RETRYABLE_FAILURE = re.compile(
    r"interrupted|please retry|out of memory|cuda error|timed out|timeout|temporarily|unavailable|aborted", re.I
)
RUNNING = ("starting", "processing")
# Ended without an output worth following: find() never picks these up again.
UNUSABLE = ("failed", "canceled", "aborted")
_HEX_VERSION = re.compile(r"[0-9a-f]{64}")
_OWNER_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class OutputExpiredError(OutputGoneError):
    """The prediction's output is gone (Replicate deletes API outputs after about an hour):
    its file answered 401/403/404/410, or the prediction itself is gone (404).

    Retrying the same download cannot help; the step must create a new prediction (and not
    ``find`` the old one again: pass its id in ``exclude``)."""


@dataclass(frozen=True)
class ModelTarget:
    """Which model a kind of job runs, and where that came from (for error messages)."""

    spec: str  # as configured: "owner/name", "owner/name:<hash>" or "<hash>"
    source: str  # the env var (or argument) that set it
    model: str | None  # "owner/name" when known
    version: str | None  # the version hash when running a pinned version

    @classmethod
    def parse(cls, spec: str, source: str) -> ModelTarget:
        """A target from ``owner/name``, ``owner/name:<version>`` or a 64-hex version id; ValueError
        naming ``source`` otherwise."""
        spec = spec.strip()
        name, sep, version = spec.partition(":")
        if sep:
            if not _OWNER_NAME.fullmatch(name) or not version:
                raise ValueError(f"{source}={spec!r} is not 'owner/name:version'")
            return cls(spec, source, name, version)
        if _HEX_VERSION.fullmatch(spec):
            return cls(spec, source, None, spec)
        if _OWNER_NAME.fullmatch(spec):
            return cls(spec, source, spec, None)
        raise ValueError(f"{source}={spec!r} is neither 'owner/name', 'owner/name:version' nor a version id")

    def matches(self, model: str | None, version: str | None) -> bool:
        """A listed prediction ran this target (a version id is unique on its own)."""
        if self.version is not None:
            return version == self.version
        return model == self.model


def canonical(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys, no spaces): equal inputs give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def as_utc(value: Any) -> datetime | None:
    """created_after as an aware UTC datetime: datetime (naive = UTC), ISO string or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        return as_utc(datetime.fromisoformat(value))
    raise TypeError(f"created_after must be a datetime, ISO string or epoch seconds, not {type(value).__name__}")


def parse_time(raw: str | None) -> datetime | None:
    """An API timestamp (ISO 8601) as aware UTC, or None when absent or unreadable."""
    if not raw:
        return None
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        return None


def first_url(output: Any) -> str | None:
    """Models return one URL or a list of them (flux returns a list even for one image)."""
    if isinstance(output, str):
        return output or None
    if isinstance(output, list):
        return next((o for o in output if isinstance(o, str) and o), None)
    return None


def output_gone_reason(prediction: Mapping[str, Any]) -> str | None:
    """Why a ``succeeded`` prediction's output can no longer be copied, or None if it can:
    ``data_removed`` (Replicate's cleanup after about an hour) or no usable URL in ``output``
    (null, empty, a list of nothing)."""
    if prediction.get("data_removed") is True:
        return "Replicate removed the output (data_removed)"
    if first_url(prediction.get("output")) is None:
        return "the output was empty"
    return None


def prediction_status(prediction: Mapping[str, Any]) -> JobStatus:
    """A prediction (Replicate's JSON: ``status``, ``output``, ``error``, ``data_removed``) as a
    JobStatus. ``starting``/``processing`` -> running; ``succeeded`` with an output URL ->
    succeeded; ``succeeded`` whose output is gone -> expired; ``failed`` -> failed with the
    model's reason; ``aborted`` (its deadline passed before it started) -> failed, retryable;
    ``canceled`` -> canceled. TransientStepError for a reply without a known status (a gateway's
    page, a status added after this was written): bounded by the step's tries, never a guess.

    Statuses: https://replicate.com/docs/topics/predictions/lifecycle."""
    status = prediction.get("status")
    if status in RUNNING:
        return JobStatus("running")
    if status == "succeeded":
        gone = output_gone_reason(prediction)
        if gone is not None:
            return JobStatus("expired", error=gone)
        return JobStatus("succeeded", output_url=first_url(prediction.get("output")),
                         seconds=elapsed_seconds(prediction))
    if status == "canceled":
        return JobStatus("canceled", error="The image job was canceled.")
    if status == "aborted":
        return JobStatus("failed", error=(
            "Replicate aborted the prediction before it started (its deadline passed)."))
    if status == "failed":
        error = prediction.get("error")
        return JobStatus("failed", error=failure_message(error if isinstance(error, str) else None))
    raise TransientStepError(f"Replicate sent a prediction with an unknown status {str(status)[:40]!r}.")


def elapsed_seconds(prediction: Mapping[str, Any]) -> float | None:
    """Seconds from the prediction's ``created_at`` to its ``completed_at`` (queue and run: how long
    a look must wait for it), or None when either is missing or unreadable."""
    start, end = parse_time(prediction.get("created_at")), parse_time(prediction.get("completed_at"))
    if start is None or end is None or end < start:
        return None
    return (end - start).total_seconds()


def failure_message(reason: str | None) -> str:
    """A failed prediction's reason, for a parent or an operator."""
    text = (reason or "no reason given").strip()[:REASON_CHARS]
    if _CONTENT_POLICY.search(text):
        return f"The picture for this page was blocked by the image service's content filter ({text})."
    return f"The image service could not make this picture: {text}"


def is_retryable_failure(status: JobStatus) -> bool:
    """A ``failed`` job whose reason says a new prediction may pass (an interrupted or
    out-of-memory run); content-policy refusals and bad inputs are not."""
    if status.state != "failed" or not status.error:
        return False
    return not _CONTENT_POLICY.search(status.error) and bool(_RETRYABLE_FAILURE.search(status.error))


def target_from_env(env: Mapping[str, str], kind: str, default: str, default_source: str) -> ModelTarget:
    """REPLICATE_<KIND>_VERSION wins over REPLICATE_<KIND>_MODEL; the default only if neither is set."""
    for var in (f"REPLICATE_{kind}_VERSION", f"REPLICATE_{kind}_MODEL"):
        value = env.get(var, "").strip()
        if value:
            return ModelTarget.parse(value, var)
    return ModelTarget.parse(default, f"{default_source} (default)")
