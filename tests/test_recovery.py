"""Issue 4's promise, whole: on a database with a mix of finished, failed and stuck stories
(one of them on a worker killed mid-step), `backfill` and `retry` bring every recoverable story
to completed without any page step done twice, and leave permanent failures failed with their
reason; the sweeper (celery beat) does the same for stuck work, unattended."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.kernel.storage import book_key
from pipeline.stories import steps
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, done_lines, external_send, faceless_png, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 2}"
# Short lease and redelivery so the test does not wait the production 5 / 15 minutes.
ENV = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "STEP_LEASE_SECONDS": "3",
       "BROKER_VISIBILITY_TIMEOUT": "3600", "SIMULATED_PROVIDER_LATENCY": "0.3"}
IN_FLIGHT = """SELECT count(*) AS n FROM story_pages WHERE story_id = :s AND 'processing' IN
               (text_generation_status, image_generation_status, personalization_status)"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The operator's command, as a process of its own (its broker and lease: this test's)."""
    return subprocess.run([sys.executable, "-m", "pipeline.operations.cli", *args], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=120)


def _backdate(db: Db, story: str) -> None:
    db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE story_id = :s", s=story)
    db.exec("UPDATE stories SET updated_at = now() - interval '1 hour' WHERE id = :s", s=story)


def _build_mixed_database(db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Stories in every state an outage leaves behind. Returns name -> story id."""
    stories: dict[str, str] = {}
    # finished, and failed for good (a photo with no face), through a real worker
    first = WorkerProcess(tmp_path / "first.log", env=ENV, concurrency=4)
    request.addfinalizer(first.stop)
    first.start()
    stories["finished"] = db.story(db.photo(astronaut_png()))
    stories["no_face"] = db.story(db.photo(faceless_png()))
    # failed for a reason that passes (the photo file had not arrived yet)
    missing_photo = db.photo(None)
    stories["photo_late"] = db.story(missing_photo)
    for key in ("finished", "no_face", "photo_late"):
        external_send(BROKER, "stories.generate", {"story_id": stories[key]})
    for key in ("finished", "no_face", "photo_late"):
        db.wait_story(stories[key])
    # killed mid-step: SIGKILL while page steps are in flight (their messages die unacked
    # with a one-hour visibility timeout: only a backfill or the sweeper will move them)
    stories["killed"] = db.story(db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": stories["killed"]})
    deadline = time.monotonic() + 60
    while db.one(IN_FLIGHT, s=stories["killed"])["n"] < 1:
        assert time.monotonic() < deadline, first.tail()
        time.sleep(0.02)
    first.kill()
    flush_redis(BROKER)  # and the broker lost whatever was queued
    # a dead worker's claim with no message left (written in-process, nothing enqueued)
    stories["stuck"] = db.story(db.photo(astronaut_png()))
    pages = steps.generate_story(stories["stuck"]).fanout
    db.exec("UPDATE story_pages SET text_generation_status = 'processing' WHERE id = :p", p=pages[0])
    _backdate(db, stories["stuck"])
    # every page done, but the story's completion was lost
    stories["unfinished"] = db.story(db.photo(astronaut_png()))
    for page in steps.generate_story(stories["unfinished"]).fanout:
        for step in (steps.write_text, steps.draw_base, steps.personalize):
            assert step(page).moves_on
    _backdate(db, stories["unfinished"])
    # inserted by the external API, whose enqueue never reached the broker
    stories["never_enqueued"] = db.story(db.photo(astronaut_png()))
    _backdate(db, stories["never_enqueued"])
    # the late photo arrives
    key = db.one("SELECT object_key FROM photos WHERE id = :p", p=missing_photo)["object_key"]
    (db.storage / key).parent.mkdir(parents=True, exist_ok=True)
    (db.storage / key).write_bytes(astronaut_png())
    assert db.story_row(stories["finished"])["status"] == "completed"
    assert db.story_row(stories["no_face"])["status"] == "failed"
    assert db.story_row(stories["photo_late"])["status"] == "failed"
    time.sleep(3.5)  # the killed worker's claims are now past their lease
    return stories


def _assert_recovered(db: Db, stories: dict[str, str], *logs: Path) -> None:
    for key, story in stories.items():
        row = db.wait_story(story, timeout=90)
        if key == "no_face":
            assert row["status"] == "failed" and "could not find a face" in row["error_message"], row
        else:
            assert row["status"] == "completed", (key, row["error_message"])
            assert (db.storage / book_key(story, "pdf")).exists(), key
    time.sleep(1.5)  # let duplicate messages drain: they must be no-ops
    seen: dict[tuple[str, str], int] = {}
    for ln in done_lines(*logs):
        if "page" in ln:
            seen[(ln["stage"], ln["page"])] = seen.get((ln["stage"], ln["page"]), 0) + 1
    assert seen and max(seen.values()) == 1, {k: v for k, v in seen.items() if v > 1}


@pytest.mark.timeout(300)
def test_backfill_and_retry_recover_a_mixed_database(clean_db: Db, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    stories = _build_mixed_database(clean_db, tmp_path, request)
    # when an operator starts a worker and runs backfill, then retry for what failed in the last hour
    second = WorkerProcess(tmp_path / "second.log", env=ENV, concurrency=8)
    request.addfinalizer(second.stop)
    second.start()
    assert _cli("backfill", "--stale-after", "3", "--pending-after", "3", "--batch-size", "5").returncode == 0
    retry = _cli("retry", "--since", "1h")
    assert retry.returncode == 0, retry.stderr  # something was retried...
    assert "upload a new photo" in retry.stdout  # ...and the no-face story was refused, saying why
    # then every recoverable story completes, each page step done once, the no-face story failed
    _assert_recovered(clean_db, stories, tmp_path / "first.log", second.log)


@pytest.mark.timeout(300)
def test_sweeper_recovers_stuck_work_unattended(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    stories = _build_mixed_database(clean_db, tmp_path, request)
    # a failure is a person's decision to retry; the sweeper only moves what is stuck
    failed = {k: stories.pop(k) for k in ("photo_late",)}
    # when a worker and celery beat (sweeping every second) run, and nobody types anything
    second = WorkerProcess(tmp_path / "second.log", env=ENV, concurrency=8)
    request.addfinalizer(second.stop)
    second.start()
    log = open(tmp_path / "beat.log", "wb")
    beat = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=ROOT, env={**os.environ, **ENV, "SWEEP_INTERVAL": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )
    request.addfinalizer(lambda: (beat.kill(), beat.wait(10), log.close()))
    # then every stuck story completes, each page step done once; failures stay failed
    _assert_recovered(clean_db, stories, tmp_path / "first.log", second.log)
    assert clean_db.story_row(failed["photo_late"])["status"] == "failed"
