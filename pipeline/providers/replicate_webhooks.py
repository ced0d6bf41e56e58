"""Replicate's completion webhooks: the configuration, what a prediction is created with, and the
verification of a delivery.

When REPLICATE_WEBHOOK_URL is set (the external web API's public endpoint that receives
Replicate's webhooks and publishes each POST as the task ``images.replicate_webhook``, README "The
external contract"), every prediction is created with ``webhook`` and ``webhook_events_filter:
["completed"]``: Replicate POSTs the prediction's JSON once it has ended (succeeded, failed or
canceled), at least once, maybe more than once
(https://replicate.com/docs/reference/http#predictions.create,
https://replicate.com/docs/topics/webhooks).

A delivery is verified as Replicate documents it
(https://replicate.com/docs/topics/webhooks/verify-webhook): headers ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (space-separated ``v1,<base64>``),
an HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` keyed with the base64 bytes after the ``whsec_``
prefix of the account's signing secret (``GET https://api.replicate.com/v1/webhooks/default/secret``),
and a timestamp within 5 minutes of now (replays). That is the Standard Webhooks scheme, verified
here by its reference library (``standardwebhooks`` on PyPI), not by our own crypto.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

SECRET_PREFIX = "whsec_"
EVENTS = ["completed"]  # webhook_events_filter: only the end of a prediction
ENDED = ("succeeded", "failed", "canceled", "aborted")  # a prediction's terminal statuses (lifecycle doc)
MAX_BODY_CHARS = 5_000_000  # a prediction's JSON with its input (data: URIs of a face crop): well under this


@dataclass(frozen=True)
class WebhookConfig:
    """Where Replicate sends completion webhooks (``url``) and the secret they are signed with."""

    url: str
    secret: str  # whsec_<base64>

    def create_params(self) -> dict[str, Any]:
        """The extra fields of a prediction's create request (the SDK's ``webhook`` and
        ``webhook_events_filter`` parameters)."""
        return {"webhook": self.url, "webhook_events_filter": list(EVENTS)}


def webhook_config(env: Mapping[str, str]) -> WebhookConfig | None:
    """REPLICATE_WEBHOOK_URL and REPLICATE_WEBHOOK_SIGNING_SECRET, or None when no URL is set
    (polling only). Raises SystemExit("configuration error: …") for a URL that is not http(s), a
    URL without a secret, or a secret that is not ``whsec_<base64>``; a secret without a URL is
    accepted (deliveries can still be verified while the URL is being switched off)."""
    url = env.get("REPLICATE_WEBHOOK_URL", "").strip()
    secret = env.get("REPLICATE_WEBHOOK_SIGNING_SECRET", "").strip()
    if secret:
        check_secret(secret)
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SystemExit(f"configuration error: REPLICATE_WEBHOOK_URL={url[:80]!r} is not an http(s) URL")
    if not secret:
        raise SystemExit(
            "configuration error: REPLICATE_WEBHOOK_URL is set but REPLICATE_WEBHOOK_SIGNING_SECRET is not "
            "(whsec_..., from GET https://api.replicate.com/v1/webhooks/default/secret); without it no "
            "delivery can be trusted")
    return WebhookConfig(url, secret)


def check_secret(secret: str) -> None:
    """SystemExit naming REPLICATE_WEBHOOK_SIGNING_SECRET unless ``secret`` is ``whsec_<base64>``."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        ok = secret.startswith(SECRET_PREFIX) and len(base64.b64decode(body + "==", validate=False)) >= 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise SystemExit("configuration error: REPLICATE_WEBHOOK_SIGNING_SECRET is not 'whsec_<base64>' "
                         "(as GET https://api.replicate.com/v1/webhooks/default/secret returns it)")


class WebhookRejected(Exception):
    """A delivery that is not acted on: ``reason`` is its metric label (``signature``: forged, or
    signed with another secret; ``expired``: its timestamp is more than 5 minutes from now;
    ``headers``: a signature header missing or unreadable; ``malformed``: not a prediction's JSON)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Completion:
    """A verified completion: prediction ``id``, its ``status`` and the delivery's ``webhook_id``."""

    prediction_id: str
    status: str
    webhook_id: str


def verify(payload: str, headers: Mapping[str, Any], secret: str) -> Completion:
    """Verify one delivery (raw body ``payload`` exactly as received, its HTTP ``headers``) with
    ``secret`` (whsec_...) and read the prediction it is about. Raises :class:`WebhookRejected`;
    nothing else for any input."""
    if len(payload) > MAX_BODY_CHARS:
        raise WebhookRejected("malformed", f"body of {len(payload)} characters")
    flat = {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}
    try:
        Webhook(secret).verify(payload, flat, json_parse=False)
    except WebhookVerificationError as e:
        reason = ("expired" if "timestamp too" in str(e) else
                  "headers" if "headers" in str(e).lower() else "signature")
        raise WebhookRejected(reason, str(e)) from None
    except (ValueError, TypeError) as e:  # a signature header that is not "v1,<base64>"
        raise WebhookRejected("headers", f"unreadable webhook-signature ({type(e).__name__})") from None
    try:
        data = json.loads(payload)
    except ValueError:
        raise WebhookRejected("malformed", "the body is not JSON") from None
    pid = data.get("id") if isinstance(data, dict) else None
    status = data.get("status") if isinstance(data, dict) else None
    if not isinstance(pid, str) or not pid or len(pid) > 200 or not isinstance(status, str):
        raise WebhookRejected("malformed", "the body is not a prediction (no id or status)")
    return Completion(pid, status, str(flat.get("webhook-id", ""))[:200])
