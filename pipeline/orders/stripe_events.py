"""Stripe webhook events as the external API received them: signature check, timing, parsing,
and confirmation of an event with Stripe's API. Built on Stripe's official ``stripe`` package.

Signature (https://docs.stripe.com/webhooks#verify-events): the ``Stripe-Signature`` header is
``t=<unix time>,v1=<hex>[,v1=...]``; each ``v1`` is HMAC-SHA256 of ``"{t}.{raw body}"`` keyed
with the endpoint's signing secret (``whsec_...``). ``stripe.Webhook.construct_event`` checks it
(and parses the event); a payload is genuine if it verifies with any configured secret (two
during a secret rotation). The raw body must be the exact bytes Stripe sent.

Timing: Stripe's tolerance (300 s) bounds the time between Stripe signing the payload and the
webhook **arriving** at our endpoint; it guards against a captured payload replayed later. It
is checked against ``received_at`` (when the external API received the webhook, passed with the
task), never against when a worker gets to the message: a queue backlog, workers down for a
deploy or a broker redelivery must not turn a genuine payment into a "replay". A timestamp up
to the tolerance ahead of the arrival (clock skew) is accepted, as Stripe's libraries do. A
genuine signature whose timing cannot be shown (no ``received_at`` and older than the
tolerance now, or already too old when it arrived) raises ``UnconfirmedEvent``: the caller
confirms the event with Stripe's API (``retrieve_event``, https://docs.stripe.com/api/events/retrieve:
events of the last 30 days) or records it as needing confirmation.

Parsing keeps only what the order workers need, and is strict about shapes: a payload that is
not a Stripe event is rejected with a reason, never half-applied.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import stripe

from pipeline.kernel.errors import TransientStepError

DEFAULT_TOLERANCE = 300

# The event types the order workers act on; any other type is recorded and ignored.
PAYMENT_SUCCEEDED = "payment_intent.succeeded"
PAYMENT_FAILED = "payment_intent.payment_failed"
PAYMENT_CANCELED = "payment_intent.canceled"
CHARGE_REFUNDED = "charge.refunded"
# Stripe Checkout (https://docs.stripe.com/api/checkout/sessions/object,
# https://docs.stripe.com/checkout/fulfillment): a session is completed when the customer
# finishes it; ``payment_status`` "paid" says the money is there. A delayed payment method
# completes "unpaid" and sends async_payment_succeeded (or _failed) later.
CHECKOUT_COMPLETED = "checkout.session.completed"
CHECKOUT_ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
CHECKOUT_ASYNC_FAILED = "checkout.session.async_payment_failed"
HANDLED = (PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_CANCELED, CHARGE_REFUNDED, CHECKOUT_COMPLETED,
           CHECKOUT_ASYNC_SUCCEEDED, CHECKOUT_ASYNC_FAILED)


class InvalidEvent(ValueError):
    """The payload is not a genuine, well-formed Stripe event (the message says why)."""


class UnconfirmedEvent(InvalidEvent):
    """The signature is Stripe's, but it cannot be shown that the webhook arrived within the
    tolerance of its signing: the event must be confirmed with Stripe's API before it counts.
    ``event`` is the payload's event (genuine content, unproven timing)."""

    def __init__(self, message: str, event: PaymentEvent) -> None:
        super().__init__(message)
        self.event = event


class StripeUnavailable(TransientStepError):
    """Stripe's API could not confirm an event now (network, 429, 5xx, a refused key)."""


def sign(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``payload`` (tests, the demo, tools), made by
    ``stripe.WebhookSignature.generate_signature_header``."""
    body = payload.decode() if isinstance(payload, bytes) else payload
    return str(stripe.WebhookSignature.generate_signature_header(body, secret, timestamp))


# A number of at least this is Unix milliseconds (JavaScript's ``Date.now()``): as seconds it
# would be after the year 5138, and as milliseconds it is after 1973-03-03.
MILLISECONDS_FROM = 1e11


def parse_received_at(value: Any) -> float | None:
    """``received_at`` of the task (when the API received the webhook) as Unix seconds: a number
    or numeric string of Unix seconds, or of Unix milliseconds when it is at least 1e11
    (``MILLISECONDS_FROM``: ``Date.now()``, ``System.currentTimeMillis()``), or an ISO 8601 string
    (a time without an offset is UTC). ValueError if it is neither, or not finite ("NaN" compares
    false with every bound, so it would pass any age as fresh; an infinity cannot be dated)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("received_at is not a time")
    if isinstance(value, (int, float)):
        return _finite(float(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = None
        if seconds is not None:
            return _finite(seconds)
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"received_at {text[:40]!r} is neither Unix seconds nor ISO 8601") from None
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    raise ValueError("received_at is not a time")


def _finite(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"received_at {seconds!r} is not a finite number of Unix seconds")
    return seconds / 1000.0 if abs(seconds) >= MILLISECONDS_FROM else seconds


def _timestamp(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            return int(value)
    raise InvalidEvent("the Stripe-Signature header has no timestamp")


def verify_event(payload: str | bytes, header: str | None, secrets: Iterable[str], *,
                 tolerance: float = DEFAULT_TOLERANCE, received_at: float | None = None,
                 now: float | None = None) -> PaymentEvent:
    """The PaymentEvent of a genuine webhook payload.

    ``received_at``: Unix seconds when the API received the webhook (None, or not finite: unknown).
    Raises InvalidEvent when the signature does not verify with any of ``secrets`` or the
    payload is not an event; UnconfirmedEvent when it verifies but its timing is not shown
    (see the module's docstring). Signature checks by ``stripe.Webhook.construct_event``
    with its own time check off (tolerance 0): the time is judged here, against the arrival.
    """
    keys = [s for s in secrets if s]
    if not keys:
        raise InvalidEvent("no Stripe webhook secret is configured (STRIPE_WEBHOOK_SECRET)")
    if not header:
        raise InvalidEvent("the Stripe-Signature header is missing")
    body = payload.decode() if isinstance(payload, bytes) else payload
    event: Any = None
    problem = ""
    for key in keys:
        try:
            event = stripe.Webhook.construct_event(body, header, key, tolerance=0)
            break
        except stripe.SignatureVerificationError as e:
            problem = str(e.user_message or e)
        except ValueError:
            raise InvalidEvent("the payload is not JSON") from None
    if event is None:
        raise InvalidEvent(f"the Stripe signature does not match the payload ({problem[:200]})")
    parsed = parse_event(event)
    signed_at = _timestamp(header)
    current = time.time() if now is None else now
    if received_at is not None and not math.isfinite(received_at):
        received_at = None  # NaN passes every comparison as fresh; an infinity has no age
    if received_at is not None and received_at > current + tolerance:
        raise UnconfirmedEvent(f"received_at is {int(received_at - current)} s in the future: the arrival time "
                               "is not believable", parsed)
    if received_at is None:
        if -tolerance <= current - signed_at <= tolerance:
            return parsed  # fresh even now: it certainly arrived in time
        raise UnconfirmedEvent(
            f"the Stripe signature is {int(current - signed_at)} s old (tolerance {int(tolerance)} s) and the "
            "task did not say when the webhook arrived (received_at)", parsed)
    age = received_at - signed_at
    if age > tolerance:
        raise UnconfirmedEvent(f"the Stripe signature was {int(age)} s old when the webhook arrived (tolerance "
                               f"{int(tolerance)} s): a replayed payload, or a late one", parsed)
    if -age > tolerance:
        raise UnconfirmedEvent(f"the Stripe signature is dated {int(-age)} s after the webhook arrived (tolerance "
                               f"{int(tolerance)} s): the clocks disagree", parsed)
    return parsed


def retrieve_event(event_id: str, api_key: str, *, api_base: str | None = None, timeout: float = 20.0
                   ) -> PaymentEvent:
    """The event as Stripe's API has it (``GET /v1/events/{id}`` through ``stripe.StripeClient``,
    https://docs.stripe.com/api/events/retrieve; Stripe keeps events 30 days).

    ``api_key``: a secret key or a restricted key that may read events. ``api_base``: another
    API host (tests, stripe-mock). Raises InvalidEvent when Stripe has no such event (it was
    not Stripe's, or is older than 30 days) or it is not one; StripeUnavailable (transient)
    when Stripe cannot answer now or refuses the key."""
    client = stripe.StripeClient(
        api_key, base_addresses={"api": api_base} if api_base else None, max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout))
    try:
        event = client.v1.events.retrieve(event_id)
    except stripe.InvalidRequestError as e:
        if e.http_status == 404:
            raise InvalidEvent(f"Stripe has no event {event_id} (not Stripe's, or older than 30 days)") from None
        raise InvalidEvent(f"Stripe refused to look up event {event_id}: {str(e.user_message or e)[:200]}") from None
    except (stripe.AuthenticationError, stripe.PermissionError) as e:
        raise StripeUnavailable(f"Stripe refused STRIPE_SECRET_KEY (HTTP {e.http_status}): "
                                f"{str(e.user_message or e)[:200]}") from None
    except stripe.RateLimitError as e:
        raise StripeUnavailable("Stripe's API is rate limiting (HTTP 429)",
                                retry_after=_retry_after(e)) from None
    except stripe.StripeError as e:  # APIConnectionError, APIError (5xx), unreadable replies
        raise StripeUnavailable(f"Stripe's API could not be reached or failed ({type(e).__name__}: "
                                f"{str(e.user_message or e)[:160]})") from None
    parsed = parse_event(event)
    if parsed.event_id != event_id:
        raise StripeUnavailable(f"asked Stripe for {event_id}, got {parsed.event_id}")
    return replace(parsed, confirmed_by_api=True)


def _retry_after(e: stripe.StripeError) -> float | None:
    from pipeline.kernel.errors import retry_after_seconds

    headers = e.headers or {}
    return retry_after_seconds(headers.get("Retry-After") or headers.get("retry-after"))


@dataclass(frozen=True)
class PaymentEvent:
    """One Stripe event, reduced to what an order needs."""

    event_id: str  # evt_...: at-least-once delivery repeats it; it counts once
    type: str
    created: int | None
    livemode: bool
    object_type: str  # "payment_intent", "charge" or "checkout.session"
    object_id: str  # pi_..., ch_... or cs_...
    payment_intent_id: str | None  # the intent itself, or the charge's / Checkout Session's intent
    amount: int | None  # smallest currency unit (a Checkout Session's amount_total)
    amount_received: int | None  # payment_intent: what was captured; checkout.session: amount_total once paid
    amount_refunded: int | None  # charge: refunded so far
    refunded: bool  # charge: fully refunded
    currency: str | None  # lower case, as Stripe writes it
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # last_payment_error.message / cancellation_reason, for people
    confirmed_by_api: bool = False  # read from Stripe's API (retrieve_event), not from a webhook
    payment_status: str | None = None  # checkout.session: "paid", "unpaid" or "no_payment_required"
    client_reference_id: str | None = None  # checkout.session: the API's reference (our order id)

    @classmethod
    def unknown(cls, event_id: str) -> PaymentEvent:
        """An event known only by its id (to be confirmed with Stripe's API)."""
        return cls(event_id=event_id, type="unknown", created=None, livemode=False, object_type="",
                   object_id="", payment_intent_id=None, amount=None, amount_received=None,
                   amount_refunded=None, refunded=False, currency=None)

    @property
    def order_id(self) -> str | None:
        """The order the API attached to the intent or Checkout Session (``metadata.order_id``,
        else a session's ``client_reference_id``), if any."""
        return self.metadata.get("order_id") or self.client_reference_id or None

    def summary(self) -> dict[str, Any]:
        """What is kept in the order's history (no card details, no customer data)."""
        return {k: v for k, v in {
            "type": self.type, "created": self.created, "livemode": self.livemode,
            "object": self.object_id, "payment_intent": self.payment_intent_id, "amount": self.amount,
            "amount_received": self.amount_received, "amount_refunded": self.amount_refunded,
            "refunded": self.refunded if self.object_type == "charge" else None,
            "currency": self.currency, "reason": self.reason, "payment_status": self.payment_status,
        }.items() if v is not None}


def _int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"{what} is not a whole number")
    return value


def _str(value: Any, what: str, limit: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidEvent(f"{what} is not a short string")
    return value


def parse_event(event: stripe.StripeObject | Mapping[str, Any] | str | bytes) -> PaymentEvent:
    """A PaymentEvent from a Stripe event (a ``stripe.Event``, parsed JSON or the raw body);
    InvalidEvent if it is not one."""
    if isinstance(event, stripe.StripeObject):
        event = event.to_dict()
    if isinstance(event, (str, bytes)):
        try:
            event = json.loads(event)
        except ValueError:
            raise InvalidEvent("the payload is not JSON") from None
    if not isinstance(event, Mapping):
        raise InvalidEvent("the event is not a JSON object")
    if event.get("object", "event") != "event":
        raise InvalidEvent(f"not a Stripe event (object {str(event.get('object'))[:40]!r})")
    event_id = _str(event.get("id"), "the event id")
    etype = _str(event.get("type"), "the event type")
    if not event_id or not event_id.startswith("evt_") or not etype:
        raise InvalidEvent("the event has no Stripe event id (evt_...) or no type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise InvalidEvent("the event has no data.object")
    object_type = _str(obj.get("object"), "data.object.object") or ""
    object_id = _str(obj.get("id"), "data.object.id") or ""
    metadata_raw = obj.get("metadata") or {}
    if not isinstance(metadata_raw, Mapping):
        raise InvalidEvent("data.object.metadata is not an object")
    metadata = {str(k): str(v) for k, v in metadata_raw.items() if isinstance(v, (str, int))}
    currency = _str(obj.get("currency"), "the currency", 3)
    reason: str | None = None
    intent: str | None = None
    if object_type == "payment_intent":
        intent = object_id
        err = obj.get("last_payment_error")
        if isinstance(err, Mapping):
            reason = _str(err.get("message"), "last_payment_error.message", 1000)
        reason = reason or _str(obj.get("cancellation_reason"), "cancellation_reason")
    elif object_type == "charge":
        intent = _str(obj.get("payment_intent"), "the charge's payment_intent")
        reason = _str(obj.get("failure_message"), "failure_message", 1000)
    amount, received = _int(obj.get("amount"), "the amount"), _int(obj.get("amount_received"), "amount_received")
    payment_status = client_ref = None
    if object_type == "checkout.session":
        pi = obj.get("payment_intent")  # an id, or the intent itself when expanded
        intent = _str(pi.get("id") if isinstance(pi, Mapping) else pi, "the session's payment_intent")
        payment_status = _str(obj.get("payment_status"), "payment_status")
        client_ref = _str(obj.get("client_reference_id"), "client_reference_id")
        amount = _int(obj.get("amount_total"), "amount_total")
        received = amount if payment_status == "paid" else None
    if etype in HANDLED and not object_id:
        raise InvalidEvent(f"{etype} without an object id")
    if etype.startswith("payment_intent.") and object_type != "payment_intent":
        raise InvalidEvent(f"{etype} does not carry a payment_intent")
    if etype.startswith("charge.") and object_type != "charge":
        raise InvalidEvent(f"{etype} does not carry a charge")
    if etype.startswith("checkout.session.") and object_type != "checkout.session":
        raise InvalidEvent(f"{etype} does not carry a Checkout Session")
    return PaymentEvent(
        event_id=event_id, type=etype, created=_int(event.get("created"), "created"),
        livemode=bool(event.get("livemode", False)), object_type=object_type, object_id=object_id,
        payment_intent_id=intent, amount=amount, amount_received=received,
        amount_refunded=_int(obj.get("amount_refunded"), "amount_refunded"),
        refunded=bool(obj.get("refunded", False)),
        currency=currency.lower() if currency else None, metadata=metadata,
        reason=reason[:300] if reason else None, payment_status=payment_status, client_reference_id=client_ref,
    )


def event_payload(event_id: str, etype: str, obj: dict[str, Any], *, created: int | None = None,
                  livemode: bool = False) -> str:
    """A Stripe event body as Stripe sends it (tests, the demo's simulated payment)."""
    return json.dumps({
        "id": event_id, "object": "event", "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created, "livemode": livemode,
        "pending_webhooks": 1, "type": etype, "data": {"object": obj},
    })
