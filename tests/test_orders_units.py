"""The parts of orders that need no worker: Stripe's signature scheme and event parsing, print
files (sizes, bleed, page counts, fonts, resolution, cover), the checks a print shop runs on
them, shipping addresses, and the offline print shop's life over time."""
from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import stripe
from fpdf import FPDF

from pipeline.kernel.errors import PermanentStepError
from pipeline.orders import stripe_events as se
from pipeline.orders.offline_print_shop import LocalPrintShop
from pipeline.orders.print_files import (
    PrintBook,
    PrintPage,
    check_print_files,
    cover_size_pt,
    inspect_pdf,
    interior_plan,
    parse_pod_package,
    product_spec,
    render_print_files,
)
from pipeline.orders.steps import lulu_address
from pipeline.providers.lulu import PrintJobRequest

HARDCOVER = "0850X0850FCPRECW080CW444GXX"
SECRET = "whsec_test_0123456789abcdef"


# --- Stripe ------------------------------------------------------------------------------------

def _succeeded(amount: int = 2999) -> str:
    return se.event_payload("evt_1", se.PAYMENT_SUCCEEDED, {
        "id": "pi_1", "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": "usd",
        "metadata": {"order_id": "o-1"}})


def _header(body: str, secret: str, t: int | None = None) -> str:
    """Stripe-Signature made by Stripe's own package."""
    return str(stripe.WebhookSignature.generate_signature_header(body, secret, t))


def test_stripe_signature_verifies_and_refuses_what_stripe_would() -> None:
    body = _succeeded()
    assert se.verify_event(body, _header(body, SECRET), [SECRET]).event_id == "evt_1"
    # a rotation: two secrets configured, and Stripe sending two v1 signatures
    t = int(time.time())
    header = f"{_header(body, 'whsec_old', t)},v1={_header(body, SECRET, t).split('v1=')[1]}"
    se.verify_event(body, header, ["whsec_other", SECRET])
    now = float(int(time.time()))
    # timing is judged at the webhook's arrival, not when a worker gets to it
    se.verify_event(body, _header(body, SECRET, int(now) - 3600), [SECRET], received_at=now - 3599)
    se.verify_event(body, _header(body, SECRET, int(now) + 200), [SECRET], received_at=now)  # skew ahead
    se.verify_event(body, _header(body, SECRET, int(now) + 200), [SECRET])
    cases = {
        "does not match": (body.replace("2999", "1"), _header(body, SECRET)),  # tampered body
        "does not match ": (body, _header(body, "whsec_wrong")),
        "missing": (body, None),
        "timestamp": (body, "v1=abc"),
        "timestamp ": (body, "t=soon,v1=abc"),
    }
    for words, (payload, sig) in cases.items():
        with pytest.raises(se.InvalidEvent, match=words.strip()) as e:
            se.verify_event(payload, sig, [SECRET])
        assert not isinstance(e.value, se.UnconfirmedEvent)
    unconfirmed = {
        "301 s old .* did not say when": (int(now) - 301, None),
        "400 s old when the webhook arrived": (int(now) - 400, now),
        "dated 400 s after the webhook arrived": (int(now) + 400, now),
        "in the future": (int(now), now + 3600),
    }
    for words, (t, arrived) in unconfirmed.items():
        with pytest.raises(se.UnconfirmedEvent, match=words) as u:
            se.verify_event(body, _header(body, SECRET, t), [SECRET], received_at=arrived, now=now)
        assert u.value.event.event_id == "evt_1"  # genuine content, for Stripe's API to confirm
    with pytest.raises(se.InvalidEvent, match="no Stripe webhook secret"):
        se.verify_event(body, _header(body, SECRET), [])


def test_received_at_is_unix_seconds_or_iso_8601() -> None:
    assert se.parse_received_at(1700000000) == 1700000000.0
    assert se.parse_received_at("1700000000.5") == 1700000000.5
    assert se.parse_received_at("2023-11-14T22:13:20Z") == 1700000000.0
    assert se.parse_received_at("2023-11-14T23:13:20+01:00") == 1700000000.0
    assert se.parse_received_at("2023-11-14T22:13:20") == 1700000000.0  # no offset: UTC
    assert se.parse_received_at(None) is None
    for bad in ("yesterday", True, [1]):
        with pytest.raises(ValueError):
            se.parse_received_at(bad)


def test_stripe_events_are_parsed_strictly() -> None:
    ev = se.parse_event(_succeeded())
    assert (ev.event_id, ev.type, ev.payment_intent_id, ev.amount_received, ev.currency, ev.order_id) == \
        ("evt_1", se.PAYMENT_SUCCEEDED, "pi_1", 2999, "usd", "o-1")
    refund = se.parse_event(se.event_payload("evt_2", se.CHARGE_REFUNDED, {
        "id": "ch_1", "object": "charge", "amount": 2999, "amount_refunded": 2999, "refunded": True,
        "currency": "USD", "payment_intent": "pi_1"}))
    assert refund.payment_intent_id == "pi_1" and refund.refunded and refund.currency == "usd"
    for bad, words in [("[]", "not a JSON object"), ("{", "not JSON"),
                       (json.dumps({"object": "payment_intent", "id": "pi_1"}), "not a Stripe event"),
                       (json.dumps({"id": "x", "type": "payment_intent.succeeded", "data": {}}), "evt_"),
                       (se.event_payload("evt_3", se.PAYMENT_SUCCEEDED, {"id": "ch_1", "object": "charge"}),
                        "does not carry a payment_intent"),
                       (se.event_payload("evt_4", se.PAYMENT_SUCCEEDED, {"id": "pi_1", "object": "payment_intent",
                                                                         "amount": "29.99"}), "whole number")]:
        with pytest.raises(se.InvalidEvent, match=words):
            se.parse_event(bad)


def test_checkout_session_events_are_parsed() -> None:
    """A Checkout Session (https://docs.stripe.com/api/checkout/sessions/object): its
    amount_total, its payment_intent (an id or expanded), the order by metadata or
    client_reference_id; unpaid means nothing received."""
    def session(**extra: object) -> str:
        obj = {"id": "cs_test_1", "object": "checkout.session", "amount_total": 2999, "amount_subtotal": 2999,
               "currency": "usd", "payment_intent": "pi_1", "payment_status": "paid", "status": "complete",
               "mode": "payment", "client_reference_id": None, "metadata": {}, **extra}
        return se.event_payload("evt_cs", se.CHECKOUT_COMPLETED, obj)

    ev = se.parse_event(session(client_reference_id="o-2"))
    assert (ev.object_type, ev.object_id, ev.payment_intent_id, ev.amount, ev.amount_received, ev.currency,
            ev.order_id, ev.payment_status) == ("checkout.session", "cs_test_1", "pi_1", 2999, 2999, "usd", "o-2",
                                                "paid")
    assert se.parse_event(session(metadata={"order_id": "o-3"}, client_reference_id="o-2")).order_id == "o-3"
    assert se.parse_event(session(payment_intent={"id": "pi_9", "object": "payment_intent"})).payment_intent_id \
        == "pi_9"
    unpaid = se.parse_event(session(payment_status="unpaid"))
    assert unpaid.amount_received is None and unpaid.summary()["payment_status"] == "unpaid"
    with pytest.raises(se.InvalidEvent, match="does not carry a Checkout Session"):
        se.parse_event(se.event_payload("evt_x", se.CHECKOUT_COMPLETED, {"id": "pi_1", "object": "payment_intent"}))
    with pytest.raises(se.InvalidEvent, match="amount_total"):
        se.parse_event(session(amount_total="29.99"))


# --- print files -------------------------------------------------------------------------------

def test_products_bindings_and_page_counts() -> None:
    spec = product_spec("Hardcover-Book")
    assert (spec.trim_w_in, spec.trim_h_in, spec.binding, spec.min_pages) == (8.5, 8.5, "CW", 24)
    assert round(spec.page_w_mm, 3) == 222.25  # 8.5 in + 2 x 0.125 in bleed
    assert interior_plan(4, spec).__dict__ == {"total": 24, "content": 10, "blank": 14}
    assert interior_plan(12, spec).__dict__ == {"total": 26, "content": 26, "blank": 0}
    assert interior_plan(24, spec).total == 50
    assert interior_plan(12, product_spec("paperback_book")).total == 32  # perfect bound: 32 at least
    with pytest.raises(PermanentStepError, match="Unknown product type 'poster'.*hardcover_book"):
        product_spec("poster")
    with pytest.raises(ValueError, match="27 characters"):
        parse_pod_package("0850X0850")
    # Lulu's own example (its /cover-dimensions/ docs): 6x9 perfect bound, 210 pages -> 920 x 666 pt
    w, h = cover_size_pt(parse_pod_package("0600X0900BWSTDPB060UW444MXX"), 210)
    assert abs(w - 920) < 1.5 and h == 666


def _story_pages(n: int) -> list[PrintPage]:
    from pipeline.providers.base import PageRequest, StoryRequest
    from pipeline.providers.offline_images import LocalIllustrator
    from pipeline.providers.offline_text import LocalStoryWriter

    writer, ill = LocalStoryWriter(), LocalIllustrator()
    req = StoryRequest("Zoë", 6, "underwater", n, 11)
    outline = writer.write_outline(req)
    return [PrintPage(i, writer.write_page(PageRequest(req, outline, i)), ill.draw_base(PageRequest(req, outline, i)))
            for i in range(1, n + 1)]


@pytest.fixture(scope="module")
def rendered() -> Iterator[tuple[bytes, bytes, dict, tuple[float, float]]]:
    spec = parse_pod_package(HARDCOVER)
    cover_pt = cover_size_pt(spec, interior_plan(4, spec).total)
    book = PrintBook("Zoë and the Singing Shell", "Zoë", "Underwater", _story_pages(4),
                     datetime(2026, 1, 2, tzinfo=UTC))
    interior, cover, info = render_print_files(book, spec, cover_pt)
    yield interior, cover, info, cover_pt


def test_print_files_are_print_ready(rendered: tuple[bytes, bytes, dict, tuple[float, float]]) -> None:
    interior, cover, info, cover_pt = rendered
    ii, ci = inspect_pdf(interior), inspect_pdf(cover)
    # interior: 24 pages of 8.75 x 8.75 in (trim + bleed), fonts embedded, pictures at 300 dpi,
    # each story page's picture covering its whole page (full bleed)
    assert ii.pages == 24 == info["interior_pages"] and info["blank_pages"] == 14
    assert set(ii.sizes_pt) == {(630.0, 630.0)}
    assert ii.unembedded_fonts == 0 and ii.min_image_dpi is not None and ii.min_image_dpi >= 299.5
    assert ii.full_bleed_pages == 4
    # cover: one page of the size for this book, with the spine for 24 pages
    assert ci.pages == 1 and ci.sizes_pt[0] == cover_pt and ci.unembedded_fonts == 0
    assert ci.min_image_dpi is not None and ci.min_image_dpi >= 299.5
    assert info["min_image_dpi"] >= 300 and info["spine_mm"] == pytest.approx(6.35, abs=0.05)
    assert info["interior_md5"] == hashlib.md5(interior).hexdigest()  # noqa: S324
    assert check_print_files(interior, cover, HARDCOVER, cover_pt) == []


def test_print_files_are_deterministic(rendered: tuple[bytes, bytes, dict, tuple[float, float]]) -> None:
    interior, cover, info, cover_pt = rendered
    spec = parse_pod_package(HARDCOVER)
    again = render_print_files(PrintBook("Zoë and the Singing Shell", "Zoë", "Underwater", _story_pages(4),
                                         datetime(2026, 1, 2, tzinfo=UTC)), spec, cover_pt)
    assert again[0] == interior and again[1] == cover  # same MD5: a re-run overwrites the same bytes


def test_the_print_shop_checks_find_what_a_printer_rejects(rendered: tuple[bytes, bytes, dict, tuple[float, float]]
                                                           ) -> None:
    interior, cover, _, cover_pt = rendered
    letter = FPDF(unit="pt", format="letter")  # no bleed, core font (not embedded), 2 pages
    for _ in range(2):
        letter.add_page()
        letter.set_font("helvetica", size=12)
        letter.cell(100, 20, "Hello")
    bad = bytes(letter.output())
    errors = check_print_files(bad, bad, HARDCOVER, cover_pt)
    assert any("interior: 2 pages; a casewrap hardcover needs 24 to 800" in e for e in errors)
    assert any("page 1 is 612 x 792 pt; this product needs 630 x 630 pt" in e for e in errors)
    assert "interior: fonts not embedded" in errors and "cover: 2 pages; a cover is one page" in errors
    assert check_print_files(b"not a pdf", cover, HARDCOVER, cover_pt)[0].startswith("interior: not a readable PDF")
    wrong_cover = check_print_files(interior, cover, HARDCOVER, (cover_pt[0] + 20, cover_pt[1]))
    assert len(wrong_cover) == 1 and "must be" in wrong_cover[0]


def test_print_files_refuse_an_unreadable_picture() -> None:
    spec = parse_pod_package(HARDCOVER)
    book = PrintBook("T", "Mia", "Space", [PrintPage(1, "Hi.", b"\x89PNG broken")], datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(PermanentStepError, match="page 1: the illustration is not a readable image"):
        render_print_files(book, spec, cover_size_pt(spec, 24))


# --- addresses ---------------------------------------------------------------------------------

def test_shipping_addresses_in_lulus_and_stripes_shapes() -> None:
    lulu_shape = {"name": "Sam Reader", "street1": "1 Example St", "city": "Raleigh", "state_code": "NC",
                  "postcode": "27601", "country_code": "us", "phone_number": "+1 919 555 0100"}
    assert lulu_address(lulu_shape, email="p@example.com")["country_code"] == "US"
    stripe_shape = {"name": "Sam  Reader", "phone": "+44 20 7946 0000",
                    "address": {"line1": "10 Downing St", "line2": None, "city": "London", "postal_code": "SW1A 2AA",
                                "country": "GB"}}
    assert lulu_address(stripe_shape, email="parent@example.com") == {
        "name": "Sam Reader", "street1": "10 Downing St", "city": "London", "postcode": "SW1A 2AA",
        "country_code": "GB", "phone_number": "+44 20 7946 0000", "email": "parent@example.com"}
    hk = lulu_address({**lulu_shape, "postcode": "", "country_code": "HK", "state_code": ""}, email="p@example.com")
    assert "postcode" not in hk
    # the address's own email wins over the parent's; "US-NC" (ISO 3166-2's full form) is sent as NC
    own = lulu_address({**lulu_shape, "email": "gift@example.com", "state_code": "US-NC"}, email="p@example.com")
    assert own["email"] == "gift@example.com" and own["state_code"] == "NC"
    # the default phone stands in for a missing one
    assert lulu_address({**lulu_shape, "phone_number": ""}, email="p@example.com",
                        default_phone="+1 800 555 0100")["phone_number"] == "+1 800 555 0100"
    refused = {
        r"incomplete \(missing city, postcode, state_code, required for US, phone_number .*\); correct it and retry":
            ({"name": "Sam", "street1": "1 Road", "country_code": "US"}, "p@example.com"),
        "missing email": (lulu_shape, None),
        "missing state_code, required for AU": ({**lulu_shape, "country_code": "AU", "state_code": ""}, "p@x.org"),
        "missing recipient_tax_id, required for BR": ({**lulu_shape, "country_code": "BR"}, "p@x.org"),
        "state_code must be the 2 or 3 letter code": ({**lulu_shape, "state_code": "North Carolina"}, "p@x.org"),
        "phone_number must be 8 to 20": ({**lulu_shape, "phone_number": "+1 919 555 0100 ext. 12345"}, "p@x.org"),
        "postcode is too long": ({**lulu_shape, "postcode": "1" * 65}, "p@x.org"),
        "street1 is too long": ({**lulu_shape, "street1": "x" * 300}, "p@x.org"),
        "email is not an email": (lulu_shape, "not-an-email"),
        "2-letter code": ({**lulu_shape, "country_code": "United States"}, "p@x.org"),
        "no shipping address": (None, "p@x.org"),
    }
    for words, (raw, email) in refused.items():
        with pytest.raises(PermanentStepError, match=words):
            lulu_address(raw, email=email)
    # elsewhere a region's name is not a code: left out, the rest ships
    assert "state_code" not in lulu_address({**lulu_shape, "country_code": "GB", "state_code": "Greater London"},
                                            email="p@x.org")


# --- the offline print shop ------------------------------------------------------------------------

def _shop_request(order: str, interior_url: str, cover_url: str, interior: bytes, cover: bytes) -> PrintJobRequest:
    return PrintJobRequest(
        external_id=order, line_item_external_id=f"{order}-1", title="T", pod_package_id=HARDCOVER, page_count=24,
        interior_url=interior_url, interior_md5=hashlib.md5(interior).hexdigest(),  # noqa: S324
        cover_url=cover_url, cover_md5=hashlib.md5(cover).hexdigest(),  # noqa: S324
        shipping_address={"name": "Sam", "country_code": "US"}, shipping_level="MAIL", contact_email="a@b.c")


def test_local_print_shop_prints_over_time_and_rejects_bad_files(
        tmp_path: Path, rendered: tuple[bytes, bytes, dict, tuple[float, float]]) -> None:
    interior, cover, _, cover_pt = rendered
    (tmp_path / "i.pdf").write_bytes(interior)
    (tmp_path / "c.pdf").write_bytes(cover)
    shop = LocalPrintShop(tmp_path, stage_seconds=0.15)
    assert shop.cover_dimensions(HARDCOVER, 24) == cover_pt
    order = str(uuid.uuid4())
    job = shop.create_job(_shop_request(order, (tmp_path / "i.pdf").as_uri(), (tmp_path / "c.pdf").as_uri(),
                                        interior, cover))
    assert job.status == "CREATED" and shop.find_job(order, f"{order}-1") == job
    assert shop.find_job(order, f"{order}-2") is None
    seen = []
    deadline = time.monotonic() + 5
    while (cur := shop.get_job(job.id)).status != "SHIPPED" and time.monotonic() < deadline:
        if not seen or seen[-1] != cur.status:
            seen.append(cur.status)
        time.sleep(0.02)
    assert cur.status == "SHIPPED" and cur.tracking_id and cur.carrier == "Local Post"
    assert seen[0] == "CREATED" and "IN_PRODUCTION" in seen and seen == sorted(set(seen), key=seen.index)
    # bad files: rejected with the reasons, after the shop has looked at them
    (tmp_path / "bad.pdf").write_bytes(io.BytesIO(b"%PDF-1.4 broken").getvalue())
    bad = shop.create_job(_shop_request(str(uuid.uuid4()), (tmp_path / "bad.pdf").as_uri(),
                                        (tmp_path / "c.pdf").as_uri(), b"%PDF-1.4 broken", cover))
    time.sleep(0.2)
    rejected = shop.get_job(bad.id)
    assert rejected.status == "REJECTED" and "interior: not a readable PDF" in rejected.reason()
    # cancel: only before production
    slow = LocalPrintShop(tmp_path, stage_seconds=60)
    pending = slow.create_job(_shop_request(str(uuid.uuid4()), (tmp_path / "i.pdf").as_uri(),
                                            (tmp_path / "c.pdf").as_uri(), interior, cover))
    slow.cancel_job(pending.id)
    assert slow.get_job(pending.id).status == "CANCELED"


# --- the order flow, declared once --------------------------------------------------------------

def test_the_order_flow_names_the_tasks_the_worker_registers_and_the_sweep_queries() -> None:
    import workers.order_tasks  # noqa: F401 - registers the order tasks
    from db.order_repair import stuck_order_query
    from pipeline.operations.orders import stuck_query_args
    from pipeline.orders.stages import LULU_WEBHOOK_TASK, ORDER_FLOW, QUEUE, SWEEP_TASK, SWEPT
    from workers.app import app

    # given the order flow's table
    tasks = [s.task for s in ORDER_FLOW]
    # then each stage is a task the worker registers, in the flow's order, all on the orders queue
    assert tasks == ["orders.confirm_payment", "orders.prepare_print", "orders.submit_print", "orders.poll_print"]
    for name in [*tasks, LULU_WEBHOOK_TASK, SWEEP_TASK]:
        assert name in app.tasks, name
    assert ORDER_FLOW.queues() == (QUEUE,) == ("orders",)
    # and each print step is an order_steps row named as its stage (print_files, print_job)
    assert [s.name for s in ORDER_FLOW if s.table == "order_steps" and s.status_column == "status"] == [
        "print_files", "print_job"]
    # and the sweep has a stuck-order query for exactly the stages it sweeps
    assert all(stuck_order_query(*stuck_query_args(ORDER_FLOW[n])) for n in SWEPT)
    assert len({stuck_order_query(*stuck_query_args(ORDER_FLOW[n])) for n in SWEPT}) == len(SWEPT)
    with pytest.raises(ValueError):  # and none for the payment (Stripe's to resend)
        stuck_order_query(*stuck_query_args(ORDER_FLOW["payment"]))


def test_order_domain_modules_build_no_sql_and_never_import_workers() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent
    modules = [p for p in (root / "pipeline" / "orders").rglob("*.py")]
    assert len(modules) >= 8
    for path in modules:
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        # the Celery layer is on top: the order domain never imports it (not even lazily)
        assert not any(m == "workers" or m.startswith("workers.") for m in imported), path.name
        # all SQL of the order domain is in db/: no sqlalchemy text() built here
        assert "sqlalchemy" not in imported, path.name
