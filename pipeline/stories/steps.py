"""The story pipeline's steps: the public index. Each step is a plain function of ids (and an
:class:`~pipeline.kernel.step.Attempt`) returning a :class:`~pipeline.kernel.step.StepResult`:
claim -> provider -> store -> record.

Built from the step kernel (pipeline.kernel.step). Celery-free on purpose: the task layer (workers/)
maps a StepResult to "enqueue the next step" / "stop here" and RetryLater to a delayed retry; tests
and tools call these directly (``from pipeline.stories import steps; steps.write_text(page_id)``).
Every step is idempotent: a completed column returns at once, a column another live copy holds is
left alone, and results go to deterministic keys before the column completes. No database
connection is held while a provider works.

Where each lives:
- photo analysis: pipeline/stories/photo_step.py
- the story's start (validation, outline, page rows, fan-out): pipeline/stories/start.py
- the page steps: pipeline/stories/pages.py, on the shared machinery of page_step.py, or as
  remote jobs (Replicate) in remote_jobs.py
- the story's completion and the book: pipeline/stories/finish.py
- redoing one page of a completed story: pipeline/stories/redo.py
- where each step records a failure or releases its claim: pipeline/stories/recorders.py
- their SQL: db/photos.py, db/stories.py, db/pages.py, db/provider_jobs.py
"""
from __future__ import annotations

from pipeline.stories.finish import finish_story, write_book
from pipeline.stories.pages import draw_base, personalize, write_text
from pipeline.stories.photo_step import analyze_photo
from pipeline.stories.redo import redo_page
from pipeline.stories.start import generate_story

__all__ = ["analyze_photo", "draw_base", "finish_story", "generate_story", "personalize", "redo_page", "write_book",
           "write_text"]
