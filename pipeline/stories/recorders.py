"""The story flow's :class:`~pipeline.kernel.step.Recorder` s: where a step's provider call records
a permanent failure (``fail``) or gives its claim back after a transient error (``release``).

One per kind of claim: a photo's analysis, a story's start (its outline), a page step, and a page
step run as a remote job (which also ends the job and frees its provider slot). Each statement is
one guarded transition in db/ (db/photos.py, db/stories.py, db/pages.py, db/provider_jobs.py), on
its own autocommitted connection: a recorder never runs inside the caller's transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from db import pages as pages_db
from db import photos as photos_db
from db import provider_jobs as jobs_db
from db import redo as redo_db
from db import stories as stories_db
from db.claims import Stage
from db.engine import autocommit
from pipeline.kernel.quota import quotas
from pipeline.kernel.step import Attempt, ClaimLost
from pipeline.stories.redo_orders import reprint_orders
from pipeline.stories.stages import STORY


@dataclass(frozen=True)
class PhotoRecorder:
    """photos.ai_processing_status: failed with the reason, or processing -> pending; both only
    under the claim's fencing token (:class:`ClaimLost` when the analysis is no longer this run's)."""

    photo_id: str
    attempt: Attempt
    token: int  # the claim's fencing token (db.photos.claim_photo's claim_token)

    def fail(self, message: str) -> None:
        """processing -> failed; the reason goes to photos.ai_error_message and step_errors."""
        with autocommit() as c:
            failed = photos_db.fail_photo(c, self.photo_id, message, attempt=self.attempt.number,
                                          task_id=self.attempt.task_id, token=self.token)
        if not failed:
            raise ClaimLost(f"photo {self.photo_id}: not failed ({message[:120]})")

    def release(self, note: str | None) -> None:
        """processing -> pending; ``note`` (a transient error) goes to step_errors when given."""
        with autocommit() as c:
            released = photos_db.release_photo(c, self.photo_id, note, self.attempt.number, self.attempt.task_id,
                                               self.token)
        if not released:
            raise ClaimLost(f"photo {self.photo_id}: not released")


@dataclass(frozen=True)
class StoryRecorder:
    """stories.status for the story's start: failed with the reason, or processing -> pending; both
    only under the start's fencing token (:class:`ClaimLost` when the start is no longer this run's)."""

    story_id: str
    attempt: Attempt
    token: int  # the start's claim (db.stories.claim_story's claim_token)

    def fail(self, message: str, stage: Stage = "outline") -> None:
        """processing -> failed with the parent's message, recorded for ``stage``."""
        with autocommit() as c:
            failed = stories_db.fail_story(c, self.story_id, message, stage, attempt=self.attempt.number,
                                           task_id=self.attempt.task_id, token=self.token)
        if not failed:
            raise ClaimLost(f"story {self.story_id}: not failed ({message[:120]})")

    def release(self, note: str | None) -> None:
        """processing -> pending (the start runs again); ``note`` recorded when given."""
        with autocommit() as c:
            released = stories_db.release_story(c, self.story_id, note, self.attempt.number, self.attempt.task_id,
                                                token=self.token)
        if not released:
            raise ClaimLost(f"story {self.story_id}: not released")


@dataclass
class PageRecorder:
    """One page step's column: failed (and its story failed with "Page N (label): reason"), or
    processing -> pending; both only under the claim's fencing token (``token``): raise
    :class:`ClaimLost` when the step is no longer this run's."""

    page_id: str
    stage: Stage
    page_number: int
    label: str  # the stage as people read it ("illustration")
    attempt: Attempt
    token: int  # the claim's fencing token (db.pages.PageClaim.token)
    redo_undone: bool = field(default=False, init=False)  # the failure put a redone page back

    @property
    def column(self) -> str:
        """The story_pages status column this step moves (the story flow's, pipeline/stories/stages.py)."""
        return STORY[self.stage].status_column

    def fail(self, message: str) -> None:
        """processing -> failed; the story fails with the page's reason (one statement). A page
        being redone is put back as it was instead, its story completed again."""
        with autocommit() as c:
            self._fail(c, message)
        self.after_fail()

    def after_fail(self) -> None:
        """After a redo was undone: orders waiting for new print files print the version kept."""
        if self.redo_undone:
            with autocommit() as c:
                story_id = pages_db.page_story(c, self.page_id)
            if story_id is not None:
                reprint_orders(story_id)

    def _fail(self, c: Any, message: str) -> None:
        story_message = f"Page {self.page_number} ({self.label}): {message}"
        # A page being redone (README "Redoing a page") never fails its completed story: its
        # previous version is put back and the story completed again (db/redo.py).
        if redo_db.fail_revision_page(c, self.page_id, self.column, self.stage, story_message,
                                      self.attempt.number, self.attempt.task_id, self.token):
            self.redo_undone = True
            return
        if not pages_db.fail_page(c, self.page_id, self.column, self.stage, message, story_message,
                                  self.attempt.number, self.attempt.task_id, self.token):
            raise ClaimLost(f"page {self.page_number} {self.stage}: not failed ({message[:120]})")

    def release(self, note: str | None) -> None:
        """processing -> pending; ``note`` (a transient error) recorded when given."""
        with autocommit() as c:
            released = pages_db.release_page(c, self.page_id, self.column, self.stage, note, self.attempt.number,
                                             self.attempt.task_id, self.token)
        if not released:
            raise ClaimLost(f"page {self.page_number} {self.stage}: not released")


@dataclass
class JobRecorder(PageRecorder):
    """A page step run as a remote job (pipeline/stories/remote_jobs.py). ``fail`` also ends the
    step's live job (``job``, once there is one: the step sets it when it reserves one) and frees
    the job's slot in the provider's concurrency quota (``provider``, the quota's name)."""

    provider: str = ""
    job: Any = None  # the provider_jobs row (db/provider_jobs.py), or None before one is reserved

    @property
    def holder(self) -> str:
        """The quota holder name of this page step's job: ``"<page id>:<stage>"``."""
        return f"{self.page_id}:{self.stage}"

    def fail(self, message: str) -> None:
        """The job (if any) -> failed, the page step -> failed, then the quota slot freed; all
        under the claim's token (ClaimLost, nothing written, when a newer holder has the step).
        The job first: whoever sees the page (or its story) failed sees the job failed too. Both
        writes name the token, so a stale run ends neither the new holder's job nor its page."""
        with autocommit() as c:
            if self.job is not None:
                jobs_db.job_finished(c, str(self.job["id"]), "failed", message, token=self.token)
            self._fail(c, message)
        quotas().release(self.provider, self.holder)
        self.after_fail()

    def following(self) -> FollowRecorder:
        """The recorder for following this job while it runs remotely."""
        return FollowRecorder(self.page_id, self.stage, self.page_number, self.label, self.attempt,
                              self.token, self.provider, self.job)


@dataclass
class FollowRecorder(JobRecorder):
    """Following a running job: a transient error looking at it releases nothing (the job keeps
    running remotely and the page keeps its claim); it is only counted on the job row."""

    def release(self, note: str | None) -> None:
        """Count the error on the job (provider_jobs.errors); nothing when ``note`` is None."""
        if note is not None:
            with autocommit() as c:
                jobs_db.job_error(c, str(self.job["id"]))
