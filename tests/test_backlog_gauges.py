"""Issue 14, part 3: the backlog gauges (pipeline/operations/gauges.py) read from real rows in
PostgreSQL and real queues in Redis and RabbitMQ (messages published by task name, as the external
API publishes), cached so a scrape never reads the sources more than once per period."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

from pipeline.operations.gauges import BacklogCollector, Sources
from pipeline.operations.queue_depth import queue_depths
from tests.support import ROOT, Db, external_send, flush_redis, rabbit_answers

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# this run's Redis database for tests without a worker of their own on it (conftest.py: +0..+4)
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 3}"
RABBIT = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUES = ("celery", "stories", "text", "images", "personalize", "orders", "events")


def samples(collector: BacklogCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in collector.collect() for s in m.samples}


def value(collector: BacklogCollector, name: str, **labels: str) -> float | None:
    return samples(collector).get((name, tuple(sorted(labels.items()))))


@pytest.fixture()
def broker() -> Iterator[str]:
    flush_redis(BROKER)
    yield BROKER
    flush_redis(BROKER)


def _collector(db: Db, broker_url: str, cache: float = 60.0) -> BacklogCollector:
    c = BacklogCollector()
    c.configure(Sources(lambda: db.engine, broker_url, QUEUES), cache)
    return c


def _story(db: Db, status: str, minutes_ago: float) -> str:
    sid = db.story(db.photo(None))
    db.exec("UPDATE stories SET status = :s, created_at = now() - make_interval(mins => :m), "
            "updated_at = now() - make_interval(mins => :m) WHERE id = :id", s=status, m=minutes_ago, id=sid)
    return sid


def _page(db: Db, story: str, n: int, text: str, image: str, pers: str, minutes_ago: float) -> None:
    db.exec("INSERT INTO story_pages (story_id, page_number, text_generation_status, image_generation_status, "
            "personalization_status) VALUES (:s, :n, :t, :i, :p)", s=story, n=n, t=text, i=image, p=pers)
    # after the insert: the updated_at trigger sets now() on every UPDATE, so age it in one statement
    db.exec("ALTER TABLE story_pages DISABLE TRIGGER trg_story_pages_updated_at")
    try:
        db.exec("UPDATE story_pages SET updated_at = now() - make_interval(mins => :m) "
                "WHERE story_id = :s AND page_number = :n", m=minutes_ago, s=story, n=n)
    finally:
        db.exec("ALTER TABLE story_pages ENABLE TRIGGER trg_story_pages_updated_at")


def test_ages_and_dead_deliveries_come_from_the_rows(clean_db: Db, broker: str) -> None:
    db = clean_db
    # given no unfinished work: every age is 0 (the series exist, no alert fires)
    c = _collector(db, broker, cache=0.001)
    assert value(c, "storycreator_oldest_story_age_seconds", status="pending") == 0.0
    assert value(c, "storycreator_oldest_page_step_age_seconds", stage="image") == 0.0
    assert value(c, "storycreator_event_deliveries_dead") == 0.0
    # when stories wait and run, pages wait in each stage, an order is paid, a delivery is dead
    _story(db, "pending", 20)
    _story(db, "pending", 3)
    running = _story(db, "processing", 50)
    late = _story(db, "processing", 120)   # a capped batch's story: created 2 h ago, started 10 min ago
    db.exec("UPDATE stories SET updated_at = now() - interval '10 minutes' WHERE id = :s", s=late)
    _page(db, running, 1, "completed", "processing", "pending", 7)     # an illustration running for 7 min
    _page(db, running, 2, "completed", "completed", "pending", 4)      # a personalization waiting 4 min
    _page(db, running, 3, "pending", "pending", "pending", 2)          # a text step waiting 2 min
    _page(db, running, 4, "completed", "pending", "pending", 1)        # an illustration waiting 1 min
    failed = _story(db, "failed", 600)                                 # a failed story's pages never count
    _page(db, failed, 1, "completed", "failed", "pending", 500)
    user = db.one("SELECT user_id FROM stories WHERE id = :s", s=running)["user_id"]
    db.exec("INSERT INTO orders (user_id, story_id, product_type, status, amount, currency, paid_at) "
            "VALUES (:u, :s, 'hardcover', 'paid', 2999, 'usd', now() - interval '90 minutes')", u=user, s=running)
    seq = db.one("INSERT INTO outbox_events (type, ordering_key, payload) VALUES ('story.failed', 'story:x', '{}') "
                 "RETURNING seq")["seq"]
    for endpoint, status in (("https://a.example/hook", "dead"), ("https://b.example/hook", "dead"),
                             ("https://c.example/hook", "delivered")):
        db.exec("INSERT INTO event_deliveries (event_seq, endpoint, ordering_key, status) "
                "VALUES (:q, :e, 'story:x', :st)", q=seq, e=endpoint, st=status)
    # then the gauges say how old the oldest of each is (seconds), and how many deliveries are dead
    s = samples(c)

    def near(name: str, minutes: float, **labels: str) -> None:
        got = s[(name, tuple(sorted(labels.items())))]
        assert minutes * 60 - 5 <= got <= minutes * 60 + 30, (name, labels, got)

    near("storycreator_oldest_story_age_seconds", 20, status="pending")
    near("storycreator_oldest_story_age_seconds", 50, status="processing")  # running 50 min, not 120
    near("storycreator_oldest_page_step_age_seconds", 2, stage="text")
    near("storycreator_oldest_page_step_age_seconds", 7, stage="image")
    near("storycreator_oldest_page_step_age_seconds", 4, stage="personalization")
    near("storycreator_oldest_order_age_seconds", 90, status="paid")
    assert s[("storycreator_oldest_order_age_seconds", (("status", "fulfilled"),))] == 0.0
    assert s[("storycreator_event_deliveries_dead", ())] == 2.0
    assert s[("storycreator_backlog_source_up", (("source", "database"),))] == 1.0
    assert s[("storycreator_backlog_source_up", (("source", "broker"),))] == 1.0


def test_a_scrape_reads_the_sources_at_most_once_per_period(clean_db: Db, broker: str) -> None:
    c = _collector(clean_db, broker, cache=1.0)
    # many scrapes at once, and again right after: one read, shared
    threads = [threading.Thread(target=lambda: list(c.collect())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    list(c.collect())
    assert c.reads == 1
    # the period over: the next scrape reads again, and sees what changed meanwhile
    _story(clean_db, "pending", 10)
    assert value(c, "storycreator_oldest_story_age_seconds", status="pending") == 0.0  # cached
    time.sleep(1.05)
    assert (value(c, "storycreator_oldest_story_age_seconds", status="pending") or 0) >= 590
    assert c.reads == 2


def test_a_source_down_is_reported_and_its_gauges_left_out(clean_db: Db, broker: str) -> None:
    c = _collector(clean_db, "redis://127.0.0.1:9/0")  # nothing listens on port 9
    s = samples(c)
    assert s[("storycreator_backlog_source_up", (("source", "broker"),))] == 0.0
    assert not [k for k in s if k[0] == "storycreator_queue_messages"]
    # the database's gauges are still there
    assert s[("storycreator_backlog_source_up", (("source", "database"),))] == 1.0
    assert ("storycreator_event_deliveries_dead", ()) in s


def _publisher(broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Celery:
    """A plain Celery client of ``broker_url`` (CELERY_BROKER_URL, this run's, would override it)."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    return Celery("publisher", broker=broker_url)


def test_a_slow_database_read_is_cut_short_and_reported(clean_db: Db, broker: str) -> None:
    # given a transaction holding the dead deliveries' table locked (a migration, a stuck operator)
    c = BacklogCollector()
    c.configure(Sources(lambda: clean_db.engine, broker, QUEUES, statement_timeout_ms=300), 60)
    with clean_db.engine.connect() as locker:
        locker.exec_driver_sql("BEGIN; LOCK TABLE event_deliveries IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        s = samples(c)
        locker.exec_driver_sql("ROLLBACK")
    # then the scrape comes back within the statement timeout, saying the database could not be read
    assert time.monotonic() - t0 < 5
    assert s[("storycreator_backlog_source_up", (("source", "database"),))] == 0.0
    assert not [k for k in s if k[0].startswith("storycreator_oldest_")]
    assert s[("storycreator_backlog_source_up", (("source", "broker"),))] == 1.0


def test_redis_queue_depth_counts_every_priority_list_and_the_unacked(clean_db: Db, broker: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # given messages published by name: three to the default queue as the external API does, and
    # page steps with priorities (kombu keeps priority 9 in the list "text\x06\x169")
    external_send(broker, "stories.generate", {"story_id": str(uuid.uuid4())}, times=3)
    client = _publisher(broker, monkeypatch)
    for priority in (None, 9, 9, 5):
        client.send_task("pages.write_text", kwargs={"page_id": str(uuid.uuid4())}, queue="text", priority=priority)
    keys = set(redis.Redis.from_url(broker).keys())
    assert {b"text", b"text\x06\x169", b"text\x06\x163"} <= keys
    c = _collector(clean_db, broker, cache=0.001)
    assert value(c, "storycreator_queue_messages", queue="celery") == 3
    assert value(c, "storycreator_queue_messages", queue="text") == 4
    assert value(c, "storycreator_queue_messages", queue="images") == 0  # never used: no key at all
    assert value(c, "storycreator_queue_unacked_messages") == 0
    # when a consumer takes one without acking it (a worker running it): it moves to the unacked
    with Connection(broker) as conn:
        ch = conn.channel()
        assert ch.basic_get("text", no_ack=False) is not None
        ch.qos.sync()  # the delivery's unacked record, written by the channel's flusher thread
        assert value(c, "storycreator_queue_messages", queue="text") == 3
        assert value(c, "storycreator_queue_unacked_messages") == 1
        ch.close()
    client.close()


def test_redis_queue_depth_under_a_global_key_prefix(broker: str) -> None:
    # broker_transport_options' global_keyprefix: every key (lists, unacked hash) carries the prefix
    options = {"global_keyprefix": "storycreator:"}
    with Connection(broker, transport_options=options) as conn:
        producer = conn.Producer()
        queue = Queue("images", Exchange("images", type="direct"), routing_key="images")
        for priority in (None, 9):
            producer.publish({"page_id": "p"}, exchange=queue.exchange, routing_key="images", declare=[queue],
                             priority=priority)
        ch = conn.channel()
        assert ch.basic_get("images", no_ack=False) is not None
        ch.qos.sync()  # the delivery's unacked record, written by the channel's flusher thread
        # (kombu's Redis takes priority 0 first: the priority-9 message waits in its own list)
        assert {b"storycreator:images\x06\x169", b"storycreator:unacked"} <= set(redis.Redis.from_url(broker).keys())
        depths = queue_depths(broker, ["images", "text"], options)
        ch.close()
    assert depths.ready == {"images": 1, "text": 0} and depths.unacked == 1


def test_rabbitmq_queue_depth_from_a_passive_declare(monkeypatch: pytest.MonkeyPatch) -> None:
    if not rabbit_answers(RABBIT):
        if os.environ.get("CI"):
            raise AssertionError(f"RabbitMQ does not answer at {RABBIT}")
        pytest.skip(f"RabbitMQ does not answer at {RABBIT}")
    # a queue of this test's own (the vhost is shared), filled by name through Celery
    queue, missing = f"gauges-{uuid.uuid4().hex[:8]}", f"gauges-missing-{uuid.uuid4().hex[:8]}"
    client = _publisher(RABBIT, monkeypatch)
    try:
        for _ in range(5):
            client.send_task("pages.draw_base", kwargs={"page_id": str(uuid.uuid4())}, queue=queue)
        deadline = time.monotonic() + 10  # published without confirms: the broker counts them a moment later
        while (depths := queue_depths(RABBIT, [missing, queue])).ready[queue] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        # a queue nobody declared counts 0, and the channel goes on after the broker's 404
        assert depths.ready == {missing: 0, queue: 5}
        assert depths.unacked is None  # not in queue.declare-ok (RabbitMQ's own exporter has it)
    finally:
        with Connection(RABBIT) as conn:
            conn.channel().queue_delete(queue)
        client.close()


@pytest.mark.parametrize(("env", "says"), [
    ({"EXPORTER_CACHE_SECONDS": "soon"}, "configuration error: EXPORTER_CACHE_SECONDS"),
    ({"EXPORTER_PORT": "70000"}, "configuration error: EXPORTER_PORT"),
])
def test_the_exporter_refuses_a_bad_setting_with_one_line(env: dict[str, str], says: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.operations.exporter"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_exporter_refuses_a_port_already_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "pipeline.operations.exporter"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "EXPORTER_PORT": str(port)})
    assert proc.returncode == 2, proc.stderr
    assert f"configuration error: EXPORTER_PORT={port} cannot be served" in proc.stderr, proc.stderr


def test_the_exporter_refuses_a_database_url_it_cannot_use() -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.operations.exporter"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DATABASE_URL": "mysql://app:secret@db/books"})
    assert proc.returncode == 2 and "configuration error: DATABASE_URL" in proc.stderr, proc.stderr
    assert "secret" not in proc.stderr
