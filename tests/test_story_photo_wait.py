"""A story whose photo another holder is analysing (photos.analyze sent just before
stories.generate, the README's flow): the story looks again every ~2 s and starts within seconds of
the analysis completing, not after the rest of the step lease (its own retry counts as
redelivered, which must not make it wait out the photo's lease); a dead holder's analysis is taken
over once its lease has run out. In-process on the real database, and through a real worker."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db import photos as photos_db
from db.engine import autocommit
from pipeline.kernel import step
from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 3}"
LEASE = 20.0  # this module's workers' STEP_LEASE_SECONDS (production: 300)
ENV = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "STEP_LEASE_SECONDS": str(LEASE)}


def _held(db: Db, photo: str, ago: float = 0.0) -> None:
    """Another holder claimed the photo's analysis ``ago`` seconds ago (as photos.analyze does)."""
    db.exec("UPDATE photos SET ai_processing_status = 'processing', "
            "updated_at = now() - make_interval(secs => :ago) WHERE id = :p", p=photo, ago=ago)


def _holder_completes(db: Db, photo: str) -> None:
    """The other holder finishes: the analysis of the same image (made here on another row), stored
    with the same statement photos.analyze uses."""
    from pipeline.stories import steps

    twin = db.photo(astronaut_png())
    assert steps.analyze_photo(twin).moves_on
    row = db.one("SELECT face_details, detected_labels, detected_objects FROM photos WHERE id = :p", p=twin)
    token = db.one("SELECT claim_token FROM photos WHERE id = :p", p=photo)["claim_token"]
    with autocommit() as c:
        assert photos_db.complete_photo(c, photo, row["face_details"], row["detected_labels"], row["detected_objects"],
                                        token)


def _outline_at(db: Db, story: str) -> float | None:
    """Seconds since the story's outline was written (None: not yet)."""
    row = db.one("SELECT extract(epoch FROM now() - created_at) AS ago FROM story_outlines WHERE story_id = :s",
                 s=story)
    return None if row is None else float(row["ago"])


# --- in-process: what one run of the story's start answers ---------------------------------------

def test_story_retry_looks_again_in_seconds_while_another_holder_analyses(clean_db: Db) -> None:
    from pipeline.stories import steps

    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo)
    _held(clean_db, photo)
    for attempt in (step.Attempt(0, 5, "m"), step.Attempt(0, 5, "m", redelivered=True),
                    step.Attempt(2, 5, "m", redelivered=True)):
        # the first run, and the story's own retries (redelivered): each looks again in ~2 s
        with pytest.raises(step.RetryLater) as r:
            steps.generate_story(story, attempt)
        assert r.value.waiting and r.value.countdown <= 5.0, (attempt, r.value.countdown, r.value.reason)
        assert "waiting for photo analysis" in r.value.reason
        assert clean_db.story_row(story)["status"] == "pending"  # released for the next look
        ph = clean_db.one("SELECT ai_processing_status FROM photos WHERE id = :p", p=photo)
        assert ph["ai_processing_status"] == "processing"  # still the other holder's
    # once the holder completes, the next look starts the story
    _holder_completes(clean_db, photo)
    result = steps.generate_story(story, step.Attempt(3, 5, "m", redelivered=True))
    assert result.outcome is step.Outcome.DONE and len(result.fanout) == int(os.environ["STORY_PAGE_COUNT"])


def test_story_takes_over_the_analysis_of_a_dead_holder(clean_db: Db) -> None:
    from pipeline.config import settings
    from pipeline.stories import steps

    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo)
    _held(clean_db, photo, ago=settings().step_lease_seconds + 5)  # its holder died: the lease ran out
    result = steps.generate_story(story, step.Attempt(1, 5, "m", redelivered=True))
    assert result.outcome is step.Outcome.DONE
    ph = clean_db.one("SELECT ai_processing_status, face_details FROM photos WHERE id = :p", p=photo)
    assert ph["ai_processing_status"] == "completed" and ph["face_details"]


def test_inline_attempt_keeps_the_try_and_drops_only_the_redelivery() -> None:
    a = step.Attempt(3, 5, "task-1", redelivered=True)
    assert step.inline_attempt(a) == step.Attempt(3, 5, "task-1", redelivered=False)
    b = step.Attempt(1, 5, "task-2")
    assert step.inline_attempt(b) == b


# --- through a real worker ----------------------------------------------------------------------

class Worker:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc = WorkerProcess(log, env=ENV)

    def lines(self, story: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "storycreator.step: step " in line:
                ln = json.loads(line.split("storycreator.step: step ", 1)[1])
                if ln.get("story") == story and ln["stage"] == "outline":
                    out.append(ln)
        return out


@pytest.fixture(scope="module")
def worker20(db: Db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    flush_redis(BROKER)
    w = Worker(tmp_path_factory.mktemp("photo-wait") / "worker.log")
    w.proc.start()
    yield w
    w.proc.stop()


def test_story_starts_within_seconds_of_a_live_holders_analysis(clean_db: Db, worker20: Worker) -> None:
    # given a photo whose analysis another worker holds (photos.analyze sent just before)
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo)
    _held(clean_db, photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    # when that analysis completes ~6 s later (after the story has retried a few times)
    time.sleep(6.0)
    assert _outline_at(clean_db, story) is None
    _holder_completes(clean_db, photo)
    done_at = time.monotonic()
    # then the story starts within a few seconds (its ~2 s look), not after the lease (20 s here)
    while (ago := _outline_at(clean_db, story)) is None:
        assert time.monotonic() - done_at < LEASE - 5, ("story did not start soon after the analysis",
                                                         worker20.lines(story))
        time.sleep(0.1)
    assert time.monotonic() - done_at - ago < 6.0
    assert clean_db.wait_story(story, timeout=90)["status"] == "completed"
    waits = [ln for ln in worker20.lines(story) if ln["outcome"] == "waiting"]
    assert len(waits) >= 2 and all(ln["attempt"] == 0 for ln in waits), waits


def test_story_takes_over_after_the_lease_when_the_holder_died(clean_db: Db, worker20: Worker) -> None:
    # given a photo whose analysis another worker claimed 5 s ago and then died (never completes)
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo)
    _held(clean_db, photo, ago=5.0)
    t0 = time.monotonic()
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then the story keeps looking, takes the analysis over once the claim's lease ran out, completes
    row = clean_db.wait_story(story, timeout=LEASE + 60)
    assert row["status"] == "completed", row["error_message"]
    ph = clean_db.one("SELECT ai_processing_status FROM photos WHERE id = :p", p=photo)
    assert ph["ai_processing_status"] == "completed"
    started = time.monotonic() - t0 - (_outline_at(clean_db, story) or 0.0)
    assert LEASE - 5 - 1 <= started < LEASE - 5 + 10, started  # after the lease, and soon after it
    assert len([ln for ln in worker20.lines(story) if ln["outcome"] == "waiting"]) >= 3
