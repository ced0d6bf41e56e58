"""Celery settings only (the app is built in workers/app.py). Values come from the environment
through pipeline.kernel.config, so the worker, the tests and the demo agree on them."""
from __future__ import annotations

from kombu import Exchange, Queue

from pipeline.kernel.config import settings

_s = settings()

broker_url = _s.broker_url
broker_connection_retry_on_startup = True
# Redis: an unacked message (its worker died) is delivered again after this long. It must exceed
# the longest step including any countdown/ETA, or healthy tasks get delivered twice. Stuck-work
# detection (the claim's lease) lets the redelivered copy take over a dead worker's step.
broker_transport_options = {
    "visibility_timeout": _s.visibility_timeout,
    "socket_timeout": 30,
    "socket_connect_timeout": 10,
    "health_check_interval": 25,
    # kombu looks for expired unacked messages every interval x throttle seconds (10 x 10 by
    # default): a dead worker's message came back ~100 s after its visibility timeout (measured).
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
}

# The external API publishes by name to the default queue: keep Celery's default name.
task_default_queue = "celery"
# Each queue with its own direct exchange and routing key. (A bare Queue(name) gets Celery's
# default routing key "celery" on the default exchange: every queue would receive every message.)
# Kept in sync with the Procfile's and ./run's -Q lists.
QUEUES = ("celery", "photos", "stories", "text", "images", "personalize", "orders")
task_queues = [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES]
task_routes = {
    "photos.analyze": {"queue": "photos"},
    "stories.generate": {"queue": "stories"},
    "stories.finish": {"queue": "stories"},
    "pages.write_text": {"queue": "text"},
    "pages.draw_base": {"queue": "images"},
    "pages.personalize": {"queue": "personalize"},
    "ops.sweep": {"queue": "stories"},
}

# Stuck-work detection (pipeline/operations/ops.py), run by `celery beat` (Procfile: beat).
beat_schedule = {
    "sweep-stuck-work": {"task": "ops.sweep", "schedule": _s.sweep_interval},
    # Stuck orders (pipeline/orders/steps.py): paid with no print files or print job, lost poll chains.
    "sweep-stuck-orders": {"task": "orders.sweep", "schedule": _s.sweep_interval, "options": {"queue": "orders"}},
}

# At-least-once: ack after the task ran, redeliver when the worker is lost, fetch one at a time.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# A task that raised has recorded its error in Postgres (or is a bug): ack it, don't redeliver.
task_acks_on_failure = True
task_acks_on_timeout = True

# JSON only: ids cross the broker, never objects or image bytes.
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
task_ignore_result = True  # status lives in Postgres; nobody reads Celery results
result_backend = None

# Flower / operators.
worker_send_task_events = True
# No task-sent events: each would be one more Redis publish per message on the hot path;
# Flower still sees received/started/succeeded/failed from the workers.
task_send_sent_event = False
task_track_started = True

worker_hijack_root_logger = False
# One malformed message from an outside client is rejected with a logged reason, never allowed
# to stop the worker (and, redelivered, every restarted one): workers/consumer.py.
worker_consumer = "workers.consumer:Consumer"
worker_cancel_long_running_tasks_on_connection_loss = False
