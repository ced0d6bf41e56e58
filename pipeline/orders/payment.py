"""Payment: an order's pending_payment -> paid (or failed), from Stripe's events (README, "Orders").

- Payment events are Stripe's, delivered at least once and in any order. Each event id counts
  once (order_events); the order moves forward only (a guarded UPDATE), so a late or repeated
  event changes nothing. ``payment_intent.succeeded`` for this order (its intent, or the intent's
  ``metadata.order_id``) with the order's amount and currency -> paid; a mismatched amount or
  currency -> failed, saying both. ``payment_intent.payment_failed`` is noted (the customer may
  pay again with the same intent); after success it is ignored. ``payment_intent.canceled``
  before payment -> failed. ``charge.refunded`` in full before the print job was sent -> failed
  ("refunded"), which also covers a refund delivered before its own success event; after the
  job was sent it is recorded for an operator (the book is in production), never silently.
- An event is authentic by its signature judged at the webhook's arrival (``received_at``), or
  by Stripe's API's own copy (STRIPE_SECRET_KEY) when the timing cannot be shown; otherwise it
  is recorded as needing confirmation (retry --order, backfill and the sweep confirm it later).
  An event of the other Stripe mode than the deployment's (STRIPE_MODE) is recorded as ignored.
  An unverifiable event (no STRIPE_WEBHOOK_SECRET, a pre-parsed event) counts only in test mode;
  in live mode it is confirmed with Stripe's API (STRIPE_SECRET_KEY) or refused and recorded.
- Stripe Checkout: ``checkout.session.completed`` / ``async_payment_succeeded`` with
  ``payment_status`` "paid" is the same payment as its intent's ``payment_intent.succeeded``
  (``amount_total``, the order by ``metadata.order_id`` or ``client_reference_id``); whichever
  comes first pays, and records the intent.
- An order whose story is another user's (or is gone) is failed at payment by a guarded
  statement, its payment kept on the row and the reason saying it needs a refund decision
  (db.orders.OWN_STORY).
"""
from __future__ import annotations

import logging
from typing import Any

from db import order_events as events
from db import order_steps as steps_db
from db import orders as orders_db
from db.engine import autocommit, transaction
from pipeline.kernel.step import FIRST_TRY, Attempt, Outcome, RetryLater, StepResult, Timer, backoff, valid_uuid
from pipeline.orders.settings import OrderSettings, order_settings
from pipeline.orders.stripe_events import (
    CHARGE_REFUNDED,
    CHECKOUT_ASYNC_FAILED,
    CHECKOUT_ASYNC_SUCCEEDED,
    CHECKOUT_COMPLETED,
    PAYMENT_CANCELED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    InvalidEvent,
    PaymentEvent,
    StripeUnavailable,
    UnconfirmedEvent,
    parse_event,
    retrieve_event,
    verify_event,
)

log = logging.getLogger("pipeline.orders.payment")

def _money(amount: int | None, currency: str | None) -> str:
    return f"{amount} {(currency or '?').upper()}"


def _decide(row: Any, ev: PaymentEvent, order_id: str, other_order: str | None) -> tuple[str, str]:
    """(action, message) for one payment event on a locked order row. Actions: pay, fail,
    ignore (late/duplicate), reject (not this order's), note (recorded for people)."""
    status = row["status"]
    intent = ev.payment_intent_id
    if row["payment_intent_id"]:
        if intent != row["payment_intent_id"]:
            return "reject", (f"The event is for payment {intent or '(none)'}, the order's payment is "
                              f"{row['payment_intent_id']}.")
    elif ev.order_id != order_id:
        return "reject", (f"The payment {intent or '(none)'} cannot be tied to this order: its metadata.order_id "
                          f"(or client_reference_id) is {ev.order_id or 'missing'} and the order has no "
                          "payment_intent_id.")
    elif other_order is not None:
        return "reject", f"The payment {intent} already belongs to order {other_order}."
    if ev.type in (CHECKOUT_COMPLETED, CHECKOUT_ASYNC_SUCCEEDED) and ev.payment_status != "paid":
        if status == "pending_payment":
            return "note", (f"The Checkout Session {ev.object_id} completed with payment_status "
                            f"{ev.payment_status or 'missing'}: the order waits for the payment "
                            f"({CHECKOUT_ASYNC_SUCCEEDED}).")
        return "ignore", f"An unpaid Checkout Session reported for an order that is {status}."
    if ev.type == CHECKOUT_ASYNC_FAILED:
        if status == "pending_payment":
            return "note", (f"The delayed payment of Checkout Session {ev.object_id} failed; the order waits for "
                            "another payment.")
        return "ignore", f"A failed delayed payment reported for an order that is {status}."
    if ev.type in (PAYMENT_SUCCEEDED, CHECKOUT_COMPLETED, CHECKOUT_ASYNC_SUCCEEDED):
        # The same payment is often reported twice (the session's completion, then its intent's
        # success): the first pays, the other finds the order paid (or its intent taken).
        if status != "pending_payment":
            return "ignore", f"Payment confirmation for an order that is already {status}."
        received = ev.amount_received if ev.amount_received is not None else ev.amount
        if received != row["amount"] or ev.currency != row["currency"]:
            return "fail", (f"The payment does not match the order: Stripe received {_money(received, ev.currency)}, "
                            f"the order is for {_money(row['amount'], row['currency'])}. The order was not printed; "
                            "refund or correct the payment.")
        return "pay", f"Paid {_money(received, ev.currency)} ({intent})."
    if ev.type == PAYMENT_FAILED:
        if status == "pending_payment":
            return "note", f"A payment attempt failed ({ev.reason or 'no reason given'}); the order waits for another."
        return "ignore", f"A failed payment attempt reported after the order was {status} (out of order)."
    if ev.type == PAYMENT_CANCELED:
        if status == "pending_payment":
            return "fail", f"The payment was canceled ({ev.reason or 'no reason given'}); nothing was charged."
        return "ignore", f"A payment cancellation reported for an order that is {status}."
    if ev.type == CHARGE_REFUNDED:
        full = ev.refunded or (ev.amount_refunded is not None and ev.amount is not None
                               and ev.amount_refunded >= ev.amount)
        if status == "failed":
            return "ignore", "A refund for an order that had failed already."
        if not full:
            return "note", f"A partial refund of {_money(ev.amount_refunded, ev.currency)}; the order goes on."
        sent = row["pod_order_id"] is not None or row["job_step"] in ("processing", "completed")
        if status in ("pending_payment", "paid") and not sent:
            return "fail", "The payment was refunded before the book was sent to print: the order is cancelled."
        return "note", (f"The payment was refunded after the print job was sent (order {status}, print job "
                        f"{row['pod_order_id'] or 'being created'}): cancel it at the print provider if it is "
                        "not in production yet.")
    return "ignore", f"{ev.type} is not an event orders act on."


# Kind of the order_events row that says "a genuine Stripe event waits for confirmation" (its
# detail names the event). It stays open until a row for that event id is recorded (applied,
# ignored, rejected, ...): retry --order, backfill and the sweep confirm it with Stripe's API.
NEEDS_CONFIRMATION = "payment.needs_confirmation"


def _authentic(event: Any, payload: str | None, signature: str | None, received_at: float | None) -> PaymentEvent:
    """The event, authentic by its signature; or InvalidEvent; or UnconfirmedEvent (to be
    confirmed with Stripe's API: the caller uses Stripe's copy, never the payload's content).

    An event the worker cannot verify (a raw payload with no STRIPE_WEBHOOK_SECRET configured,
    a pre-parsed ``event``) counts as it is only on a test-mode deployment (the offline demo,
    development) without STRIPE_REQUIRE_SIGNATURE. On a live-mode one (STRIPE_MODE) it never
    moves an order: with STRIPE_SECRET_KEY it is confirmed with Stripe's API, otherwise refused."""
    o = order_settings()
    trust_unsigned = o.stripe_mode == "test" and not o.stripe_require_signature
    if payload is not None:
        if o.stripe_secrets or signature is not None or not trust_unsigned:
            if not o.stripe_secrets and o.stripe_mode == "live":
                raise _unverifiable(parse_event(payload), "no Stripe webhook secret is configured "
                                    "(STRIPE_WEBHOOK_SECRET), so its signature cannot be checked", o)
            return verify_event(payload, signature, o.stripe_secrets, tolerance=o.stripe_tolerance,
                                received_at=received_at)
        return parse_event(payload)
    if o.stripe_require_signature:
        raise InvalidEvent("an unsigned event is refused (STRIPE_REQUIRE_SIGNATURE): send the raw payload "
                           "with its Stripe-Signature header")
    if not trust_unsigned:
        raise _unverifiable(parse_event(event), "a pre-parsed event carries no signature", o)
    return parse_event(event)


class _Unverified(InvalidEvent):
    """Refused unverified; ``event`` (content unproven) only says which order to record it on."""

    def __init__(self, message: str, event: PaymentEvent) -> None:
        super().__init__(message)
        self.event = event


def _unverifiable(ev: PaymentEvent, why: str, o: OrderSettings) -> InvalidEvent:
    """A live-mode deployment never takes an unverified event's word: UnconfirmedEvent (Stripe's
    API will say) when STRIPE_SECRET_KEY is set, else InvalidEvent (refused, recorded)."""
    if o.stripe_secret_key:
        return UnconfirmedEvent(f"unverified event on a live-mode deployment: {why}", ev)
    return _Unverified(f"an unverified event on a live-mode deployment (STRIPE_MODE) is never applied: {why}; "
                        "set STRIPE_WEBHOOK_SECRET and send the raw payload with its Stripe-Signature header "
                        "(or set STRIPE_SECRET_KEY to confirm events with Stripe's API)", ev)


def _order_of(order_id: str | None, ev: PaymentEvent) -> str | None:
    oid = order_id or valid_uuid(ev.order_id)
    if oid is None and ev.payment_intent_id:
        with autocommit() as c:
            oid = orders_db.order_by_payment_intent(c, ev.payment_intent_id)
    return oid


def _hold(order_id: str | None, ev: PaymentEvent, why: str, timer: Timer) -> StepResult:
    """A genuine event that cannot count yet: recorded on its order as needing confirmation
    (visible in ``status``; confirmed later by retry --order, backfill or the sweep)."""
    oid = _order_of(order_id, ev)
    key = order_settings().stripe_secret_key
    todo = ("storycreator retry --order confirms it with Stripe's API" if key else
            "set STRIPE_SECRET_KEY (a key that may read Events) and run storycreator retry --order, or resend "
            "the event from Stripe's Dashboard")
    msg = f"Stripe event {ev.event_id} ({ev.type}) needs confirmation: {why}. Nothing moved; {todo}."
    if oid is not None:
        with autocommit() as c:
            if steps_db.print_state(c, oid) is not None:
                events.record_held(c, oid, NEEDS_CONFIRMATION, msg, {**ev.summary(), "event": ev.event_id})
    log.warning("order %s: stripe event %s needs confirmation", oid, ev.event_id)
    return StepResult(Outcome.STOPPED, msg, timer.timings, context={"order": oid, "event": ev.event_id})


def _refuse(order_id: str | None, msg: str, timer: Timer, event_id: str | None = None) -> StepResult:
    if order_id is not None:
        with autocommit() as c:
            if steps_db.print_state(c, order_id) is not None:
                events.record_event(c, order_id, "stripe", "invalid_event", "rejected", msg, event_id=event_id)
    log.warning("order %s: %s", order_id, msg)
    return StepResult(Outcome.STOPPED, msg, timer.timings)


def _confirm(order_id: str | None, claimed: PaymentEvent, why: str, attempt: Attempt, timer: Timer
             ) -> PaymentEvent | StepResult:
    """The event from Stripe's API (STRIPE_SECRET_KEY), or a StepResult: held (no key, or
    Stripe unavailable after the tries), rejected (Stripe has no such event)."""
    o = order_settings()
    if not o.stripe_secret_key:
        return _hold(order_id, claimed, why, timer)
    try:
        with timer.phase("provider"):
            return retrieve_event(claimed.event_id, o.stripe_secret_key, api_base=o.stripe_api_base)
    except StripeUnavailable as e:
        if not attempt.last:
            raise RetryLater(backoff(attempt.number, e.retry_after), str(e)) from None
        return _hold(order_id, claimed, f"{why}; Stripe's API could not confirm it ({e})", timer)
    except InvalidEvent as e:
        return _refuse(_order_of(order_id, claimed), f"Stripe event refused: {why}, and {e}", timer,
                       event_id=claimed.event_id)


def confirm_payment(order_id: str | None, event: Any = None, payload: str | None = None,
                    signature: str | None = None, attempt: Attempt = FIRST_TRY, *,
                    received_at: float | None = None, event_id: str | None = None) -> StepResult:
    """orders.status pending_payment -> paid (or failed), from one Stripe event: the webhook's
    raw ``payload`` + ``signature`` (``received_at``: Unix seconds when the API received it),
    a pre-verified ``event``, or just an ``event_id`` to confirm with Stripe's API.

    Authenticity: a signature checked against the arrival time, or Stripe's API's own copy of
    the event (stripe_events' docstring). A genuine event whose timing cannot be shown and that
    cannot be confirmed now is recorded as needing confirmation, never dropped. An event of the
    other Stripe mode (livemode) than the deployment's (STRIPE_MODE) is recorded as ignored."""
    timer = Timer()
    o = order_settings()
    try:
        if event_id is not None:
            claimed = PaymentEvent.unknown(event_id)
            ev_or_result = _confirm(order_id, claimed, "re-confirmation asked", attempt, timer)
            if isinstance(ev_or_result, StepResult):
                return ev_or_result
            ev = ev_or_result
        else:
            ev = _authentic(event, payload, signature, received_at)
    except UnconfirmedEvent as u:
        ev_or_result = _confirm(order_id, u.event, str(u), attempt, timer)
        if isinstance(ev_or_result, StepResult):
            return ev_or_result
        ev = ev_or_result
    except InvalidEvent as e:
        if isinstance(e, _Unverified):  # recorded where operators look (status --order); nothing moves
            # Not under its event id: the genuine event, signed or resent, must still count later.
            return _refuse(_order_of(order_id, e.event), f"Stripe event {e.event.event_id} refused: {e}", timer)
        return _refuse(order_id, f"Stripe event refused: {e}", timer)
    oid = _order_of(order_id, ev)
    if oid is None:
        return StepResult(Outcome.STOPPED, f"no order for {ev.type} {ev.event_id}", timer.timings)
    ctx = {"order": oid, "event": ev.event_id, "type": ev.type}
    with timer.phase("record"), transaction() as c:
        row = orders_db.lock_order(c, oid)
        if row is None:
            return StepResult(Outcome.STOPPED, "order not found", timer.timings, context=ctx)
        moves_on = row["status"] == "paid" and row["pod_order_id"] is None
        if events.seen_event(c, "stripe", ev.event_id):
            # The same event again (at-least-once delivery): nothing changes. A paid order still
            # moves on, in case the first delivery's run died before enqueueing the print files.
            return StepResult(Outcome.ALREADY_DONE if moves_on else Outcome.STOPPED,
                              f"duplicate event {ev.event_id}", timer.timings, context=ctx)
        detail = ev.summary()
        if ev.livemode != (o.stripe_mode == "live"):
            # A test-mode payment must never pay a live order (nor a live one a test deployment's).
            msg = (f"A {'live' if ev.livemode else 'test'}-mode Stripe event (livemode {str(ev.livemode).lower()}) "
                   f"on a {o.stripe_mode}-mode deployment (STRIPE_MODE): ignored, nothing moved.")
            events.record_event(c, oid, "stripe", ev.type, "ignored", msg, {**detail, "ignored": "mode"}, ev.event_id)
            log.warning("order %s: stripe event %s ignored: livemode %s on a %s deployment", oid, ev.event_id,
                        ev.livemode, o.stripe_mode)
            return StepResult(Outcome.ALREADY_DONE if moves_on else Outcome.STOPPED, msg, timer.timings, context=ctx)
        owner = orders_db.order_by_payment_intent(c, ev.payment_intent_id) if ev.payment_intent_id else None
        action, msg = _decide(row, ev, oid, owner if owner not in (None, oid) else None)
        if ev.confirmed_by_api:
            detail["confirmed"] = "stripe_api"
        if action == "fail":
            done = orders_db.fail_order(c, oid, msg, from_statuses=("pending_payment", "paid"), source="stripe",
                                        kind=ev.type, detail=detail, event_id=ev.event_id)
        else:
            outcomes: dict[str, orders_db.Outcome] = {"pay": "applied", "reject": "rejected", "note": "noted"}
            outcome = outcomes.get(action, "ignored")
            done = events.record_event(c, oid, "stripe", ev.type, outcome, msg, detail, ev.event_id)
            if done and action == "pay":
                intent = ev.payment_intent_id or ev.object_id
                # The money is taken either way (recorded on the row); an order whose story is not
                # its user's (or is gone) is never printed: failed, saying it needs a refund decision.
                refused = orders_db.refuse_not_printable(c, oid, ("pending_payment",), payment=(intent, "stripe"))
                if refused:
                    action, msg = "fail", refused
                    log.warning("order %s: paid but not printable (story %s): needs a refund decision", oid,
                                row["story_id"])
                else:
                    done = orders_db.mark_paid(c, oid, intent, "stripe")
    if not done:  # the guarded move found the order changed (cannot happen under the row lock)
        return StepResult(Outcome.STOPPED, f"order changed: {msg}", timer.timings, context=ctx)
    if action == "pay":
        return StepResult(Outcome.DONE, msg, timer.timings, context=ctx)
    if action == "fail":
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
    if action in ("ignore", "note") and moves_on:
        return StepResult(Outcome.ALREADY_DONE, msg, timer.timings, context=ctx)
    if action == "reject":
        log.warning("order %s: payment event %s rejected: %s", oid, ev.event_id, msg)
    return StepResult(Outcome.STOPPED, msg, timer.timings, context=ctx)

