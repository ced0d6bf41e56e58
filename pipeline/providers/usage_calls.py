"""What each provider's reply says a call used, and the holds before paid calls (README "What
each book costs"; the recording and the budget are pipeline/kernel/usage.py's).

- OpenAI Chat Completions: the reply's ``usage.prompt_tokens`` and ``usage.completion_tokens``
  (the SDK's ``openai.types.CompletionUsage``; https://platform.openai.com/docs/api-reference/chat/object),
  the call keyed by the reply's ``id`` (``chatcmpl-…``).
- Replicate: a finished prediction's ``metrics.predict_time``, seconds of compute billed
  (https://replicate.com/docs/reference/http#predictions.get: "metrics": {"predict_time": …}),
  keyed by the prediction ``id``; recorded once the prediction has ended (succeeded, failed,
  canceled or aborted: time used is billed whatever the outcome).
- Amazon Rekognition: one call per request (DetectFaces, DetectLabels), keyed by the reply's
  ``ResponseMetadata.RequestId``.
- Lulu: the print job's ``costs`` (``total_cost_incl_tax``, else ``total_cost_excl_tax``, strings in
  ``costs.currency``; https://api.lulu.com/docs/ "Print-Job" costs), keyed by the print job id,
  recorded once Lulu has priced the job.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipeline.config import cost_settings, settings
from pipeline.kernel import usage

ENDED = ("succeeded", "failed", "canceled", "aborted")


def openai_usage(reply: Any) -> tuple[str | None, int, int] | None:
    """``(response id, prompt_tokens, completion_tokens)`` of a Chat Completions reply: an SDK
    ``ChatCompletion``, its JSON text or a dict of it. None when it carries no usage."""
    if hasattr(reply, "model_dump"):
        reply = reply.model_dump()
    elif isinstance(reply, str | bytes):
        try:
            reply = json.loads(reply)
        except (ValueError, RecursionError):
            return None
    if not isinstance(reply, Mapping) or not isinstance(reply.get("usage"), Mapping):
        return None
    u = reply["usage"]
    prompt, completion = u.get("prompt_tokens"), u.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    rid = reply.get("id")
    return (str(rid) if isinstance(rid, str) and rid else None), prompt, completion


def openai_hold(system: str, user: str, max_tokens: int) -> None:
    """Hold a chat call's estimate: its prompt at ~4 characters a token (+ the message framing)
    and a reply of ``max_tokens``. Raises BudgetReached."""
    tokens_in = (len(system) + len(user)) // 4 + 20
    usage.hold("openai", usage.cost_microcents("openai", input_tokens=tokens_in, output_tokens=max_tokens))


def openai_record(body: str | None) -> None:
    """Record a chat call from its reply's text (None: no reply; only the hold is dropped). A reply
    without usage is recorded as one call of unknown tokens (0)."""
    if body is None:
        usage.release("openai")
        return
    parsed = openai_usage(body)
    rid, prompt, completion = parsed if parsed is not None else (None, 0, 0)
    usage.record("openai", "chat", call_id=rid, input_tokens=prompt, output_tokens=completion)


def predict_time(prediction: Mapping[str, Any]) -> float | None:
    """A prediction's ``metrics.predict_time`` in seconds, or None when absent (still running, or
    a reply without metrics)."""
    metrics = prediction.get("metrics")
    value = metrics.get("predict_time") if isinstance(metrics, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def replicate_hold() -> None:
    """Hold a prediction's estimate (COST_ESTIMATE_REPLICATE_SECONDS of compute) until it ends.
    Raises BudgetReached."""
    p = cost_settings()
    s = settings()
    usage.hold("replicate", usage.cost_microcents("replicate", seconds=p.estimate_replicate_seconds),
               seconds=s.job_max_seconds + s.step_lease_seconds)


def replicate_record(prediction: Mapping[str, Any]) -> None:
    """Record an ended prediction (once per prediction id); nothing while it runs."""
    pid = prediction.get("id")
    if prediction.get("status") not in ENDED or not isinstance(pid, str) or not pid:
        return
    usage.record("replicate", "prediction", call_id=pid, seconds=predict_time(prediction) or 0.0)


def replicate_canceled(reply: Any, job_id: str) -> None:
    """Record a prediction we cancelled (a job past JOB_MAX_SECONDS, an orphan), whose status is
    never looked at again, from the cancel's reply (``POST /v1/predictions/{id}/cancel`` answers with
    the prediction: https://replicate.com/docs/reference/http#predictions.cancel; the SDK's
    ``Prediction``, a pydantic v1 model, or its dict). Billed time: its ``metrics.predict_time``
    when the reply has it, else the seconds from ``started_at`` to ``completed_at`` (or now: it was
    still stopping), else 0 (it never started). Once per prediction id, like a status look."""
    p = reply.dict() if hasattr(reply, "dict") and not isinstance(reply, Mapping) else reply
    if not isinstance(p, Mapping):
        p = {}
    seconds = predict_time(p)
    if seconds is None:
        seconds = _ran_seconds(p.get("started_at"), p.get("completed_at"))
    pid = p.get("id") if isinstance(p.get("id"), str) and p.get("id") else job_id
    usage.record("replicate", "prediction", call_id=pid, seconds=seconds)


def _ran_seconds(started: Any, completed: Any) -> float:
    # ISO 8601 times as Replicate writes them ("2024-11-27T17:21:17.570Z"); 0.0 when not started.
    from datetime import UTC, datetime

    def parse(v: Any) -> datetime | None:
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")) if isinstance(v, str) and v else None
        except ValueError:
            return None

    t0, t1 = parse(started), parse(completed) or datetime.now(UTC)
    return max(0.0, (t1 - t0).total_seconds()) if t0 is not None and t0.tzinfo is not None else 0.0


def rekognition_hold() -> None:
    """Hold one Rekognition call. Raises BudgetReached."""
    usage.hold("rekognition", usage.cost_microcents("rekognition"))


def rekognition_record(op: str, reply: Any) -> None:
    """Record one Rekognition request ``op`` from its reply (keyed by its RequestId when it has one)."""
    meta = reply.get("ResponseMetadata") if isinstance(reply, Mapping) else None
    rid = meta.get("RequestId") if isinstance(meta, Mapping) else None
    usage.record("rekognition", op, call_id=f"{op}:{rid}" if isinstance(rid, str) and rid else None)


def lulu_cost(job: Mapping[str, Any]) -> tuple[int, str] | None:
    """A Lulu print job's cost as ``(micro-cents, currency)`` from its ``costs`` (tax included when
    priced so); None before Lulu has priced the job."""
    costs = job.get("costs")
    if not isinstance(costs, Mapping):
        return None
    for field in ("total_cost_incl_tax", "total_cost_excl_tax"):
        micro = usage.money_microcents(costs.get(field)) if costs.get(field) not in (None, "") else None
        if micro is not None:
            cur = costs.get("currency")
            return micro, (cur if isinstance(cur, str) and len(cur) == 3 else cost_settings().currency).lower()
    return None


def offline_record(provider: str, operation: str, seconds: float) -> None:
    """Record one offline provider call (cost 0, counted: calls and seconds)."""
    usage.record(provider, operation, seconds=seconds, cost=0, settle=False)  # (no hold to settle)
