"""The step kernel's error policy (pipeline.kernel.step.guarded) applied through a Recorder, and
the story flow's recorders (pipeline/stories/recorders.py) on the real database."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.kernel import step
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.kernel.quota import QuotaWait
from tests.support import Db, astronaut_png


@dataclass
class Notes:
    """A Recorder that writes down what it was told."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.calls.append(("fail", message))

    def release(self, note: str | None) -> None:
        self.calls.append(("release", note))


def _raise(exc: BaseException):  # type: ignore[no-untyped-def]
    def fn() -> None:
        raise exc
    return fn


def test_a_recorder_is_told_what_the_policy_decided() -> None:
    rec: step.Recorder = Notes()  # a Protocol: any object with fail(message) and release(note)
    assert isinstance(rec, Notes)
    assert step.guarded(lambda: 7, attempt=step.Attempt(), record=rec, what="X") == 7
    assert rec.calls == []

    with pytest.raises(step.StepFailed) as failed:
        step.guarded(_raise(PermanentStepError("no face")), attempt=step.Attempt(), record=rec, what="X")
    assert str(failed.value) == "no face" and rec.calls == [("fail", "no face")]

    rec.calls.clear()
    with pytest.raises(step.RetryLater) as later:
        step.guarded(_raise(TransientStepError("503")), attempt=step.Attempt(number=1), record=rec, what="X")
    assert rec.calls == [("release", "503")] and not later.value.waiting

    rec.calls.clear()
    with pytest.raises(step.StepFailed) as failed:
        step.guarded(_raise(TransientStepError("503")), attempt=step.Attempt(number=5, max_retries=5),
                     record=rec, what="Illustration")
    assert rec.calls == [("fail", "Illustration kept failing after 6 tries: 503")]

    rec.calls.clear()
    with pytest.raises(step.RetryLater) as later:
        step.guarded(_raise(QuotaWait("replicate", "full", 2.0)), attempt=step.Attempt(), record=rec, what="X")
    assert rec.calls == [("release", None)] and later.value.waiting  # a quota wait records nothing

    rec.calls.clear()
    with pytest.raises(step.StepFailed):
        step.guarded(_raise(KeyError("bug")), attempt=step.Attempt(), record=rec, what="Story text")
    assert rec.calls == [("fail", "Story text failed with an internal error (KeyError); an operator can retry it.")]


def test_two_functions_make_a_recorder() -> None:
    seen: list[str] = []
    rec = step.Callbacks(seen.append, lambda n: seen.append(f"release {n}"))
    with pytest.raises(step.StepFailed):
        step.guarded(_raise(PermanentStepError("bad")), attempt=step.Attempt(), record=rec, what="X")
    with pytest.raises(step.RetryLater):
        step.guarded(_raise(TransientStepError("slow")), attempt=step.Attempt(), record=rec, what="X")
    assert seen == ["bad", "release slow"]


def test_the_job_recorders_end_the_job_with_the_page(clean_db: Db) -> None:
    from db import provider_jobs as jobs_db
    from db.engine import autocommit
    from pipeline.stories import steps
    from pipeline.stories.recorders import JobRecorder

    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    assert steps.write_text(page).moves_on
    clean_db.exec("UPDATE story_pages SET image_generation_status = 'processing', claim_token = 7 WHERE id = :p",
                  p=page)
    with autocommit() as c:
        assert jobs_db.reserve_job(c, page, "image", "image_generation_status", "replicate", "0" * 64, 6) is None, \
            "a stale claim reserves nothing"
        job = jobs_db.reserve_job(c, page, "image", "image_generation_status", "replicate", "0" * 64, 7)
    assert job is not None and job["claim_token"] == 7
    rec = JobRecorder(page, "image", 1, "illustration", step.Attempt(number=2, task_id="t-1"), 7,
                      provider="replicate", job=job)

    # following the running job: a transient error is counted on the job, the page keeps its claim
    rec.following().release("timeout")
    rec.following().release(None)  # a quota wait: nothing counted
    assert clean_db.one("SELECT errors FROM provider_jobs WHERE id = :j", j=job["id"])["errors"] == 1
    assert clean_db.one("SELECT image_generation_status AS s FROM story_pages WHERE id = :p", p=page)["s"] == \
        "processing"

    # failing: the job, the page and the story fail together, with the page's words
    rec.fail("The model refused the prompt.")
    assert clean_db.one("SELECT status, error_message FROM provider_jobs WHERE id = :j", j=job["id"])["status"] == \
        "failed"
    assert clean_db.one("SELECT image_generation_status AS s FROM story_pages WHERE id = :p", p=page)["s"] == "failed"
    s = clean_db.one("SELECT status, error_message FROM stories WHERE id = :s", s=story)
    assert s["status"] == "failed" and s["error_message"] == "Page 1 (illustration): The model refused the prompt."
    e = clean_db.one("SELECT stage, permanent, attempt, task_id FROM step_errors WHERE page_id = :p "
                     "ORDER BY created_at DESC LIMIT 1", p=page)
    assert (e["stage"], e["permanent"], e["attempt"], e["task_id"]) == ("image", True, 2, "t-1")
