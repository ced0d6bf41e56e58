"""Order repair for operators: stuck orders found and re-enqueued (the sweep), a failed order
retried keeping what is done, an order's status and the orders' summary; and an order submitted
and paid as the external API does it (the demo, tools). Every change is a guarded transition in
db/order_repair.py, and tasks are published after the commit, by the order flow's task names
(pipeline.orders.stages).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from db import order_events as events
from db import order_repair as repair
from db.engine import transaction
from pipeline.config import settings
from pipeline.kernel import publish
from pipeline.kernel.stages import Stage
from pipeline.operations.stuck import Stuck
from pipeline.orders.payment import NEEDS_CONFIRMATION
from pipeline.orders.settings import order_settings
from pipeline.orders.stages import ORDER_FLOW, SWEPT
from pipeline.orders.stripe_events import PAYMENT_SUCCEEDED, event_payload, sign
from pipeline.providers import lulu


def _publish(task: str, kwargs: dict[str, Any]) -> None:
    """Send an order task by name to the orders queue (no task objects: the Celery layer is on top)."""
    publish.send(task, kwargs)


def stuck_query_args(stage: Stage) -> tuple[str, str, str, str | None]:
    """(table, step, column, prerequisite step row or None) of an order stage, as db.order_repair's
    stuck-order queries take them, from the order flow's table (pipeline.orders.stages): the
    prerequisite is None when it is the payment (a column of ``orders``, not a step row)."""
    pre = ORDER_FLOW[stage.prerequisite] if stage.prerequisite else None
    step_row = pre.name if pre is not None and pre.table == "order_steps" else None
    return stage.table, stage.name, stage.status_column, step_row


def find_stuck_orders(*, lease: float | None = None, pending_after: float | None = None,
                      limit: int = 500) -> list[Stuck]:
    """Orders that should be moving and are not (read-only), as pipeline.operations.stuck.Stuck
    items: for each swept stage of the order flow (pipeline.orders.stages), its task with the
    order's id; and, with STRIPE_SECRET_KEY, genuine payment events that wait for confirmation
    (``orders.confirm_payment`` with the event id). ``lease`` / ``pending_after``: seconds,
    default STEP_LEASE_SECONDS; ``limit``: per query."""
    s, o = settings(), order_settings()
    params = {"lease": lease if lease is not None else s.step_lease_seconds,
              "pending_after": pending_after if pending_after is not None else s.step_lease_seconds,
              "poll_stale": 2 * o.poll_interval + 60, "limit": limit}
    found: list[Stuck] = []
    with transaction() as c:
        for name in SWEPT:
            stage = ORDER_FLOW[name]
            found += [Stuck(stage.task, {stage.id_kwarg: oid}, "stale")
                      for oid in repair.stuck_orders(c, *stuck_query_args(stage), params)]
        if o.stripe_secret_key:
            # Genuine payment events that wait for confirmation (no key then, or Stripe was
            # unavailable): confirmed with Stripe's API, for orders still waiting for a payment.
            pay = ORDER_FLOW["payment"]
            found += [Stuck(pay.task, {pay.id_kwarg: oid, "event_id": ev}, "unconfirmed")
                      for oid, ev in repair.unconfirmed_payments(c, NEEDS_CONFIRMATION, limit)]
    return found


def sweep_orders(*, lease: float | None = None, pending_after: float | None = None, limit: int = 500,
                 dry_run: bool = False) -> list[Any]:
    """Re-enqueue stuck orders (find_stuck_orders; ``dry_run``: only list them). Safe beside live
    workers and twice: each step's claim decides."""
    stuck = find_stuck_orders(lease=lease, pending_after=pending_after, limit=limit)
    if not dry_run:
        for item in stuck:
            _publish(item.task, item.kwargs)  # confirm_payment: the default queue is fine too
    return stuck


@dataclass
class OrderRetry:
    """What ``retry --order`` did (or, dry run, would do) and why: ``ok`` False when refused."""

    order_id: str
    ok: bool
    message: str
    action: str = ""  # "new print run", "resume following", "" when refused


def retry_order(order_id: str, *, dry_run: bool = False) -> OrderRetry:
    """A failed order back on its way, keeping what is done: a paid order whose print files or
    print job failed starts again from its print files; one whose job the provider rejected,
    canceled or errored gets a new print run (a new job, told apart from the old one by its
    line item id); one whose job is fine but could not be followed resumes following it. An
    unpaid order whose genuine payment event waits for confirmation has it confirmed with
    Stripe's API (needs STRIPE_SECRET_KEY). A payment that never came cannot be retried here."""
    with transaction() as c:
        row = repair.lock_for_retry(c, order_id)
        if row is None:
            return OrderRetry(order_id, False, "no such order")
        held = events.open_held(c, order_id, NEEDS_CONFIRMATION) if row["paid_at"] is None else []
        if held and row["status"] == "pending_payment":
            return _confirm_held(order_id, held, dry_run)
        if row["status"] != "failed":
            return OrderRetry(order_id, False, f"order is {row['status']}, not failed: nothing to retry")
        reason = events.last_failure(c, order_id) or "no reason recorded"
        if row["paid_at"] is None:
            return OrderRetry(order_id, False, f"not retried: the payment was never confirmed ({reason}); "
                                               "a retry cannot take a payment")
        if not row["own_story"]:
            return OrderRetry(order_id, False, f"not retried: the order's story is not its user's, or no longer "
                                               f"exists ({reason}); correct orders.user_id / story_id first, or "
                                               "refund the payment")
        if row["story_status"] == "failed":
            return OrderRetry(order_id, False, "not retried: the order's story failed; retry the story first "
                                               "(retry --story), then the order")
        job_dead = row["pod_order_id"] is None or row["provider_status"] in lulu.PROBLEMS
        action = "new print run" if job_dead else "resume following"
        if dry_run:
            return OrderRetry(order_id, True, f"would retry ({action}); it failed: {reason}", action)
        if job_dead:
            # a recorded job that is dead: a new one
            repair.restart_print_run(c, order_id, new_run=row["pod_order_id"] is not None)
        else:
            repair.resume_following(c, order_id)
        events.record_event(c, order_id, "operator", "retry", "retried", f"Retried ({action}) after: {reason}",
                            {"previous_pod_order_id": row["pod_order_id"], "run": row["run"]})
    stage = ORDER_FLOW["print_files" if job_dead else "print_status"]
    _publish(stage.task, {stage.id_kwarg: order_id})  # after the commit
    return OrderRetry(order_id, True, f"retried ({action})", action)


def _confirm_held(order_id: str, held: list[str], dry_run: bool) -> OrderRetry:
    """retry --order for an order whose genuine payment event(s) wait for confirmation: each is
    confirmed with Stripe's API by a worker (orders.confirm_payment with its event_id)."""
    if not order_settings().stripe_secret_key:
        return OrderRetry(order_id, False, f"not retried: payment event(s) {', '.join(held)} need confirmation with "
                                           "Stripe's API and STRIPE_SECRET_KEY is not set (or resend them from "
                                           "Stripe's Dashboard)")
    action = "confirm payment"
    if dry_run:
        return OrderRetry(order_id, True, f"would confirm {', '.join(held)} with Stripe", action)
    pay = ORDER_FLOW["payment"]
    for event_id in held:
        _publish(pay.task, {pay.id_kwarg: order_id, "event_id": event_id})
    return OrderRetry(order_id, True, f"retried (confirming {', '.join(held)} with Stripe)", action)


def order_report(order_id: str) -> dict[str, Any] | None:
    """db.order_repair.report's dict plus ``needs_confirmation`` (event ids waiting for
    confirmation with Stripe), or None when there is no such order (format_report prints it)."""
    with transaction() as c:
        rep = repair.report(c, order_id)
        if rep is not None:
            rep["needs_confirmation"] = events.open_held(c, order_id, NEEDS_CONFIRMATION)
        return rep


def order_summary() -> dict[str, int]:
    """Orders by status, plus ``payment_needs_confirmation`` (orders with a genuine payment event
    waiting for confirmation), ``payment_wrong_mode`` (payment events ignored because their
    Stripe mode is not the deployment's) and ``paid_not_printable`` (paid orders refused because
    their story is not their user's or is gone: each needs a refund decision)."""
    with transaction() as c:
        counts = repair.summary(c)
        counts["payment_needs_confirmation"] = repair.orders_with_held_payments(c, NEEDS_CONFIRMATION)
        counts["payment_wrong_mode"] = repair.wrong_mode_events(c)
        counts["paid_not_printable"] = repair.paid_not_printable(c)
        return counts


def format_report(rep: dict[str, Any]) -> str:
    """An order's status for people: the row, its steps and its history."""
    o = rep["order"]
    lines = [f"order {o['id']}  {o['status']}  {o['product_type']}  {o['amount']} {str(o['currency']).upper()}"]
    if rep.get("error"):
        lines.append(f"  error: {rep['error']}")
    if rep.get("needs_confirmation"):
        lines.append(f"  payment event(s) waiting for confirmation with Stripe: {', '.join(rep['needs_confirmation'])} "
                     "(retry --order)")
    for k in ("paid_at", "fulfilled_at", "shipped_at"):
        if o[k]:
            lines.append(f"  {k:<13} {o[k]:%Y-%m-%d %H:%M:%S}")
    if o["pod_order_id"]:
        lines.append(f"  print job     {o['pod_provider']} {o['pod_order_id']}"
                     + (f"  tracking {o['tracking_number']}" if o["tracking_number"] else ""))
    for st in rep["steps"]:
        extra = ""
        res = st["result"] or {}
        if st["step"] == "print_files" and res:
            extra = f"{res.get('interior_pages')} pages, {res.get('interior_key')}"
        elif st["step"] == "print_job" and res:
            extra = f"provider status {res.get('status')}"
        lines.append(f"  step {st['step']:<12} {st['status']:<10} run {st['run']}  {extra}".rstrip())
    for e in rep["events"]:
        lines.append(f"  {e['created_at']:%H:%M:%S} {e['source']:<8} {e['kind']:<26} {e['outcome']:<8} "
                     f"{e['message'] or ''}".rstrip())
    return "\n".join(lines)


# --- as the external API does it (demo, tools) ----------------------------------------------------

def submit_order(story_id: str, *, product_type: str = "hardcover_book", amount: int = 2999,
                 currency: str = "usd", shipping_address: dict[str, Any] | None = None) -> tuple[str, str]:
    """Insert an order for a story as the external API does when checkout starts; returns
    (order id, payment intent id)."""
    intent = f"pi_demo_{uuid.uuid4().hex[:20]}"
    address = shipping_address or {"name": "Sam Reader", "street1": "1 Example Street", "city": "Raleigh",
                                   "state_code": "NC", "postcode": "27601", "country_code": "US",
                                   "phone_number": "+1 919 555 0100"}
    with transaction() as c:
        order_id = repair.insert_order(c, story_id, product_type=product_type, amount=amount, currency=currency,
                                       shipping_address=address, payment_intent_id=intent)
    return order_id, intent


def simulated_payment(order_id: str, payment_intent_id: str, amount: int, currency: str) -> dict[str, Any]:
    """The kwargs the external API publishes orders.confirm_payment with after Stripe's
    ``payment_intent.succeeded`` webhook: the raw body and its signature (signed with
    STRIPE_WEBHOOK_SECRET when set, so the worker verifies it as it would Stripe's)."""
    o = order_settings()
    body = event_payload(f"evt_demo_{uuid.uuid4().hex[:20]}", PAYMENT_SUCCEEDED, {
        "id": payment_intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
        "currency": currency, "status": "succeeded", "metadata": {"order_id": order_id}},
        livemode=o.stripe_mode == "live")  # the payment this deployment would get
    secrets = o.stripe_secrets
    return {"order_id": order_id, "payload": body, "signature": sign(body, secrets[0]) if secrets else None,
            "received_at": time.time()}
