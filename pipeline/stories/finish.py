"""The story's completion (``stories.finish``): once every page is personalized, assemble the book
(PDF and HTML, in a CPU process: pipeline/kernel/cpu.py) and complete the story.

The barrier lives in PostgreSQL (db/stories.py: claim_finish, complete_story), not in a chord
counter: whichever finisher claims the completion writes the book. The claim is a lease with a
fencing token on the story's outline row, not a row lock held while the book is written: a
finisher frozen mid-book (SIGSTOP, a GC pause) keeps nothing locked; after the lease another
takes over, and only the current token's holder completes (or fails) the story. A stale finisher
that wakes may still write the book's files: the same bytes at the same keys (the book is a pure
function of the completed pages), so nothing a parent reads changes.
"""
from __future__ import annotations

import logging
import posixpath
from typing import Any

from db import redo as redo_db
from db import stories as stories_db
from db.claims import poison_message
from db.engine import autocommit, transaction
from db.engine import unavailable as db_unavailable
from pipeline.config import settings
from pipeline.kernel import cpu
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.kernel.step import (
    FIRST_TRY,
    Attempt,
    ClaimLost,
    Outcome,
    RetryLater,
    StepResult,
    Timer,
    backoff,
    held_elsewhere,
    note_claim,
)
from pipeline.kernel.storage import book_key
from pipeline.providers import registry
from pipeline.providers.themes import resolve_theme
from pipeline.stories.redo_orders import reprint_orders

log = logging.getLogger("pipeline.stories.finish")


def warm_up_book() -> None:
    """Render a one-page book once: imports, font discovery, the per-process font templates
    (~0.5 s) and the body fonts' embedded subsets for ASCII text (pipeline.stories.font_embed)
    are paid by each CPU process as it starts (pipeline.kernel.cpu.warm_with), not by the first
    story's completion."""
    import io

    from PIL import Image

    from pipeline.stories.book import Book, BookPage, render_pdf

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "white").save(buf, "PNG")
    render_pdf(Book("Warm-up", "Mia", "Warm-up", [BookPage(1, "Mia.", buf.getvalue())]))


cpu.warm_with(warm_up_book)


def finish_story(story_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """processing -> completed once every page is personalized, after writing the book.

    Enqueued by the personalization that finds every page done (two may, at the same moment):
    only the one that claims the completion (db.stories.claim_finish) assembles the book and
    completes the story. Returns DONE, ALREADY_DONE, STOPPED (pages still running, or another
    finisher holds it) or FAILED (recorded: the book could not be made, or the completion crashed
    its worker STEP_MAX_TAKEOVERS times); raises RetryLater for a transient error or for a
    redelivered copy facing another finisher's claim (it takes over when that claim's lease ends)
    and ClaimLost when a newer finisher took over meanwhile."""
    s = settings()
    timer = Timer()
    with timer.phase("lock"), autocommit() as c:
        story = stories_db.claim_finish(c, story_id, s.step_lease_seconds, attempt.held)
        state = None if story is not None else stories_db.finish_state(c, story_id)
    if story is None:
        if state is not None and state["status"] == "completed":
            return StepResult(Outcome.ALREADY_DONE, "story already completed", timer.timings)
        if state is not None and state["status"] == "processing" and state["ready"] and state["claim_age"]:
            # Another finisher holds the completion. A fresh duplicate leaves it to that one; a
            # re-sent copy may be the only one left (its holder died or froze), so it comes back
            # when that claim's lease ends and takes over.
            return held_elsewhere("book being assembled", state["claim_age"], attempt, timer)
        return StepResult(Outcome.STOPPED, "pages still running or story not processing", timer.timings)
    token = int(story["finish_token"])
    note_claim(token)

    def fail(msg: str) -> StepResult:
        with autocommit() as c:
            # A redo's book that cannot be made never fails the story: the page's previous
            # version is put back and the story completed again with the book it had.
            if redo_db.fail_revision_finish(c, story_id, msg, token, attempt=attempt.number,
                                            task_id=attempt.task_id):
                reprint_orders(story_id)
                return StepResult(Outcome.FAILED, f"redo undone: {msg}", timer.timings)
            if not stories_db.fail_finish(c, story_id, msg, token, attempt=attempt.number, task_id=attempt.task_id):
                raise ClaimLost(f"story {story_id}: completion not failed ({msg[:120]})")
        return StepResult(Outcome.FAILED, msg, timer.timings)

    if story["finish_takeovers"] >= s.max_takeovers:
        return fail(poison_message("The book's assembly", int(story["finish_takeovers"]), s.step_lease_seconds))
    try:
        with timer.phase("book"):
            with autocommit() as c:
                pages = [dict(p) for p in stories_db.book_pages(c, story_id)]
            revision = int(story["revision"])
            timer.timings.update(cpu.run(write_book, story_id, story["title"] or "",
                                         story["child_name"], story["story_theme"], pages, revision))
        with timer.phase("record"), transaction() as c:
            done = stories_db.complete_story(c, story_id, token)
            # The book's keys, and a running redo completed, with the completion itself.
            redone = (redo_db.book_made(c, story_id, book_key(story_id, "pdf", revision),
                                        book_key(story_id, "html", revision)) if done else None)
    except PermanentStepError as e:  # e.g. which page has a character no font draws: says what
        return fail(f"The book could not be assembled: {e}")
    except TransientStepError as e:
        if attempt.last:
            return fail(f"The book could not be assembled after {attempt.number + 1} tries: {e}")
        raise RetryLater(backoff(attempt.number, None), str(e)) from None
    except Exception as e:  # noqa: BLE001 - record, don't loop: an operator can retry
        if db_unavailable(e):
            raise  # not the book's fault: the task layer re-sends the step (workers/step_task.py)
        log.exception("book assembly failed for story %s", story_id)
        return fail(f"The book could not be assembled ({type(e).__name__}); an operator can retry it.")
    if not done:  # fenced: another finisher took over while this one was away
        raise ClaimLost(f"story {story_id}: completion not recorded")
    if redone is not None:  # orders not yet sent to print print the new version
        reprint_orders(story_id)
        return StepResult(Outcome.DONE, f"story completed (revision {revision})", timer.timings)
    return StepResult(Outcome.DONE, "story completed", timer.timings)


def write_book(story_id: str, title: str, child_name: str, theme_raw: str,
               pages: list[Any], revision: int = 1) -> dict[str, float]:
    """The book as PDF and HTML at deterministic keys beside the page images (``revision`` > 1:
    a rebuilt book's own keys, pipeline.kernel.storage.book_key); returns its phase timings (ms).
    Runs in a CPU process (pipeline.kernel.cpu): plain arguments, its own storage client."""
    from pipeline.stories.book import Book, BookPage, render_pdf
    from pipeline.stories.book_html import render_html

    timer = Timer()
    storage = registry.output_storage()
    with timer.phase("book_read"):
        images = [storage.get(p["personalized_image_key"]) for p in pages]
    theme = resolve_theme(theme_raw)
    book = Book(
        title=title, child_name=" ".join(child_name.split()),
        theme_title=theme.title if theme else theme_raw,
        pages=[BookPage(p["page_number"], p["text"] or "", img) for p, img in zip(pages, images, strict=True)],
        cover_image=images[0] if images else None,
    )
    # The HTML's pictures as paths relative to the book's own folder (a rebuilt book is one
    # folder deeper: "../pages/03/r2/personalized.png").
    folder = posixpath.dirname(book_key(story_id, "html", revision))
    urls = [posixpath.relpath(p["personalized_image_key"], folder) for p in pages]
    with timer.phase("book_pdf"):
        pdf = render_pdf(book)
    with timer.phase("book_html"):
        page = render_html(book, urls, urls[0] if urls else None).encode()
    with timer.phase("book_store"):
        storage.put(book_key(story_id, "pdf", revision), pdf, "application/pdf")
        storage.put(book_key(story_id, "html", revision), page, "text/html; charset=utf-8")
    return timer.timings
