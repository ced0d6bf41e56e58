"""Providers' completion webhooks of remote jobs, delivered by the external web API by task name,
as it delivers Lulu's (workers/order_tasks.py ``orders.lulu_webhook``):

- ``images.replicate_webhook(payload, headers)``: Replicate's ``completed`` webhook for a
  prediction, ``payload`` = the raw body (str, exactly as received: the signature covers it) and
  ``headers`` = the request's headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
  verified with REPLICATE_WEBHOOK_SIGNING_SECRET). The page step that follows the prediction is
  sent at once (pipeline/stories/webhook_follows.py). A forged, expired or malformed delivery, or one
  for a prediction that is not ours, is logged, counted (storycreator_job_webhooks_total) and
  dropped; a duplicate is a no-op. Never a failure state, never retried except a few times for a
  prediction whose id was not recorded yet.
"""
from __future__ import annotations

import logging
from typing import Any

from pipeline.kernel import step
from pipeline.stories.stages import REPLICATE_WEBHOOK_TASK
from pipeline.stories.webhook_follows import handle_replicate_webhook
from workers.step_task import Body, step_task

log = logging.getLogger("storycreator.step")


@step_task(REPLICATE_WEBHOOK_TASK, "job_webhook")
def replicate_webhook(payload: Any = None, headers: Any = None, tries: int = 0, **extra: Any) -> Body | str:
    """Replicate's completion webhook (raw body and headers; signature verified)."""
    if extra:
        log.error("%s: ignoring unexpected arguments %s", REPLICATE_WEBHOOK_TASK, sorted(extra))
    if not isinstance(payload, str) or not isinstance(headers, dict):
        from pipeline.kernel import metrics

        metrics.JOB_WEBHOOKS.labels("replicate", "malformed").inc()
        log.error("%s needs kwargs {'payload': '<raw body>', 'headers': {...}}", REPLICATE_WEBHOOK_TASK)
        return "rejected: payload must be the raw body as a string and headers an object"
    hdrs: dict[str, Any] = headers

    def handle(a: step.Attempt) -> step.StepResult:
        return handle_replicate_webhook(payload, hdrs, a)

    return handle
