"""Celery tasks for orders (payment -> print files -> print-on-demand -> shipped): thin wrappers
around pipeline.orders.steps, declared with workers/step_task.py like workers/story_tasks.py. Each
moves only its own state, is safe to run twice, and logs one line per run. The order flow is not a
chain: its steps wait (for the story, on a print job) and loop, so each sends its successor by
name (pipeline.kernel.publish) from a named hook once its result is committed.

From the external API (published by name to the default queue, like stories.generate):

- ``orders.confirm_payment(order_id, payload + signature + received_at | event | event_id)``: a
  Stripe event as the API's webhook endpoint received it: ``payload`` = the raw body (str),
  ``signature`` = its ``Stripe-Signature`` header (verified with STRIPE_WEBHOOK_SECRET) and
  ``received_at`` = when the endpoint received it (Unix seconds or milliseconds, or ISO 8601): the signature's
  tolerance is judged against that arrival, not against the queue's delay. Or ``event`` = the
  parsed event when the API verified it itself (refused when STRIPE_REQUIRE_SIGNATURE is set),
  or ``event_id`` = ``evt_...`` to be read from Stripe's API (STRIPE_SECRET_KEY).
  ``order_id`` may be omitted: the intent's ``metadata.order_id`` or its id then says which.
- ``orders.lulu_webhook(payload, headers)``: Lulu's PRINT_JOB_STATUS_CHANGED webhook, raw body
  and headers (``Lulu-HMAC-SHA256`` is verified).

Internal, on the ``orders`` queue: ``orders.prepare_print``, ``orders.submit_print``,
``orders.poll_print`` (sent again with a countdown while the job prints, never sleeping in a
worker slot) and ``orders.sweep`` (celery beat: stuck orders).
"""
from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

from pipeline.kernel import publish, step
from pipeline.operations.orders import sweep_orders
from pipeline.orders import steps as orders
from pipeline.orders import stripe_events as se
from workers.app import app
from workers.step_task import Body, step_task

log = logging.getLogger("storycreator.step")


def _order_id(name: str, value: Any, extra: dict[str, Any], *, required: bool = True) -> tuple[str | None, str | None]:
    """(order id, complaint): a malformed call is logged and dropped (no row to mark)."""
    if extra:
        log.error("%s: ignoring unexpected arguments %s", name, sorted(extra))
    if value is None and not required:
        return None, None
    oid = step.valid_uuid(value)
    if oid is None:
        log.error("%s needs kwargs {'order_id': '<uuid>'}; got order_id=%r", name, str(value)[:80])
        return None, "rejected: order_id must be a UUID"
    return oid, None


def _send(task: str, order_id: str, countdown: float | None = None) -> None:
    publish.send(task, {"order_id": order_id}, countdown=countdown)


def _again(task: str, order_id: str | None, result: step.StepResult) -> None:
    """The step waits (for its story, on a print job): a fresh message after the countdown the step
    set in ``StepResult.again_in`` (seconds), not a retry: Celery caps a task's retries and a print
    job is followed for days; a fresh message carries no growing retry count or redelivered flag.
    If this worker dies before sending it, orders.sweep starts the chain again."""
    delay = result.again_in
    if delay is not None and order_id is not None:
        _send(task, order_id, delay)


def paid(_order_id: str | None, result: step.StepResult) -> None:
    """Only now: the paid status is committed. The order id is the one the step confirmed (the
    message may have named none: the payment intent said which)."""
    if result.moves_on:
        _send("orders.prepare_print", result.context["order"])


def print_files_made(order_id: str | None, result: step.StepResult) -> None:
    if result.moves_on and order_id is not None:
        _send("orders.submit_print", order_id)
    _again("orders.prepare_print", order_id, result)


def print_job_submitted(order_id: str | None, result: step.StepResult) -> None:
    # The provider needs a while (file checks, payment, production delay): first look later.
    if result.moves_on and order_id is not None:
        _send("orders.poll_print", order_id, orders.order_settings().poll_countdown)


def print_job_polled(order_id: str | None, result: step.StepResult) -> None:
    _again("orders.poll_print", order_id, result)


@step_task("orders.confirm_payment", "payment", key="order_id", then=paid)
def confirm_payment(order_id: str | None = None, event: Any = None, payload: str | None = None,
                    signature: str | None = None, received_at: Any = None, event_id: str | None = None,
                    tries: int = 0, **extra: Any) -> Body | str:
    """A Stripe payment event (see the module's docstring) -> the order paid."""
    oid, bad = _order_id("orders.confirm_payment", order_id, extra, required=False)
    if bad:
        return bad
    if event is None and payload is None and event_id is None:
        log.error("orders.confirm_payment needs kwargs 'payload' (Stripe's raw body), 'event' (a Stripe event) "
                  "or 'event_id' (evt_..., confirmed with Stripe's API)")
        return "rejected: no event"
    if payload is not None and not isinstance(payload, str):
        return "rejected: payload must be the raw body as a string"
    if event_id is not None and (not isinstance(event_id, str) or not event_id.startswith("evt_")
                                 or len(event_id) > 255):
        log.error("orders.confirm_payment: event_id must be a Stripe event id (evt_...)")
        return "rejected: event_id must be a Stripe event id"
    try:
        arrived = se.parse_received_at(received_at)
    except ValueError as e:
        # The signature may still be fresh enough on its own; else the event is confirmed
        # with Stripe or recorded as needing it: an unreadable arrival time loses nothing.
        log.error("orders.confirm_payment: %s; judged as if it were not given", e)
        arrived = None

    def confirm(a: step.Attempt) -> step.StepResult:
        return orders.confirm_payment(oid, event, payload, signature, a, received_at=arrived, event_id=event_id)

    return confirm


@step_task("orders.prepare_print", "print_files", key="order_id", then=print_files_made)
def prepare_print(order_id: str | None = None, tries: int = 0, **extra: Any) -> Body | str:
    """The print files (interior and cover PDFs) of a paid order."""
    oid, bad = _order_id("orders.prepare_print", order_id, extra)
    if bad or oid is None:
        return bad or "rejected"
    return partial(orders.make_print_files, oid)


@step_task("orders.submit_print", "print_job", key="order_id", then=print_job_submitted)
def submit_print(order_id: str | None = None, tries: int = 0, **extra: Any) -> Body | str:
    """The print job at the print-on-demand provider."""
    oid, bad = _order_id("orders.submit_print", order_id, extra)
    if bad or oid is None:
        return bad or "rejected"
    return partial(orders.submit_print_job, oid)


@step_task("orders.poll_print", "print_status", key="order_id", then=print_job_polled)
def poll_print(order_id: str | None = None, tries: int = 0, **extra: Any) -> Body | str:
    """How the print job is doing; sent again while it prints."""
    oid, bad = _order_id("orders.poll_print", order_id, extra)
    if bad or oid is None:
        return bad or "rejected"
    return partial(orders.poll_print_job, oid)


@step_task("orders.lulu_webhook", "print_webhook")
def lulu_webhook(payload: str | None = None, headers: dict[str, Any] | None = None, tries: int = 0,
                 **extra: Any) -> Body | str:
    """Lulu's PRINT_JOB_STATUS_CHANGED webhook (raw body and headers; HMAC verified)."""
    if extra:
        log.error("orders.lulu_webhook: ignoring unexpected arguments %s", sorted(extra))
    if not isinstance(payload, str) or not isinstance(headers or {}, dict):
        log.error("orders.lulu_webhook needs kwargs {'payload': '<raw body>', 'headers': {...}}")
        return "rejected: payload must be the raw body as a string"

    def handle(a: step.Attempt) -> step.StepResult:
        return orders.handle_lulu_webhook(payload, headers or {}, a)

    return handle


@app.task(name="orders.sweep", expires=120)
def sweep() -> str:
    """Periodic (celery beat): re-enqueue stuck orders (print files never made, paid with no
    print job, print jobs nobody has asked about for two poll intervals)."""
    found = sweep_orders()
    if found:
        log.warning("sweep %s", json.dumps({"requeued": len(found), "tasks": sorted({i.task for i in found})}))
    return f"requeued {len(found)}"
