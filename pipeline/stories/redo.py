"""Redoing one page of a completed story (``stories.redo_page``; README "Redoing a page").

The parent asks for page N again from a stage (``text``, ``image`` or ``personalization``),
optionally with a short hint ("make the dragon green"). The request is recorded (page_redos) and,
unless refused, starts a *revision* in one transaction (db/redo.py start_redo): the story goes
``processing`` with its revision one more, the page's stages from ``from_stage`` on go back to
``pending`` (its current text and keys kept aside), and the page's ordinary chain runs
(``page_chain``: every guarantee of a page step holds, claims, fencing, remote jobs, the
sweeper). New pictures go to the revision's own keys, the book is rebuilt at new keys by the
usual barrier and ``stories.finish``, and the story is ``completed`` again. Until then the
parent's book and pictures are the previous ones, untouched. A redo that fails puts the page back
as it was and completes the story again (its message in page_redos).

The hint is data: it is stored on the page, handed to the providers in ``PageRequest.hint`` and
travels as a data field (OpenAI: the JSON user message; Replicate: a quoted, capped descriptor in
the prompt), never in system instructions.
"""
from __future__ import annotations

import re
import unicodedata

from db import redo as redo_db
from db.engine import transaction
from pipeline.config import env_int
from pipeline.kernel import publish
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.step import FIRST_TRY, Attempt, Outcome, StepResult, Timer
from pipeline.stories.fonts import printable_text
from pipeline.stories.stages import PAGE_STAGES, STORY, page_chain

HINT_MAX_CHARS = 200  # a short wish for one page, not a prompt
DEFAULT_REDO_LIMIT = 3
REDO_STAGES = tuple(s.name for s in PAGE_STAGES)  # ("text", "image", "personalization")


def redo_limit() -> int:
    """REDO_LIMIT_PER_STORY (default 3, 0-100): redos a story may have, running or completed (a
    failed or refused one does not count)."""
    return env_int("REDO_LIMIT_PER_STORY", DEFAULT_REDO_LIMIT, 0, 100)


def clean_hint(raw: object) -> tuple[str | None, str | None]:
    """The parent's hint as stored: ``(hint, None)`` (None when empty), or ``(None, refusal)`` with
    the parent's message: not text, over HINT_MAX_CHARS characters, control or invisible
    format characters, or letters no book font prints. Spaces are collapsed; emoji and symbols
    no font draws are dropped (fonts.printable_text), as for any text of the book."""
    if raw is None:
        return None, None
    if not isinstance(raw, str):
        return None, "The hint must be text."
    text = unicodedata.normalize("NFC", raw)
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co") and ch not in "\t\n\r" for ch in text):
        return None, "The hint contains characters that cannot be printed. Please write it in plain words."
    text = " ".join(text.split())
    if len(text) > HINT_MAX_CHARS:
        return None, f"The hint is too long ({len(text)} characters; at most {HINT_MAX_CHARS}). Please shorten it."
    try:
        text = printable_text(text, "", "The hint").text
    except PermanentStepError:
        return None, ("The hint uses characters our books cannot print. Please write it in one of the "
                      "scripts the book supports.")
    text = re.sub(r"\s+", " ", text).strip()
    return (text or None), None


def redo_page(story_id: str, page_id: str | None, page_number: int | None, from_stage: str, hint: object,
              request_id: str | None, attempt: Attempt = FIRST_TRY) -> StepResult:
    """Record a redo request and start it unless refused (module doc). DONE: started (the page's
    chain sent), or a duplicate of a recorded request (nothing done: ``detail`` says so);
    STOPPED: refused (the parent's message in page_redos.message and ``detail``) or no such story.
    ``from_stage`` must be one of REDO_STAGES (the task checks it before). Raises what the
    database raises (the task layer re-sends the message when it is unusable)."""
    timer = Timer()
    clean, refusal = clean_hint(hint)
    req = redo_db.RedoRequest(story_id, page_id, page_number, from_stage, clean, request_id, attempt.task_id,
                              refusal)
    columns = [s.status_column for s in STORY.after(from_stage) if s in PAGE_STAGES]
    with timer.phase("claim"), transaction() as c:
        row = redo_db.start_redo(c, req, limit=redo_limit(), stage_columns=columns)
    if row is None:
        return StepResult(Outcome.STOPPED, "story not found", timer.timings)
    ctx = {"story": story_id, "page_number": row["page_number"], "redo": str(row["id"])}
    if row["duplicate"]:
        return StepResult(Outcome.ALREADY_DONE, f"duplicate request: {row['status']}", timer.timings, context=ctx)
    if row["status"] == "refused":
        return StepResult(Outcome.STOPPED, f"refused: {row['message']}", timer.timings, context=ctx)
    ctx["revision"] = row["revision"]
    # After the commit: the page's chain from the stage asked for. If this message is lost, the
    # sweeper finds the pending page step of a processing story and sends the same chain.
    publish.send_signature(page_chain(str(row["page_id"]), from_stage, story_id))
    return StepResult(Outcome.DONE, f"revision {row['revision']} started from {from_stage}", timer.timings,
                      context=ctx)
