"""The print job: created once per order and print run (submit_print_job), then followed until
shipped, by polling (poll_print_job) or by the provider's webhook (handle_lulu_webhook).

- The step claims the job like a page step (lease), looks the job up by our order id before
  creating one (a run that died after creating it finds it), and records pod_order_id with a
  guarded UPDATE. No DB connection is held across an HTTP call.
- Provider problems: REJECTED / CANCELED / ERROR -> failed with the provider's reason. Transient
  errors retry with backoff (Retry-After honoured), then fail with the reason; a poll never
  fails an order for a transient error (the job is still printing): it just comes back later
  (StepResult.again_in).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from db import order_events as events
from db import order_steps as steps_db
from db import orders as orders_db
from db.engine import autocommit, transaction
from pipeline.config import settings
from pipeline.kernel import usage
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.kernel.step import (
    FIRST_TRY,
    Attempt,
    Outcome,
    StepFailed,
    StepResult,
    Timer,
    backoff,
    guarded,
    held_elsewhere,
    note_claim,
    valid_uuid,
)
from pipeline.orders.lulu_address import lulu_address
from pipeline.orders.print_files import product_spec
from pipeline.orders.records import StepRecorder, not_printable
from pipeline.orders.settings import PROVIDER_LABEL, order_settings, print_provider
from pipeline.providers import lulu

log = logging.getLogger("pipeline.orders.print_job")


def file_url(key: str) -> str:
    """Where the print provider downloads a print file: PRINT_FILES_BASE_URL + key, else the
    storage's own URL (a presigned S3 URL; file: for local storage, which only the local print
    shop can read)."""
    base = order_settings().files_base_url
    if base:
        return f"{base.rstrip('/')}/{key}"
    from pipeline.providers.registry import output_storage

    return str(output_storage().url(key, 7 * 86400))


def line_item_id(order_id: str, run: int) -> str:
    """The print job's line item id for an order's print run (1, 2, ...): tells a new run's job
    apart from an earlier run's at the provider."""
    return f"{order_id}-{run}"


def submit_print_job(order_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """The order's print job at the provider, created once; pod_order_id recorded."""
    s = settings()
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = steps_db.claim_print_job(c, order_id, s.step_lease_seconds, attempt.held)
        state = steps_db.print_state(c, order_id)
    if claim is not None:
        note_claim(int(claim["claim_token"]))
    if state is None:
        return StepResult(Outcome.STOPPED, "order not found", timer.timings)
    ctx = {"order": order_id, "story": str(state["story_id"])}
    if claim is None:
        if state["pod_order_id"] and state["status"] in ("paid", "fulfilled"):
            return StepResult(Outcome.ALREADY_DONE, f"print job {state['pod_order_id']}", timer.timings, context=ctx)
        if refused := not_printable(order_id, state, timer, ctx):
            return refused
        if state["status"] != "paid":
            return StepResult(Outcome.STOPPED, f"order is {state['status']}", timer.timings, context=ctx)
        if state["files_status"] != "completed":
            return StepResult(Outcome.STOPPED, f"print files are {state['files_status'] or 'not made'}",
                              timer.timings, context=ctx)
        if state["job_status"] == "processing":
            return held_elsewhere("print job being created", state["job_age"], attempt, timer)
        if state["story_status"] != "completed":
            return StepResult(Outcome.STOPPED, f"the story is {state['story_status']}, not completed", timer.timings,
                              context=ctx)
        return StepResult(Outcome.STOPPED, f"print job step is {state['job_status']}", timer.timings, context=ctx)

    o = order_settings()
    provider = print_provider()
    line_id = line_item_id(order_id, int(claim["run"]))
    found = False

    def work() -> lulu.PrintJob:
        nonlocal found
        spec = product_spec(state["product_type"])
        address = lulu_address(state["shipping_address"], email=state["email"], default_phone=o.default_phone)
        files = state["files"] or {}
        with timer.phase("provider"):
            # A run that died after creating the job (or timed out waiting for the reply) left
            # it at the provider: find it by our order id and this print run before creating.
            job = provider.find_job(order_id, line_id)
            found = job is not None
            if job is None:
                job = provider.create_job(lulu.PrintJobRequest(
                    external_id=order_id, line_item_external_id=line_id, title=state["title"] or "A story",
                    pod_package_id=spec.pod_package_id, page_count=int(files["interior_pages"]),
                    interior_url=file_url(files["interior_key"]), interior_md5=files["interior_md5"],
                    cover_url=file_url(files["cover_key"]), cover_md5=files["cover_md5"],
                    shipping_address=address, shipping_level=o.shipping_level,
                    contact_email=o.contact_email or state["email"], production_delay=o.production_delay,
                ))
        return job

    recorder = StepRecorder(order_id, "print_job", "Print job", attempt, int(claim["claim_token"]))
    if crashed := recorder.poisoned(int(claim["takeovers"]), "The print job's creation", timer, ctx):
        return crashed
    try:
        job = guarded(work, attempt=attempt, record=recorder,
                      what="Sending the print job")
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    with timer.phase("record"), autocommit() as c:
        recorded = steps_db.record_print_job(c, order_id, provider.name, job.id, job.to_json())
        if recorded:
            events.record_event(c, order_id, "worker", "print_job", "applied",
                                f"Print job {job.id} {'found' if found else 'created'} at "
                                f"{PROVIDER_LABEL.get(provider.name, provider.name)} ({job.status}).",
                                {"job": job.id, "run": claim["run"], "found": found})
        after = steps_db.print_state(c, order_id) if not recorded else None
    ctx["print_job"] = job.id
    record_print_cost(order_id, provider.name, job)
    if recorded:
        return StepResult(Outcome.DONE, f"print job {job.id} ({'found' if found else 'created'})", timer.timings,
                          context=ctx)
    if after is not None and after["pod_order_id"] == job.id:
        return StepResult(Outcome.ALREADY_DONE, f"print job {job.id}", timer.timings, context=ctx)
    # The order moved on without this job (refunded and failed while it was being created):
    # an orphan print job would be printed and paid for. Cancel it (Lulu allows it until it is
    # paid and in production) and say so either way.
    try:
        provider.cancel_job(job.id)
        note = f"Print job {job.id} was created for an order that is now {after and after['status']}: canceled."
    except (PermanentStepError, TransientStepError) as e:
        note = (f"Print job {job.id} was created for an order that is now {after and after['status']}, and "
                f"could not be canceled ({e}): cancel it at the provider.")
    log.warning("order %s: %s", order_id, note)
    with autocommit() as c:
        events.record_event(c, order_id, "worker", "print_job", "noted", note, {"job": job.id})
    return StepResult(Outcome.STOPPED, note, timer.timings, context=ctx)


# --- the print job's lifecycle ------------------------------------------------------------------

def record_print_cost(order_id: str, provider: str, job: lulu.PrintJob) -> None:
    """The print job's cost against the order (README "What each book costs"), once per job: Lulu's
    once it has priced the job (its costs, tax included); the offline print shop's at 0."""
    if job.cost_microcents is None and provider == "lulu":
        return
    with usage.metered("print_job", f"order:{order_id}", order_id=order_id):
        usage.record(provider, "print_job", call_id=job.id, cost=job.cost_microcents or 0,
                     currency=job.cost_currency)


def _apply_status(order_id: str, job: lulu.PrintJob, source: str) -> str:
    """The order moved as the provider's job says (poll or webhook); returns what happened:
    "fulfilled", "shipped", "failed" or "unchanged"."""
    record_print_cost(order_id, source, job)
    seen = job.to_json()
    label = PROVIDER_LABEL.get(source, source)
    src: orders_db.Source = source if source in ("lulu", "local") else "worker"  # type: ignore[assignment]
    with transaction() as c:
        if job.problem:
            msg = f"The print job {job.id} was {job.status.lower()} by {label}: {job.reason()}"
            moved = orders_db.fail_order(c, order_id, msg, from_statuses=("paid", "fulfilled"), source=src,
                                         kind=f"print_job.{job.status.lower()}", detail=seen, pod_order_id=job.id)
            steps_db.note_job_seen(c, order_id, seen)
            return "failed" if moved else "unchanged"
        events.record_event(c, order_id, src, f"print_job.{job.status.lower()}", "noted",
                            f"Print job {job.id} is {job.status}" + (f": {job.message[:200]}" if job.message else "."),
                            seen, event_id=f"{job.id}:{job.status}:{job.changed or ''}")
        return steps_db.apply_job_status(c, order_id, job.id, job.status, job.changed, job.tracking_id, seen)


def poll_print_job(order_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """Ask the provider how the print job is doing and move the order; asks to come back
    (``StepResult.again_in``) every ORDER_POLL_INTERVAL until the order is shipped or failed."""
    o = order_settings()
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = steps_db.claim_poll(c, order_id, 0.5 * o.poll_interval)
        state = None if claim else steps_db.print_state(c, order_id)
    ctx: dict[str, Any] = {"order": order_id}
    if claim is None:
        if state is None:
            return StepResult(Outcome.STOPPED, "order not found", timer.timings)
        if state["status"] == "shipped":
            return StepResult(Outcome.ALREADY_DONE, "shipped", timer.timings, context=ctx)
        if state["status"] not in ("paid", "fulfilled") or not state["pod_order_id"]:
            return StepResult(Outcome.STOPPED, f"order is {state['status']}, print job {state['pod_order_id']}",
                              timer.timings, context=ctx)
        # Another poll asked moments ago: its chain goes on, this duplicate ends here.
        return StepResult(Outcome.STOPPED, "polled recently", timer.timings, context=ctx)
    job_id = str(claim["pod_order_id"])
    ctx["print_job"] = job_id
    provider = print_provider(claim["pod_provider"] or None)
    try:
        with timer.phase("provider"):
            job = provider.get_job(job_id)
        if job.id != job_id:
            raise TransientStepError(f"asked for print job {job_id}, got {job.id}")
    except TransientStepError as e:
        # The job goes on printing whatever its API says: never fail an order for this. The
        # shared quota's waits (QuotaWait) are transient errors too.
        with autocommit() as c:
            events.record_event(c, order_id, "worker", "print_status", "retried", str(e)[:500],
                                {"attempt": attempt.number})
        return StepResult(Outcome.STOPPED, f"print job {job_id}: {e}", timer.timings,
                          context=ctx, again_in=max(o.poll_countdown, backoff(0, e.retry_after)))
    except PermanentStepError as e:
        msg = f"Following print job {job_id} failed: {e}"
        with autocommit() as c:
            moved = orders_db.fail_order(c, order_id, msg, from_statuses=("paid", "fulfilled"), kind="print_status")
        return StepResult(Outcome.FAILED if moved else Outcome.STOPPED, msg, timer.timings, context=ctx)
    with timer.phase("record"):
        what = _apply_status(order_id, job, provider.name)
    ctx["provider_status"] = job.status
    if what in ("shipped", "failed") or job.status == lulu.SHIPPED or job.problem:
        return StepResult(Outcome.DONE if what != "failed" else Outcome.FAILED, f"{job.status}: {what}",
                          timer.timings, context=ctx)
    return StepResult(Outcome.STOPPED, f"print job {job_id} is {job.status}", timer.timings,
                      context=ctx, again_in=o.poll_countdown)


def handle_lulu_webhook(payload: str, headers: Mapping[str, Any] | None, attempt: Attempt = FIRST_TRY) -> StepResult:
    """A PRINT_JOB_STATUS_CHANGED webhook, as the external API received it (raw body and
    headers): verified (HMAC-SHA256 of the raw body with the API secret, header
    Lulu-HMAC-SHA256), then the same move as a poll."""
    timer = Timer()
    wanted = lulu.WEBHOOK_HEADER.lower()
    signature = next((str(v) for k, v in (headers or {}).items() if str(k).lower() == wanted), None)
    if not lulu.verify_webhook(payload, signature, order_settings().lulu_webhook_secret):
        log.warning("Lulu webhook refused: %s", "no signature" if not signature else "signature does not match")
        return StepResult(Outcome.STOPPED, "rejected: bad or missing Lulu-HMAC-SHA256 signature", timer.timings)
    try:
        body = json.loads(payload)
        if body.get("topic") != "PRINT_JOB_STATUS_CHANGED":
            return StepResult(Outcome.STOPPED, f"ignored topic {str(body.get('topic'))[:60]}", timer.timings)
        job = lulu.parse_job(body.get("data"))
    except (ValueError, AttributeError) as e:
        log.warning("Lulu webhook unreadable: %s", e)
        return StepResult(Outcome.STOPPED, f"rejected: unreadable webhook ({e})", timer.timings)
    order_id = valid_uuid(job.external_id)
    if order_id is None:
        return StepResult(Outcome.STOPPED, f"print job {job.id} is not one of our orders", timer.timings)
    ctx = {"order": order_id, "print_job": job.id, "provider_status": job.status}
    with autocommit() as c:
        state = steps_db.print_state(c, order_id)
        if state is not None and state["pod_order_id"] is None and state["status"] == "paid" \
                and line_item_id(order_id, int(state["job_run"] or 1)) in job.line_item_external_ids:
            # Lulu reports the job before the worker that created it recorded it (it died in
            # between): it is this order's job for this print run, so record it now.
            if steps_db.record_print_job(c, order_id, "lulu", job.id, job.to_json()):
                events.record_event(c, order_id, "lulu", "print_job", "applied",
                                    f"Print job {job.id} recorded from Lulu's webhook.", {"job": job.id})
            state = steps_db.print_state(c, order_id)
    if state is None:
        return StepResult(Outcome.STOPPED, "order not found", timer.timings, context=ctx)
    if state["pod_order_id"] != job.id:
        return StepResult(Outcome.STOPPED, f"not this order's current print job ({state['pod_order_id']})",
                          timer.timings, context=ctx)
    with timer.phase("record"):
        what = _apply_status(order_id, job, "lulu")
    return StepResult(Outcome.DONE if what != "unchanged" else Outcome.ALREADY_DONE, f"{job.status}: {what}",
                      timer.timings, context=ctx)

