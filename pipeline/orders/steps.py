"""Orders: from a confirmed payment to a printed, shipped book. Plain functions of ids, like
pipeline.stories.steps (the task layer, workers/order_tasks.py, maps results to successors).

    orders.confirm_payment(order_id, event | payload+signature)   pending_payment -> paid
        -> orders.prepare_print(order_id)    print files (interior + cover PDFs) for the story
        -> orders.submit_print(order_id)     the print job, created once; pod_order_id
        -> orders.poll_print(order_id)       sent again every ORDER_POLL_INTERVAL until
                                             IN_PRODUCTION -> fulfilled, SHIPPED -> shipped
    orders.lulu_webhook(payload, headers)    the same status moves, pushed by the provider
    orders.sweep()                           (beat) stuck orders re-enqueued

Policies (README, "Orders"):

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
- Only the order's own user's story is printed: an order whose story is another user's (or is
  gone) is failed by a guarded statement at payment and at each print claim, its payment kept
  on the row and the reason saying it needs a refund decision (db.orders.OWN_STORY).
- Print files only for a ``completed`` story: a paid order waits for a story in progress (up to
  ORDER_STORY_WAIT_SECONDS after payment) and fails, saying why, if the story failed.
- The print job is created once per order and print run: the step claims it like a page step
  (lease), looks the job up by our order id before creating one (a run that died after creating
  it finds it), and records pod_order_id with a guarded UPDATE. No DB connection is held across
  an HTTP call.
- Provider problems: REJECTED / CANCELED / ERROR -> failed with the provider's reason. Transient
  errors retry with backoff (Retry-After honoured), then fail with the reason; a poll never
  fails an order for a transient error (the job is still printing): it just comes back later.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import text

from db import orders as otx
from db.engine import autocommit, transaction
from pipeline.kernel import cpu
from pipeline.kernel.config import settings
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.orders.print_files import interior_plan, product_spec
from pipeline.providers import lulu
from pipeline.stories.steps import (
    Attempt,
    Outcome,
    RetryLater,
    StepResult,
    _Failed,
    _guarded,
    _held_elsewhere,
    _Timer,
    backoff,
    valid_uuid,
)
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
from pipeline.stories.themes import resolve_theme

log = logging.getLogger("pipeline.orders.steps")

PROVIDER_LABEL = {"lulu": "Lulu", "local": "the local print shop"}
FIRST_TRY = Attempt()  # Attempt is frozen: one shared default
# StepResult.context key: "run this step again in N seconds" (waiting for a story, following a
# print job). The task layer sends a fresh message with that countdown rather than retrying the
# same one: Celery caps a task's retries (StepTask.max_retries), and a print job is followed for
# days; a fresh message also does not carry a growing retry count or the redelivered flag.
AGAIN_IN = "again_in"


# --- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderSettings:
    pod_provider: str  # POD_PROVIDER: local | lulu
    poll_interval: float  # ORDER_POLL_INTERVAL: seconds between looks at a print job
    story_wait: float  # ORDER_STORY_WAIT_SECONDS: how long a paid order waits for its story
    shipping_level: str  # LULU_SHIPPING_LEVEL
    contact_email: str | None  # LULU_CONTACT_EMAIL (else the ordering user's email)
    production_delay: int | None  # LULU_PRODUCTION_DELAY minutes (Lulu's default 60 when unset)
    files_base_url: str | None  # PRINT_FILES_BASE_URL: public base URL of the storage
    stripe_secrets: tuple[str, ...]  # STRIPE_WEBHOOK_SECRET (comma-separated during a rotation)
    stripe_tolerance: float  # STRIPE_SIGNATURE_TOLERANCE
    stripe_require_signature: bool  # STRIPE_REQUIRE_SIGNATURE: refuse events without the raw payload
    stripe_mode: str  # STRIPE_MODE live | test (else from STRIPE_SECRET_KEY's prefix, else live)
    stripe_secret_key: str | None  # STRIPE_SECRET_KEY: confirms events with Stripe's API (read Events)
    stripe_api_base: str | None  # STRIPE_API_BASE: another Stripe API host (tests, stripe-mock)
    default_phone: str | None  # LULU_DEFAULT_PHONE_NUMBER: sent when the shipping address has none
    lulu_webhook_secret: str  # LULU_WEBHOOK_SECRET, default LULU_CLIENT_SECRET (Lulu signs with it)

    @property
    def poll_countdown(self) -> float:
        # A re-scheduled task waits in a worker as an unacked message with an ETA; on Redis it
        # must come due before the visibility timeout or the broker delivers it a second time.
        return max(0.05, min(self.poll_interval, settings().visibility_timeout / 2))

    @property
    def story_wait_poll(self) -> float:
        return max(0.05, min(15.0, self.poll_interval))


@lru_cache(maxsize=1)
def order_settings() -> OrderSettings:
    from pipeline.kernel.config import _choice, _float, _int

    e = os.environ
    delay = e.get("LULU_PRODUCTION_DELAY", "").strip()
    if delay:  # minutes; a whole number (Lulu's print-job field is an integer)
        _int("LULU_PRODUCTION_DELAY", 60, 0, 100_000)
    return OrderSettings(
        pod_provider=_choice("POD_PROVIDER", "local", ("local", "lulu")),
        poll_interval=_float("ORDER_POLL_INTERVAL", 300.0, 0.05, 86400.0),
        story_wait=_float("ORDER_STORY_WAIT_SECONDS", 86400.0, 1.0, 30 * 86400.0),
        shipping_level=e.get("LULU_SHIPPING_LEVEL", "MAIL").strip().upper() or "MAIL",
        contact_email=e.get("LULU_CONTACT_EMAIL", "").strip() or None,
        production_delay=int(float(delay)) if delay else None,  # checked at boot (pipeline.operations.boot_check)
        files_base_url=e.get("PRINT_FILES_BASE_URL", "").strip() or None,
        stripe_secrets=tuple(s.strip() for s in e.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip()),
        stripe_tolerance=_float("STRIPE_SIGNATURE_TOLERANCE", 300.0, 1.0, 86400.0),
        stripe_require_signature=e.get("STRIPE_REQUIRE_SIGNATURE", "").lower() in ("1", "true", "yes"),
        stripe_mode=stripe_mode(e),
        stripe_secret_key=e.get("STRIPE_SECRET_KEY", "").strip() or None,
        stripe_api_base=e.get("STRIPE_API_BASE", "").strip() or None,
        default_phone=" ".join(e.get("LULU_DEFAULT_PHONE_NUMBER", "").split()) or None,
        lulu_webhook_secret=e.get("LULU_WEBHOOK_SECRET") or e.get("LULU_CLIENT_SECRET", ""),
    )


def stripe_mode(env: Mapping[str, str]) -> str:
    """The deployment's Stripe mode, ``live`` or ``test``: STRIPE_MODE, else the mode of
    STRIPE_SECRET_KEY (``sk_live_``/``rk_live_`` or ``sk_test_``/``rk_test_``, Stripe's key
    prefixes), else ``live``: the safe default, where a test-mode payment never prints a real
    book (a development setup says STRIPE_MODE=test). A mode that contradicts the key is a
    configuration error (SystemExit, like the other settings)."""
    key = env.get("STRIPE_SECRET_KEY", "").strip()
    from_key = ("live" if key.startswith(("sk_live_", "rk_live_"))
                else "test" if key.startswith(("sk_test_", "rk_test_")) else None)
    explicit = env.get("STRIPE_MODE", "").strip().lower() or None
    if explicit not in (None, "live", "test"):
        raise SystemExit(f"configuration error: STRIPE_MODE={explicit!r}; choose one of live, test")
    if explicit and from_key and explicit != from_key:
        raise SystemExit(f"configuration error: STRIPE_MODE={explicit} but STRIPE_SECRET_KEY is a {from_key}-mode key")
    return explicit or from_key or "live"


_lock = threading.Lock()
_providers: dict[tuple[int, str], lulu.PrintProvider] = {}


def print_provider(name: str | None = None) -> lulu.PrintProvider:
    """The print provider by name (an order follows the one its job was created with),
    default POD_PROVIDER. One per process."""
    key = (os.getpid(), name or order_settings().pod_provider)
    with _lock:
        if key not in _providers:
            if key[1] == "lulu":
                try:
                    from pipeline.kernel.quota import QuotaHooks

                    hooks: Any = QuotaHooks()
                except ImportError:  # quotas are optional for the client itself
                    hooks = None
                _providers[key] = lulu.LuluClient.from_env(hooks=hooks)
            elif key[1] == "local":
                _providers[key] = lulu.LocalPrintShop.from_env(settings().local_storage_root)
            else:
                raise PermanentStepError(f"Unknown print provider {key[1]!r} (POD_PROVIDER: local or lulu).")
        return _providers[key]


# --- payment ------------------------------------------------------------------------------------

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
            oid = otx.order_by_payment_intent(c, ev.payment_intent_id)
    return oid


def _hold(order_id: str | None, ev: PaymentEvent, why: str, timer: _Timer) -> StepResult:
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
            if otx.print_state(c, oid) is not None:
                otx.record_held(c, oid, NEEDS_CONFIRMATION, msg, {**ev.summary(), "event": ev.event_id})
    log.warning("order %s: stripe event %s needs confirmation", oid, ev.event_id)
    return StepResult(Outcome.STOPPED, msg, timer.timings, context={"order": oid, "event": ev.event_id})


def _refuse(order_id: str | None, msg: str, timer: _Timer, event_id: str | None = None) -> StepResult:
    if order_id is not None:
        with autocommit() as c:
            if otx.print_state(c, order_id) is not None:
                otx.record_event(c, order_id, "stripe", "invalid_event", "rejected", msg, event_id=event_id)
    log.warning("order %s: %s", order_id, msg)
    return StepResult(Outcome.STOPPED, msg, timer.timings)


def _confirm(order_id: str | None, claimed: PaymentEvent, why: str, attempt: Attempt, timer: _Timer
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
    timer = _Timer()
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
        row = otx.lock_order(c, oid)
        if row is None:
            return StepResult(Outcome.STOPPED, "order not found", timer.timings, context=ctx)
        moves_on = row["status"] == "paid" and row["pod_order_id"] is None
        if otx.seen_event(c, "stripe", ev.event_id):
            # The same event again (at-least-once delivery): nothing changes. A paid order still
            # moves on, in case the first delivery's run died before enqueueing the print files.
            return StepResult(Outcome.ALREADY_DONE if moves_on else Outcome.STOPPED,
                              f"duplicate event {ev.event_id}", timer.timings, context=ctx)
        detail = ev.summary()
        if ev.livemode != (o.stripe_mode == "live"):
            # A test-mode payment must never pay a live order (nor a live one a test deployment's).
            msg = (f"A {'live' if ev.livemode else 'test'}-mode Stripe event (livemode {str(ev.livemode).lower()}) "
                   f"on a {o.stripe_mode}-mode deployment (STRIPE_MODE): ignored, nothing moved.")
            otx.record_event(c, oid, "stripe", ev.type, "ignored", msg, {**detail, "ignored": "mode"}, ev.event_id)
            log.warning("order %s: stripe event %s ignored: livemode %s on a %s deployment", oid, ev.event_id,
                        ev.livemode, o.stripe_mode)
            return StepResult(Outcome.ALREADY_DONE if moves_on else Outcome.STOPPED, msg, timer.timings, context=ctx)
        owner = otx.order_by_payment_intent(c, ev.payment_intent_id) if ev.payment_intent_id else None
        action, msg = _decide(row, ev, oid, owner if owner not in (None, oid) else None)
        if ev.confirmed_by_api:
            detail["confirmed"] = "stripe_api"
        if action == "fail":
            done = otx.fail_order(c, oid, msg, from_statuses=("pending_payment", "paid"), source="stripe",
                                  kind=ev.type, detail=detail, event_id=ev.event_id)
        else:
            outcomes: dict[str, otx.Outcome] = {"pay": "applied", "reject": "rejected", "note": "noted"}
            outcome = outcomes.get(action, "ignored")
            done = otx.record_event(c, oid, "stripe", ev.type, outcome, msg, detail, ev.event_id)
            if done and action == "pay":
                intent = ev.payment_intent_id or ev.object_id
                # The money is taken either way (recorded on the row); an order whose story is not
                # its user's (or is gone) is never printed: failed, saying it needs a refund decision.
                refused = otx.refuse_not_printable(c, oid, ("pending_payment",), payment=(intent, "stripe"))
                if refused:
                    action, msg = "fail", refused
                    log.warning("order %s: paid but not printable (story %s): needs a refund decision", oid,
                                row["story_id"])
                else:
                    done = otx.mark_paid(c, oid, intent, "stripe")
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


# --- print files --------------------------------------------------------------------------------

def _step_fail(order_id: str, step: otx.Step, prefix: str, attempt: Attempt) -> Any:
    def fail(msg: str) -> None:
        with autocommit() as c:
            otx.fail_order(c, order_id, f"{prefix}: {msg}", from_statuses=("paid",), step=step,
                           detail={"attempt": attempt.number, "task_id": attempt.task_id})
    return fail


def _step_release(order_id: str, step: otx.Step, attempt: Attempt) -> Any:
    def release(msg: str | None) -> None:
        with autocommit() as c:
            otx.release_step(c, order_id, step, msg, attempt.number, attempt.task_id)
    return release


def _not_printable(order_id: str, state: Any, timer: _Timer, ctx: dict[str, Any]) -> StepResult | None:
    """A paid order whose story is not its user's (or is gone) failed with the reason (the
    guarded statement decides), as a StepResult; None when the story is the order's own."""
    if state["status"] != "paid" or (state["story_status"] is not None
                                     and state["story_user_id"] == state["user_id"]):
        return None
    with autocommit() as c:
        refused = otx.refuse_not_printable(c, order_id, ("paid",))
    if refused is None:  # corrected meanwhile, or no longer paid: the caller's next look decides
        return None
    log.warning("order %s: not printable (story %s): failed, needs a refund decision", order_id, state["story_id"])
    return StepResult(Outcome.FAILED, refused, timer.timings, context=ctx)


def make_print_files(order_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """Print-ready interior and cover PDFs at orders/<order_id>/print/, for a paid order whose
    story is completed."""
    s = settings()
    timer = _Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = otx.claim_print_files(c, order_id, s.step_lease_seconds)
        state = otx.print_state(c, order_id)
        pages = [dict(p) for p in otx.book_pages(c, str(state["story_id"]))] if claim and state else []
    if state is None:
        return StepResult(Outcome.STOPPED, "order not found", timer.timings)
    ctx = {"order": order_id, "story": str(state["story_id"])}
    if claim is None:
        if refused := _not_printable(order_id, state, timer, ctx):
            return refused
        if state["status"] != "paid":
            return StepResult(Outcome.STOPPED, f"order is {state['status']}", timer.timings, context=ctx)
        if state["files_status"] == "completed":
            return StepResult(Outcome.ALREADY_DONE, "print files exist", timer.timings, context=ctx)
        if state["story_status"] == "failed":
            msg = (f"The story of this order failed ({(state['story_error'] or 'no reason recorded')[:200]}); "
                   "retry the story, then the order.")
            with autocommit() as c:
                otx.fail_order(c, order_id, msg, from_statuses=("paid",), kind="story_failed")
            return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
        if state["story_status"] != "completed":
            o = order_settings()
            waited = state["paid_for"] or timedelta(0)
            if waited.total_seconds() > o.story_wait:
                msg = (f"The story did not complete within {o.story_wait / 3600:g} h of the payment "
                       f"(it is {state['story_status']}); nothing was printed.")
                with autocommit() as c:
                    otx.fail_order(c, order_id, msg, from_statuses=("paid",), kind="story_timeout")
                return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
            # Never a half book: come back when the story may be done (not a failure).
            return StepResult(Outcome.STOPPED, f"waiting for the story ({state['story_status']})", timer.timings,
                              context={**ctx, AGAIN_IN: o.story_wait_poll})
        if state["files_status"] == "processing":
            return _held_elsewhere("print files in progress", state["files_age"], attempt, timer)
        return StepResult(Outcome.STOPPED, f"print files are {state['files_status']}", timer.timings, context=ctx)
    try:
        # An address the print shop cannot ship to is the operator's to correct: say so now,
        # before the print files are made (submit_print_job checks it again, it may change).
        lulu_address(state["shipping_address"], email=state["email"], default_phone=order_settings().default_phone)
    except PermanentStepError as e:
        msg = f"Print job: {e}"
        _step_fail(order_id, "print_files", "Print job", attempt)(str(e))
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)

    def work() -> dict[str, Any]:
        spec = product_spec(state["product_type"])
        missing = [p["page_number"] for p in pages if not p["personalized_image_key"]]
        if not pages or missing:
            raise PermanentStepError(f"The story has no personalized picture for page(s) {missing or 'all'}.")
        plan = interior_plan(len(pages), spec)
        with timer.phase("provider"):
            cover_pt = print_provider().cover_dimensions(spec.pod_package_id, plan.total)
        theme = resolve_theme(state["story_theme"] or "")
        with timer.phase("render"):
            from pipeline.orders.print_files import make_print_files as render

            return cpu.run(render, order_id, state["title"] or "", state["child_name"],
                           theme.title if theme else state["story_theme"], pages, spec.pod_package_id,
                           cover_pt, state["created_at"].isoformat(), timeout=300)

    try:
        info = _guarded(work, attempt=attempt, fail=_step_fail(order_id, "print_files", "Print files", attempt),
                        release=_step_release(order_id, "print_files", attempt), what="Making the print files")
    except _Failed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    timer.timings.update({k: info.pop(k) for k in ("render_ms", "store_ms") if k in info})
    with timer.phase("record"), autocommit() as c:
        done = otx.complete_step(c, order_id, "print_files", info)
    return StepResult(Outcome.DONE if done else Outcome.ALREADY_DONE,
                      f"{info['interior_pages']} interior pages ({info['blank_pages']} blank), cover "
                      f"{info['cover_pt'][0]:g}x{info['cover_pt'][1]:g} pt", timer.timings, context=ctx)


# --- the print job ------------------------------------------------------------------------------

# Countries without postcodes, where a missing one is not an error.
_NO_POSTCODE = {"AE", "HK", "MO", "QA", "JM", "BS", "BZ", "FJ", "GH", "TV"}
# Lulu's create-print-job schema, shipping_address (https://api.lulu.com/docs/, its OpenAPI file openapi_public.yml,
# "Print-Jobs_create"): required name, street1, city, country_code, postcode, phone_number and
# email; country_code 2 letters; postcode at most 64; phone_number at most 20 and matching
# PHONE_PATTERN; state_code (2 or 3 letters, ISO 3166-2) "required for some countries (e.g. US,
# MX, CA, AU)"; recipient_tax_id "required for shipping addresses to Brazil, Chile, and Mexico".
# "If neither the account nor the shipping address contain a phone number, the Print-Job can
# not be created" (the guide's "Create a Print-Job"): LULU_DEFAULT_PHONE_NUMBER stands for the
# account's default, which the API does not show us.
STATE_REQUIRED = {"US", "CA", "AU", "MX"}
TAX_ID_REQUIRED = {"BR", "CL", "MX"}
PHONE_PATTERN = re.compile(r"^\+?[\d\s\-./()]{8,20}$")
_MAX_LEN = {"postcode": 64, "phone_number": 20}
_MAX_OTHER = 255  # no limit in Lulu's schema: ours, so a runaway value is refused, never truncated


def lulu_address(raw: Any, *, email: str | None = None, default_phone: str | None = None) -> dict[str, str]:
    """The order's shipping_address in Lulu's fields, complete as Lulu's schema requires, or
    PermanentStepError saying what to correct (before anything is sent to Lulu).

    Accepts Lulu's own field names and Stripe's shipping shape (``{"name", "phone", "address":
    {"line1", "postal_code", ...}}``). ``email``: used when the address has none (the parent's,
    users.email); ``default_phone``: when it has no phone (LULU_DEFAULT_PHONE_NUMBER)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, Mapping):
        raise PermanentStepError("The order has no shipping address; add one and retry the order.")
    nested: Mapping[str, Any] = raw["address"] if isinstance(raw.get("address"), Mapping) else {}
    top: Mapping[str, Any] = raw

    def pick(*names: str) -> str:
        for n in names:
            for src in (top, nested):
                v = src.get(n)
                if isinstance(v, (str, int)) and str(v).strip():
                    return " ".join(str(v).split())
        return ""

    out = {
        "name": pick("name", "full_name"), "organization": pick("organization", "company"),
        "street1": pick("street1", "line1", "address_line1", "address1"),
        "street2": pick("street2", "line2", "address_line2", "address2"),
        "city": pick("city", "locality", "town"), "state_code": pick("state_code", "state", "region"),
        "postcode": pick("postcode", "postal_code", "zip", "zip_code"),
        "country_code": pick("country_code", "country").upper(),
        "phone_number": pick("phone_number", "phone") or (default_phone or ""),
        "email": pick("email") or " ".join((email or "").split()),
        "recipient_tax_id": pick("recipient_tax_id", "tax_id"),
    }
    country = out["country_code"]
    missing = [k for k in ("street1", "city", "country_code") if not out[k]]
    if not out["name"] and not out["organization"]:
        missing.insert(0, "name")
    if not out["postcode"] and country not in _NO_POSTCODE:
        missing.append("postcode")
    if country in STATE_REQUIRED and not out["state_code"]:
        missing.append(f"state_code, required for {country}")
    if country in TAX_ID_REQUIRED and not out["recipient_tax_id"]:
        missing.append(f"recipient_tax_id, required for {country}")
    if not out["phone_number"]:
        missing.append("phone_number (carriers need one; or set LULU_DEFAULT_PHONE_NUMBER)")
    if not out["email"]:
        missing.append("email")
    if missing:
        raise PermanentStepError(f"The shipping address is incomplete (missing {', '.join(missing)}); "
                                 "correct it and retry the order.")
    problems: list[str] = []
    if len(country) != 2 or not country.isalpha():
        raise PermanentStepError(f"The shipping address's country must be a 2-letter code (got {country[:20]!r}).")
    state = out["state_code"].upper()
    if state.startswith(f"{country}-"):  # the full ISO 3166-2 form, "US-NC"
        state = state[len(country) + 1:]
    if state and not (2 <= len(state) <= 3 and state.isalnum()):
        if country in STATE_REQUIRED:
            problems.append(f"state_code must be the 2 or 3 letter code (ISO 3166-2), got {out['state_code'][:40]!r}")
        state = ""  # optional elsewhere: a region's name is not a code, and the rest ships
    out["state_code"] = state
    if not PHONE_PATTERN.match(out["phone_number"]):
        problems.append(f"phone_number must be 8 to 20 digits, spaces or +-./() (got {len(out['phone_number'])} "
                        "characters)")
    if "@" not in out["email"] or len(out["email"]) > _MAX_OTHER:
        problems.append("email is not an email address")
    for k, v in out.items():
        limit = _MAX_LEN.get(k, _MAX_OTHER)
        if len(v) > limit and k not in ("phone_number", "email"):
            problems.append(f"{k} is too long ({len(v)} characters; at most {limit})")
    if problems:
        raise PermanentStepError(f"The shipping address cannot be shipped by Lulu: {'; '.join(problems)}; "
                                 "correct it and retry the order.")
    return {k: v for k, v in out.items() if v}


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
    return f"{order_id}-{run}"


def submit_print_job(order_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """The order's print job at the provider, created once; pod_order_id recorded."""
    s = settings()
    timer = _Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = otx.claim_print_job(c, order_id, s.step_lease_seconds)
        state = otx.print_state(c, order_id)
    if state is None:
        return StepResult(Outcome.STOPPED, "order not found", timer.timings)
    ctx = {"order": order_id, "story": str(state["story_id"])}
    if claim is None:
        if state["pod_order_id"] and state["status"] in ("paid", "fulfilled"):
            return StepResult(Outcome.ALREADY_DONE, f"print job {state['pod_order_id']}", timer.timings, context=ctx)
        if refused := _not_printable(order_id, state, timer, ctx):
            return refused
        if state["status"] != "paid":
            return StepResult(Outcome.STOPPED, f"order is {state['status']}", timer.timings, context=ctx)
        if state["files_status"] != "completed":
            return StepResult(Outcome.STOPPED, f"print files are {state['files_status'] or 'not made'}",
                              timer.timings, context=ctx)
        if state["job_status"] == "processing":
            return _held_elsewhere("print job being created", state["job_age"], attempt, timer)
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

    try:
        job = _guarded(work, attempt=attempt, fail=_step_fail(order_id, "print_job", "Print job", attempt),
                       release=_step_release(order_id, "print_job", attempt), what="Sending the print job")
    except _Failed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    with timer.phase("record"), autocommit() as c:
        recorded = otx.record_print_job(c, order_id, provider.name, job.id, job.to_json())
        if recorded:
            otx.record_event(c, order_id, "worker", "print_job", "applied",
                             f"Print job {job.id} {'found' if found else 'created'} at "
                             f"{PROVIDER_LABEL.get(provider.name, provider.name)} ({job.status}).",
                             {"job": job.id, "run": claim["run"], "found": found})
        after = otx.print_state(c, order_id) if not recorded else None
    ctx["print_job"] = job.id
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
        otx.record_event(c, order_id, "worker", "print_job", "noted", note, {"job": job.id})
    return StepResult(Outcome.STOPPED, note, timer.timings, context=ctx)


# --- the print job's lifecycle ------------------------------------------------------------------

def _apply_status(order_id: str, job: lulu.PrintJob, source: str) -> str:
    """The order moved as the provider's job says (poll or webhook); returns what happened:
    "fulfilled", "shipped", "failed" or "unchanged"."""
    seen = job.to_json()
    label = PROVIDER_LABEL.get(source, source)
    src: otx.Source = source if source in ("lulu", "local") else "worker"  # type: ignore[assignment]
    with transaction() as c:
        if job.problem:
            msg = f"The print job {job.id} was {job.status.lower()} by {label}: {job.reason()}"
            moved = otx.fail_order(c, order_id, msg, from_statuses=("paid", "fulfilled"), source=src,
                                   kind=f"print_job.{job.status.lower()}", detail=seen, pod_order_id=job.id)
            otx.note_job_seen(c, order_id, seen)
            return "failed" if moved else "unchanged"
        otx.record_event(c, order_id, src, f"print_job.{job.status.lower()}", "noted",
                         f"Print job {job.id} is {job.status}" + (f": {job.message[:200]}" if job.message else "."),
                         seen, event_id=f"{job.id}:{job.status}:{job.changed or ''}")
        return otx.apply_job_status(c, order_id, job.id, job.status, job.changed, job.tracking_id, seen)


def poll_print_job(order_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """Ask the provider how the print job is doing and move the order; asks to come back
    (``AGAIN_IN``) every ORDER_POLL_INTERVAL until the order is shipped or failed."""
    o = order_settings()
    timer = _Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = otx.claim_poll(c, order_id, 0.5 * o.poll_interval)
        state = None if claim else otx.print_state(c, order_id)
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
            otx.record_event(c, order_id, "worker", "print_status", "retried", str(e)[:500],
                             {"attempt": attempt.number})
        return StepResult(Outcome.STOPPED, f"print job {job_id}: {e}", timer.timings,
                          context={**ctx, AGAIN_IN: max(o.poll_countdown, backoff(0, e.retry_after))})
    except PermanentStepError as e:
        msg = f"Following print job {job_id} failed: {e}"
        with autocommit() as c:
            moved = otx.fail_order(c, order_id, msg, from_statuses=("paid", "fulfilled"), kind="print_status")
        return StepResult(Outcome.FAILED if moved else Outcome.STOPPED, msg, timer.timings, context=ctx)
    with timer.phase("record"):
        what = _apply_status(order_id, job, provider.name)
    ctx["provider_status"] = job.status
    if what in ("shipped", "failed") or job.status == lulu.SHIPPED or job.problem:
        return StepResult(Outcome.DONE if what != "failed" else Outcome.FAILED, f"{job.status}: {what}",
                          timer.timings, context=ctx)
    return StepResult(Outcome.STOPPED, f"print job {job_id} is {job.status}", timer.timings,
                      context={**ctx, AGAIN_IN: o.poll_countdown})


def handle_lulu_webhook(payload: str, headers: Mapping[str, Any] | None, attempt: Attempt = FIRST_TRY) -> StepResult:
    """A PRINT_JOB_STATUS_CHANGED webhook, as the external API received it (raw body and
    headers): verified (HMAC-SHA256 of the raw body with the API secret, header
    Lulu-HMAC-SHA256), then the same move as a poll."""
    timer = _Timer()
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
        state = otx.print_state(c, order_id)
        if state is not None and state["pod_order_id"] is None and state["status"] == "paid" \
                and line_item_id(order_id, int(state["job_run"] or 1)) in job.line_item_external_ids:
            # Lulu reports the job before the worker that created it recorded it (it died in
            # between): it is this order's job for this print run, so record it now.
            if otx.record_print_job(c, order_id, "lulu", job.id, job.to_json()):
                otx.record_event(c, order_id, "lulu", "print_job", "applied",
                                 f"Print job {job.id} recorded from Lulu's webhook.", {"job": job.id})
            state = otx.print_state(c, order_id)
    if state is None:
        return StepResult(Outcome.STOPPED, "order not found", timer.timings, context=ctx)
    if state["pod_order_id"] != job.id:
        return StepResult(Outcome.STOPPED, f"not this order's current print job ({state['pod_order_id']})",
                          timer.timings, context=ctx)
    with timer.phase("record"):
        what = _apply_status(order_id, job, "lulu")
    return StepResult(Outcome.DONE if what != "unchanged" else Outcome.ALREADY_DONE, f"{job.status}: {what}",
                      timer.timings, context=ctx)


# --- operators: stuck orders, retry, status -------------------------------------------------------

def _stuck_queries() -> tuple[tuple[str, str], ...]:
    return (
        # paid, story finished (either way) or not the order's own (its claim refuses it), print
        # files never made or their worker died
        ("orders.prepare_print", f"""
            SELECT o.id FROM orders o LEFT JOIN stories s ON s.id = o.story_id
              LEFT JOIN order_steps f ON f.order_id = o.id AND f.step = 'print_files'
             WHERE o.status = 'paid' AND (s.status IN ('completed', 'failed') OR NOT {otx.OWN_STORY}) AND (
                   (f.order_id IS NULL AND o.updated_at < now() - make_interval(secs => :pending_after))
                OR (f.status = 'pending' AND f.updated_at < now() - make_interval(secs => :pending_after))
                OR (f.status = 'processing' AND f.updated_at < now() - make_interval(secs => :lease)))
             LIMIT :limit"""),
        # paid with print files and no print job (pod_order_id): the message was lost or the
        # worker died creating it (the re-run finds the job it may have created)
        ("orders.submit_print", """
            SELECT o.id FROM orders o
              JOIN order_steps f ON f.order_id = o.id AND f.step = 'print_files' AND f.status = 'completed'
              LEFT JOIN order_steps j ON j.order_id = o.id AND j.step = 'print_job'
             WHERE o.status = 'paid' AND o.pod_order_id IS NULL AND (
                   (j.order_id IS NULL AND f.updated_at < now() - make_interval(secs => :pending_after))
                OR (j.status = 'pending' AND j.updated_at < now() - make_interval(secs => :pending_after))
                OR (j.status = 'processing' AND j.updated_at < now() - make_interval(secs => :lease)))
             LIMIT :limit"""),
        # a print job nobody has asked about for two poll intervals: its poll chain was lost
        ("orders.poll_print", """
            SELECT o.id FROM orders o
              JOIN order_steps j ON j.order_id = o.id AND j.step = 'print_job' AND j.status = 'completed'
             WHERE o.status IN ('paid', 'fulfilled') AND o.pod_order_id IS NOT NULL
               AND COALESCE(j.checked_at, j.updated_at) < now() - make_interval(secs => :poll_stale)
             LIMIT :limit"""),
    )


def find_stuck_orders(*, lease: float | None = None, pending_after: float | None = None,
                      limit: int = 500) -> list[Any]:
    """Orders that should be moving and are not (read-only), as pipeline.operations.ops.Stuck items."""
    from pipeline.operations.ops import Stuck

    s, o = settings(), order_settings()
    params = {"lease": lease if lease is not None else s.step_lease_seconds,
              "pending_after": pending_after if pending_after is not None else s.step_lease_seconds,
              "poll_stale": 2 * o.poll_interval + 60, "limit": limit}
    found: list[Any] = []
    with transaction() as c:
        for task, sql in _stuck_queries():
            found += [Stuck(task, {"order_id": str(r[0])}, "stale") for r in c.execute(text(sql), params)]
        if o.stripe_secret_key:
            # Genuine payment events that wait for confirmation (no key then, or Stripe was
            # unavailable): confirmed with Stripe's API, for orders still waiting for a payment.
            held = c.execute(text(
                f"""SELECT x.order_id, x.event_id FROM ({otx.OPEN_HELD_SQL}) x JOIN orders o ON o.id = x.order_id
                     WHERE o.status = 'pending_payment' LIMIT :limit"""), {**params, "kind": NEEDS_CONFIRMATION})
            found += [Stuck("orders.confirm_payment", {"order_id": str(r[0]), "event_id": str(r[1])}, "unconfirmed")
                      for r in held]
    return found


def sweep_orders(*, lease: float | None = None, pending_after: float | None = None, limit: int = 500,
                 dry_run: bool = False) -> list[Any]:
    """Re-enqueue stuck orders. Safe beside live workers and twice: each step's claim decides."""
    from workers.app import app

    stuck = find_stuck_orders(lease=lease, pending_after=pending_after, limit=limit)
    if not dry_run:
        for item in stuck:
            app.send_task(item.task, kwargs=item.kwargs, queue="orders")  # confirm_payment: default is fine too
    return stuck


@dataclass
class OrderRetry:
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
        row = c.execute(text(
            f"""SELECT o.status, o.paid_at, o.fulfilled_at, o.pod_order_id, s.status AS story_status,
                      j.status AS job_status, j.result->>'status' AS provider_status, j.run,
                      {otx.OWN_STORY} AS own_story
                 FROM orders o LEFT JOIN stories s ON s.id = o.story_id
                 LEFT JOIN order_steps j ON j.order_id = o.id AND j.step = 'print_job'
                WHERE o.id = :id FOR UPDATE OF o"""), {"id": order_id}).mappings().first()
        if row is None:
            return OrderRetry(order_id, False, "no such order")
        held = otx.open_held(c, order_id, NEEDS_CONFIRMATION) if row["paid_at"] is None else []
        if held and row["status"] == "pending_payment":
            return _confirm_held(order_id, held, dry_run)
        if row["status"] != "failed":
            return OrderRetry(order_id, False, f"order is {row['status']}, not failed: nothing to retry")
        reason = otx.last_failure(c, order_id) or "no reason recorded"
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
            new_run = row["pod_order_id"] is not None  # a recorded job that is dead: a new one
            c.execute(text(
                """UPDATE order_steps SET status = 'pending', checked_at = NULL,
                          run = run + CASE WHEN step = 'print_job' AND :new_run THEN 1 ELSE 0 END,
                          result = CASE WHEN step = 'print_job' THEN NULL ELSE result END
                    WHERE order_id = :id"""), {"id": order_id, "new_run": new_run})
            c.execute(text(
                """UPDATE orders SET status = 'paid', pod_order_id = NULL, fulfilled_at = NULL
                    WHERE id = :id AND status = 'failed'"""), {"id": order_id})
        else:
            c.execute(text("UPDATE order_steps SET checked_at = NULL WHERE order_id = :id AND step = 'print_job'"),
                      {"id": order_id})
            c.execute(text(
                """UPDATE orders SET status = CASE WHEN fulfilled_at IS NULL THEN 'paid' ELSE 'fulfilled' END
                    WHERE id = :id AND status = 'failed'"""), {"id": order_id})
        otx.record_event(c, order_id, "operator", "retry", "retried", f"Retried ({action}) after: {reason}",
                         {"previous_pod_order_id": row["pod_order_id"], "run": row["run"]})
    from workers.app import app

    task = "orders.prepare_print" if job_dead else "orders.poll_print"
    app.send_task(task, kwargs={"order_id": order_id}, queue="orders")  # after the commit
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
    from workers.app import app

    for event_id in held:
        app.send_task("orders.confirm_payment", kwargs={"order_id": order_id, "event_id": event_id}, queue="orders")
    return OrderRetry(order_id, True, f"retried (confirming {', '.join(held)} with Stripe)", action)


def order_report(order_id: str) -> dict[str, Any] | None:
    with transaction() as c:
        rep = otx.report(c, order_id)
        if rep is not None:
            rep["needs_confirmation"] = otx.open_held(c, order_id, NEEDS_CONFIRMATION)
        return rep


def order_summary() -> dict[str, int]:
    """Orders by status, plus ``payment_needs_confirmation`` (orders with a genuine payment event
    waiting for confirmation), ``payment_wrong_mode`` (payment events ignored because their
    Stripe mode is not the deployment's) and ``paid_not_printable`` (paid orders refused because
    their story is not their user's or is gone: each needs a refund decision)."""
    with transaction() as c:
        counts = otx.summary(c)
        held = c.execute(text(f"SELECT count(DISTINCT x.order_id) FROM ({otx.OPEN_HELD_SQL}) x"),
                         {"kind": NEEDS_CONFIRMATION}).scalar()
        counts["payment_needs_confirmation"] = int(held or 0)
        counts["payment_wrong_mode"] = int(c.execute(text(
            "SELECT count(*) FROM order_events WHERE source = 'stripe' AND detail->>'ignored' = 'mode'")).scalar() or 0)
        counts["paid_not_printable"] = int(c.execute(text(
            """SELECT count(*) FROM orders o WHERE o.status = 'failed' AND o.paid_at IS NOT NULL
                  AND EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.kind = :kind)
                  AND NOT EXISTS (SELECT 1 FROM order_events r WHERE r.order_id = o.id AND r.kind = 'retry'
                                     AND r.created_at > (SELECT max(e.created_at) FROM order_events e
                                                          WHERE e.order_id = o.id AND e.kind = :kind))"""),
            {"kind": otx.NOT_PRINTABLE}).scalar() or 0)
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


# --- as the external API does it (demo, tools) ------------------------------------------------------

def submit_order(story_id: str, *, product_type: str = "hardcover_book", amount: int = 2999,
                 currency: str = "usd", shipping_address: dict[str, Any] | None = None) -> tuple[str, str]:
    """Insert an order for a story as the external API does when checkout starts; returns
    (order id, payment intent id)."""
    intent = f"pi_demo_{uuid.uuid4().hex[:20]}"
    address = shipping_address or {"name": "Sam Reader", "street1": "1 Example Street", "city": "Raleigh",
                                   "state_code": "NC", "postcode": "27601", "country_code": "US",
                                   "phone_number": "+1 919 555 0100"}
    with transaction() as c:
        order_id = str(c.execute(text(
            """INSERT INTO orders (user_id, story_id, product_type, amount, currency, shipping_address,
                                   payment_provider, payment_intent_id)
               SELECT user_id, id, :product, :amount, :currency, CAST(:address AS jsonb), 'stripe', :pi
                 FROM stories WHERE id = :story RETURNING id"""),
            {"story": story_id, "product": product_type, "amount": amount, "currency": currency,
             "address": json.dumps(address), "pi": intent}).scalar())
    return order_id, intent


def simulated_payment(order_id: str, payment_intent_id: str, amount: int, currency: str) -> dict[str, Any]:
    """The kwargs the external API publishes orders.confirm_payment with after Stripe's
    ``payment_intent.succeeded`` webhook: the raw body and its signature (signed with
    STRIPE_WEBHOOK_SECRET when set, so the worker verifies it as it would Stripe's)."""
    from pipeline.orders.stripe_events import event_payload, sign

    o = order_settings()
    body = event_payload(f"evt_demo_{uuid.uuid4().hex[:20]}", PAYMENT_SUCCEEDED, {
        "id": payment_intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
        "currency": currency, "status": "succeeded", "metadata": {"order_id": order_id}},
        livemode=o.stripe_mode == "live")  # the payment this deployment would get
    secrets = o.stripe_secrets
    return {"order_id": order_id, "payload": body, "signature": sign(body, secrets[0]) if secrets else None,
            "received_at": time.time()}
