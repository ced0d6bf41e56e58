"""A story's start and its photo: whose photo it is (issue 10, fault 6) and a story that arrives
before its photo's upload is confirmed (fault 7). Through real worker processes and the external
contract client, plus the guarded SQL itself (db/stories.py) on the real database."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db import slots as slots_db
from db import stories as tx
from db.engine import autocommit
from pipeline.kernel import step
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 3}"
PAGES = int(os.environ["STORY_PAGE_COUNT"])
WAIT = 30.0  # PHOTO_UPLOAD_WAIT_SECONDS for this module's workers (production: 900)
# Short redelivery after a SIGKILL (kombu's scan for unacked messages), looks every ≤ 1 s.
ENV = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "PHOTO_UPLOAD_WAIT_SECONDS": str(WAIT),
       "PHOTO_UPLOAD_POLL_INTERVAL": "1", "BROKER_VISIBILITY_TIMEOUT": "4"}
IN_PROCESS_WAIT = 900.0  # this test process's settings (no PHOTO_UPLOAD_WAIT_SECONDS set)


class Workers:
    """This module's worker (replaced by the restart test)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.logs: list[Path] = []
        self.worker: WorkerProcess | None = None

    def start(self) -> WorkerProcess:
        log = self.log_dir / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        self.worker = WorkerProcess(log, env=ENV)
        self.worker.start()
        return self.worker

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if "storycreator.step: step " in line:
                    out.append(json.loads(line.split("storycreator.step: step ", 1)[1]))
        return out


@pytest.fixture(scope="module")
def workers(db: Db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    flush_redis(BROKER)
    box = Workers(tmp_path_factory.mktemp("story-start"))
    box.start()
    yield box
    assert box.worker is not None
    box.worker.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The operator's command, as a process of its own (this module's broker)."""
    return subprocess.run([sys.executable, "-m", "pipeline.operations.cli", *args], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=120)


def _uploaded(db: Db, photo: str) -> None:
    """The API confirms the upload (the file was stored when the row was inserted)."""
    db.exec("UPDATE photos SET status = 'uploaded' WHERE id = :p", p=photo)


def _page_steps_done_once(box: Workers, db: Db, story: str) -> None:
    pages = {str(p["id"]) for p in db.pages(story)}
    assert len(pages) == PAGES
    time.sleep(1.0)  # let duplicate messages drain (they must be no-ops)
    seen: dict[tuple[str, str], int] = {}
    for ln in box.lines():
        if ln["outcome"] == "done" and (ln.get("page") in pages or ln.get("story") == story):
            key = (ln["stage"], ln.get("page") or story)
            seen[key] = seen.get(key, 0) + 1
    assert set(seen.values()) == {1}, seen
    assert len(seen) == 3 * PAGES + 2, seen  # every page step, the outline and the book: once each


def _no_work(db: Db, story: str, photo: str) -> None:
    """Nothing was made for the story: no outline, no pages, no files, no analysis of the photo."""
    assert db.one("SELECT count(*) AS n FROM story_outlines WHERE story_id = :s", s=story)["n"] == 0
    assert db.pages(story) == []
    assert not (db.storage / "stories" / story).exists()
    ph = db.one("SELECT ai_processing_status, face_details FROM photos WHERE id = :p", p=photo)
    assert ph["ai_processing_status"] == "pending" and ph["face_details"] is None


# --- fault 7: the story that arrives before its photo -------------------------------------------

def test_story_sent_before_its_photo_is_uploaded_completes_once_it_is(clean_db: Db, workers: Workers) -> None:
    # given a photo whose upload is not confirmed yet, and its story sent already
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then for now the story waits: pending, nothing recorded as failed, no try used up
    time.sleep(5.0)
    row = clean_db.story_row(story)
    assert row["status"] == "pending" and row["error_message"] is None
    assert clean_db.one("SELECT count(*) AS n FROM step_errors WHERE story_id = :s", s=story)["n"] == 0
    waiting = [ln for ln in workers.lines() if ln.get("story") == story]
    assert waiting and {ln["outcome"] for ln in waiting} == {"waiting"}
    assert all(ln["attempt"] == 0 for ln in waiting), "waiting must not use up the step's error tries"
    # when the API confirms the upload 5 s later
    _uploaded(clean_db, photo)
    t0 = time.monotonic()
    # then the story completes, with nothing more sent
    row = clean_db.wait_story(story, timeout=90)
    assert row["status"] == "completed", row["error_message"]
    started = clean_db.one("SELECT created_at FROM story_outlines WHERE story_id = :s", s=story)
    assert started is not None and time.monotonic() - t0 < 90


def test_story_sent_twice_while_waiting_does_each_page_step_once(clean_db: Db, workers: Workers) -> None:
    # given a story sent twice while its photo's upload is pending, and once more a bit later
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story}, times=2)
    time.sleep(2.0)
    external_send(BROKER, "stories.generate", {"story_id": story})
    time.sleep(2.0)
    # then one message waits; the duplicates stop at once instead of polling too
    stopped = [ln for ln in workers.lines() if ln.get("story") == story and ln["outcome"] == "stopped"]
    assert len(stopped) == 2 and all("waits for the photo" in ln["detail"] for ln in stopped), stopped
    # when the upload is confirmed, the story completes with each step done once
    _uploaded(clean_db, photo)
    assert clean_db.wait_story(story, timeout=90)["status"] == "completed"
    _page_steps_done_once(workers, clean_db, story)


def test_story_whose_photo_never_arrives_fails_after_the_wait_and_starts_once_it_does(
        clean_db: Db, workers: Workers) -> None:
    # given a story that has waited 24 of its 30 s for its photo (the wait is the row's, not the message's)
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '24 seconds' WHERE id = :s", s=story)
    t0 = time.monotonic()
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then it still waits for the rest of the wait
    time.sleep(3.0)
    assert clean_db.story_row(story)["status"] == "pending"
    # and fails once the wait is over (not before), with a message for the parent, recorded once
    row = clean_db.wait_story(story, timeout=30)
    assert row["status"] == "failed" and time.monotonic() - t0 >= WAIT - 24 - 0.5
    assert row["error_message"] == tx.upload_timeout_message(WAIT)
    assert "did not finish within 30 seconds" in row["error_message"]
    errors = clean_db.all("SELECT stage, permanent, message FROM step_errors WHERE story_id = :s", s=story)
    assert [(e["stage"], e["permanent"]) for e in errors] == [("analysis", True)]
    _no_work(clean_db, story, photo)
    # when the photo is uploaded after all and the API sends stories.generate again
    _uploaded(clean_db, photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then the story starts and completes (that failure was not final)
    row = clean_db.wait_story(story, timeout=90, statuses=("completed",))
    assert row["error_message"] is None


def test_retry_brings_back_a_story_whose_photo_upload_timed_out(clean_db: Db, workers: Workers) -> None:
    # given a story failed because its photo's upload never finished
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '1 hour' WHERE id = :s", s=story)
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story, timeout=30)["error_message"].startswith(tx.UPLOAD_TIMEOUT_PREFIX)
    # when an operator retries it while the photo is still not uploaded: it waits again, afresh
    r = _cli("retry", "--story", story)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(3.0)
    assert clean_db.story_row(story)["status"] == "pending"
    # and once the upload is confirmed, it completes
    _uploaded(clean_db, photo)
    assert clean_db.wait_story(story, timeout=90)["status"] == "completed"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_worker_restarted_while_a_story_waits_still_completes(clean_db: Db, workers: Workers, how: str) -> None:
    # given a story waiting for its photo's upload
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    deadline = time.monotonic() + 30
    while not any(ln.get("story") == story and ln["outcome"] == "waiting" for ln in workers.lines()):
        assert time.monotonic() < deadline, "the story never started waiting"
        time.sleep(0.2)
    # when its worker is restarted (a deploy: SIGTERM; a crash: SIGKILL) and the upload lands meanwhile
    assert workers.worker is not None
    workers.worker.stop() if how == "sigterm" else workers.worker.kill()
    _uploaded(clean_db, photo)
    workers.start()
    # then the story completes (its message came back), each page step once
    assert clean_db.wait_story(story, timeout=90)["status"] == "completed"
    _page_steps_done_once(workers, clean_db, story)


# --- fault 6: whose photo is it? ------------------------------------------------------------------

def test_story_with_another_users_photo_fails_before_any_work(clean_db: Db, workers: Workers) -> None:
    # given another family's photo, one never analysed and one analysed already (photos.analyze)
    other = clean_db.user()
    theirs = clean_db.photo(astronaut_png(), user_id=other)
    theirs_analysed = clean_db.photo(astronaut_png(), user_id=other)
    external_send(BROKER, "photos.analyze", {"photo_id": theirs_analysed})
    assert clean_db.wait_photo(theirs_analysed)["ai_processing_status"] == "completed"
    # and stories of this user that name those photos (the API must never send them; it did)
    me = clean_db.user()
    mine = clean_db.photo(astronaut_png(), user_id=me)
    stories = {}
    for label, photo in (("fresh", theirs), ("analysed", theirs_analysed)):
        stories[label] = str(clean_db.one(
            """INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id)
               VALUES (:u, 'Mia', 6, 'space_adventure', :p) RETURNING id""", u=me, p=photo)["id"])
    # when the API sends them, each twice
    for story in stories.values():
        external_send(BROKER, "stories.generate", {"story_id": story}, times=2)
    # then each fails with a message for the parent that says nothing about the other family
    other_email = clean_db.one("SELECT email FROM users WHERE id = :u", u=other)["email"]
    for label, story in stories.items():
        row = clean_db.wait_story(story, timeout=30)
        assert row["status"] == "failed" and row["error_message"] == tx.PHOTO_NOT_YOURS, label
        for secret in (other, other_email, theirs, theirs_analysed, "child.png"):
            assert secret not in row["error_message"]
        errors = clean_db.all("SELECT * FROM step_errors WHERE story_id = :s", s=story)
        assert len(errors) == 1 and errors[0]["message"] == tx.PHOTO_NOT_YOURS, label
        assert errors[0]["photo_id"] is None  # nothing is written on the other family's photo
        # and nothing was made: no outline, no pages, no files, no provider call
        assert clean_db.one("SELECT count(*) AS n FROM story_outlines WHERE story_id = :s", s=story)["n"] == 0
        assert clean_db.pages(story) == [] and not (clean_db.storage / "stories" / story).exists()
        assert not any(ln.get("story") == story and ln["outcome"] == "done" for ln in workers.lines())
    # the never-analysed photo was not analysed for this story (no vision call)
    assert clean_db.one("SELECT ai_processing_status FROM photos WHERE id = :p", p=theirs)[
        "ai_processing_status"] == "pending"
    # when an operator retries one: refused, and nothing changes (not even --force)
    for args in (("retry", "--story", stories["fresh"]), ("retry", "--story", stories["fresh"], "--force")):
        r = _cli(*args)
        assert r.returncode == 1 and "belongs to another user" in r.stdout, r.stdout + r.stderr
    assert clean_db.story_row(stories["fresh"])["status"] == "failed"
    # and a story put back to pending by hand (a retry done in SQL) is refused again by the worker
    clean_db.exec("UPDATE stories SET status = 'pending', error_message = NULL WHERE id = :s", s=stories["fresh"])
    external_send(BROKER, "stories.generate", {"story_id": stories["fresh"]})
    row = clean_db.wait_story(stories["fresh"], timeout=30)
    assert row["error_message"] == tx.PHOTO_NOT_YOURS
    _no_work(clean_db, stories["fresh"], theirs)
    # while this user's story with their own photo completes as usual
    story = clean_db.story(mine)
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story, timeout=90)["status"] == "completed"


@pytest.mark.parametrize("change", ["another_users_photo", "photo_deleted"])
def test_personalization_never_uses_a_photo_that_is_not_the_storys_own(clean_db: Db, change: str) -> None:
    """Defence in depth for a story whose photo changes mid-way: the personalization's claim
    (which hands the step the photo whose face it crops) refuses it and fails the story."""
    from pipeline.stories import steps

    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    assert steps.write_text(page).outcome is step.Outcome.DONE
    assert steps.draw_base(page).outcome is step.Outcome.DONE
    if change == "another_users_photo":
        theirs = clean_db.photo(astronaut_png())
        assert steps.analyze_photo(theirs).outcome is step.Outcome.DONE
        clean_db.exec("UPDATE stories SET protagonist_photo_id = :p WHERE id = :s", p=theirs, s=story)
        expected = tx.PHOTO_NOT_YOURS
    else:
        clean_db.exec("UPDATE photos SET status = 'deleted' WHERE id = (SELECT protagonist_photo_id "
                      "FROM stories WHERE id = :s)", s=story)
        expected = tx.PHOTO_DELETED
    result = steps.personalize(page)
    assert result.outcome is step.Outcome.STOPPED
    row = clean_db.story_row(story)
    assert (row["status"], row["error_message"]) == ("failed", expected)
    p = clean_db.one("SELECT * FROM story_pages WHERE id = :p", p=page)
    assert p["personalization_status"] == "pending" and p["personalized_image_key"] is None
    assert not list((clean_db.storage / "stories" / story).rglob("personalized.png"))
    errors = clean_db.all("SELECT stage, page_id FROM step_errors WHERE story_id = :s", s=story)
    assert [(e["stage"], str(e["page_id"])) for e in errors] == [("personalization", page)]


# --- the guarded SQL, unit by unit ------------------------------------------------------------------

def _claim(story: str, upload_wait: float = IN_PROCESS_WAIT) -> Any:
    with autocommit() as c:
        return tx.claim_story(c, story, 300.0, upload_wait, 0, "task-1")


def _state(story: str, upload_wait: float = IN_PROCESS_WAIT) -> Any:
    with autocommit() as c:
        return slots_db.story_start_state(c, story, upload_wait)


def test_claim_story_refuses_a_photo_of_another_user_once(clean_db: Db) -> None:
    story = clean_db.one(
        """INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id)
           VALUES (:u, 'Mia', 6, 'space_adventure', :p) RETURNING id""",
        u=clean_db.user(), p=clean_db.photo(astronaut_png()))["id"]
    story = str(story)
    first = _claim(story)
    assert first is not None and first["refused"] == tx.PHOTO_NOT_YOURS and first["id"] is None
    assert _claim(story) is None  # a duplicate: already failed, no second record
    row = clean_db.story_row(story)
    assert (row["status"], row["error_message"]) == ("failed", tx.PHOTO_NOT_YOURS)
    errors = clean_db.all("SELECT * FROM step_errors WHERE story_id = :s", s=story)
    assert [(e["stage"], e["permanent"], e["attempt"], e["task_id"]) for e in errors] == \
        [("analysis", True, 0, "task-1")]


@pytest.mark.parametrize(("photo_status", "message"), [("deleted", tx.PHOTO_DELETED),
                                                        ("failed", tx.PHOTO_UPLOAD_FAILED)])
def test_claim_story_refuses_a_deleted_or_failed_upload(clean_db: Db, photo_status: str, message: str) -> None:
    story = clean_db.story(clean_db.photo(astronaut_png(), status=photo_status))
    assert _claim(story)["refused"] == message
    assert clean_db.story_row(story)["status"] == "failed"


def test_claim_story_waits_for_a_pending_upload_then_refuses_after_the_wait(clean_db: Db) -> None:
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)
    # within the wait: not claimed, left pending, nothing recorded; the state says how long is left
    assert _claim(story) is None
    assert clean_db.story_row(story)["status"] == "pending"
    state = _state(story)
    assert IN_PROCESS_WAIT - 5 < state["upload_wait_left"] <= IN_PROCESS_WAIT and 0 <= state["pending_for"] < 5
    assert clean_db.one("SELECT count(*) AS n FROM step_errors WHERE story_id = :s", s=story)["n"] == 0
    # the wait counts from when the story became pending (its row), whoever asks
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '16 minutes' WHERE id = :s", s=story)
    refused = _claim(story)
    assert refused["refused"] == tx.upload_timeout_message(IN_PROCESS_WAIT)
    assert "within 15 minutes" in refused["refused"]
    assert _state(story)["upload_wait_left"] is None
    # still not uploaded: a later message does not start it
    assert _claim(story) is None
    # uploaded now: that failure was not final, the story is claimed again
    clean_db.exec("UPDATE photos SET status = 'uploaded' WHERE id = :p", p=photo)
    again = _claim(story)
    assert again is not None and again["id"] is not None and again["refused"] is None
    row = clean_db.story_row(story)
    assert (row["status"], row["error_message"]) == ("processing", None)


def test_claim_story_does_not_restart_a_story_failed_for_another_reason(clean_db: Db) -> None:
    story = clean_db.story(clean_db.photo(astronaut_png()))
    clean_db.exec("UPDATE stories SET status = 'failed', error_message = 'The photo could not be used: "
                  "We could not find a face in this photo.' WHERE id = :s", s=story)
    assert _claim(story) is None
    assert clean_db.story_row(story)["status"] == "failed"


def test_generate_story_waits_without_using_a_try_and_one_message_waits(clean_db: Db) -> None:
    from pipeline.stories import steps

    story = clean_db.story(clean_db.photo(astronaut_png(), status="pending_upload"))
    with pytest.raises(step.RetryLater) as first:
        steps.generate_story(story, step.Attempt(0, 5, "message-a"))
    assert first.value.waiting and 0.2 <= first.value.countdown <= 15
    with pytest.raises(step.RetryLater):  # the same message, looking again
        steps.generate_story(story, step.Attempt(0, 5, "message-a", redelivered=True))
    other = steps.generate_story(story, step.Attempt(0, 5, "message-b"))  # a duplicate
    assert other.outcome is step.Outcome.STOPPED and "waits for the photo" in other.detail
    assert clean_db.story_row(story)["status"] == "pending"


def test_poll_interval_starts_fast_and_grows_to_its_cap() -> None:
    from pipeline.stories.upload_wait import poll_interval

    assert poll_interval(0.5, 899.5) == 1.0
    assert poll_interval(60.0, 840.0) == 6.0
    assert poll_interval(600.0, 300.0) == 15.0  # PHOTO_UPLOAD_POLL_INTERVAL's default
    assert poll_interval(899.0, 1.0) == 1.2  # looks again just after the wait ends


def test_sweep_leaves_a_waiting_story_alone_and_resends_it_when_its_photo_arrives(clean_db: Db) -> None:
    from pipeline.operations.stuck import find_stuck

    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    story = clean_db.story(photo)

    def swept() -> bool:
        return any(i.kwargs.get("story_id") == story for i in find_stuck(lease=300, pending_after=300))

    # pending for 10 minutes, within its 15-minute wait: its own message looks again, not the sweep
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '10 minutes' WHERE id = :s", s=story)
    assert not swept()
    # the photo arrived (and the waiting message may have been lost): re-sent
    clean_db.exec("UPDATE photos SET status = 'uploaded' WHERE id = :p", p=photo)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '10 minutes' WHERE id = :s", s=story)
    assert swept()
    # never arrived and the wait is over: re-sent, so that a worker fails it with its message
    clean_db.exec("UPDATE photos SET status = 'pending_upload' WHERE id = :p", p=photo)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '20 minutes' WHERE id = :s", s=story)
    assert swept()
