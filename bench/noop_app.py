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
