"""Stripe webhook events as the external API received them: signature check and parsing.

Signature (Stripe's scheme, done with hmac rather than the stripe package): the
``Stripe-Signature`` header is ``t=<unix time>,v1=<hex>[,v1=<hex>...][,v0=...]``; each ``v1`` is
HMAC-SHA256 of ``"{t}.{raw body}"`` keyed with the endpoint's signing secret (``whsec_...``).
A payload is genuine if any ``v1`` matches any configured secret (two during a secret rotation)
and ``t`` is within the tolerance (300 s, Stripe's default) of now: an old signed payload
replayed later is refused. The raw body must be the exact bytes Stripe sent (re-serialized JSON
does not verify).

Parsing keeps only what the order workers need, and is strict about shapes: a payload that is
not a Stripe event is rejected with a reason, never half-applied.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOLERANCE = 300

# The event types the order workers act on; any other type is recorded and ignored.
PAYMENT_SUCCEEDED = "payment_intent.succeeded"
PAYMENT_FAILED = "payment_intent.payment_failed"
PAYMENT_CANCELED = "payment_intent.canceled"
CHARGE_REFUNDED = "charge.refunded"
HANDLED = (PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_CANCELED, CHARGE_REFUNDED)


class InvalidEvent(ValueError):
    """The payload is not a genuine, well-formed Stripe event (the message says why)."""


def sign(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``payload`` (tests, the demo, tools)."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload.encode() if isinstance(payload, str) else payload
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(payload: str | bytes, header: str | None, secrets: Iterable[str], *,
                     tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> None:
    """Raise InvalidEvent unless ``header`` signs ``payload`` with one of ``secrets``."""
    keys = [s for s in secrets if s]
    if not keys:
        raise InvalidEvent("no Stripe webhook secret is configured (STRIPE_WEBHOOK_SECRET)")
    if not header:
        raise InvalidEvent("the Stripe-Signature header is missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidEvent("the Stripe-Signature timestamp is not a number") from None
        elif key == "v1" and value:
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise InvalidEvent("the Stripe-Signature header has no timestamp or no v1 signature")
    body = payload.encode() if isinstance(payload, str) else payload
    signed = f"{timestamp}.".encode() + body
    expected = [hmac.new(k.encode(), signed, hashlib.sha256).hexdigest() for k in keys]
    # Compare every pair in constant time: which secret or which v1 matched must not leak.
    if not any(hmac.compare_digest(e, c) for e in expected for c in candidates):
        raise InvalidEvent("the Stripe signature does not match the payload")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidEvent(f"the Stripe signature is {int(abs(current - timestamp))} s old "
                           f"(tolerance {int(tolerance)} s): a replayed payload")


@dataclass(frozen=True)
class PaymentEvent:
    """One Stripe event, reduced to what an order needs."""

    event_id: str  # evt_...: at-least-once delivery repeats it; it counts once
    type: str
    created: int | None
    livemode: bool
    object_type: str  # "payment_intent" or "charge"
    object_id: str  # pi_... or ch_...
    payment_intent_id: str | None  # the intent itself, or the charge's intent
    amount: int | None  # smallest currency unit
    amount_received: int | None  # payment_intent: what was captured
    amount_refunded: int | None  # charge: refunded so far
    refunded: bool  # charge: fully refunded
    currency: str | None  # lower case, as Stripe writes it
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # last_payment_error.message / cancellation_reason, for people

    @property
    def order_id(self) -> str | None:
        """The order the API attached to the intent (``metadata.order_id``), if any."""
        return self.metadata.get("order_id") or None

    def summary(self) -> dict[str, Any]:
        """What is kept in the order's history (no card details, no customer data)."""
        return {k: v for k, v in {
            "type": self.type, "created": self.created, "livemode": self.livemode,
            "object": self.object_id, "payment_intent": self.payment_intent_id, "amount": self.amount,
            "amount_received": self.amount_received, "amount_refunded": self.amount_refunded,
            "refunded": self.refunded if self.object_type == "charge" else None,
            "currency": self.currency, "reason": self.reason,
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


def parse_event(event: Mapping[str, Any] | str | bytes) -> PaymentEvent:
    """A PaymentEvent from a Stripe event (parsed JSON or the raw body); InvalidEvent if it is
    not one."""
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
    if etype in HANDLED and not object_id:
        raise InvalidEvent(f"{etype} without an object id")
    if etype.startswith("payment_intent.") and object_type != "payment_intent":
        raise InvalidEvent(f"{etype} does not carry a payment_intent")
    if etype.startswith("charge.") and object_type != "charge":
        raise InvalidEvent(f"{etype} does not carry a charge")
    return PaymentEvent(
        event_id=event_id, type=etype, created=_int(event.get("created"), "created"),
        livemode=bool(event.get("livemode", False)), object_type=object_type, object_id=object_id,
        payment_intent_id=intent, amount=_int(obj.get("amount"), "the amount"),
        amount_received=_int(obj.get("amount_received"), "amount_received"),
        amount_refunded=_int(obj.get("amount_refunded"), "amount_refunded"),
        refunded=bool(obj.get("refunded", False)),
        currency=currency.lower() if currency else None, metadata=metadata,
        reason=reason[:300] if reason else None,
    )


def event_payload(event_id: str, etype: str, obj: dict[str, Any], *, created: int | None = None,
                  livemode: bool = False) -> str:
    """A Stripe event body as Stripe sends it (tests, the demo's simulated payment)."""
    return json.dumps({
        "id": event_id, "object": "event", "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created, "livemode": livemode,
        "pending_webhooks": 1, "type": etype, "data": {"object": obj},
    })
