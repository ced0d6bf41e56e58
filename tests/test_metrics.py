"""The worker serves Prometheus metrics: step counts by stage and outcome, latency histograms."""
from __future__ import annotations

import os
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
METRICS_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11")) + 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def test_worker_serves_step_metrics(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # given a worker of its own, serving metrics
    broker, port = f"{REDIS}/{METRICS_REDIS_DB}", _free_port()
    flush_redis(broker)
    w = WorkerProcess(tmp_path / "worker.log", env={"CELERY_BROKER_URL": broker, "METRICS_PORT": str(port)})
    request.addfinalizer(w.stop)
    w.start()
    # when one story runs (and one bad one fails)
    good = clean_db.story(clean_db.photo(astronaut_png()))
    bad = clean_db.story(clean_db.photo(astronaut_png()), theme="zombies")
    external_send(broker, "stories.generate", {"story_id": good})
    external_send(broker, "stories.generate", {"story_id": bad})
    assert clean_db.wait_story(good)["status"] == "completed"
    assert clean_db.wait_story(bad)["status"] == "failed"
    # then the counters say so (a step is counted just after its commit: the story row can say
    # completed a moment before the book step's own count lands)
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if _sample(text, "storycreator_steps_total", stage="finish", outcome="done") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    pages = int(os.environ["STORY_PAGE_COUNT"])
    for stage in ("text", "image", "personalization"):
        assert _sample(text, "storycreator_steps_total", stage=stage, outcome="done") == pages, stage
        assert _sample(text, "storycreator_step_duration_seconds_count", stage=stage) >= pages
        assert _sample(text, "storycreator_provider_duration_seconds_count", stage=stage) == pages
    assert _sample(text, "storycreator_steps_total", stage="outline", outcome="done") == 1
    assert _sample(text, "storycreator_steps_total", stage="outline", outcome="failed") == 1
    assert _sample(text, "storycreator_steps_total", stage="finish", outcome="done") == 1
