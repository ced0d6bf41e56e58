"""Stripe webhooks as an outside API passes them: ``received_at`` in the forms people send
(Unix seconds as a number or a string, ISO 8601 with and without an offset, JavaScript's
``toISOString()``), and the values that are numbers but not times. Signed by Stripe's own
``stripe.WebhookSignature`` (pipeline.orders.stripe_events.sign)."""
from __future__ import annotations

import json
import time

import pytest

from pipeline.orders import stripe_events as se

SECRET = "whsec_outside"
NOW = 1_796_021_741.0  # 2026-11-30T06:55:41Z
BODY = se.event_payload("evt_outside", "payment_intent.succeeded",
                        {"id": "pi_outside", "object": "payment_intent", "amount": 2999, "amount_received": 2999,
                         "currency": "usd", "metadata": {}}, created=int(NOW) - 3600)


@pytest.mark.parametrize(("value", "seconds"), [
    (1_796_021_741, 1_796_021_741.0),
    (1_796_021_741.25, 1_796_021_741.25),
    ("1796021741", 1_796_021_741.0),
    (" 1796021741.5 ", 1_796_021_741.5),
    ("2026-11-30T06:55:41Z", 1_796_021_741.0),
    ("2026-11-30T06:55:41.123Z", 1_796_021_741.123),  # JavaScript's Date.prototype.toISOString()
    ("2026-11-30T08:55:41+02:00", 1_796_021_741.0),
    ("2026-11-30T01:55:41-0500", 1_796_021_741.0),
    ("2026-11-30 06:55:41", 1_796_021_741.0),  # no offset: UTC
    ("20261130T065541Z", 1_796_021_741.0),  # ISO 8601 basic format
])
def test_received_at_forms(value: object, seconds: float) -> None:
    assert se.parse_received_at(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity", float("nan"), float("inf"), float("-inf"),
                                   json.loads("1e400")])
def test_received_at_that_is_not_a_finite_time_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        se.parse_received_at(value)


@pytest.mark.parametrize("received_at", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_arrival_never_makes_an_old_signature_fresh(received_at: float) -> None:
    """An hour-old signature with received_at NaN was accepted as fresh (every comparison with
    NaN is false: a replay passed), and an infinity raised OverflowError (the payment event lost
    as an unexpected error). Not finite = not known: the event must be confirmed with Stripe."""
    header = se.sign(BODY, SECRET, int(NOW) - 3600)
    with pytest.raises(se.UnconfirmedEvent, match="did not say when the webhook arrived"):
        se.verify_event(BODY, header, [SECRET], received_at=received_at, now=NOW)


def test_a_fresh_signature_with_a_non_finite_arrival_still_verifies() -> None:
    header = se.sign(BODY, SECRET, int(time.time()))
    assert se.verify_event(BODY, header, [SECRET], received_at=float("nan")).event_id == "evt_outside"


@pytest.mark.parametrize(("value", "seconds"), [
    (1_796_021_741_123, 1_796_021_741.123),  # JavaScript's Date.now(), Java's System.currentTimeMillis()
    (1_796_021_741_123.0, 1_796_021_741.123),
    ("1796021741123", 1_796_021_741.123),  # the same, sent as a string
    (" 1796021741123.5 ", 1_796_021_741.1235),
    (100_000_000_000, 100_000_000.0),  # the threshold: 1973-03-03 in ms (year 5138 as seconds)
    (99_999_999_999, 99_999_999_999.0),  # just below it: still seconds
])
def test_received_at_in_unix_milliseconds(value: object, seconds: float) -> None:
    assert se.parse_received_at(value) == pytest.approx(seconds, abs=1e-6)


def test_an_arrival_in_milliseconds_is_not_read_as_the_far_future() -> None:
    """Date.now() (ms) was read as seconds, ~57,000 years ahead: every payment whose webhook was
    signed more than 300 s before the worker ran it needed confirmation or was held."""
    received_ms = int(NOW * 1000)
    header = se.sign(BODY, SECRET, int(NOW) - 1)
    for received in (received_ms, str(received_ms)):
        arrived = se.parse_received_at(received)
        # the worker runs an hour later (a backlog): the signature was fresh when it arrived
        ev = se.verify_event(BODY, header, [SECRET], received_at=arrived, now=NOW + 3600)
        assert ev.event_id == "evt_outside" and not ev.confirmed_by_api
    # and a replay stays a replay in milliseconds too
    old = se.sign(BODY, SECRET, int(NOW) - 3600)
    with pytest.raises(se.UnconfirmedEvent, match="3600 s old when the webhook arrived"):
        se.verify_event(BODY, old, [SECRET], received_at=se.parse_received_at(received_ms), now=NOW + 5)
