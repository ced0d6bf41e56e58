"""Images as Replicate predictions, through real worker processes and the fake Replicate server:
one prediction per page step even when a worker dies after creating one, polling by
re-scheduling, the shared cap on running predictions, failures with the provider's reason."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.kernel import step
from tests.fakes.replicate_server import FakeReplicate
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
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
    backfill = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "backfill", "--stale-after", "3",
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
    from pipeline.providers import registry
    from pipeline.providers.replicate_images import ReplicateImageJobs
    from pipeline.stories import steps

    real = registry.providers()
    jobs = ReplicateImageJobs(TOKEN, base_url=fake.base_url, timeout=5)
    with_jobs = registry.Providers(real.vision, real.writer, real.illustrator, real.storage, jobs)
    monkeypatch.setattr(registry, "providers", lambda: with_jobs)
    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    assert steps.write_text(page).moves_on
    # given a first run that created the prediction...
    with pytest.raises(step.RetryLater):
        steps.draw_base(page)
    assert len(fake.created) == 1
    # ...but died before recording its id (and its claim's lease ran out)
    clean_db.exec("UPDATE provider_jobs SET external_id = NULL, status = 'creating'")
    clean_db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE id = :p", p=page)
    # when the step runs again, until it is done
    deadline = time.monotonic() + 30
    while True:
        try:
            result = steps.draw_base(page, step.Attempt(redelivered=True))
            break
        except step.RetryLater:
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


# --- outputs that vanish before they are copied -------------------------------------------------
# Replicate removes an API prediction's output (and input, logs) after about an hour
# (https://replicate.com/docs/topics/predictions/data-retention); a backlog or an outage is enough
# for a page to get there first. Each way that shows, on either page step.


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.operations.cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def _jobs(db: Db, story: str, stage: str) -> list[Any]:
    return db.all("SELECT j.* FROM provider_jobs j JOIN story_pages p ON p.id = j.page_id "
                  "WHERE p.story_id = :s AND j.stage = :st ORDER BY j.created_at", s=story, st=stage)


# Each way an output can be gone: (case, the step whose first prediction loses it, retention).
GONE = [
    ("data_removed", "image", {"output_ttl": 0.0}),  # succeeded, output null, data_removed true
    ("file_404", "image", {"file_ttl": 0.0, "gone_status": 404}),  # listed, but the file is deleted
    ("signed_url_403", "image", {"file_ttl": 0.0, "gone_status": 403}),  # an expired signed URL
    ("prediction_purged", "image", {"purge_after": 0.0}),  # GET /v1/predictions/{id} -> 404
    ("personalization_file_410", "personalization", {"file_ttl": 0.0, "gone_status": 410}),
]


@pytest.mark.timeout(240)
def test_output_gone_before_it_was_copied_makes_one_new_prediction(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One worker, one story per way an output can be gone (one after the other: the fake's
    retention applies to predictions in the order they are created)."""
    flush_redis(BROKER)
    env = _env(fake, STORY_PAGE_COUNT="1")
    _worker(tmp_path, request, env, "w")
    photo = clean_db.photo(astronaut_png())
    for case, stage, retention in GONE:
        before = len(fake.created)
        # given that the step's first prediction will be gone by the time it is looked at
        if stage == "personalization":
            fake.next_retention()  # the base picture is fine
        fake.next_retention(**retention)
        story = clean_db.story(photo)
        # when the story runs
        external_send(BROKER, "stories.generate", {"story_id": story})
        row = clean_db.wait_story(story, timeout=90)
        # then it completes, with a second prediction of the same input for that step only
        assert row["status"] == "completed", (case, row["error_message"])
        made = fake.created[before:]
        kind = [p for p in made if ("prompt" in p["input"]) == (stage == "image")]
        other = [p for p in made if ("prompt" in p["input"]) != (stage == "image")]
        assert len(kind) == 2 and kind[0]["input"] == kind[1]["input"] and len(other) == 1, case
        # both recorded: the first marked expired with how that showed, the second its replacement
        jobs = _jobs(clean_db, story, stage)
        assert [(j["status"], j["recreation"]) for j in jobs] == [("expired", 0), ("succeeded", 1)], case
        assert [j["external_id"] for j in jobs] == [p["id"] for p in kind], case
        assert jobs[0]["error_message"] and "://" not in jobs[0]["error_message"], case  # no URL
        # an operator sees it: a retried step error, and the job in `status`
        errors = clean_db.all("SELECT permanent, message FROM step_errors WHERE story_id = :s", s=story)
        assert [e["permanent"] for e in errors] == [False] and "expired" in errors[0]["message"], case
    shown = _cli(env, "status", story)
    assert shown.returncode == 0 and "1 re-created after their output expired" in shown.stdout, shown.stdout
    assert f"job {kind[0]['id']} expired" in shown.stdout


@pytest.mark.timeout(180)
def test_output_gone_every_time_fails_the_page_after_the_bounded_recreations_then_retry_works(
        clean_db: Db, fake: FakeReplicate, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    env = _env(fake, STORY_PAGE_COUNT="1", JOB_OUTPUT_RECREATIONS="2")
    _worker(tmp_path, request, env, "w")
    # given every output is removed the moment its prediction completes (a long backlog)
    fake.output_ttl = 0.0
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=90)
    # then the page and the story fail, after 1 + 2 predictions, saying what happened and what to do
    assert row["status"] == "failed"
    assert row["error_message"] == (
        "Page 1 (illustration): The illustration for page 1 was made but expired at Replicate before it "
        "could be saved, 3 times; last: Replicate removed the output (data_removed). An operator can retry it.")
    assert len(fake.created) == 3 and all("prompt" in p["input"] for p in fake.created)
    jobs = _jobs(clean_db, story, "image")
    assert [(j["status"], j["recreation"]) for j in jobs] == [("expired", 0), ("expired", 1), ("failed", 2)]
    assert [j["external_id"] for j in jobs] == [p["id"] for p in fake.created]
    page = clean_db.pages(story)[0]
    assert page["image_generation_status"] == "failed"
    errors = clean_db.all("SELECT permanent FROM step_errors WHERE story_id = :s ORDER BY id", s=story)
    assert [e["permanent"] for e in errors] == [False, False, True]
    time.sleep(1.0)
    assert len(fake.created) == 3  # and nothing keeps trying
    # when the backlog is gone and an operator retries the page
    fake.output_ttl = 3600.0
    retry = _cli(env, "retry", "--page", str(page["id"]))
    assert retry.returncode == 0, retry.stdout + retry.stderr
    row = clean_db.wait_story(story, timeout=90)
    # then it completes with one more prediction, counted afresh
    assert row["status"] == "completed", row["error_message"]
    jobs = _jobs(clean_db, story, "image")
    assert [(j["status"], j["recreation"]) for j in jobs][3:] == [("succeeded", 0)]
    assert len(fake.created) == 3 + 2


def test_a_run_that_died_while_recreating_finds_the_new_prediction_not_the_expired_one(
        clean_db: Db, fake: FakeReplicate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-creation keeps "recorded before created": a run that died between creating the new
    prediction and recording its id finds that one (the expired one has the same input) and
    creates no third."""
    from pipeline.providers import registry
    from pipeline.providers.replicate_images import ReplicateImageJobs
    from pipeline.stories import steps

    real = registry.providers()
    jobs = ReplicateImageJobs(TOKEN, base_url=fake.base_url, timeout=5)
    with_jobs = registry.Providers(real.vision, real.writer, real.illustrator, real.storage, jobs)
    monkeypatch.setattr(registry, "providers", lambda: with_jobs)
    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    assert steps.write_text(page).moves_on

    def run_until_done(deadline: float) -> step.StepResult:
        while True:
            try:
                return steps.draw_base(page, step.Attempt(redelivered=True))
            except step.RetryLater:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    # given a first prediction whose output file is gone when it is copied (its URL still listed)
    fake.next_retention(file_ttl=0.0)
    with pytest.raises(step.RetryLater):
        steps.draw_base(page)
    deadline = time.monotonic() + 30
    while len(fake.created) < 2:  # followed, found expired, re-created
        with contextlib.suppress(step.RetryLater):
            steps.draw_base(page, step.Attempt(redelivered=True))
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # ...and the run that created the second one died before recording its id
    clean_db.exec("UPDATE provider_jobs SET external_id = NULL, status = 'creating' WHERE status = 'running'")
    clean_db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE id = :p", p=page)
    # when the step runs again until done
    result = run_until_done(time.monotonic() + 30)
    # then it followed the second prediction: two in all, each recorded once
    assert result.moves_on and len(fake.created) == 2
    rows = clean_db.all("SELECT external_id, status, recreation FROM provider_jobs ORDER BY created_at")
    assert [(r["external_id"], r["status"], r["recreation"]) for r in rows] == [
        (fake.created[0]["id"], "expired", 0), (fake.created[1]["id"], "succeeded", 1)]
