"""At-least-once delivery for real: a worker killed with SIGKILL mid-step, and the story still
completes on another worker, with no page step done twice. On Redis and on RabbitMQ.

The redelivery delay is made short here (Redis visibility timeout 4 s, step lease 3 s) instead
of the production values (15 min / 5 min), so the test does not wait an hour.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support import Db, WorkerProcess, astronaut_png, done_lines, external_send, flush_redis, rabbit_answers

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
KILL_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11")) + 1
RABBIT = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUES = ("celery", "photos", "stories", "text", "images", "personalize")
IN_FLIGHT = """SELECT count(*) AS n FROM story_pages WHERE story_id = :s AND 'processing' IN
               (text_generation_status, image_generation_status, personalization_status)"""


def _kill_mid_step_and_recover(db: Db, tmp_path: Path, request: pytest.FixtureRequest,
                               broker: str, env: dict[str, str]) -> None:
    # given a worker whose providers take a second per call, and a story in progress
    env = {"CELERY_BROKER_URL": broker, "SIMULATED_PROVIDER_LATENCY": "1.0", "STEP_LEASE_SECONDS": "3", **env}
    first = WorkerProcess(tmp_path / "first.log", env=env, concurrency=4)
    request.addfinalizer(first.stop)
    first.start()
    story = db.story(db.photo(astronaut_png()))
    external_send(broker, "stories.generate", {"story_id": story})

    # when the worker is killed with SIGKILL while page steps are in flight
    deadline = time.monotonic() + 60
    while db.one(IN_FLIGHT, s=story)["n"] < 2:
        assert time.monotonic() < deadline, "no page step started\n" + first.tail()
        time.sleep(0.05)
    first.kill()
    assert db.one(IN_FLIGHT, s=story)["n"] >= 1, "the kill should catch steps mid-way"

    # and another worker starts (the killed one's unacked messages come back to it)
    second = WorkerProcess(tmp_path / "second.log", env=env, concurrency=4)
    request.addfinalizer(second.stop)
    second.start()
    row = db.wait_story(story, timeout=150)

    # then the story completed
    assert row["status"] == "completed", (row["error_message"], second.tail())
    pages = db.pages(story)
    assert all(p["personalization_status"] == "completed" for p in pages)
    # and no page step completed twice across both workers
    page_ids = {str(p["id"]) for p in pages}
    seen: dict[tuple[str, str], int] = {}
    for ln in done_lines(first.log, second.log):
        if ln.get("page") in page_ids:
            seen[(ln["stage"], ln["page"])] = seen.get((ln["stage"], ln["page"]), 0) + 1
    assert len(seen) == 3 * len(pages) and set(seen.values()) == {1}, seen


@pytest.mark.timeout(240)
def test_worker_killed_mid_step_on_redis(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Redis: the dead worker's unacked messages return after the visibility timeout."""
    broker = f"{REDIS}/{KILL_REDIS_DB}"
    flush_redis(broker)
    _kill_mid_step_and_recover(clean_db, tmp_path, request, broker, {"BROKER_VISIBILITY_TIMEOUT": "4"})


@pytest.mark.timeout(240)
def test_worker_killed_mid_step_on_rabbitmq(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The broker is a URL away. On RabbitMQ a killed worker's unacknowledged messages come
    back as soon as its connection drops, while its claims still look fresh: the redelivered
    copies must wait for the lease, not drop the steps."""
    if not rabbit_answers(RABBIT):
        if os.environ.get("CI"):
            raise AssertionError(f"RabbitMQ does not answer at {RABBIT}")
        pytest.skip(f"RabbitMQ does not answer at {RABBIT}")
    from kombu import Connection

    with Connection(RABBIT) as conn:  # a clean slate: nothing left from an earlier run
        channel = conn.channel()
        for q in QUEUES:
            try:
                channel.queue_purge(q)
            except Exception:  # noqa: BLE001 - the queue does not exist yet (the channel closes)
                channel = conn.channel()
    _kill_mid_step_and_recover(clean_db, tmp_path, request, RABBIT, {})
