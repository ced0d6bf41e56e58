"""Events for the web app end to end (README "Events (webhooks)"): real worker processes and a
real celery beat on this module's own broker, a local receiver that verifies every request with
the Standard Webhooks reference library, stories and orders driven as the external API and an
operator drive them.

Checked: exactly the expected events per story and order (ids unique, ``story.completed`` after
its pages, order events in order, the reasons of failures), the receiver down for a while
(connection refused, then 503 with Retry-After) and then back, a hanging receiver that does not
slow a story, a worker SIGKILLed with an event in flight and events not yet sent (a second worker
delivers them; nothing lost, nothing invented), a dead delivery and ``retry --event``.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tests.fakes.webhook_receiver import WebhookReceiver
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, faceless_png, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
BROKER = f"{REDIS}/{REDIS_DB + 1}"  # this module's own (the session's worker has no webhook endpoint)
SECRET = "whsec_" + base64.b64encode(b"events-test-secret-0123456789abc").decode()
PAGES = 4  # conftest's STORY_PAGE_COUNT
APP_QUEUE = "webapp_events"


def _env(receiver: WebhookReceiver) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER,
        "WEBHOOK_URLS": receiver.url, "WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT": "1",
        "WEBHOOK_LEASE_SECONDS": "2", "WEBHOOK_BACKOFF_BASE": "0.25", "WEBHOOK_BACKOFF_CAP": "1",
        "WEBHOOK_MAX_ATTEMPTS": "8", "EVENTS_POLL_INTERVAL": "0.5", "EVENTS_RUN_SECONDS": "2",
        # only the events recorded from now on go to this endpoint (the database is shared)
        "EVENTS_BACKLOG_SECONDS": "0", "SWEEP_INTERVAL": "86400",
        # and the same events as Celery tasks for a consumer of the broker (a queue nobody here consumes)
        "EVENTS_CELERY_TASK": "webapp.story_event", "EVENTS_CELERY_QUEUE": APP_QUEUE, "EVENTS_BROKER_URL": BROKER,
    }


def _published() -> list[dict[str, Any]]:
    """The events published as Celery tasks so far (taken off the queue), as the web app's consumer gets them."""
    out = []
    with Connection(BROKER) as conn:
        queue = conn.SimpleQueue(APP_QUEUE)
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                break
            assert message.headers["task"] == "webapp.story_event"
            out.append(message.decode()[1]["event"])
            message.ack()
        queue.close()
    return out


class Stack:
    """Two workers (booted side by side: the module pays for one boot) and a beat sending
    ``events.deliver`` every 0.5 s, with the receiver's settings."""

    published: list[dict[str, Any]]  # taken off the web app's queue so far
    baseline = 10.0  # seconds: a story and its events with the receiver answering (the first test measures it)

    def __init__(self, receiver: WebhookReceiver, tmp: Path) -> None:
        self.env, self.tmp = _env(receiver), tmp
        self.published = []
        self.workers = [WorkerProcess(tmp / f"worker{i}.log", env=self.env) for i in range(2)]
        self.beat: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        booting = threading.Thread(target=self.workers[1].start)
        booting.start()
        self.workers[0].start()
        booting.join()
        log = open(self.tmp / "beat.log", "ab")
        self.beat = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO",
             "--schedule", str(self.tmp / "beat-schedule")],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def sender_of(self, port: int) -> WorkerProcess | None:
        """The worker whose process holds the TCP connection from local port ``port`` (/proc), if any."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
        for w in self.workers:
            assert w.proc is not None
            fds = Path(f"/proc/{w.proc.pid}/fd")
            for fd in fds.iterdir():
                try:
                    if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                        return w
                except OSError:
                    continue
        return None

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        if self.beat is not None and self.beat.poll() is None:
            os.killpg(self.beat.pid, signal.SIGTERM)
            self.beat.wait(10)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def stack(db: Db, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    flush_redis(BROKER)
    s = Stack(receiver, tmp_path_factory.mktemp("events"))
    s.start()
    yield s
    s.close()


@pytest.fixture()
def fresh(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    receiver.release()
    receiver.set_mode("ok")
    yield receiver
    receiver.release()
    if not receiver.running:
        receiver.start()


def _story(db: Db, image: bytes) -> str:
    story = db.story(db.photo(image))
    external_send(BROKER, "stories.generate", {"story_id": story})
    return story


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def _expected_story_events(db: Db, story: str) -> list[str]:
    return [r["id"] for r in db.all("SELECT id FROM outbox_events WHERE story_id = :s AND order_id IS NULL "
                                    "ORDER BY seq", s=story)]


def _all_delivered(db: Db, receiver: WebhookReceiver, story: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    got = _until(lambda: (e := receiver.events(story_id=story)) and len(e) >= n and e, timeout,
                 f"{n} events of story {story}: {receiver.dump()}")
    assert len(got) == n, receiver.dump()
    return got


def _assert_story_events(db: Db, receiver: WebhookReceiver, story: str) -> list[dict[str, Any]]:
    got = _all_delivered(db, receiver, story, PAGES + 1)
    ids = [e["id"] for e in got]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == sorted(_expected_story_events(db, story))  # nothing lost, nothing invented
    assert [e["type"] for e in got] == ["page.completed"] * PAGES + ["story.completed"]
    assert sorted(e["data"]["page_number"] for e in got[:-1]) == list(range(1, PAGES + 1))
    done = got[-1]["data"]
    assert done["story_id"] == story and done["status"] == "completed" and done["page_count"] == PAGES
    assert "Mia" not in json.dumps([e["data"] for e in got])  # no names in payloads
    assert receiver.rejected == []
    return got


def _published_so_far(stack: Stack) -> list[dict[str, Any]]:
    stack.published.extend(_published())
    return stack.published


# --- the tests ----------------------------------------------------------------------------------

def test_story_photo_and_order_events_reach_the_receiver_signed_and_in_order(
        db: Db, stack: Stack, fresh: WebhookReceiver) -> None:
    from db.engine import transaction
    from db.orders import fail_order

    # given a story that completes and one whose photo has no face
    t0 = time.monotonic()
    good, bad = _story(db, astronaut_png()), _story(db, faceless_png())
    assert db.wait_story(good)["status"] == "completed"
    failed = db.wait_story(bad)
    # then the good story's events arrive, verified, pages before the story
    _assert_story_events(db, fresh, good)
    stack.baseline = time.monotonic() - t0
    # and the failed one says why, as its photo does
    [story_failed] = _all_delivered(db, fresh, bad, 1)
    assert story_failed["type"] == "story.failed" and story_failed["data"]["reason"] == failed["error_message"]
    photo = str(failed["protagonist_photo_id"])
    photo_events = _until(lambda: [r for r in fresh.received if r["data"].get("photo_id") == photo], 10, "photo.failed")
    assert [e["type"] for e in photo_events] == ["photo.failed"]
    assert photo_events[0]["data"]["reason"] and "face_details" not in photo_events[0]["data"]

    # when an order of the good story is paid, sent to print and shipped (any writer: plain SQL),
    # and another one fails through the workers' own statement
    user = db.story_row(good)["user_id"]
    orders = [str(db.one("INSERT INTO orders (user_id, story_id, product_type, amount, currency) "
                         "VALUES (:u, :s, 'hardcover', 2999, 'usd') RETURNING id", u=user, s=good)["id"])
              for _ in range(2)]
    for status, extra in (("paid", ", paid_at = now()"), ("fulfilled", ""), ("shipped", ", tracking_number = '1Z999'")):
        db.exec(f"UPDATE orders SET status = :st{extra} WHERE id = :o", st=status, o=orders[0])
    db.exec("UPDATE orders SET status = 'paid' WHERE id = :o", o=orders[1])
    with transaction() as conn:
        assert fail_order(conn, orders[1], "The print shop refused the file.")
    # then beat's runs deliver them, in order, with the tracking number and the reason
    shipped = _until(lambda: len(e := fresh.events(order_id=orders[0])) == 3 and e, 10, "the order's events")
    assert [e["type"] for e in shipped] == ["order.paid", "order.fulfilled", "order.shipped"]
    assert shipped[2]["data"]["tracking_number"] == "1Z999" and shipped[0]["data"]["amount"] == 2999
    failed_order = _until(lambda: len(e := fresh.events(order_id=orders[1])) == 2 and e, 10, "the failed order")
    assert [e["type"] for e in failed_order] == ["order.paid", "order.failed"]
    assert failed_order[1]["data"]["reason"] == "The print shop refused the file."
    # and every attempt is recorded
    attempts = db.all("SELECT a.status_code, a.latency_ms FROM event_attempts a JOIN event_deliveries d "
                      "ON d.id = a.delivery_id JOIN outbox_events o ON o.seq = d.event_seq WHERE o.story_id = :s "
                      "AND o.order_id IS NULL AND d.endpoint LIKE 'http%'", s=good)
    assert len(attempts) == PAGES + 1 and all(a["status_code"] == 204 and a["latency_ms"] >= 0 for a in attempts)
    # and the broker's consumer got the same events, in the same order per story
    def of_story() -> list[dict[str, Any]]:
        return [e for e in _published_so_far(stack)
                if e["data"].get("story_id") == good and "order_id" not in e["data"]]

    published = _until(lambda: len(got := of_story()) == PAGES + 1 and got, 10, "the published events")
    delivered = fresh.events(story_id=good)
    assert [e["id"] for e in published] == [e["id"] for e in delivered]
    assert published[-1]["type"] == "story.completed" and published[-1]["data"] == delivered[-1]["data"]


def test_receiver_down_then_back_gets_every_event(db: Db, stack: Stack, fresh: WebhookReceiver) -> None:
    def attempts(error: str) -> int:
        return int(db.one("SELECT count(*) AS n FROM event_attempts a JOIN event_deliveries d ON d.id = a.delivery_id "
                          "JOIN outbox_events o ON o.seq = d.event_seq WHERE o.story_id = :s AND a.error LIKE :e",
                          s=story, e=error)["n"])

    # given the receiver refusing connections while a story runs
    fresh.stop()
    story = _story(db, astronaut_png())
    _until(lambda: attempts("ConnectError%"), 30, "a refused attempt")
    # when it comes back answering 503 with Retry-After for a while, then OK
    fresh.start()
    fresh.set_mode("unavailable", retry_after=1)
    _until(lambda: attempts("HTTP 503%"), 10, "a 503")
    fresh.set_mode("ok")
    # then the story completed as usual and every event arrives, pages first, each attempt recorded
    assert db.wait_story(story)["status"] == "completed"
    _assert_story_events(db, fresh, story)


def test_hanging_endpoint_does_not_slow_a_story_and_a_killed_worker_loses_nothing(
        db: Db, stack: Stack, fresh: WebhookReceiver) -> None:
    # given a receiver that holds every request
    fresh.set_mode("hang", hang_seconds=20)
    # when a story runs
    t0 = time.monotonic()
    story = _story(db, astronaut_png())
    assert db.wait_story(story)["status"] == "completed"
    took = time.monotonic() - t0
    assert fresh.hanging.is_set()
    # then it took about its normal time (the first test's story and its events), not the endpoint's
    assert took < stack.baseline * 1.5 + 2, took
    # when the worker sending a request is SIGKILLed with it in flight
    for _ in range(10):  # (a request whose 1 s timeout ran out before we looked is not in flight any more)
        fresh.hanging.clear()
        _until(fresh.hanging.is_set, 10, "a request in flight")
        if (sender := stack.sender_of(fresh.hanging_ports[-1])) is not None:
            break
    assert sender is not None
    sender.kill()
    left = db.one("SELECT count(*) AS n FROM event_deliveries d JOIN outbox_events o ON o.seq = d.event_seq "
                  "WHERE o.story_id = :s AND d.status <> 'delivered'", s=story)["n"]
    assert left >= 1
    # and the receiver answers again
    fresh.release()
    # then the other worker delivers every event (the one in flight again, after its lease), pages first
    _assert_story_events(db, fresh, story)


def test_dead_delivery_is_listed_and_retried_by_an_operator(db: Db, stack: Stack, fresh: WebhookReceiver,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.operations.cli import main

    # given an order event the receiver keeps refusing (503, no Retry-After floor)
    fresh.set_mode("unavailable", retry_after=0)
    story = db.story(db.photo(None))
    user = db.story_row(story)["user_id"]
    order = str(db.one("INSERT INTO orders (user_id, story_id, product_type, amount, currency) "
                       "VALUES (:u, :s, 'hardcover', 1500, 'eur') RETURNING id", u=user, s=story)["id"])
    db.exec("UPDATE orders SET status = 'paid' WHERE id = :o", o=order)
    event = db.one("SELECT id FROM outbox_events WHERE order_id = :o", o=order)["id"]
    # when it runs out of attempts, it is dead, and status says so
    _until(lambda: (r := db.one("SELECT d.status FROM event_deliveries d JOIN outbox_events o ON o.seq = d.event_seq "
                                "WHERE o.id = :e AND d.endpoint LIKE 'http%'", e=event)) and r["status"] == "dead",
           20, "a dead delivery")
    assert db.one("SELECT count(*) AS n FROM event_attempts a JOIN event_deliveries d ON d.id = a.delivery_id "
                  "JOIN outbox_events o ON o.seq = d.event_seq WHERE o.id = :e AND d.endpoint LIKE 'http%'",
                  e=event)["n"] == 8
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"]["dead"] >= 1
    assert main(["status", story]) == 0
    out = capsys.readouterr().out
    assert f"order.paid {event}: delivered (1 attempt(s)), dead (8 attempt(s)): HTTP 503" in out, out
    # and an operator's retry makes it due again (beat's next run sends it) once the receiver is back
    fresh.set_mode("ok")
    assert main(["retry", "--event", event]) == 0
    assert "queued again" in capsys.readouterr().out
    _until(lambda: fresh.events(order_id=order), 10, "the retried event")
    assert main(["retry", "--event", event]) == 1  # nothing dead any more
