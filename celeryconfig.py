"""Celery settings only (the app is built in workers/app.py). Values come from the environment
through pipeline.config, so the worker, the tests and the demo agree on them."""
from __future__ import annotations

from kombu import Exchange, Queue

from pipeline.config import settings
from pipeline.events.delivery import DELIVER_TASK
from pipeline.events.delivery import QUEUE as EVENTS_QUEUE
from pipeline.events.settings import event_settings
from pipeline.kernel import redis_transport
from pipeline.orders.stages import LULU_WEBHOOK_TASK, ORDER_FLOW, SWEEP_TASK
from pipeline.orders.stages import QUEUE as ORDER_QUEUE
from pipeline.stories.stages import REPLICATE_WEBHOOK_TASK, STORY

_s = settings()

broker_url = _s.broker_url
# redis:// served by kombu's Redis transport minus its new client object per command (publish,
# ack, unacked bookkeeping): pipeline/kernel/redis_transport.py. Every process that loads this
# configuration (worker, beat, CLI, Flower, the bench's bare no-op app) uses it.
redis_transport.install()
broker_connection_retry_on_startup = True
# Redis: an unacked message (its worker died) is delivered again after this long. It must exceed
# the longest step including any countdown/ETA, or healthy tasks get delivered twice. Stuck-work
# detection (the claim's lease) lets the redelivered copy take over a dead worker's step.
broker_transport_options: dict[str, object] = {
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


# Every flow's stage table (pipeline/stories/stages.py, pipeline/orders/stages.py): task name -> queue.
FLOWS = (STORY, ORDER_FLOW)
task_routes = {stage.task: {"queue": stage.queue} for flow in FLOWS for stage in flow}
# The tasks that are not steps of a flow: the sweeps (celery beat) and Lulu's webhook.
task_routes.update({
    "ops.sweep": {"queue": STORY["outline"].queue},
    SWEEP_TASK: {"queue": ORDER_QUEUE},
    LULU_WEBHOOK_TASK: {"queue": ORDER_QUEUE},
    # Replicate's completion webhooks (the external API publishes them to the default queue; our
    # own re-sends of a delivery go with the illustrations).
    REPLICATE_WEBHOOK_TASK: {"queue": STORY["image"].queue},
    # The events' delivery runs on a queue of their own: a slow endpoint never waits in a story's queue.
    DELIVER_TASK: {"queue": EVENTS_QUEUE},
    # Forgetting a family (contract task, README "Forgetting a family"): the default queue, where the web app publishes.
    "users.forget": {"queue": task_default_queue},
})
# The one queue list: a worker started without -Q consumes every queue here (Celery's default:
# "-Q: by default all configured queues are enabled"), as the Procfile, ./run, the demo, the tests
# and the benchmarks start it, each routed queue once, each with its own direct exchange and routing key. (A bare
# Queue(name) gets Celery's default routing key "celery" on the default exchange: every queue
# would receive every message.)
#
# Their order is the order a worker's fetch reads them in with BROKER_QUEUE_ORDER=priority (kombu's
# Redis transport option queue_order_strategy="priority": BRPOP over the queues in this order
# returns from the first non-empty one; the default, round_robin, takes them in turn): the default
# queue (new work and webhooks from the external API: cheap, and a job's end frees a paid slot),
# the orders and events (money and trust, few), then a story's stages from the last to the first
# (the book and outline, the personalization, the illustration, the text, the photo analysis).
# Measured side by side (README "Queue order"): during a burst on the providers' slots it keeps
# them busier (16 slots x 0.5 s jobs: 0.90-0.91 against 0.82-0.84), and under a threads-bound
# load it lengthens story latency (p95 at 200 stories 1.28-1.37x the bound against 1.16-1.22x), so
# it is not the default. With a prefetch of one message per thread, the order decides what a free
# thread takes next; it does not reorder what is already reserved.
_PRIORITY = (task_default_queue, ORDER_QUEUE, EVENTS_QUEUE, STORY["finish"].queue, STORY["personalization"].queue,
             STORY["image"].queue, STORY["text"].queue, STORY["analysis"].queue)
_ROUTED = {task_default_queue, *(r["queue"] for r in task_routes.values())}
QUEUES = tuple(dict.fromkeys((*(q for q in _PRIORITY if q in _ROUTED), *sorted(_ROUTED))))
if _s.queue_order == "priority":
    broker_transport_options["queue_order_strategy"] = "priority"
task_queues = [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES]

# Stuck-work detection (pipeline/operations/sweep.py), run by `celery beat` (Procfile: beat).
beat_schedule = {
    "sweep-stuck-work": {"task": "ops.sweep", "schedule": _s.sweep_interval},
    # Stuck orders (pipeline/operations/orders.py): paid with no print files or print job, lost poll chains.
    "sweep-stuck-orders": {"task": SWEEP_TASK, "schedule": _s.sweep_interval},
    # The events' guarantee (pipeline/events/delivery.py): due deliveries go out within this long
    # even when every kick was lost.
    "events-deliver": {"task": DELIVER_TASK, "schedule": event_settings().poll_interval},
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
