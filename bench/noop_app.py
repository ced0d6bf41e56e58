"""A bare Celery app with the same broker settings as ours and one no-op task: the yardstick
for orchestration overhead. The task only counts itself in Redis so the bench knows when the
last one ran (one INCR: the least a task can do and still be observed without a result store)."""
from __future__ import annotations

import os

import redis
from celery import Celery

app = Celery("bench-noop")
app.config_from_object("celeryconfig")
app.conf.task_routes = {}
app.conf.task_queues = None
app.conf.task_default_queue = "bench-noop"

_r = redis.Redis.from_url(os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/13"))


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop() -> None:
    _r.incr("bench:noop:done")


# The same task graph as a story, made of no-op tasks (bench/bench_orchestration.py): a start task
# that publishes one Celery chain of three no-op links per page (as pipeline/stories/start.py sends
# a page's chain), each page's last link counting the story's finished pages in Redis (the
# pipeline counts them in Postgres), and the one that completes the count sends the finish task.
@app.task(name="bench.graph_start", acks_late=True, ignore_result=True)
def graph_start(story: str, pages: int) -> None:
    from celery import chain

    for n in range(pages):
        chain(
            noop_link.si(story, n, pages, last=False),
            noop_link.si(story, n, pages, last=False),
            noop_link.si(story, n, pages, last=True),
        ).apply_async()


@app.task(name="bench.graph_link", acks_late=True, ignore_result=True)
def noop_link(story: str, page: int, pages: int, last: bool) -> None:
    if last and _r.incr(f"bench:graph:{story}") == pages:
        graph_finish.apply_async((story,))


@app.task(name="bench.graph_finish", acks_late=True, ignore_result=True)
def graph_finish(story: str) -> None:
    _r.incr("bench:graph:done")
