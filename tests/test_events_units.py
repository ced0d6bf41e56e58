"""The events' pieces on their own: signing (verified by the Standard Webhooks reference library),
backoff and Retry-After, the settings' checks (unit); and on the real PostgreSQL the triggers'
events, the claims' order per key, leases, fencing, the dead-letter state and an operator's retry
(db; no worker process)."""
from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook

from pipeline.events.delivery import backoff, envelope, parse_retry_after, signed_request
from pipeline.events.settings import EventSettings, read_event_settings
from tests.support import Db

SECRET = "whsec_" + base64.b64encode(b"units-secret-0123456789abcdefgh").decode()
URL = "http://127.0.0.1:9/hook"


def _cfg(**env: str) -> EventSettings:
    return read_event_settings({"WEBHOOK_URLS": URL, "WEBHOOK_SECRET": SECRET, **env})


@pytest.mark.unit
def test_a_signed_request_verifies_with_the_reference_library_and_a_changed_body_does_not() -> None:
    row = {"event_id": "evt_0123", "type": "story.completed", "payload": {"story_id": "s"},
           "occurred_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    body = json.dumps(envelope(row))
    headers = signed_request("evt_0123", body, SECRET)
    assert headers["webhook-id"] == "evt_0123" and headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {"type": "story.completed", "timestamp": "2026-01-02T03:04:05Z",
                                                     "data": {"story_id": "s"}}
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(body.replace('"s"', '"t"'), headers)


@pytest.mark.unit
def test_backoff_is_full_jitter_capped_with_retry_after_as_a_floor() -> None:
    cfg = _cfg(WEBHOOK_BACKOFF_BASE="2", WEBHOOK_BACKOFF_CAP="10")
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8), (4, 10), (30, 10)):
        waits = [backoff(attempt, cfg) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= ceiling and len(set(waits)) > 50
    assert all(backoff(1, cfg, retry_after=7) >= 7 for _ in range(50))
    assert backoff(1, cfg, retry_after=3600) == 10  # the endpoint's word, capped


@pytest.mark.unit
def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


@pytest.mark.unit
def test_settings_are_checked_with_one_line_naming_the_variable() -> None:
    assert _cfg().endpoints() == [URL]
    assert _cfg(EVENTS_CELERY_TASK="webapp.story_event").endpoints() == [URL, "celery:webapp.story_event@webapp_events"]
    assert read_event_settings({}).endpoints() == []  # no endpoint: events recorded, nothing sent
    for env, words in (({"WEBHOOK_URLS": URL}, "WEBHOOK_SECRET not set"),
                       ({"WEBHOOK_URLS": URL, "WEBHOOK_SECRET": "s3cret"}, "WEBHOOK_SECRET must be"),
                       ({"WEBHOOK_URLS": URL, "WEBHOOK_SECRET": "whsec_!!"}, "WEBHOOK_SECRET must be"),
                       ({"WEBHOOK_URLS": "ftp://x/y", "WEBHOOK_SECRET": SECRET}, "not an http(s) URL"),
                       ({"WEBHOOK_TIMEOUT": "0"}, "WEBHOOK_TIMEOUT")):
        with pytest.raises(SystemExit, match="configuration error: .*" + words.replace("(", r"\(").replace(")", r"\)")):
            read_event_settings(env)


# --- on PostgreSQL --------------------------------------------------------------------------------

def _story_with_pages(db: Db, pages: int) -> str:
    story = db.story(db.photo(None))
    for n in range(1, pages + 1):
        db.exec("INSERT INTO story_pages (story_id, page_number) VALUES (:s, :n)", s=story, n=n)
    return story


def _complete_page(db: Db, story: str, n: int) -> None:
    db.exec("UPDATE story_pages SET personalization_status = 'completed' WHERE story_id = :s AND page_number = :n",
            s=story, n=n)


def test_claims_go_in_order_per_key_with_leases_fencing_and_a_dead_letter(clean_db: Db) -> None:
    from db import events
    from db.engine import autocommit

    db = clean_db
    # given two stories' events (a page completed twice gives two events: a redo announces itself again)
    a, b = _story_with_pages(db, 2), _story_with_pages(db, 1)
    with autocommit() as c:
        events.add_endpoints(c, [URL], backlog_seconds=3600)
    for story, n in ((a, 1), (b, 1), (a, 2)):
        _complete_page(db, story, n)
    db.exec("UPDATE story_pages SET personalization_status = 'pending' WHERE story_id = :s AND page_number = 1", s=a)
    _complete_page(db, a, 1)
    db.exec("UPDATE stories SET status = 'completed' WHERE id = :s", s=a)
    db.exec("UPDATE stories SET status = 'completed' WHERE id = :s", s=a)  # no move: no event
    assert [r["type"] for r in db.all("SELECT type FROM outbox_events WHERE story_id = :s ORDER BY seq", s=a)] == \
        ["page.completed"] * 3 + ["story.completed"]
    with autocommit() as c:
        assert events.materialize(c, URL) == 5
        assert events.materialize(c, URL) == 0
        # when deliveries are claimed: the head of each story only
        first = events.claim_due(c, [URL], 10, lease=60)
        assert sorted(r["payload"]["story_id"] for r in first) == sorted([a, b])
        assert events.claim_due(c, [URL], 10, lease=60) == []  # the rest wait behind their heads
        head_a = next(r for r in first if r["payload"]["story_id"] == a)
        # a failed attempt backs off; the key waits for it
        assert events.record_attempt(c, head_a["id"], head_a["token"], 1, ok=False, status_code=500, latency_ms=3,
                                     error="HTTP 500", retry_in=0, max_attempts=2) == "pending"
        again = events.claim_due(c, [URL], 10, lease=0.01)
        assert [r["event_id"] for r in again] == [head_a["event_id"]] and again[0]["attempt"] == 2
        time.sleep(0.05)
        # its lease runs out (its worker died): claimed again with a new token; the old holder's word is refused
        retaken = events.claim_due(c, [URL], 10, lease=60)
        assert [r["event_id"] for r in retaken] == [head_a["event_id"]] and retaken[0]["token"] > again[0]["token"]
        assert events.record_attempt(c, again[0]["id"], again[0]["token"], 2, ok=True, status_code=204, latency_ms=1,
                                     error=None, retry_in=0, max_attempts=2) is None
        # out of attempts: dead, and the key moves on
        assert events.record_attempt(c, retaken[0]["id"], retaken[0]["token"], 3, ok=False, status_code=503,
                                     latency_ms=1, error="HTTP 503", retry_in=0, max_attempts=2) == "dead"
        nxt = events.claim_due(c, [URL], 10, lease=60)
        assert [r["type"] for r in nxt] == ["page.completed"] and nxt[0]["payload"]["page_number"] == 2
        # an operator's retry makes the dead one pending, with fresh attempts
        assert events.retry_dead(c, head_a["event_id"]) == 1 and events.retry_dead(c, head_a["event_id"]) == 0
        counts = events.delivery_counts(c)
        assert (counts["delivering"], counts["pending"], counts["events"]) == (2, 3, 5)


def test_an_event_committed_late_is_still_delivered_and_the_cursor_then_moves_on(clean_db: Db) -> None:
    """An event recorded by a transaction held open (hand-written SQL in psql) commits after later
    events were materialized and the cursor would have moved on: it still gets its delivery."""
    from sqlalchemy import text

    from db import events
    from db.engine import autocommit, get_engine

    db = clean_db
    late, early = db.photo(None), db.photo(None)
    with autocommit() as c:
        events.add_endpoints(c, [URL], backlog_seconds=3600)
        events.materialize(c, URL)
    # given an operator's transaction that recorded an event (photos' trigger: in the statement)
    with get_engine().connect() as held:
        held.execute(text("UPDATE photos SET ai_processing_status = 'failed', ai_error_message = 'by hand' "
                          "WHERE id = :p"), {"p": late})
        # when a later event commits and delivery runs go on meanwhile (each may move the cursor)
        db.exec("UPDATE photos SET ai_processing_status = 'failed', ai_error_message = 'x' WHERE id = :p", p=early)
        with autocommit() as c:
            assert events.materialize(c, URL) == 1
            for _ in range(3):
                assert events.materialize(c, URL) == 0
        held.commit()
    # then the late event still gets its delivery: the cursor never passed it
    with autocommit() as c:
        assert events.materialize(c, URL) == 1
    rows = db.all("SELECT o.photo_id FROM event_deliveries d JOIN outbox_events o ON o.seq = d.event_seq "
                  "WHERE d.endpoint = :e", e=URL)
    assert sorted(str(r["photo_id"]) for r in rows) == sorted([str(late), str(early)])
    # and once no transaction that began before the candidate's is still running, one run moves the
    # cursor past both. xmin is cluster-wide: on a shared server another database's long transaction
    # (a paused worker in a parallel test) holds it back, so wait for xmin itself, not a fixed time
    import time

    top = db.one("SELECT max(seq) AS m FROM outbox_events")["m"]
    deadline = time.monotonic() + 300
    while True:
        with autocommit() as c:
            events.materialize(c, URL)  # records the candidate (or moves the cursor to it)
        ep = db.one("SELECT cursor, candidate_xid FROM event_endpoints WHERE endpoint = :e", e=URL)
        if ep["cursor"] >= top:
            break
        xmin = db.one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x")["x"]
        if ep["candidate_xid"] is not None and xmin > ep["candidate_xid"]:
            with autocommit() as c:
                events.materialize(c, URL)
            moved = db.one("SELECT cursor FROM event_endpoints WHERE endpoint = :e", e=URL)["cursor"]
            assert moved >= top, f"xmin {xmin} is past the candidate's xid {ep['candidate_xid']}, cursor {moved}"
            break
        assert time.monotonic() < deadline, "no transaction-free moment on the server for 300 s"
        time.sleep(0.1)
