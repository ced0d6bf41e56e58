"""Orders end to end through real worker processes, real PostgreSQL and a fake Lulu over HTTP:
a Stripe payment event published by name as the external API does, print files, the print job
created once, its lifecycle by polling and by signed webhook, every failure path the issue
lists, the sweep and an operator's retry, and a worker killed right after creating a job.

The worker here has its own broker database (the session's shared worker would take these
messages and print with the offline shop) and polls every 0.3 s instead of 5 minutes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from pipeline.orders import stripe_events as se
from pipeline.orders.print_files import inspect_pdf
from tests.fakes.lulu_server import CLIENT_KEY, CLIENT_SECRET, FakeLulu
from tests.fakes.stripe_server import LIVE_KEY, FakeStripe
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, faceless_png, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
BROKER = f"{REDIS}/{REDIS_DB + 2}"
KILL_BROKER = f"{REDIS}/{REDIS_DB + 3}"
STRIPE_SECRET = "whsec_test_orders_0123456789abcdef"
HARDCOVER = "0850X0850FCPRECW080CW444GXX"
ADDRESS = {"name": "Sam Reader", "street1": "1 Example Street", "city": "Raleigh", "state_code": "NC",
           "postcode": "27601", "country_code": "US", "phone_number": "+1 919 555 0100"}


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def orders_db(db: Db) -> Db:
    return db  # schema.sql holds the orders' tables


@pytest.fixture(scope="module")
def lulu_fake() -> Iterator[FakeLulu]:
    fake = FakeLulu().start()
    yield fake
    fake.stop()


@pytest.fixture()
def fake(lulu_fake: FakeLulu) -> Iterator[FakeLulu]:
    yield lulu_fake
    lulu_fake.reset()


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


_STRIPE_API: list[str] = []  # the fake Stripe API's URL, once started (worker_env is a plain function)


def worker_env(fake: FakeLulu, broker: str) -> dict[str, str]:
    return {
        # a live deployment (the mode of its key) that confirms events with (fake) Stripe's API
        "STRIPE_SECRET_KEY": LIVE_KEY, "STRIPE_API_BASE": _STRIPE_API[0] if _STRIPE_API else "http://127.0.0.1:9",
        "CELERY_BROKER_URL": broker, "POD_PROVIDER": "lulu", "LULU_API_URL": fake.base_url,
        "LULU_CLIENT_KEY": CLIENT_KEY, "LULU_CLIENT_SECRET": CLIENT_SECRET, "LULU_TIMEOUT": "3",
        "LULU_ALLOW_FILE_URLS": "1",  # local storage: the fake reads file: URLs, Lulu would not
        "LULU_CONTACT_EMAIL": "print@storycreator.test", "ORDER_POLL_INTERVAL": "0.3",
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "STEP_MAX_RETRIES": "3", "STEP_RETRY_BACKOFF_CAP": "0.5",
    }


@pytest.fixture(scope="module")
def order_worker(orders_db: Db, lulu_fake: FakeLulu, stripe_api: FakeStripe,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    _STRIPE_API[:] = [stripe_api.root]
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path_factory.mktemp("orders") / "worker.log", env=worker_env(lulu_fake, BROKER))
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def story(orders_db: Db, order_worker: WorkerProcess) -> str:
    """A completed 4-page story with personalized pictures (orders of many tests share it)."""
    sid = orders_db.story(orders_db.photo(astronaut_png()), name="Mia", theme="space_adventure")
    publish(BROKER, "stories.generate", {"story_id": sid})
    row = orders_db.wait_story(sid, timeout=90)
    assert row["status"] == "completed", row["error_message"]
    return sid


# --- helpers -------------------------------------------------------------------------------------

def publish(broker: str, name: str, *kwargs: dict[str, Any]) -> None:
    """As the external API publishes: a process that knows only celery and the broker URL."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    subprocess.run([sys.executable, str(ROOT / "tests" / "external_client.py"), broker, name,
                    *[json.dumps(k) for k in kwargs]], cwd="/", check=True, timeout=60, env=env)


def operator(fake: FakeLulu, code: str, broker: str = BROKER) -> str:
    """An operator's process (the CLI's functions), configured like the workers."""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **worker_env(fake, broker)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def new_order(db: Db, story_id: str, *, amount: int = 2999, currency: str = "usd",
              address: dict[str, Any] | None = ADDRESS, status: str = "pending_payment",
              with_intent: bool = True) -> tuple[str, str]:
    """An order row as the external API inserts it at checkout (its payment intent created; with
    ``with_intent=False`` none is stored, as with Stripe Checkout, which creates the intent: the
    returned id is the one Checkout will make)."""
    pi = f"pi_test_{uuid.uuid4().hex[:18]}"
    if not with_intent:
        row = db.one(
            """INSERT INTO orders (user_id, story_id, product_type, amount, currency, shipping_address,
                                   payment_provider, status)
               SELECT user_id, id, 'hardcover_book', :a, :c, CAST(:addr AS jsonb), 'stripe', 'pending_payment'
                 FROM stories WHERE id = :s RETURNING id""",
            s=story_id, a=amount, c=currency, addr=json.dumps(address))
        return str(row["id"]), pi
    row = db.one(
        """INSERT INTO orders (user_id, story_id, product_type, amount, currency, shipping_address,
                               payment_provider, payment_intent_id, status, paid_at)
           SELECT user_id, id, 'hardcover_book', :a, :c, CAST(:addr AS jsonb), 'stripe', :pi, :st,
                  CASE WHEN :st = 'paid' THEN now() END
             FROM stories WHERE id = :s RETURNING id""",
        s=story_id, a=amount, c=currency, addr=json.dumps(address), pi=pi, st=status)
    return str(row["id"]), pi


def stripe(order: str, pi: str, etype: str = se.PAYMENT_SUCCEEDED, *, amount: int = 2999, currency: str = "usd",
           event_id: str | None = None, livemode: bool = True, **extra: Any) -> str:
    """A Stripe event body as Stripe POSTs it (live mode, like the deployment's key)."""
    if etype.startswith("charge."):
        obj = {"id": f"ch_{uuid.uuid4().hex[:12]}", "object": "charge", "amount": amount, "currency": currency,
               "payment_intent": pi, **extra}
    else:
        obj = {"id": pi, "object": "payment_intent", "amount": amount, "currency": currency,
               "metadata": {"order_id": order}, **extra}
        if etype == se.PAYMENT_SUCCEEDED:
            obj.setdefault("amount_received", amount)
    return se.event_payload(event_id or f"evt_{uuid.uuid4().hex[:16]}", etype, obj, livemode=livemode)


def stripe_header(payload: str, timestamp: int | None = None, secret: str = STRIPE_SECRET) -> str:
    """The Stripe-Signature header, made by Stripe's own package."""
    import stripe as stripe_pkg

    return str(stripe_pkg.WebhookSignature.generate_signature_header(payload, secret, timestamp))


def signed(order: str | None, payload: str, signature: str | None = "stripe",
           received_at: Any = "now") -> dict[str, Any]:
    """The kwargs the API publishes after its webhook endpoint received ``payload``."""
    sig = stripe_header(payload) if signature == "stripe" else signature
    kwargs: dict[str, Any] = {"order_id": order, "payload": payload, "signature": sig}
    if received_at is not None:
        kwargs["received_at"] = time.time() if received_at == "now" else received_at
    return kwargs


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def order_row(db: Db, order: str) -> Any:
    return db.one("SELECT * FROM orders WHERE id = :o", o=order)


def wait_status(db: Db, order: str, status: str, timeout: float = 30) -> Any:
    return wait_for(f"order {status} (is {order_row(db, order)['status']})",
                    lambda: (r := order_row(db, order))["status"] == status and r, timeout)


def events(db: Db, order: str) -> list[Any]:
    return db.all("SELECT * FROM order_events WHERE order_id = :o ORDER BY id", o=order)


def error_of(db: Db, order: str) -> str:
    rows = [e for e in events(db, order) if e["outcome"] == "failed"]
    return rows[-1]["message"] if rows else ""


def wait_job(fake: FakeLulu, order: str, count: int = 1, timeout: float = 90) -> dict[str, Any]:
    jobs = wait_for(f"print job {count} for {order}", lambda: len(j := fake.jobs_for(order)) >= count and j, timeout)
    return sorted(jobs, key=lambda j: j["id"])[count - 1]


def job_key(job: dict[str, Any]) -> str:
    return str(job["id"])


def local_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


# --- the whole way --------------------------------------------------------------------------------

def test_an_order_goes_from_payment_to_shipped_with_tracking(orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    # given an order waiting for its payment
    order, pi = new_order(db, story)
    # when Stripe's payment_intent.succeeded arrives and the API publishes it as received
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    # then the order is paid and one print job is created at Lulu for it
    job = wait_job(fake, order)
    paid = order_row(db, order)
    assert paid["status"] == "paid" and paid["paid_at"] is not None and paid["payment_provider"] == "stripe"
    sent = fake.creates_for(order)[0]["json"]
    li = sent["line_items"][0]
    assert sent["external_id"] == order and li["external_id"] == f"{order}-1" and li["quantity"] == 1
    assert li["title"] == db.story_row(story)["title"] and sent["contact_email"] == "print@storycreator.test"
    assert sent["shipping_address"]["city"] == "Raleigh" and sent["shipping_level"] == "MAIL"
    norm = li["printable_normalization"]
    assert norm["pod_package_id"] == HARDCOVER
    # and the files it was given are print-ready: 8.75 in square pages (trim + bleed), 24 of them
    # (the 4-page story padded), fonts embedded, pictures full bleed at 300 dpi; a cover of the
    # size Lulu asked for this page count
    interior = local_path(norm["interior"]["source_url"])
    cover = local_path(norm["cover"]["source_url"])
    assert interior == db.storage / f"orders/{order}/print/interior.pdf"
    assert cover == db.storage / f"orders/{order}/print/cover.pdf"
    ii, ci = inspect_pdf(interior.read_bytes()), inspect_pdf(cover.read_bytes())
    assert ii.pages == 24 and set(ii.sizes_pt) == {(630.0, 630.0)} and ii.unembedded_fonts == 0
    assert ii.full_bleed_pages == 4 and ii.min_image_dpi is not None and ii.min_image_dpi >= 299.5
    dims = [r for r in fake.requests if r["op"] == "cover_dimensions" and r["json"]["interior_page_count"] == 24]
    assert dims and ci.pages == 1 and ci.sizes_pt[0] == (1368.0, 738.0) and ci.unembedded_fonts == 0
    wait_for("pod_order_id recorded", lambda: order_row(db, order)["pod_order_id"] == job_key(job))
    # and the worker keeps following the job however long it waits (more looks than Celery's
    # retry cap of the step tasks: each look is a fresh message)
    reads = lambda: len([r for r in fake.requests if r["path"] == f"/print-jobs/{job_key(job)}/"])  # noqa: E731
    wait_for("a dozen looks at the job", lambda: reads() >= 12, timeout=30)

    # when Lulu moves the job into production
    fake.set_status(job_key(job), "PRODUCTION_DELAYED")
    fake.set_status(job_key(job), "IN_PRODUCTION")
    # then the order is fulfilled
    fulfilled = wait_status(db, order, "fulfilled")
    assert fulfilled["fulfilled_at"] is not None and fulfilled["shipped_at"] is None
    # when it ships
    fake.set_status(job_key(job), "SHIPPED", "All line-items were shipped", tracking_id="1Z999AA10123456784")
    # then the order is shipped with its tracking number, in order of time
    row = wait_status(db, order, "shipped")
    assert row["tracking_number"] == "1Z999AA10123456784" and row["pod_provider"] == "lulu"
    assert row["paid_at"] <= row["fulfilled_at"] <= row["shipped_at"]
    assert len(fake.creates_for(order)) == 1
    # and its history says what happened, each provider status once
    kinds = [(e["kind"], e["outcome"]) for e in events(db, order)]
    assert kinds[0] == ("payment_intent.succeeded", "applied") and ("print_job", "applied") in kinds
    assert kinds.count(("print_job.in_production", "noted")) == 1 and ("print_job.shipped", "noted") in kinds
    # and polling stopped
    before = reads()
    time.sleep(1.0)
    assert reads() <= before + 1


# --- payments -------------------------------------------------------------------------------------

def test_duplicate_and_out_of_order_payment_events_change_nothing(orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    order, pi = new_order(db, story)
    # given a failed attempt first (the customer will try again): noted, the order waits
    first_failure = stripe(order, pi, se.PAYMENT_FAILED, last_payment_error={"message": "Your card was declined."})
    publish(BROKER, "orders.confirm_payment", signed(order, first_failure))
    wait_for("failed attempt noted", lambda: any(e["outcome"] == "noted" for e in events(db, order)))
    assert order_row(db, order)["status"] == "pending_payment"
    # when the success event is delivered three times at once (at-least-once delivery)
    success = stripe(order, pi, event_id=f"evt_ok_{uuid.uuid4().hex[:8]}")
    publish(BROKER, "orders.confirm_payment", *[signed(order, success)] * 3)
    job = wait_job(fake, order)
    paid_at = wait_for("paid_at", lambda: order_row(db, order)["paid_at"])
    # and late, out-of-order events follow: a failure, a cancellation and the success again
    late = [stripe(order, pi, se.PAYMENT_FAILED), stripe(order, pi, se.PAYMENT_CANCELED), success]
    publish(BROKER, "orders.confirm_payment", *[signed(order, p) for p in late])
    wait_for("late events recorded", lambda: len(events(db, order)) >= 5)
    time.sleep(0.5)
    # then the order was paid once, and nothing moved it back
    row = order_row(db, order)
    assert row["status"] == "paid" and row["paid_at"] == paid_at and row["pod_order_id"] == job_key(job)
    stripe_events = [e for e in events(db, order) if e["source"] == "stripe"]
    ok_id = json.loads(success)["id"]
    assert len([e for e in stripe_events if e["event_id"] == ok_id]) == 1
    assert [e["outcome"] for e in stripe_events] == ["noted", "applied", "ignored", "ignored"]
    assert len(fake.creates_for(order)) == 1


def test_a_payment_that_does_not_match_fails_the_order_clearly(orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    short, pi1 = new_order(db, story, amount=2999)
    euros, pi2 = new_order(db, story, amount=2999, currency="usd")
    misrouted, _ = new_order(db, story)
    other_pi = f"pi_other_{uuid.uuid4().hex[:10]}"
    publish(BROKER, "orders.confirm_payment",
            signed(short, stripe(short, pi1, amount=1999)),
            signed(euros, stripe(euros, pi2, currency="eur")),
            signed(misrouted, stripe(misrouted, other_pi)))
    # then a wrong amount or currency fails the order, saying both
    assert wait_status(db, short, "failed")["paid_at"] is None
    assert "Stripe received 1999 USD, the order is for 2999 USD" in error_of(db, short)
    assert wait_status(db, euros, "failed")
    assert "Stripe received 2999 EUR, the order is for 2999 USD" in error_of(db, euros)
    # and an event for another payment is refused without touching the order
    wait_for("misrouted event refused", lambda: any(e["outcome"] == "rejected" for e in events(db, misrouted)))
    assert order_row(db, misrouted)["status"] == "pending_payment"
    assert "the order's payment is pi_test_" in events(db, misrouted)[0]["message"]
    assert not fake.jobs_for(short) and not fake.jobs_for(euros) and not fake.jobs_for(misrouted)
    # and an operator cannot "retry" a payment that never came
    out = operator(fake, f"from pipeline.operations.orders import retry_order; print(retry_order('{short}').message)")
    assert "the payment was never confirmed" in out and order_row(db, short)["status"] == "failed"


def test_forged_replayed_or_unsigned_payment_events_are_refused(orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    order, pi = new_order(db, story)
    good = stripe(order, pi)
    publish(BROKER, "orders.confirm_payment",
            signed(order, good, stripe_header(good, secret="whsec_someone_else")),  # forged
            # a captured payload replayed to the webhook endpoint an hour after Stripe signed it
            signed(order, good, stripe_header(good, int(time.time()) - 3600)),
            signed(order, good.replace('"amount": 2999', '"amount": 1'), stripe_header(good)),  # tampered
            {"order_id": order, "payload": good})  # no signature
    rejected = wait_for("four refusals", lambda: len(e := [x for x in events(db, order) if x["outcome"] == "rejected"])
                        == 4 and e)
    assert {r["kind"] for r in rejected} == {"invalid_event"}
    assert any("missing" in r["message"] for r in rejected)
    # the replay: its signature was 3600 s old when it arrived, and Stripe's API does not know the event
    assert any("3600 s old when the webhook arrived" in r["message"] and "Stripe has no event" in r["message"]
               for r in rejected)
    assert order_row(db, order)["status"] == "pending_payment" and not fake.jobs_for(order)


def test_a_refund_before_printing_cancels_the_order_even_when_it_arrives_first(
        orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    # given an order whose refund Stripe delivers before the success event (unordered delivery)
    early, pi1 = new_order(db, story)
    publish(BROKER, "orders.confirm_payment", signed(early, stripe(early, pi1, se.CHARGE_REFUNDED, amount_refunded=2999,
                                                                   refunded=True)))
    assert wait_status(db, early, "failed")
    publish(BROKER, "orders.confirm_payment", signed(early, stripe(early, pi1)))
    # and a paid order whose story is still being written, refunded meanwhile
    waiting_story = db.story(db.photo(astronaut_png()))
    later, pi2 = new_order(db, waiting_story)
    publish(BROKER, "orders.confirm_payment", signed(later, stripe(later, pi2)))
    wait_status(db, later, "paid")
    publish(BROKER, "orders.confirm_payment", signed(later, stripe(later, pi2, se.CHARGE_REFUNDED,
                                                                   amount_refunded=2999, refunded=True)))
    # then both are failed as refunded, and neither is printed nor paid afterwards
    assert wait_status(db, later, "failed")
    wait_for("late success ignored", lambda: any(e["outcome"] == "ignored" for e in events(db, early)))
    for order in (early, later):
        assert order_row(db, order)["status"] == "failed"
        assert "refunded before the book was sent to print" in error_of(db, order)
        assert not fake.jobs_for(order)
    assert not (db.storage / f"orders/{later}/print/interior.pdf").exists()


# --- payments: when the webhook arrived, Stripe's own copy, the mode ------------------------------

def cli(fake: FakeLulu, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The operator's CLI, as written in the README (``storycreator ...``), configured like the workers."""
    r = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", *args], cwd=ROOT,
                       env={**os.environ, **worker_env(fake, BROKER), **(env or {})},
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_a_payment_that_waited_in_the_queue_past_the_tolerance_is_applied(
        orders_db: Db, story: str, fake: FakeLulu, stripe_api: FakeStripe) -> None:
    db = orders_db
    now = time.time()
    # given webhooks Stripe signed 10 minutes ago that reached the API one second later, whose
    # messages then waited in the queue (workers down for a deploy); received_at as Unix
    # seconds and as ISO 8601
    queued, pi1 = new_order(db, story)
    iso, pi2 = new_order(db, story)
    body1, body2 = stripe(queued, pi1), stripe(iso, pi2)
    signed_at = int(now) - 600
    iso_at = datetime.fromtimestamp(signed_at + 1, UTC).isoformat()
    # and one whose timestamp is two minutes ahead of the API's clock (skew Stripe's libraries accept)
    ahead, pi3 = new_order(db, story)
    body3 = stripe(ahead, pi3)
    # and received_at in Unix milliseconds (JavaScript's Date.now()), as a number and as a string
    millis, pi4 = new_order(db, story)
    millis_str, pi5 = new_order(db, story)
    body4, body5 = stripe(millis, pi4), stripe(millis_str, pi5)
    publish(BROKER, "orders.confirm_payment",
            signed(queued, body1, stripe_header(body1, signed_at), received_at=signed_at + 1),
            signed(iso, body2, stripe_header(body2, signed_at), received_at=iso_at),
            signed(ahead, body3, stripe_header(body3, int(now) + 120), received_at=now),
            signed(millis, body4, stripe_header(body4, signed_at), received_at=(signed_at + 1) * 1000 + 250),
            signed(millis_str, body5, stripe_header(body5, signed_at), received_at=str((signed_at + 1) * 1000)))
    # then each is paid and printed, with no call to Stripe's API: the signature was fresh on arrival
    for order in (queued, iso, ahead, millis, millis_str):
        wait_job(fake, order)
        assert order_row(db, order)["paid_at"] is not None
        assert [e["outcome"] for e in events(db, order) if e["source"] == "stripe"] == ["applied"]
    assert not any(stripe_api.lookups(json.loads(b)["id"]) for b in (body1, body2, body3, body4, body5))


def test_an_old_event_without_its_arrival_time_is_confirmed_with_stripe_or_held_and_recoverable(
        orders_db: Db, story: str, fake: FakeLulu, stripe_api: FakeStripe) -> None:
    db = orders_db
    old = int(time.time()) - 600
    # given a genuine event, signed 10 minutes ago, published without received_at (an older API)
    confirmed, pi1 = new_order(db, story)
    body1 = stripe(confirmed, pi1)
    stripe_api.add(body1)
    publish(BROKER, "orders.confirm_payment", signed(confirmed, body1, stripe_header(body1, old), received_at=None))
    # then the worker reads it from Stripe's API and the order is paid, saying so
    wait_job(fake, confirmed)
    applied = [e for e in events(db, confirmed) if e["outcome"] == "applied" and e["source"] == "stripe"]
    assert applied and applied[0]["detail"]["confirmed"] == "stripe_api"
    assert stripe_api.lookups(json.loads(body1)["id"]) == 1

    # given the same kind of event while Stripe's API is failing (every try of the step)
    held, pi2 = new_order(db, story)
    body2 = stripe(held, pi2)
    stripe_api.add(body2)
    stripe_api.fail_next(500, times=4)
    publish(BROKER, "orders.confirm_payment", signed(held, body2, stripe_header(body2, old), received_at=None))
    # then it is recorded as needing confirmation, and nothing moved
    wait_for("held", lambda: any(e["kind"] == "payment.needs_confirmation" for e in events(db, held)))
    assert order_row(db, held)["status"] == "pending_payment" and not fake.jobs_for(held)
    msg = [e for e in events(db, held) if e["kind"] == "payment.needs_confirmation"][0]["message"]
    assert json.loads(body2)["id"] in msg and "s old (tolerance 300 s)" in msg and "could not confirm it" in msg
    # and operators see it: status --order and the summary
    code, out = cli(fake, "status", "--order", held)
    assert code == 0 and "waiting for confirmation with Stripe" in out and json.loads(body2)["id"] in out
    code, out = cli(fake, "status", "--json")
    assert code == 0 and json.loads(out)["orders"]["payment_needs_confirmation"] >= 1
    # and without a key an operator is told what to do
    code, out = cli(fake, "retry", "--order", held, env={"STRIPE_SECRET_KEY": ""})
    assert "STRIPE_SECRET_KEY is not set" in out and order_row(db, held)["status"] == "pending_payment"
    # when an operator retries it, Stripe's API confirms it and the order is paid and printed
    code, out = cli(fake, "retry", "--order", held)
    assert code == 0 and "confirming" in out
    wait_job(fake, held)
    assert order_row(db, held)["paid_at"] is not None
    code, out = cli(fake, "status", "--order", held)
    assert "waiting for confirmation" not in out

    # given a held event and the beat's sweep (backfill) instead of an operator
    swept, pi3 = new_order(db, story)
    body3 = stripe(swept, pi3)
    stripe_api.add(body3)
    stripe_api.fail_next(503, times=4)
    publish(BROKER, "orders.confirm_payment", signed(swept, body3, stripe_header(body3, old), received_at=None))
    wait_for("held", lambda: any(e["kind"] == "payment.needs_confirmation" for e in events(db, swept)))
    operator(fake, "from pipeline.operations.orders import sweep_orders; print(sweep_orders())")
    wait_job(fake, swept)


def test_a_test_mode_payment_never_moves_a_live_order(orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    order, pi = new_order(db, story)
    # given test-mode events tied to a live deployment's order by metadata.order_id: a success,
    # a cancellation and a refund (each would move the order if it counted)
    publish(BROKER, "orders.confirm_payment",
            signed(order, stripe(order, pi, livemode=False)),
            signed(order, stripe(order, pi, se.PAYMENT_CANCELED, livemode=False)),
            signed(order, stripe(order, pi, se.CHARGE_REFUNDED, amount_refunded=2999, refunded=True, livemode=False)),
            # and a wrong amount in test mode must not fail the real order either
            signed(order, stripe(order, pi, amount=1, livemode=False)))
    ignored = wait_for("four ignored", lambda: len(e := [x for x in events(db, order) if x["outcome"] == "ignored"])
                       == 4 and e)
    # then each is recorded as ignored, saying why, and nothing moved
    assert all("test-mode Stripe event (livemode false) on a live-mode deployment" in e["message"] for e in ignored)
    time.sleep(0.5)
    assert order_row(db, order)["status"] == "pending_payment" and not fake.jobs_for(order)
    code, out = cli(fake, "status")
    assert code == 0 and "wrong Stripe mode" in out
    # when the live payment arrives, the order is paid and printed
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    wait_job(fake, order)
    # and a test-mode deployment ignores live events the same way (the setting, or the key's prefix)
    out = operator(fake, "from pipeline.orders.steps import stripe_mode; "
                         "print(stripe_mode({'STRIPE_SECRET_KEY': 'sk_test_x'}), stripe_mode({}), "
                         "stripe_mode({'STRIPE_MODE': 'test'}), stripe_mode({'STRIPE_SECRET_KEY': 'rk_live_x'}))")
    assert out.split() == ["test", "live", "test", "live"]


def checkout_session(pi: str, etype: str = "checkout.session.completed", *, order: str | None = None,
                     client_reference_id: str | None = None, amount: int = 2999, currency: str = "usd",
                     payment_status: str = "paid", livemode: bool = True) -> str:
    """A checkout.session.* event body shaped as Stripe's API reference gives the Checkout
    Session object (https://docs.stripe.com/api/checkout/sessions/object), mode "payment"."""
    cs = f"cs_{'live' if livemode else 'test'}_{uuid.uuid4().hex[:24]}"
    obj = {"id": cs, "object": "checkout.session", "after_expiration": None, "allow_promotion_codes": None,
           "amount_subtotal": amount, "amount_total": amount, "automatic_tax": {"enabled": False, "status": None},
           "billing_address_collection": None, "cancel_url": "https://storycreator.test/cancel",
           "client_reference_id": client_reference_id, "consent": None, "created": int(time.time()) - 60,
           "currency": currency, "customer": None, "customer_creation": "if_required",
           "customer_details": {"email": "parent@storycreator.test", "name": None, "phone": None,
                                "tax_exempt": "none", "tax_ids": []},
           "customer_email": None, "expires_at": int(time.time()) + 86000, "invoice": None, "livemode": livemode,
           "locale": None, "metadata": {"order_id": order} if order else {}, "mode": "payment",
           "payment_intent": pi, "payment_method_types": ["card"], "payment_status": payment_status,
           "status": "complete", "submit_type": None, "subscription": None,
           "success_url": "https://storycreator.test/success", "total_details": {
               "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}, "url": None}
    return se.event_payload(f"evt_{uuid.uuid4().hex[:16]}", etype, obj, livemode=livemode)


def test_stripe_checkout_pays_the_order_once(orders_db: Db, story: str, fake: FakeLulu) -> None:
    """checkout.session.completed was ignored: an API using Stripe Checkout never got a paid order."""
    db = orders_db
    # given an order whose payment Stripe Checkout will create (no intent stored), tied by
    # client_reference_id; and one tied by the session's metadata.order_id
    by_ref, pi1 = new_order(db, story, with_intent=False)
    by_meta, pi2 = new_order(db, story, with_intent=False)
    publish(BROKER, "orders.confirm_payment",
            signed(None, checkout_session(pi1, client_reference_id=by_ref)),  # no order_id: the session says
            signed(by_meta, checkout_session(pi2, order=by_meta)))
    # then each is paid, its payment intent recorded, and printed
    for order, pi in ((by_ref, pi1), (by_meta, pi2)):
        wait_job(fake, order)
        row = order_row(db, order)
        assert row["paid_at"] is not None and row["payment_intent_id"] == pi
    # when the same payment's payment_intent.succeeded follows (the intent carries no metadata)
    publish(BROKER, "orders.confirm_payment", signed(None, stripe(by_ref, pi1, metadata={})),
            signed(by_meta, stripe(by_meta, pi2)))
    wait_for("late intents recorded", lambda: all(
        len([e for e in events(db, o) if e["source"] == "stripe"]) == 2 for o in (by_ref, by_meta)))
    # then it is recorded as already paid: paid once, one print job
    for order in (by_ref, by_meta):
        assert [e["outcome"] for e in events(db, order) if e["source"] == "stripe"] == ["applied", "ignored"]
        assert len(fake.creates_for(order)) == 1

    # given the intent's success first, then the session's completion of the same payment
    first, pi3 = new_order(db, story, with_intent=False)
    publish(BROKER, "orders.confirm_payment", signed(first, stripe(first, pi3)))
    wait_job(fake, first)
    publish(BROKER, "orders.confirm_payment", signed(first, checkout_session(pi3, order=first)))
    wait_for("session recorded", lambda: len([e for e in events(db, first) if e["source"] == "stripe"]) == 2)
    assert [e["outcome"] for e in events(db, first) if e["source"] == "stripe"] == ["applied", "ignored"]
    assert len(fake.creates_for(first)) == 1

    # given a session whose total is not the order's amount, or whose currency differs
    short, pi4 = new_order(db, story, with_intent=False)
    euros, pi5 = new_order(db, story, with_intent=False)
    publish(BROKER, "orders.confirm_payment", signed(short, checkout_session(pi4, order=short, amount=999)),
            signed(euros, checkout_session(pi5, client_reference_id=euros, currency="eur")))
    # then the order fails, saying both
    wait_status(db, short, "failed")
    assert "Stripe received 999 USD, the order is for 2999 USD" in error_of(db, short)
    wait_status(db, euros, "failed")
    assert "Stripe received 2999 EUR, the order is for 2999 USD" in error_of(db, euros)

    # given a delayed payment method: the session completes unpaid, and is paid later
    delayed, pi6 = new_order(db, story, with_intent=False)
    publish(BROKER, "orders.confirm_payment",
            signed(delayed, checkout_session(pi6, order=delayed, payment_status="unpaid")))
    wait_for("unpaid session noted", lambda: any(e["outcome"] == "noted" for e in events(db, delayed)))
    assert order_row(db, delayed)["status"] == "pending_payment" and not fake.jobs_for(delayed)
    publish(BROKER, "orders.confirm_payment",
            signed(delayed, checkout_session(pi6, "checkout.session.async_payment_succeeded", order=delayed)))
    wait_job(fake, delayed)
    assert order_row(db, delayed)["payment_intent_id"] == pi6

    # and a test-mode session never pays a live order; one for another order is refused
    test_mode, pi7 = new_order(db, story, with_intent=False)
    other, _ = new_order(db, story, with_intent=False)
    publish(BROKER, "orders.confirm_payment",
            signed(test_mode, checkout_session(pi7, order=test_mode, livemode=False)),
            signed(other, checkout_session(f"pi_x_{uuid.uuid4().hex[:10]}", order=test_mode)))
    wait_for("test-mode session ignored", lambda: any(e["outcome"] == "ignored" for e in events(db, test_mode)))
    wait_for("foreign session refused", lambda: any(e["outcome"] == "rejected" for e in events(db, other)))
    time.sleep(0.5)
    for order in (test_mode, other):
        assert order_row(db, order)["status"] == "pending_payment" and not fake.jobs_for(order)


def test_unsigned_events_never_move_a_live_order(orders_db: Db, story: str, fake: FakeLulu, stripe_api: FakeStripe,
                                                 tmp_path: Path) -> None:
    """With STRIPE_WEBHOOK_SECRET unset, a raw payload without a signature paid an order. A
    live-mode worker refuses it (or confirms it with Stripe's API when it has a key), recorded
    where operators look; only a test-mode deployment (the offline demo) takes it as it is."""
    db = orders_db
    base = {**worker_env(fake, KILL_BROKER), "STRIPE_WEBHOOK_SECRET": ""}

    def worker(name: str, **env: str) -> WorkerProcess:
        flush_redis(KILL_BROKER)
        w = WorkerProcess(tmp_path / f"{name}.log", env={**base, **env}, concurrency=4)
        w.start()
        return w

    # given a live-mode worker with no webhook secret and no key
    w = worker("nokey", STRIPE_SECRET_KEY="", STRIPE_MODE="live")
    try:
        order, pi = new_order(db, story)
        meta_only, pi2 = new_order(db, story)
        body = stripe(order, pi)
        publish(KILL_BROKER, "orders.confirm_payment",
                {"order_id": order, "payload": body, "received_at": time.time()},  # the raw body, unsigned
                {"payload": stripe(meta_only, pi2)},  # no order_id: metadata.order_id names it
                {"order_id": order, "event": json.loads(stripe(order, pi))})  # pre-parsed
        refused = wait_for("refusals", lambda: len(r := [e for e in events(db, order) if e["outcome"] == "rejected"])
                           == 2 and r)
        wait_for("refusal on the metadata's order", lambda: any(e["outcome"] == "rejected"
                                                                 for e in events(db, meta_only)))
    finally:
        w.stop()
    # then nothing moved, and each refusal says why
    for o in (order, meta_only):
        assert order_row(db, o)["status"] == "pending_payment" and not fake.jobs_for(o)
    assert all("unverified event on a live-mode deployment" in e["message"] for e in refused)
    assert any("STRIPE_WEBHOOK_SECRET" in e["message"] for e in refused)
    code, out = cli(fake, "status", "--order", order)
    assert code == 0 and "invalid_event" in out and "unverified event on a live-mode deployment" in out
    # and once the secret is set, the same event, signed, still counts (its id was not spent)
    publish(BROKER, "orders.confirm_payment", signed(order, body))
    wait_job(fake, order)

    # given a live-mode worker with no webhook secret and a key that may read Events
    w = worker("key", STRIPE_MODE="live")
    try:
        confirmed, pi3 = new_order(db, story)
        unknown, pi4 = new_order(db, story)
        genuine = stripe(confirmed, pi3)
        stripe_api.add(genuine)
        forged = genuine.replace('"amount": 2999', '"amount": 1')  # what the payload says is not used
        publish(KILL_BROKER, "orders.confirm_payment", {"order_id": confirmed, "payload": forged},
                {"order_id": unknown, "payload": stripe(unknown, pi4)})  # Stripe never sent it
        # then Stripe's own copy pays the genuine one, and the one Stripe does not know is refused
        wait_job(fake, confirmed)
        applied = [e for e in events(db, confirmed) if e["outcome"] == "applied" and e["source"] == "stripe"]
        assert applied[0]["detail"]["confirmed"] == "stripe_api" and applied[0]["detail"]["amount"] == 2999
        rej = wait_for("unknown refused", lambda: [e for e in events(db, unknown) if e["outcome"] == "rejected"])
        assert "Stripe has no event" in rej[0]["message"] and order_row(db, unknown)["status"] == "pending_payment"
    finally:
        w.stop()

    # given a test-mode deployment without a secret (the offline demo): unsigned test events count
    w = worker("test", STRIPE_SECRET_KEY="", STRIPE_MODE="test")
    try:
        demo, pi5 = new_order(db, story)
        publish(KILL_BROKER, "orders.confirm_payment", {"order_id": demo, "payload": stripe(demo, pi5, livemode=False)})
        wait_for("demo paid", lambda: order_row(db, demo)["paid_at"], timeout=30)
    finally:
        w.stop()
        flush_redis(KILL_BROKER)


# --- the story ------------------------------------------------------------------------------------

def test_a_paid_order_waits_for_its_story_and_fails_if_the_story_fails(
        orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    # given paid orders for a story not started yet and for a story whose photo has no face
    pending_story = db.story(db.photo(astronaut_png()), name="Leo")
    faceless_story = db.story(db.photo(faceless_png()))
    waits, pi1 = new_order(db, pending_story)
    doomed, pi2 = new_order(db, faceless_story)
    publish(BROKER, "orders.confirm_payment", signed(waits, stripe(waits, pi1)), signed(doomed, stripe(doomed, pi2)))
    wait_status(db, waits, "paid")
    time.sleep(1.0)
    # then nothing is printed while the story is unfinished: never a half book
    assert not fake.jobs_for(waits) and not (db.storage / f"orders/{waits}/print").exists()
    # when the stories are generated
    publish(BROKER, "stories.generate", {"story_id": pending_story}, {"story_id": faceless_story})
    # then the finished one is printed, and the failed one's order fails saying why
    job = wait_job(fake, waits, timeout=60)
    assert job["line_items"][0]["title"] == db.story_row(pending_story)["title"]
    wait_status(db, doomed, "failed", timeout=60)
    assert "The story of this order failed (The photo could not be used" in error_of(db, doomed)
    assert "retry the story, then the order" in error_of(db, doomed)


# --- the print job ---------------------------------------------------------------------------------

def test_a_job_rejected_for_bad_files_fails_the_order_and_a_retry_prints_a_new_run(
        orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    # given a print shop whose rule the files break (at most 20 interior pages)
    fake.max_interior_pages = 20
    order, pi = new_order(db, story)
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    first = wait_job(fake, order)
    # then Lulu rejects the job after checking the files, and the order fails with Lulu's reason
    wait_status(db, order, "failed")
    msg = error_of(db, order)
    assert f"The print job {first['id']} was rejected by Lulu" in msg
    assert "interior: 24 pages; at most 20 are allowed" in msg
    # when the rule is fixed and an operator retries the order
    fake.max_interior_pages = None
    out = operator(fake, f"from pipeline.operations.orders import retry_order; print(retry_order('{order}').message)")
    assert "retried (new print run)" in out
    # then a second job (run 2) is created and the order ships with it
    second = wait_job(fake, order, count=2)
    assert second["line_items"][0]["external_id"] == f"{order}-2"
    wait_for("new job recorded", lambda: order_row(db, order)["pod_order_id"] == job_key(second))
    fake.set_status(job_key(second), "SHIPPED", tracking_id="TRACK-RUN-2")
    row = wait_status(db, order, "shipped")
    assert row["tracking_number"] == "TRACK-RUN-2" and len(fake.creates_for(order)) == 2
    assert ("retry", "retried") in [(e["kind"], e["outcome"]) for e in events(db, order)]


def test_an_incomplete_address_fails_before_lulu_and_a_retry_after_fixing_it_prints(
        orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    order, pi = new_order(db, story, address={"name": "Sam Reader", "street1": "1 Example St", "country_code": "US",
                                              "phone_number": "+1 919 555 0100"})
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    wait_status(db, order, "failed")
    assert ("The shipping address is incomplete (missing city, postcode, state_code, required for US); correct it "
            "and retry") in error_of(db, order)
    assert not fake.creates_for(order)
    db.exec("UPDATE orders SET shipping_address = CAST(:a AS jsonb) WHERE id = :o", a=json.dumps(ADDRESS), o=order)
    out = operator(fake, f"from pipeline.operations.orders import retry_order; print(retry_order('{order}').message)")
    assert "retried" in out
    job = wait_job(fake, order)
    assert job["line_items"][0]["external_id"] == f"{order}-1"  # no job existed: same print run
    wait_for("job recorded", lambda: order_row(db, order)["pod_order_id"] == job_key(job))


def test_the_print_job_carries_the_parents_email_and_addresses_lulu_cannot_ship_are_refused_first(
        orders_db: Db, story: str, fake: FakeLulu) -> None:
    db = orders_db
    parent_email = db.one("SELECT u.email FROM stories s JOIN users u ON u.id = s.user_id WHERE s.id = :s",
                          s=story)["email"]
    # given an address with no email (the API stores none; the parent's is users.email), and
    # addresses Lulu's schema says cannot ship: no phone (and no default configured), a Canadian
    # one without its province, a postcode longer than Lulu's 64 characters
    plain, pi1 = new_order(db, story)
    no_phone, pi2 = new_order(db, story, address={k: v for k, v in ADDRESS.items() if k != "phone_number"})
    no_state, pi3 = new_order(db, story, address={**ADDRESS, "country_code": "CA", "state_code": "",
                                                  "city": "Toronto", "postcode": "M5V 2T6"})
    long_code, pi4 = new_order(db, story, address={**ADDRESS, "postcode": "9" * 70})
    publish(BROKER, "orders.confirm_payment", *[signed(o, stripe(o, p)) for o, p in
                                                ((plain, pi1), (no_phone, pi2), (no_state, pi3), (long_code, pi4))])
    # then the job is sent with the parent's email in its shipping address (Lulu requires it)
    wait_job(fake, plain, timeout=90)
    assert fake.creates_for(plain)[0]["json"]["shipping_address"]["email"] == parent_email
    # and the others fail before anything reaches Lulu, saying what to correct
    expected = {no_phone: "missing phone_number", no_state: "missing state_code, required for CA",
                long_code: "postcode is too long (70 characters; at most 64)"}
    for order, words in expected.items():
        wait_status(db, order, "failed", timeout=60)
        assert words in error_of(db, order) and "retry the order" in error_of(db, order)
        assert not fake.creates_for(order)
    code, out = cli(fake, "status", "--order", no_phone)
    assert "missing phone_number" in out
    # when the address is corrected and an operator retries, the book is printed
    db.exec("UPDATE orders SET shipping_address = CAST(:a AS jsonb) WHERE id = :o", a=json.dumps(ADDRESS), o=no_phone)
    code, out = cli(fake, "retry", "--order", no_phone)
    assert code == 0 and "retried" in out
    job = wait_job(fake, no_phone, timeout=90)
    assert job["shipping_address"]["phone_number"] == ADDRESS["phone_number"]


def test_a_token_expiring_mid_run_is_refreshed_and_the_order_goes_on(orders_db: Db, story: str,
                                                                       fake: FakeLulu) -> None:
    db = orders_db
    order, pi = new_order(db, story)
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    job = wait_job(fake, order)
    wait_for("job recorded", lambda: order_row(db, order)["pod_order_id"] == job_key(job))
    # when Lulu expires every token while the worker is following the job
    cut = len(fake.requests)
    fake.revoke_tokens()
    fake.set_status(job_key(job), "IN_PRODUCTION")
    # then the worker's next call is refused, it fetches a new token once, and the order moves on
    wait_status(db, order, "fulfilled")
    # (the worker's other threads follow other orders' jobs with the same cached token)
    after = fake.requests[cut:]
    refused = next(i for i, r in enumerate(after) if r["status"] == 401)
    tokens = [i for i, r in enumerate(after) if r["op"] == "token"]
    assert len(tokens) == 1 and tokens[0] > refused and after[tokens[0]]["status"] == 200
    assert any(r["path"] == f"/print-jobs/{job_key(job)}/" and r["status"] == 200 for r in after[tokens[0]:])
    assert not [e for e in events(db, order) if e["outcome"] in ("failed", "retried")]


def test_lulus_signed_webhook_moves_the_order_and_forged_ones_do_not(orders_db: Db, story: str,
                                                                      fake: FakeLulu) -> None:
    db = orders_db
    order, pi = new_order(db, story)
    publish(BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    job = wait_job(fake, order)
    wait_for("job recorded", lambda: order_row(db, order)["pod_order_id"] == job_key(job))
    # given Lulu's API failing for this job, so polling cannot see anything (nor fail the order)
    fake.fail_reads[job_key(job)] = 503
    fake.set_status(job_key(job), "IN_PRODUCTION")
    body, headers = fake.webhook(job_key(job))
    # when a forged webhook claims it shipped
    forged = body.replace('"IN_PRODUCTION"', '"SHIPPED"')
    publish(BROKER, "orders.lulu_webhook", {"payload": forged, "headers": headers},
            {"payload": body, "headers": {"Lulu-HMAC-SHA256": "0" * 64}})
    # and Lulu's own webhook says it is in production
    publish(BROKER, "orders.lulu_webhook", {"payload": body, "headers": headers})
    # then only the genuine one counts
    assert wait_status(db, order, "fulfilled")["shipped_at"] is None
    fake.set_status(job_key(job), "SHIPPED", tracking_id="WEBHOOK-TRACK-1")
    shipped_body, shipped_headers = fake.webhook(job_key(job))
    publish(BROKER, "orders.lulu_webhook", {"payload": shipped_body, "headers": shipped_headers})
    row = wait_status(db, order, "shipped")
    assert row["tracking_number"] == "WEBHOOK-TRACK-1"
    # and a late replay of the production webhook changes nothing
    publish(BROKER, "orders.lulu_webhook", {"payload": body, "headers": headers})
    time.sleep(0.5)
    assert order_row(db, order)["status"] == "shipped"
    kinds = [(e["kind"], e["outcome"]) for e in events(db, order)]
    assert ("print_status", "retried") in kinds and not any(o == "failed" for _, o in kinds)


# --- stuck orders -----------------------------------------------------------------------------------

def test_a_paid_order_whose_messages_were_lost_is_swept_and_printed(orders_db: Db, story: str,
                                                                    fake: FakeLulu) -> None:
    db = orders_db
    # given orders paid an hour ago whose messages were lost: no print files, no print job
    lost, _ = new_order(db, story, status="paid")
    beat, _ = new_order(db, story, status="paid")
    stale = "UPDATE orders SET updated_at = now() - interval '1 hour' WHERE id = :o"
    db.exec(stale, o=lost)
    # when an operator looks first (dry run), then runs the sweep (backfill)
    listed = json.loads(operator(fake, "import json; from pipeline.operations.orders import sweep_orders; "
                                       "print(json.dumps([[i.task, i.kwargs] for i in sweep_orders(dry_run=True)]))"))
    assert ["orders.prepare_print", {"order_id": lost}] in listed and not fake.jobs_for(lost)
    assert ["orders.prepare_print", {"order_id": beat}] not in listed  # fresh: its message may yet come
    operator(fake, "from pipeline.operations.orders import sweep_orders; sweep_orders()")
    # and, for the other order, celery beat's orders.sweep runs once it is stale
    db.exec(stale, o=beat)
    publish(BROKER, "orders.sweep", {})
    # then both are printed, each once
    for order in (lost, beat):
        job = wait_job(fake, order)
        wait_for("job recorded", lambda o=order, j=job: order_row(db, o)["pod_order_id"] == job_key(j))
    time.sleep(0.5)
    assert len(fake.creates_for(lost)) == 1 and len(fake.creates_for(beat)) == 1
    out = operator(fake, f"from pipeline.operations.orders import order_report, format_report; "
                         f"print(format_report(order_report('{lost}')))")
    assert any("print_job" in ln and "completed" in ln for ln in out.splitlines())
    assert f"print job     lulu {order_row(db, lost)['pod_order_id']}" in out


@pytest.mark.timeout(120)
def test_a_worker_killed_after_creating_the_print_job_does_not_cause_a_second_job(
        orders_db: Db, story: str, fake: FakeLulu, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db = orders_db
    # given workers on their own broker, with short redelivery (Redis visibility 4 s, lease 3 s)
    flush_redis(KILL_BROKER)
    env = {**worker_env(fake, KILL_BROKER), "BROKER_VISIBILITY_TIMEOUT": "4", "STEP_LEASE_SECONDS": "3",
           "JOB_POLL_INTERVAL": "1", "CPU_PROCESSES": "0"}
    first = WorkerProcess(tmp_path / "first.log", env=env, concurrency=4)
    request.addfinalizer(first.stop)
    first.start()
    order, pi = new_order(db, story)
    # and Lulu creating the job, then holding its reply back
    created = fake.hold_next_create(60)
    publish(KILL_BROKER, "orders.confirm_payment", signed(order, stripe(order, pi)))
    assert created.wait(60), first.tail()
    # when the worker is killed with SIGKILL right after the job was created
    first.kill()
    killed_at = time.monotonic()
    fake.release_holds()
    assert order_row(db, order)["pod_order_id"] is None
    # and another worker starts once the broker would hand the message out again. (kombu 5.7
    # scans for expired unacked messages when a consumer starts, then only every ~100 s:
    # a worker started earlier would wait that long, or for the orders sweep after the lease.)
    time.sleep(max(0.0, 4.5 - (time.monotonic() - killed_at)))
    second = WorkerProcess(tmp_path / "second.log", env=env, concurrency=4)
    request.addfinalizer(second.stop)
    second.start()
    # then it finds the job the dead worker created instead of creating another
    job = fake.jobs_for(order)[0]
    wait_for("job recorded", lambda: order_row(db, order)["pod_order_id"] == job_key(job), timeout=30)
    fake.set_status(job_key(job), "SHIPPED", tracking_id="AFTER-KILL")
    assert wait_status(db, order, "shipped", timeout=30)["tracking_number"] == "AFTER-KILL"
    assert len(fake.creates_for(order)) == 1 and len(fake.jobs_for(order)) == 1
    assert any("found at Lulu" in (e["message"] or "") for e in events(db, order))
