"""Fenced claims (issue 12): a holder that paused past its lease and wakes after another worker
took its step over writes nothing: no completion, no release, no failure, no remote job; a step
that keeps taking its workers down is failed after STEP_MAX_TAKEOVERS takeovers; the story's
completion is a lease, not a lock a frozen finisher keeps. In-process, on the real database (the
real-process nemeses are tests/test_nemesis.py)."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from db import pages as pages_db
from db import photos as photos_db
from db import provider_jobs as jobs_db
from db import stories as stories_db
from db.engine import autocommit
from pipeline.kernel import step
from pipeline.kernel.errors import TransientStepError
from pipeline.kernel.step import Attempt, ClaimLost, Outcome
from pipeline.stories import steps
from pipeline.stories.page_step import run_page_step
from tests.support import Db, astronaut_png

LEASE = 300.0
TEXT = "text_generation_status"
REDELIVERED = Attempt(number=0, max_retries=5, task_id="t-again", redelivered=True)


def _silence(db: Db, page: str) -> None:
    """The page's holder went silent: its row has not moved for longer than the lease."""
    db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE id = :p", p=page)


def _retry(story: str) -> None:
    """What `retry --story` writes (db.operations.reset_failed_story), without sending the story's
    message: this test runs its steps itself, and a worker of another test must not race it."""
    from db.engine import transaction
    from db.operations import reset_failed_story
    from pipeline.stories.stages import PAGE_STAGES

    with transaction() as c:
        reset_failed_story(c, story, [st.status_column for st in PAGE_STAGES])


def _page(db: Db) -> tuple[str, str]:
    story = db.story(db.photo(astronaut_png()))
    return story, steps.generate_story(story).fanout[0]


def test_a_takeover_fences_out_the_silent_holder(clean_db: Db) -> None:
    _, page = _page(clean_db)
    with autocommit() as c:
        first = pages_db.claim_page(c, page, TEXT, LEASE, prerequisite=None)
        assert first is not None and first.takeovers == 0
        assert pages_db.claim_page(c, page, TEXT, LEASE, prerequisite=None) is None, "a live claim is not taken"
    _silence(clean_db, page)
    with autocommit() as c:
        second = pages_db.claim_page(c, page, TEXT, LEASE, prerequisite=None)
    assert second is not None and second.token == first.token + 1 and second.takeovers == 1
    # the first holder wakes: none of its writes lands
    with autocommit() as c:
        assert not pages_db.release_page(c, page, TEXT, "text", "timeout", 0, None, first.token)
        assert not pages_db.fail_page(c, page, TEXT, "text", "boom", "Page 1: boom", 5, None, first.token)
        assert not pages_db.complete_page(c, page, TEXT, {"text": "stale"}, first.token)
    row = clean_db.one("SELECT text, text_generation_status AS s, takeovers FROM story_pages WHERE id = :p", p=page)
    assert (row["text"], row["s"]) == (None, "processing")
    assert clean_db.one("SELECT count(*) AS n FROM step_errors WHERE page_id = :p", p=page)["n"] == 0
    # the holder's do, and a completion resets the takeover count
    with autocommit() as c:
        assert pages_db.complete_page(c, page, TEXT, {"text": "fresh"}, second.token)
    row = clean_db.one("SELECT text, text_generation_status AS s, takeovers FROM story_pages WHERE id = :p", p=page)
    assert (row["text"], row["s"], row["takeovers"]) == ("fresh", "completed", 0)


def _paused_run(page: str, attempt: Attempt, error: BaseException | None) -> tuple[threading.Event, threading.Event,
                                                                                 dict[str, Any]]:
    """A page step whose provider call blocks until released (a worker paused mid-call), then
    returns a text or raises ``error``. Returns (claimed, wake, out): ``out['result']`` or
    ``out['raised']`` once the thread ends."""
    claimed, wake, out = threading.Event(), threading.Event(), {}

    def work(claim: pages_db.PageClaim, timer: step.Timer) -> dict[str, Any]:
        claimed.set()
        wake.wait(30)
        if error is not None:
            raise error
        return {"text": "from the paused holder"}

    def run() -> None:
        try:
            out["result"] = run_page_step(page, "text", attempt, work)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["raised"] = e

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    assert claimed.wait(30)
    return claimed, wake, out


@pytest.mark.parametrize("case", ["release", "failure", "completion"])
def test_a_paused_holder_that_wakes_late_changes_nothing(case: str, clean_db: Db) -> None:
    story, page = _page(clean_db)
    last = Attempt(number=5, max_retries=5, task_id="t-paused")  # no tries left: a transient error fails
    error = {"release": TransientStepError("provider timed out"), "failure": TransientStepError("provider down"),
             "completion": None}[case]
    _, wake, out = _paused_run(page, Attempt(task_id="t-paused") if case == "release" else last, error)
    # while it is paused past its lease, the step's message comes back and another run completes it
    _silence(clean_db, page)
    assert steps.write_text(page, REDELIVERED).outcome is Outcome.DONE
    done_text = clean_db.one("SELECT text FROM story_pages WHERE id = :p", p=page)["text"]
    # then the paused holder wakes
    wake.set()
    out["thread"].join(30)
    assert isinstance(out.get("raised"), ClaimLost), out
    row = clean_db.one("SELECT text, text_generation_status AS s FROM story_pages WHERE id = :p", p=page)
    assert (row["text"], row["s"]) == (done_text, "completed")
    assert clean_db.story_row(story)["status"] == "processing", "a stale failure must not fail the story"
    assert clean_db.one("SELECT count(*) AS n FROM step_errors WHERE page_id = :p", p=page)["n"] == 0


def test_a_step_that_keeps_crashing_its_worker_fails_after_the_cap_and_retry_runs_it_again(clean_db: Db) -> None:
    story, page = _page(clean_db)
    # three workers died holding the step: claimed once, taken over twice, silent again
    clean_db.exec("UPDATE story_pages SET text_generation_status = 'processing', takeovers = 2 WHERE id = :p", p=page)
    _silence(clean_db, page)
    result = steps.write_text(page, REDELIVERED)
    assert result.outcome is Outcome.FAILED and "crashed its worker 3 times" in result.detail
    row = clean_db.story_row(story)
    expected = "Page 1 (story text): The story text step crashed its worker 3 times"
    assert row["status"] == "failed" and row["error_message"].startswith(expected), row["error_message"]
    err = clean_db.one("SELECT stage, permanent, message FROM step_errors WHERE page_id = :p", p=page)
    assert (err["stage"], err["permanent"]) == ("text", True) and "its worker 3 times" in err["message"]
    # not claimed again: the step is failed, not pending
    assert steps.write_text(page, REDELIVERED).outcome is Outcome.STOPPED
    # an operator's retry gives it a fresh count, and it runs
    _retry(story)
    assert clean_db.one("SELECT takeovers FROM story_pages WHERE id = :p", p=page)["takeovers"] == 0
    assert steps.generate_story(story).moves_on
    assert steps.write_text(page).outcome is Outcome.DONE


def test_a_photo_analysis_that_keeps_crashing_its_worker_fails_with_the_photo(clean_db: Db) -> None:
    photo = clean_db.photo(astronaut_png())
    clean_db.exec("UPDATE photos SET ai_processing_status = 'processing', takeovers = 2, "
                  "updated_at = now() - interval '1 hour' WHERE id = :p", p=photo)
    result = steps.analyze_photo(photo, REDELIVERED)
    assert result.outcome is Outcome.FAILED
    row = clean_db.one("SELECT ai_processing_status AS s, ai_error_message AS e FROM photos WHERE id = :p", p=photo)
    assert row["s"] == "failed" and "The photo's analysis crashed its worker 3 times" in row["e"]
    with autocommit() as c:
        claim = photos_db.claim_photo(c, photo, LEASE)
    assert claim is None, "a failed analysis is not claimed again without an operator"


def test_a_remote_job_is_reserved_started_and_ended_only_under_the_current_claim(clean_db: Db) -> None:
    _, page = _page(clean_db)
    assert steps.write_text(page).moves_on
    col = "image_generation_status"
    with autocommit() as c:
        first = pages_db.claim_page(c, page, col, LEASE, prerequisite=TEXT)
        assert first is not None
        job = jobs_db.reserve_job(c, page, "image", col, "replicate", "a" * 64, first.token)
        assert job is not None and job["claim_token"] == first.token
    _silence(clean_db, page)
    with autocommit() as c:
        second = pages_db.claim_page(c, page, col, LEASE, prerequisite=TEXT)
        assert second is not None
        adopted = jobs_db.adopt_job(c, page, "image", second.token)
        assert adopted is not None and adopted["id"] == job["id"] and adopted["claim_token"] == second.token
        # the silent holder wakes with the prediction it made meanwhile: it cannot start the job
        assert not jobs_db.job_started(c, str(job["id"]), "pred-stale", "a" * 64, first.token)
        assert not jobs_db.job_finished(c, str(job["id"]), "failed", "stale", token=first.token)
        # it records its prediction as an orphan (to cancel it), never leaving it unknown
        assert jobs_db.record_orphan(c, page, "image", "replicate", "pred-stale", "a" * 64, first.token)
        # the new holder starts the job with its own prediction
        assert jobs_db.job_started(c, str(job["id"]), "pred-new", "a" * 64, second.token)
        # a prediction the new holder recorded is never an orphan to cancel
        assert not jobs_db.record_orphan(c, page, "image", "replicate", "pred-new", "a" * 64, first.token)
        # and a stale claim reserves no new job
        assert jobs_db.reserve_job(c, page, "image", col, "replicate", "b" * 64, first.token) is None
    jobs = clean_db.all("SELECT external_id, status, error_message FROM provider_jobs WHERE page_id = :p "
                        "ORDER BY created_at", p=page)
    assert [(j["external_id"], j["status"]) for j in jobs] == [("pred-new", "running"), ("pred-stale", "canceled")]
    assert jobs[1]["error_message"].startswith(jobs_db.ORPHAN_PREFIX)


def _ready_story(db: Db) -> str:
    story = db.story(db.photo(astronaut_png()))
    for page in steps.generate_story(story).fanout:
        for run in (steps.write_text, steps.draw_base, steps.personalize):
            assert run(page).moves_on
    return story


def test_the_completion_is_a_lease_a_frozen_finisher_cannot_keep(clean_db: Db) -> None:
    story = _ready_story(clean_db)
    # a finisher claims the completion and freezes (no row lock is held meanwhile)
    with autocommit() as c:
        frozen = stories_db.claim_finish(c, story, LEASE)
    assert frozen is not None
    # within its lease, a fresh duplicate leaves it to that finisher
    assert steps.finish_story(story).outcome is Outcome.STOPPED
    # past its lease, the completion is taken over and the story completes
    clean_db.exec("UPDATE story_outlines SET finish_claimed_at = now() - interval '1 hour' WHERE story_id = :s",
                  s=story)
    assert steps.finish_story(story, REDELIVERED).outcome is Outcome.DONE
    assert clean_db.story_row(story)["status"] == "completed"
    # the frozen finisher wakes: it can neither complete nor fail the story
    with autocommit() as c:
        assert not stories_db.complete_story(c, story, int(frozen["finish_token"]))
        assert not stories_db.fail_finish(c, story, "stale", int(frozen["finish_token"]))
    assert clean_db.story_row(story)["status"] == "completed"


def test_a_completion_that_keeps_crashing_its_worker_fails_the_story(clean_db: Db) -> None:
    story = _ready_story(clean_db)
    clean_db.exec("UPDATE story_outlines SET finish_claimed_at = now() - interval '1 hour', finish_takeovers = 2 "
                  "WHERE story_id = :s", s=story)
    result = steps.finish_story(story, REDELIVERED)
    assert result.outcome is Outcome.FAILED
    row = clean_db.story_row(story)
    assert row["status"] == "failed" and "The book's assembly crashed its worker 3 times" in row["error_message"]
    _retry(story)
    assert steps.generate_story(story).moves_on  # the story processing again; its pages are all done
    assert steps.finish_story(story).outcome is Outcome.DONE


def test_an_order_print_step_is_fenced_too(clean_db: Db) -> None:
    from db import order_steps as order_steps_db

    story = _ready_story(clean_db)
    assert steps.finish_story(story).moves_on
    user = clean_db.one("SELECT user_id FROM stories WHERE id = :s", s=story)["user_id"]
    order = clean_db.one("INSERT INTO orders (user_id, story_id, product_type, status, amount, currency) "
                         "VALUES (:u, :s, 'hardcover', 'paid', 2999, 'usd') RETURNING id", u=user, s=story)["id"]
    with autocommit() as c:
        first = order_steps_db.claim_print_files(c, str(order), LEASE)
    assert first is not None and first["takeovers"] == 0
    clean_db.exec("UPDATE order_steps SET updated_at = now() - interval '1 hour' WHERE order_id = :o", o=order)
    with autocommit() as c:
        second = order_steps_db.claim_print_files(c, str(order), LEASE)
        assert second is not None and second["claim_token"] == first["claim_token"] + 1 and second["takeovers"] == 1
        assert not order_steps_db.release_step(c, str(order), "print_files", "slow", 0, None, first["claim_token"])
        assert not order_steps_db.complete_step(c, str(order), "print_files", {"stale": True}, first["claim_token"])
        assert order_steps_db.complete_step(c, str(order), "print_files", {"fresh": True}, second["claim_token"])
    row = clean_db.one("SELECT status, result, takeovers FROM order_steps WHERE order_id = :o", o=order)
    assert (row["status"], row["result"], row["takeovers"]) == ("completed", {"fresh": True}, 0)


def test_a_holder_that_lost_its_claim_does_not_overwrite_the_new_holders_picture(clean_db: Db) -> None:
    from pipeline.kernel.storage import page_image_key
    from pipeline.stories.page_step import store_if_held

    story, page = _page(clean_db)
    assert steps.write_text(page).moves_on
    col = "image_generation_status"
    with autocommit() as c:
        first = pages_db.claim_page(c, page, col, LEASE, prerequisite=TEXT)
    assert first is not None
    _silence(clean_db, page)
    assert steps.draw_base(page, REDELIVERED).outcome is Outcome.DONE  # the new holder's picture
    key = page_image_key(story, 1, "base")
    path = clean_db.storage / key
    stored = path.read_bytes()
    with pytest.raises(ClaimLost):
        store_if_held(page, "image", first.token, key, b"stale picture", "image/png", step.Timer())
    assert path.read_bytes() == stored


def test_a_claim_cut_off_by_an_outage_is_resumed_by_its_own_message_at_once(clean_db: Db) -> None:
    """The database went away while a step held its claim: the task layer re-sends the message with
    the claim's token (``held``); the next run resumes the claim at once (no wait for the lease),
    without counting a takeover. Another message, or a wrong token, still waits for the lease."""
    _, page = _page(clean_db)
    with autocommit() as c:
        cut = pages_db.claim_page(c, page, TEXT, LEASE, prerequisite=None)
    assert cut is not None
    with pytest.raises(step.RetryLater) as wait:  # a wrong token: waits for the lease as before
        steps.write_text(page, Attempt(task_id="other", redelivered=True, held=cut.token + 5))
    assert wait.value.waiting
    result = steps.write_text(page, Attempt(task_id="again", redelivered=True, held=cut.token))
    assert result.outcome is Outcome.DONE
    row = clean_db.one("SELECT text_generation_status AS s, takeovers, claim_token FROM story_pages WHERE id = :p",
                       p=page)
    assert (row["s"], row["takeovers"], row["claim_token"]) == ("completed", 0, cut.token + 1)


def test_the_task_layer_carries_the_claim_in_hand_into_the_resent_message() -> None:
    from workers.step_task import _token

    step.forget_claim()
    step.note_claim(41)
    step.note_claim(99)  # an inline claim of another step does not replace the run's own
    assert step.claim_in_hand() == 41
    step.forget_claim()
    assert step.claim_in_hand() is None
    assert [_token(v) for v in (41, "41", 0, -3, True, "x", None, 2**63)] == [41, 41] + [None] * 6
