"""Builds the Celery app. Imports no models: settings come from celeryconfig, tasks from one
module per queue family (workers.story_tasks, workers.order_tasks, workers.ops_tasks), and the
database engine is built lazily in each worker process."""
from __future__ import annotations

import gc
import logging
from typing import Any

from celery import Celery, signals

import workers.broker_survival  # noqa: F401  (a Redis restart must not stop the worker: see that module)
from workers import lazy_einfo

lazy_einfo.install()  # a retry's traceback copy without each function's instruction table: see that module

app = Celery("storycreator", include=["workers.story_tasks", "workers.order_tasks", "workers.ops_tasks",
                                        "workers.event_tasks", "workers.job_webhook_tasks"])
app.config_from_object("celeryconfig")


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Our own format; one line per step comes from workers.step_task (no names, no image bytes).
    from pipeline.config import log_level

    logging.basicConfig(
        level=log_level(),  # SystemExit (one line) for a level logging does not know
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )


@signals.worker_init.connect
def _warm_up(sender: Any = None, **_: Any) -> None:
    """Pay the one-time costs (OpenCV cascades, fonts, the first DB connection) at boot, not
    inside the first story's critical path.

    First, a worker that cannot work must not take messages: with the database misconfigured,
    unreachable or without its schema, the worker exits non-zero with one line, before its
    consumer starts (worker_init runs before any bootstep). SystemExit, because Celery's signal
    dispatch logs and swallows an Exception raised by a receiver and the worker would go on.
    Every other setting the worker reads is checked before that (pipeline.operations.boot_check): a
    misconfigured worker stops here with one line naming the variable, not inside its tasks."""
    from db.engine import DatabaseNotReady, check_database
    from pipeline.operations.boot_check import check_worker_configuration

    check_worker_configuration()  # SystemExit("configuration error: NAME ..."): every setting a step reads
    _bootstrap_default_database()
    try:
        check_database()
    except DatabaseNotReady as e:
        raise SystemExit(f"configuration error: {e}") from None

    from pipeline.orders.steps import order_settings

    o = order_settings()  # checked by check_worker_configuration above
    if o.stripe_mode == "live" and not o.stripe_secrets:
        # Not an error: a worker for stories alone needs no Stripe settings. Payment events are
        # then refused one by one (or confirmed with Stripe's API when STRIPE_SECRET_KEY is set).
        logging.getLogger("pipeline.orders.steps").warning(
            "live-mode Stripe (STRIPE_MODE) without STRIPE_WEBHOOK_SECRET: unsigned payment events will be %s",
            "confirmed with Stripe's API" if o.stripe_secret_key else "refused")

    from pipeline.kernel import cpu
    from pipeline.providers.registry import providers
    from pipeline.stories.fonts import FontConfigError, check_fonts

    try:
        check_fonts()  # a worker that cannot print names must not take stories
    except FontConfigError as e:
        raise SystemExit(str(e)) from None
    providers()
    import pipeline.providers.local_vision  # noqa: F401  (OpenCV; its JSON helpers serve every analyzer)

    cpu.warm_up()
    from pipeline.kernel import metrics

    if port := metrics.metrics_port():
        try:
            metrics.serve(port)  # Prometheus text format at http://<host>:<port>/metrics
        except OSError as e:  # taken by another process: a worker nobody can watch is misconfigured
            raise SystemExit(f"configuration error: METRICS_PORT={port} cannot be served: {e}") from None

    from db.engine import get_engine

    with get_engine().connect():  # the pool's first connection, now that the database answers
        pass

    if not _forks(sender):  # threads, solo...: this process runs the tasks (prefork: each child, below)
        start_traces()

    # Everything made so far (modules, the providers, fonts, OpenCV's cascades) lives as long as the
    # process: out of the cyclic collector's sight from now on, so its full collections (and the one
    # at exit, which made a warm shutdown take ~3 s more) stop walking it again.
    gc.freeze()


@signals.worker_ready.connect
def _deliver_due_events(**_: Any) -> None:
    """A worker that starts sends what is due (events a dead worker left, backoffs that ran out)."""
    from pipeline.events.delivery import kick

    kick()


@signals.worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    from db.engine import get_engine
    from pipeline.providers.registry import providers

    providers()
    get_engine()  # a forked child never reuses the parent's pool (see db/engine.py)
    start_traces()  # per process, after the fork (a no-op for solo's in-process call, started already)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _dispose_engine(**_: Any) -> None:
    from db.engine import dispose_engine
    from pipeline.kernel import cpu

    dispose_engine()
    cpu.shutdown()
    from pipeline.kernel import tracing

    tracing.stop()  # the last spans exported


def start_traces() -> None:
    """One trace per story, when configured (pipeline.kernel.tracing; off by default): OpenTelemetry's
    Celery instrumentation in this process. A task's run is a span whose parent is the context the
    message carries (none for a task the external API sent: a story's ``stories.generate`` starts
    its trace), and every message published while it runs (a page's chain, the next link Celery
    sends, ``stories.finish``, a retry, by name or not: Celery's ``before_task_publish`` fires for
    ``send_task`` too) gets a publish span and carries it as ``traceparent`` in its headers.
    SystemExit("configuration error: ...") for settings it cannot honour (checked at boot too)."""
    from pipeline.kernel import tracing

    provider = tracing.start()
    if provider is not None:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument(tracer_provider=provider)


def _forks(worker: Any) -> bool:
    """Whether the worker's pool runs tasks in forked child processes (prefork)."""
    from celery import concurrency
    from celery.concurrency.prefork import TaskPool as Prefork

    pool = concurrency.get_implementation(getattr(worker, "pool_cls", None) or "prefork")
    return isinstance(pool, type) and issubclass(pool, Prefork)


def _bootstrap_default_database() -> None:
    """With ``DATABASE_URL`` unset, the worker uses the local development database
    (``pipeline.config``: ``postgres@127.0.0.1:5432/storycreator``) and creates it with
    schema.sql when it is missing, as ``./run demo`` does, so the Procfile's ``worker:`` line and
    ``./run worker`` start on a fresh machine as written. A ``DATABASE_URL`` someone wrote is never
    created: a mistyped name would get an empty database and the worker would ack every message
    for stories it cannot find, so :func:`db.engine.check_database` refuses it with one line.
    A server that cannot be reached is left to that check too (it says why)."""
    import os

    if "DATABASE_URL" in os.environ:
        return
    from db.engine import ensure_database

    try:
        ensure_database()
    except Exception as e:  # noqa: BLE001 - check_database reports the same failure in one line
        logging.getLogger("storycreator.boot").debug("default database not bootstrapped: %s", e)
        return
    # A warning: in production an unset DATABASE_URL is a forgotten setting (and worker_init runs
    # before Celery configures logging, so only warnings reach stderr here).
    logging.getLogger("storycreator.boot").warning(
        "DATABASE_URL is not set: using the local development database (created with schema.sql if it was missing)")
