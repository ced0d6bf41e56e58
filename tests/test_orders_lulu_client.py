"""The Lulu Print API client against a fake Lulu speaking its HTTP protocol: OAuth tokens (cached,
renewed, refreshed once on 401), print jobs (create, find by our order id, read, cancel), cover
dimensions, and every fault the pipeline's error policy depends on."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.orders.print_files import cover_size_pt, parse_pod_package
from pipeline.providers import lulu
from pipeline.providers.lulu import LuluClient, PrintJobRequest
from tests.fakes.lulu_server import CLIENT_KEY, CLIENT_SECRET, FakeLulu

SKU = "0850X0850FCPRECW080CW444GXX"


@pytest.fixture()
def fake() -> Iterator[FakeLulu]:
    f = FakeLulu().start()
    yield f
    f.stop()
    lulu.forget_tokens()


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.refuse: str | None = None

    def before(self, provider: str, operation: str) -> None:
        self.calls.append(("before", operation, ""))
        if self.refuse == operation:
            raise TransientStepError("lulu request quota is spent for now", retry_after=3.0)

    def after(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        assert provider == "lulu" and seconds >= 0
        self.calls.append(("after", operation, outcome))


def client(fake: FakeLulu, *, secret: str = CLIENT_SECRET, timeout: float = 1.0, hooks: Any = None,
           allow_file_urls: bool = True) -> LuluClient:
    return LuluClient(fake.base_url, CLIENT_KEY, secret, timeout=timeout, connect_timeout=0.5, hooks=hooks,
                      allow_file_urls=allow_file_urls)


def job_request(order_id: str, run: int = 1, **over: Any) -> PrintJobRequest:
    fields: dict[str, Any] = dict(
        external_id=order_id, line_item_external_id=f"{order_id}-{run}", title="Mia and the Moon",
        pod_package_id=SKU, page_count=24, interior_url="file:///nonexistent/interior.pdf", interior_md5="0" * 32,
        cover_url="file:///nonexistent/cover.pdf", cover_md5="0" * 32,
        shipping_address={"name": "Sam Reader", "street1": "1 Example Street", "city": "Raleigh", "postcode": "27601",
                          "state_code": "NC", "country_code": "US", "phone_number": "+1 919 555 0100",
                          "email": "parent@example.com"},
        shipping_level="MAIL", contact_email="orders@example.com")
    fields.update(over)
    return PrintJobRequest(**fields)


def ops(fake: FakeLulu) -> list[tuple[str, Any]]:
    return [(r["op"], r["status"]) for r in fake.requests]


# --- tokens ------------------------------------------------------------------------------------

def test_token_is_fetched_once_and_reused(fake: FakeLulu) -> None:
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    c.get_job(job.id)
    c.get_job(job.id)
    assert [op for op, _ in ops(fake)] == ["token", "create_job", "get_job", "get_job"]
    tok = fake.requests[0]
    assert tok["form"]["grant_type"] == ["client_credentials"] and tok["headers"]["authorization"].startswith("Basic ")
    assert all(r["headers"]["authorization"].startswith("Bearer eyJ") for r in fake.requests[1:])


def test_token_expiring_mid_run_is_refreshed_once_on_401(fake: FakeLulu) -> None:
    # given a client with a cached token, which the server then expires early
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    fake.revoke_tokens()
    # when the next call is made
    seen = c.get_job(job.id)
    # then it was refused once, a new token fetched, and the call repeated with it
    assert seen.id == job.id
    assert ops(fake)[-3:] == [("get_job", 401), ("token", 200), ("get_job", 200)]
    assert fake.requests[-1]["headers"]["authorization"] != fake.requests[-3]["headers"]["authorization"]


def test_threads_finding_the_token_expired_at_once_fetch_one_new_token(fake: FakeLulu) -> None:
    from concurrent.futures import ThreadPoolExecutor

    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    fake.revoke_tokens()
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: c.get_job(job.id).id, range(8)))
    assert seen == [job.id] * 8
    assert [op for op, _ in ops(fake)].count("token") == 2  # the first, and one refresh for all


def test_token_is_renewed_before_it_expires(fake: FakeLulu) -> None:
    fake.token_ttl = 1
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    time.sleep(1.05)
    c.get_job(job.id)
    # renewed up front: no request went out with a token about to expire
    assert [s for _, s in ops(fake)] == [200, 201, 200, 200]
    assert [op for op, _ in ops(fake)].count("token") == 2


def test_refused_credentials_are_permanent_and_the_secret_stays_out(fake: FakeLulu) -> None:
    c = client(fake, secret="wrong-SECRET-value-42")
    with pytest.raises(PermanentStepError) as e:
        c.get_job("5001")
    assert "HTTP 401" in str(e.value) and "unauthorized_client" in str(e.value)
    assert "wrong-SECRET-value-42" not in str(e.value) and CLIENT_SECRET not in str(e.value)
    assert [op for op, _ in ops(fake)] == ["token"]  # nothing else was tried with no token


def test_a_second_401_is_a_credentials_problem(fake: FakeLulu) -> None:
    c = client(fake)
    unauthorized = ("status", 401, {}, {"detail": "Invalid token."})
    fake.script("get_job", [unauthorized, unauthorized])
    with pytest.raises(PermanentStepError) as e:
        c.get_job("5001")
    assert "HTTP 401" in str(e.value) and "Invalid token." in str(e.value)
    assert [op for op, _ in ops(fake)] == ["token", "get_job", "token", "get_job"]


def test_missing_credentials_fail_clearly_without_a_request(fake: FakeLulu) -> None:
    with pytest.raises(PermanentStepError, match="LULU_CLIENT_KEY"):
        LuluClient(fake.base_url, "", "").get_job("1")
    assert fake.requests == []


# --- faults --------------------------------------------------------------------------------------

def test_throttling_and_server_errors_are_transient_with_retry_after(fake: FakeLulu) -> None:
    c = client(fake)
    # (a read is tried 3 times in the call on a 5xx: http_retry.py; each 5xx below is sent to all 3)
    fake.script("get_job", [
        ("status", 429, {"Retry-After": "7"}, {"detail": "Request was throttled."}),
        *[("status", 503, {}, "<html>Service Unavailable</html>")] * 3,
        *[("status", 502, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, {"detail": "Bad gateway"})] * 3,
    ])
    with pytest.raises(TransientStepError) as e:
        c.get_job("5001")
    assert e.value.retry_after == 7.0 and "HTTP 429" in str(e.value) and "throttled" in str(e.value)
    with pytest.raises(TransientStepError) as e:
        c.get_job("5001")
    assert e.value.retry_after is None and "HTTP 503" in str(e.value)
    with pytest.raises(TransientStepError) as e:
        c.get_job("5001")
    assert e.value.retry_after == 0.0  # a date in the past: come back now (backoff still applies)


def test_timeouts_and_dropped_connections_are_transient(fake: FakeLulu) -> None:
    c = client(fake, timeout=0.5)
    # (a dropped connection is tried 3 times in the call: http_retry.py; a read timeout is not retried)
    fake.script("get_job", [("hang", 3), *[("close",)] * 3])
    t0 = time.monotonic()
    with pytest.raises(TransientStepError, match="did not answer within 0.5 s"):
        c.get_job("5001")
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(TransientStepError, match="could not be reached"):
        c.get_job("5001")


def test_unreadable_replies_are_transient(fake: FakeLulu) -> None:
    c = client(fake)
    fake.script("get_job", [("malformed",), ("status", 200, {}, {"id": 5001})])
    with pytest.raises(TransientStepError, match="unreadable"):
        c.get_job("5001")
    with pytest.raises(TransientStepError, match="unreadable print job"):
        c.get_job("5001")
    fake.script("token", [("status", 200, {}, {"token_type": "bearer"})])
    lulu.forget_tokens()
    with pytest.raises(TransientStepError, match="token endpoint"):
        c.get_job("5001")


def test_validation_errors_are_permanent_with_lulus_reasons(fake: FakeLulu) -> None:
    c = client(fake)
    bad = job_request(str(uuid.uuid4()), shipping_address={"name": "Sam", "street1": "1 Road", "country_code": "US"},
                      shipping_level="TELEPORT")
    with pytest.raises(PermanentStepError) as e:
        c.create_job(bad)
    msg = str(e.value)
    assert "HTTP 400" in msg and "shipping_address.city: This field is required." in msg
    assert 'shipping_level: "TELEPORT" is not a valid choice.' in msg
    with pytest.raises(PermanentStepError, match="HTTP 404"):
        c.get_job("999999")


def test_hooks_wrap_every_request_and_may_refuse_one(fake: FakeLulu) -> None:
    hooks = Hooks()
    c = client(fake, hooks=hooks)
    fake.script("get_job", [("status", 429, {}, {"detail": "slow down"})])
    with pytest.raises(TransientStepError):
        c.get_job("5001")
    assert hooks.calls == [("before", "token", ""), ("after", "token", "ok"),
                           ("before", "get_job", ""), ("after", "get_job", "throttled")]
    # a quota that is spent stops the request before it is sent
    hooks.refuse = "get_job"
    sent = len(fake.requests)
    with pytest.raises(TransientStepError, match="quota"):
        c.get_job("5001")
    assert len(fake.requests) == sent


def test_file_urls_are_refused_before_anything_is_sent(fake: FakeLulu) -> None:
    c = client(fake, allow_file_urls=False)
    with pytest.raises(PermanentStepError, match="PRINT_FILES_BASE_URL"):
        c.create_job(job_request(str(uuid.uuid4())))
    assert fake.requests == []


# --- short in-call retries of the idempotent reads (tenacity, pipeline/providers/http_retry.py) -----

def test_a_read_is_tried_again_at_once_after_a_dropped_connection_or_a_5xx(fake: FakeLulu) -> None:
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    # given Lulu's API failing twice for a read: a gateway's 503, then a dropped connection
    fake.script("get_job", [("status", 503, {}, {"detail": "Service temporarily unavailable"}), ("close",)])
    cut = len(fake.requests)
    # when the job is read, it is read (no error for the step to retry)
    t0 = time.monotonic()
    assert c.get_job(job.id).id == job.id
    assert [op for op, _ in ops(fake)[cut:]] == ["get_job"] * 3
    assert [s for _, s in ops(fake)[cut:]][::2] == [503, 200]
    assert time.monotonic() - t0 < 2.0  # short waits: at most 0.5 s each


def test_a_read_gives_up_after_three_tries_as_the_transient_error_it_was(fake: FakeLulu) -> None:
    hooks = Hooks()
    c = client(fake, hooks=hooks)
    fake.script("get_job", [("status", 502, {}, {"detail": "Bad gateway"})] * 3)
    with pytest.raises(TransientStepError, match="HTTP 502"):
        c.get_job("5001")
    assert [op for op, _ in ops(fake)].count("get_job") == 3  # the bound: 3 tries, then the step's backoff
    assert hooks.calls.count(("after", "get_job", "server_error")) == 3  # every try is metered and quota'd


def test_the_token_is_tried_again_after_a_dropped_connection(fake: FakeLulu) -> None:
    fake.script("token", [("close",), ("close",)])
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    assert [op for op, _ in ops(fake)] == ["token", "token", "token", "create_job"]
    assert job.status == "CREATED"
    lulu.forget_tokens()
    fake.script("token", [("close",)] * 3)
    with pytest.raises(TransientStepError, match="could not be reached"):
        c.get_job(job.id)


def test_throttling_long_waits_and_writes_are_not_retried_in_the_call(fake: FakeLulu) -> None:
    c = client(fake)
    fake.script("get_job", [("status", 429, {}, {"detail": "slow down"}),
                            ("status", 503, {"Retry-After": "30"}, {"detail": "maintenance"})])
    with pytest.raises(TransientStepError, match="HTTP 429"):
        c.get_job("5001")
    with pytest.raises(TransientStepError, match="HTTP 503") as e:
        c.get_job("5001")
    assert e.value.retry_after == 30.0  # a long wait is the step's (re-scheduled), not a sleep here
    fake.script("create_job", [("status", 503, {}, {"detail": "Service temporarily unavailable"})])
    with pytest.raises(TransientStepError, match="HTTP 503"):
        c.create_job(job_request(str(uuid.uuid4())))
    assert [op for op, _ in ops(fake)].count("get_job") == 2 and [op for op, _ in ops(fake)].count("create_job") == 1


# --- print jobs ----------------------------------------------------------------------------------

def test_create_sends_lulus_print_job_shape(fake: FakeLulu) -> None:
    order = str(uuid.uuid4())
    job = client(fake).create_job(job_request(order, production_delay=120))
    sent = fake.creates_for(order)[0]["json"]
    assert sent["external_id"] == order and sent["production_delay"] == 120
    li = sent["line_items"][0]
    assert li["external_id"] == f"{order}-1" and li["quantity"] == 1
    assert li["printable_normalization"]["pod_package_id"] == SKU
    assert li["printable_normalization"]["interior"]["source_md5_sum"] == "0" * 32
    assert job.status == "CREATED" and job.external_id == order and job.line_item_external_ids == (f"{order}-1",)


# Lulu's published schema for POST /print-jobs/ (https://api.lulu.com/docs/, operation
# Print-Jobs_create, its OpenAPI file openapi_public.yml): the request's required fields, and
# shipping_address's required fields and limits.
PRINT_JOB_REQUIRED = ("line_items", "shipping_address", "contact_email", "shipping_level")
SHIPPING_ADDRESS_REQUIRED = ("name", "street1", "city", "country_code", "postcode", "phone_number", "email")
SHIPPING_ADDRESS_MAX = {"country_code": 2, "postcode": 64, "phone_number": 20}


def test_the_print_job_request_meets_lulus_published_schema(fake: FakeLulu) -> None:
    from pipeline.orders.steps import lulu_address

    # stored addresses as the API keeps them (Lulu's names, Stripe's shipping shape), no email:
    # the parent's is at hand
    stored = [
        {"name": "Sam Reader", "street1": "1 Example Street", "city": "Raleigh", "state_code": "NC",
         "postcode": "27601", "country_code": "US", "phone_number": "+1 919 555 0100"},
        {"name": "Ana Souza", "phone": "+44 20 7946 0000",
         "address": {"line1": "10 Downing St", "city": "London", "postal_code": "SW1A 2AA", "country": "GB"}},
        {"name": "Li Wei", "street1": "1 Queen's Road", "city": "Hong Kong", "country_code": "HK",
         "phone_number": "+852 2345 6789"},  # no postcodes there: Lulu's "required for most countries"
    ]
    for raw in stored:
        order = str(uuid.uuid4())
        address = lulu_address(raw, email="parent@example.com")
        client(fake).create_job(job_request(order, shipping_address=address))
        sent = fake.creates_for(order)[0]["json"]
        assert all(sent.get(k) for k in PRINT_JOB_REQUIRED)
        addr = sent["shipping_address"]
        missing = [k for k in SHIPPING_ADDRESS_REQUIRED if not addr.get(k)]
        assert missing == ([] if raw["name"] != "Li Wei" else ["postcode"])
        assert addr["email"] == "parent@example.com"
        assert all(len(addr[k]) <= n for k, n in SHIPPING_ADDRESS_MAX.items() if k in addr)
    # and the fake refuses what Lulu's schema refuses, as Lulu would (400 with the field)
    order = str(uuid.uuid4())
    no_email = {k: v for k, v in lulu_address(stored[0], email="p@example.com").items() if k != "email"}
    with pytest.raises(PermanentStepError, match="shipping_address.email: This field is required"):
        client(fake).create_job(job_request(order, shipping_address=no_email))
    no_phone = {k: v for k, v in lulu_address(stored[0], email="p@example.com").items() if k != "phone_number"}
    with pytest.raises(PermanentStepError, match="shipping_address.phone_number"):
        client(fake).create_job(job_request(order, shipping_address=no_phone))
    fake.account_phone = "+1 800 555 0100"  # Lulu uses the account's default phone number
    client(fake).create_job(job_request(order, shipping_address=no_phone))


def test_find_job_matches_this_order_and_print_run_exactly_across_pages(fake: FakeLulu) -> None:
    c = client(fake)
    order = str(uuid.uuid4())
    other = order[:-4] + "ffff" if not order.endswith("ffff") else order[:-4] + "eeee"
    c.create_job(job_request(other))  # a look-alike order id: search may return it
    first = c.create_job(job_request(order, 1))
    c.create_job(job_request(f"{order}x"))  # contains the id: search returns it, it is not ours
    second = c.create_job(job_request(order, 2))
    fake.max_page_size = 1  # four pages of search results
    assert (found := c.find_job(order, f"{order}-1")) is not None and found.id == first.id
    assert (found := c.find_job(order, f"{order}-2")) is not None and found.id == second.id
    assert c.find_job(order, f"{order}-3") is None
    searches = [r for r in fake.requests if r["op"] == "list_jobs"]
    assert searches[0]["query"]["search"] == [order] and len(searches) >= 4  # followed `next`


def test_job_status_shipping_and_rejection_are_read(fake: FakeLulu) -> None:
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    assert c.get_job(job.id).status == "REJECTED"  # its files could not be downloaded
    assert "could not be downloaded" in c.get_job(job.id).reason()
    fake.set_status(job.id, "SHIPPED", "All line-items were shipped", tracking_id="1Z999AA10123456784")
    shipped = c.get_job(job.id)
    assert shipped.tracking_id == "1Z999AA10123456784" and shipped.carrier == "UPS"
    assert shipped.tracking_urls == ("https://tracking.example/1Z999AA10123456784",)


def test_cancel_and_cover_dimensions(fake: FakeLulu) -> None:
    c = client(fake)
    job = c.create_job(job_request(str(uuid.uuid4())))
    c.cancel_job(job.id)
    assert c.get_job(job.id).status == "CANCELED"
    fake.set_status(job.id, "IN_PRODUCTION")
    with pytest.raises(PermanentStepError, match="cannot be canceled"):
        c.cancel_job(job.id)
    assert c.cover_dimensions(SKU, 24) == cover_size_pt(parse_pod_package(SKU), 24)


def test_webhook_signature_is_lulus_hmac_of_the_raw_body(fake: FakeLulu) -> None:
    job = client(fake).create_job(job_request(str(uuid.uuid4())))
    body, headers = fake.webhook(job.id)
    sig = headers["Lulu-HMAC-SHA256"]
    assert lulu.verify_webhook(body, sig, CLIENT_SECRET)
    assert lulu.verify_webhook(body.encode(), sig.upper(), CLIENT_SECRET)
    import base64

    assert lulu.verify_webhook(body, base64.b64encode(bytes.fromhex(sig)).decode(), CLIENT_SECRET)
    assert not lulu.verify_webhook(body.replace("CREATED", "SHIPPED"), sig, CLIENT_SECRET)
    assert not lulu.verify_webhook(body, sig, "another-secret")
    assert not lulu.verify_webhook(body, None, CLIENT_SECRET)
