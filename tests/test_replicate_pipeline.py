"""Images as Replicate predictions, through real worker processes and the fake Replicate server:
one prediction per page step even when a worker dies after creating one, polling by
re-scheduling, the shared cap on running predictions, failures with the provider's reason."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.fakes.replicate_server import FakeReplicate
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/15"
TOKEN = "r8_test_token_0123456789"
RUN_SECONDS = 0.4


@pytest.fixture()
def fake() -> Iterator[FakeReplicate]:
    server = FakeReplicate(TOKEN, run_seconds=RUN_SECONDS).start()
    yield server
    server.stop()


def _env(fake: FakeReplicate, **extra: str) -> dict[str, str]:
    return {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "IMAGE_PROVIDER": "replicate",
            "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url, "JOB_POLL_INTERVAL": "0.2",
            "REPLICATE_TIMEOUT": "5", **extra}


def _worker(tmp_path: Path, request: pytest.FixtureRequest, env: dict[str, str], name: str) -> WorkerProcess:
    w = WorkerProcess(tmp_path / f"{name}.log", env=env, concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    return w


def _peak_running(fake: FakeReplicate) -> int:
    """Most predictions running at one moment, as the provider saw them."""
    spans = [(datetime.fromisoformat(p["created_at"].replace("Z", "+00:00")).timestamp(),) for p in fake.created]
    starts = sorted(s for (s,) in spans)
    return max(sum(1 for t in starts if t <= s < t + RUN_SECONDS) for s in starts)


def test_story_completes_with_one_prediction_per_page_step(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    # given workers whose images come from Replicate, at most 2 predictions running at once
    _worker(tmp_path, request, _env(fake, QUOTA_REPLICATE_CONCURRENT="2"), "w")
    story = clean_db.story(clean_db.photo(astronaut_png()))
    # when a story runs
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=120)
    # then it completes, with exactly one base and one personalization prediction per page
    assert row["status"] == "completed", row["error_message"]
    n = len(clean_db.pages(story))
    base = [p for p in fake.created if "prompt" in p["input"]]
    swap = [p for p in fake.created if "prompt" not in p["input"]]
    assert (len(base), len(swap)) == (n, n)
    # the same seed on every page (a consistent look), and the child's name in no prompt
    assert len({p["input"]["seed"] for p in base}) == 1
    assert not any("Mia" in p["input"]["prompt"] for p in base)
    # and never more than 2 running at once (the shared cap), though 8 threads wanted more
    assert _peak_running(fake) <= 2, _peak_running(fake)
    # the outputs were copied into our storage (Replicate deletes them within the hour)
    for p in clean_db.pages(story):
        assert (clean_db.storage / p["personalized_image_key"]).read_bytes()[:4] == b"\x89PNG"
    jobs = clean_db.all("SELECT status, polls FROM provider_jobs j JOIN story_pages p ON p.id = j.page_id "
                        "WHERE p.story_id = :s", s=story)
    assert len(jobs) == 2 * n and {j["status"] for j in jobs} == {"succeeded"}


@pytest.mark.timeout(240)
def test_worker_killed_after_creating_a_prediction_does_not_create_a_second(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    # given predictions that take a while, and a worker with a short lease
    fake.run_seconds = 2.0
    env = _env(fake, STEP_LEASE_SECONDS="3", BROKER_VISIBILITY_TIMEOUT="4")
    first = _worker(tmp_path, request, env, "first")
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    # when the worker is SIGKILLed right after its first predictions were created
    deadline = time.monotonic() + 60
    while not fake.created:
        assert time.monotonic() < deadline, first.tail()
        time.sleep(0.01)
    first.kill()
    created_before_kill = len(fake.created)
    # and another worker takes over: an operator's backfill re-enqueues the dead worker's steps
    # once their lease ran out (Redis would also redeliver them, but only after its restore
    # cycle, which took over a minute here)
    _worker(tmp_path, request, env, "second")
    time.sleep(3.5)
    backfill = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--stale-after", "3",
                               "--pending-after", "3"], cwd=ROOT, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60)
    assert backfill.returncode == 0, backfill.stderr
    row = clean_db.wait_story(story, timeout=150)
    # then the story completes and no page step has two predictions
    assert row["status"] == "completed", row["error_message"]
    n = len(clean_db.pages(story))
    inputs = [repr(sorted(p["input"].items())) for p in fake.created]
    assert len(inputs) == len(set(inputs)) == 2 * n, (len(inputs), len(set(inputs)), created_before_kill)


def test_failed_prediction_fails_the_story_with_the_reason(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    _worker(tmp_path, request, _env(fake), "w")
    # given the image service will refuse one picture
    fake.next_outcome("failed", error="NSFW content detected. Try running it again, or try a different prompt.")
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=120)
    # then the story fails, saying which page and why, and nothing retried the refusal
    assert row["status"] == "failed"
    assert "content filter" in row["error_message"] and "Page " in row["error_message"]
    failed_jobs = clean_db.all("SELECT error_message FROM provider_jobs WHERE status = 'failed'")
    assert len(failed_jobs) == 1


def test_rate_limited_create_is_retried_after_retry_after(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    _worker(tmp_path, request, _env(fake), "w")
    # given the first create answers 429 with Retry-After: 1, and the next one 503
    fake.script([("status", 429, {"Retry-After": "1"},
                  {"title": "Too Many Requests", "detail": "Request was throttled.", "status": 429}),
                 ("status", 503, {}, {"title": "Service Unavailable", "detail": "try later", "status": 503})])
    story = clean_db.story(clean_db.photo(astronaut_png()))
    t0 = time.monotonic()
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=120)
    # then the story completes anyway, the retries recorded for operators, none lost
    assert row["status"] == "completed", row["error_message"]
    assert time.monotonic() - t0 >= 1.0
    errors = clean_db.all("SELECT message, permanent FROM step_errors WHERE story_id = :s", s=story)
    assert len(errors) == 2 and not any(e["permanent"] for e in errors)
    assert any("429" in e["message"] for e in errors) and any("503" in e["message"] for e in errors)
    n = len(clean_db.pages(story))
    assert len(fake.created) == 2 * n


def test_a_run_that_died_before_recording_the_prediction_id_finds_it(
        clean_db: Db, fake: FakeReplicate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The narrowest crash window, made deterministic in-process: Replicate created the
    prediction, and the worker died before writing its id down."""
    from pipeline import steps
    from pipeline.providers import registry
    from pipeline.providers.replicate_images import ReplicateImageJobs

    real = registry.providers()
    jobs = ReplicateImageJobs(TOKEN, base_url=fake.base_url, timeout=5)
    with_jobs = registry.Providers(real.vision, real.writer, real.illustrator, real.storage, jobs)
    monkeypatch.setattr(steps, "providers", lambda: with_jobs)
    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    assert steps.write_text(page).moves_on
    # given a first run that created the prediction...
    with pytest.raises(steps.RetryLater):
        steps.draw_base(page)
    assert len(fake.created) == 1
    # ...but died before recording its id (and its claim's lease ran out)
    clean_db.exec("UPDATE provider_jobs SET external_id = NULL, status = 'creating'")
    clean_db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE id = :p", p=page)
    # when the step runs again, until it is done
    deadline = time.monotonic() + 30
    while True:
        try:
            result = steps.draw_base(page, steps.Attempt(redelivered=True))
            break
        except steps.RetryLater:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    # then it found and followed that prediction: still one, and the page has its picture
    assert result.moves_on and len(fake.created) == 1
    job = clean_db.one("SELECT external_id, status FROM provider_jobs")
    assert job["external_id"] == fake.created[0]["id"] and job["status"] == "succeeded"


def test_a_long_prediction_is_followed_for_as_many_looks_as_it_takes(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Celery's own retry cap must not end a wait: 3 s predictions looked at every 0.1 s."""
    flush_redis(BROKER)
    fake.run_seconds = 3.0
    _worker(tmp_path, request, _env(fake, JOB_POLL_INTERVAL="0.1", STORY_PAGE_COUNT="1"), "w")
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=90)
    assert row["status"] == "completed", row["error_message"]
    polls = clean_db.all("SELECT polls FROM provider_jobs")
    assert len(polls) == 2 and min(p["polls"] for p in polls) > 12, polls
