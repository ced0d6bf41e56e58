"""Celery tasks for orders (payment -> print files -> print-on-demand -> shipped): thin wrappers
around pipeline.orders.steps, like workers/tasks.py. Each moves only its own state, is safe to run
twice, and logs one line per run.

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
from typing import Any

from celery import Task

from pipeline.kernel import step
from pipeline.operations.orders import sweep_orders
from pipeline.orders import steps as orders
from pipeline.orders import stripe_events as se
from workers.app import app
from workers.tasks import StepTask, _run

log = logging.getLogger("storycreator.step")

QUEUE = "orders"


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


def _enqueue(task: Any, order_id: str, countdown: float | None = None) -> None:
    task.apply_async(kwargs={"order_id": order_id}, countdown=countdown)


def _again(task: Any, order_id: str, result: step.StepResult) -> None:
    """The step waits (for its story, on a print job): a fresh message after the countdown.
    If this worker dies before sending it, orders.sweep starts the chain again."""
    delay = result.context.get(orders.AGAIN_IN)
    if delay is not None:
        _enqueue(task, order_id, float(delay))


@app.task(base=StepTask, bind=True, name="orders.confirm_payment", queue=QUEUE)
def confirm_payment(self: Task, order_id: str | None = None, event: Any = None, payload: str | None = None,
                    signature: str | None = None, received_at: Any = None, event_id: str | None = None,
                    tries: int = 0, **extra: Any) -> str:
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

    def then(result: step.StepResult) -> None:
        # Only now: the paid status is committed.
        if result.moves_on:
            _enqueue(prepare_print, result.context["order"])

    return _run(self, "payment", {"order": oid},
                lambda a: orders.confirm_payment(oid, event, payload, signature, a, received_at=arrived,
                                                 event_id=event_id), then)


@app.task(base=StepTask, bind=True, name="orders.prepare_print", queue=QUEUE)
def prepare_print(self: Task, order_id: str | None = None, tries: int = 0, **extra: Any) -> str:
    oid, bad = _order_id("orders.prepare_print", order_id, extra)
    if bad or oid is None:
        return bad or "rejected"

    def then(result: step.StepResult) -> None:
        if result.moves_on:
            _enqueue(submit_print, oid)
        _again(prepare_print, oid, result)

    return _run(self, "print_files", {"order": oid}, lambda a: orders.make_print_files(oid, a), then)


@app.task(base=StepTask, bind=True, name="orders.submit_print", queue=QUEUE)
def submit_print(self: Task, order_id: str | None = None, tries: int = 0, **extra: Any) -> str:
    oid, bad = _order_id("orders.submit_print", order_id, extra)
    if bad or oid is None:
        return bad or "rejected"

    def then(result: step.StepResult) -> None:
        # The provider needs a while (file checks, payment, production delay): first look later.
        if result.moves_on:
            _enqueue(poll_print, oid, orders.order_settings().poll_countdown)

    return _run(self, "print_job", {"order": oid}, lambda a: orders.submit_print_job(oid, a), then)


@app.task(base=StepTask, bind=True, name="orders.poll_print", queue=QUEUE)
def poll_print(self: Task, order_id: str | None = None, tries: int = 0, **extra: Any) -> str:
    oid, bad = _order_id("orders.poll_print", order_id, extra)
    if bad or oid is None:
        return bad or "rejected"
    return _run(self, "print_status", {"order": oid}, lambda a: orders.poll_print_job(oid, a),
                lambda result: _again(poll_print, oid, result))


@app.task(base=StepTask, bind=True, name="orders.lulu_webhook", queue=QUEUE)
def lulu_webhook(self: Task, payload: str | None = None, headers: dict[str, Any] | None = None, tries: int = 0,
                 **extra: Any) -> str:
    if extra:
        log.error("orders.lulu_webhook: ignoring unexpected arguments %s", sorted(extra))
    if not isinstance(payload, str) or not isinstance(headers or {}, dict):
        log.error("orders.lulu_webhook needs kwargs {'payload': '<raw body>', 'headers': {...}}")
        return "rejected: payload must be the raw body as a string"
    return _run(self, "print_webhook", {}, lambda a: orders.handle_lulu_webhook(payload, headers or {}, a))


@app.task(name="orders.sweep", queue=QUEUE, acks_late=True, ignore_result=True, expires=120)
def sweep() -> str:
    """Periodic (celery beat): re-enqueue stuck orders (print files never made, paid with no
    print job, print jobs nobody has asked about for two poll intervals)."""
    found = sweep_orders()
    if found:
        log.warning("sweep %s", json.dumps({"requeued": len(found), "tasks": sorted({i.task for i in found})}))
    return f"requeued {len(found)}"
