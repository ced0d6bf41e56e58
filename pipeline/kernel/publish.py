"""Publish tasks by name: the one way domain code (stories, orders, operations) enqueues work.

As the README tells the external API to publish: ``send_task(name, kwargs=...)`` with ids only,
after the caller's transaction committed. Routes and queues come from ``celeryconfig`` (built from
each flow's stage table), so nothing here names a queue unless the caller insists. Domain code
never imports ``workers``: inside a worker process the worker's own app (the current app, whose
connection pool and task context are reused: a message sent while a task runs carries that task's
``root_id``/``parent_id``) publishes; anywhere else (the CLI, tests, tools) a small client app
configured from ``celeryconfig`` does.
"""
from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.canvas import Signature

# The worker app's name (workers/app.py): reused when it is the current app of this process.
WORKER_APP_MAIN = "storycreator"
_lock = threading.Lock()
_client: Celery | None = None


def app() -> Celery:
    """The Celery app to publish with (see the module's docstring). Thread-safe, built once."""
    global _client
    from celery import current_app

    current = current_app._get_current_object()
    if current.main == WORKER_APP_MAIN:
        return current
    with _lock:
        if _client is None:
            client = Celery(f"{WORKER_APP_MAIN}-publisher", set_as_current=False)
            client.config_from_object("celeryconfig")
            _client = client
        return _client


def send(task: str, kwargs: dict[str, Any], *, countdown: float | None = None, queue: str | None = None,
         via: Celery | None = None) -> str:
    """Publish task ``task`` (a name, e.g. ``"stories.generate"``) with ``kwargs`` (JSON: ids and
    small values only), after ``countdown`` seconds if given, to its routed queue unless ``queue``
    is given, with ``via`` (another app: tools, benchmarks) instead of :func:`app`. Returns the
    message's task id. Raises kombu's connection errors when the broker cannot be reached (after
    Celery's publish retries)."""
    options: dict[str, Any] = {}
    if countdown is not None:
        options["countdown"] = countdown
    if queue is not None:
        options["queue"] = queue
    return str((via or app()).send_task(task, kwargs=kwargs, **options).id)


def send_signature(sig: Signature, *, via: Celery | None = None) -> str:
    """Publish a signature or canvas built by name (e.g. ``pipeline.stories.stages.page_chain``)
    with the publishing app. Returns the first message's task id; for a chain, every link's
    message shares that message's ``root_id`` (Flower shows the page's steps as one chain).
    ``via``: another app to publish with, as in :func:`send`."""
    a = via or app()
    sig = sig.clone()
    sig._app = a  # bound to our app: routes from celeryconfig, not an unconfigured default app
    for task in getattr(sig, "tasks", ()):
        task._app = a
    result = sig.apply_async()
    while result.parent is not None:  # a chain answers with its last link's result
        result = result.parent
    return str(result.id)
