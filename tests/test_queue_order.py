"""BROKER_QUEUE_ORDER (celeryconfig, README "Queue order"): with ``priority`` a worker's fetch takes
a story's later stages before its earlier ones, and new work from the external API first; the
default ``round_robin`` is kombu's turn-taking. Checked on a real worker with one thread, whose
"received" log lines are its fetches in order."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.support import ROOT, Db, WorkerProcess, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"  # this module's worker only
STAGES = {"pages.personalize": "personalize", "pages.draw_base": "images", "pages.write_text": "text",
          "photos.analyze": "photos"}
PER_QUEUE = 3


def _config(env: dict[str, str]) -> tuple[list[str], dict[str, object]]:
    code = "import celeryconfig as c; print(list(c.QUEUES)); print(c.broker_transport_options)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    queues, options = out.stdout.strip().splitlines()
    return eval(queues), eval(options)  # noqa: S307 - our own print of a list and a dict


def test_priority_reads_the_external_apis_queue_then_a_storys_stages_last_first() -> None:
    queues, options = _config({"BROKER_QUEUE_ORDER": "priority"})
    assert queues == ["celery", "orders", "events", "stories", "personalize", "images", "text", "photos"]
    assert options["queue_order_strategy"] == "priority"
    # the default is kombu's round robin over the same queues
    queues_rr, options_rr = _config({"BROKER_QUEUE_ORDER": ""})
    assert queues_rr == queues and "queue_order_strategy" not in options_rr


def test_an_unknown_order_is_a_configuration_error() -> None:
    out = subprocess.run([sys.executable, "-c", "import celeryconfig"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "BROKER_QUEUE_ORDER": "fifo"}, timeout=60)
    assert out.returncode != 0
    assert "configuration error: BROKER_QUEUE_ORDER='fifo'; choose one of round_robin, priority" in out.stderr


def _fetch_order(order: str, tmp_path: Path) -> list[str]:
    """Queue PER_QUEUE messages on each stage's queue, the first stage's first, then start a
    worker with one thread: the queues its fetches came from, in order."""
    from celery import Celery
    from kombu import Connection

    flush_redis(BROKER)
    sender = Celery("queue-order-test", set_as_current=False)
    sender.config_from_object("celeryconfig")  # its routes and queues (Celery's env would pick the broker)
    with Connection(BROKER) as conn:
        for name in reversed(STAGES):  # photos first: the order they were sent in must not matter
            key = "photo_id" if name == "photos.analyze" else "page_id"
            for _ in range(PER_QUEUE):
                sender.send_task(name, kwargs={key: str(uuid.uuid4())}, connection=conn)
    r = redis.Redis.from_url(BROKER)
    assert {q: r.llen(q) for q in STAGES.values()} == dict.fromkeys(STAGES.values(), PER_QUEUE)
    w = WorkerProcess(tmp_path / f"{order or 'default'}.log", concurrency=1,
                      env={"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "BROKER_QUEUE_ORDER": order})
    w.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            got = re.findall(r"Task ([a-z_.]+)\[[0-9a-f-]+\] received", w.log.read_text(errors="replace"))
            if len(got) >= PER_QUEUE * len(STAGES) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        w.stop()
    assert len(got) == PER_QUEUE * len(STAGES), w.tail()
    return [STAGES[name] for name in got]


@pytest.mark.workers
def test_a_worker_takes_the_later_stages_first_with_priority_and_in_turn_by_default(clean_db: Db,
                                                                                      tmp_path: Path) -> None:
    # given messages queued for every page stage and for photo analysis, when a worker with one
    # thread starts, then with BROKER_QUEUE_ORDER=priority it takes every personalization first,
    # then the illustrations, the texts and the photo analyses
    got = _fetch_order("priority", tmp_path)
    assert got == [q for q in ("personalize", "images", "text", "photos") for _ in range(PER_QUEUE)], got
    # and with the default (kombu's round robin) it takes the queues in turn
    got = _fetch_order("", tmp_path)
    assert len(set(got[:len(STAGES)])) == len(STAGES), got
