"""Every setting a worker reads, checked once at boot (workers/app.py ``_warm_up``, on
``worker_init``, before the consumer starts): a misconfigured worker exits non-zero with one
line naming the variable, and takes no message, rather than failing inside tasks later (an
order that cannot be printed because POD_PROVIDER is misspelt, a payment refused because
STRIPE_MODE contradicts the key).

Each check is the reader the tasks themselves use (``settings()``, ``order_settings()``,
``print_provider()``, ``products()``, quota ``limits()``...), called here so its SystemExit
("configuration error: NAME ...") happens at boot; only what those readers accept silently is
checked here on its own terms.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from pipeline.config import env_number

# Stripe's secret (sk_) and restricted (rk_) API keys (https://docs.stripe.com/keys); a
# publishable key (pk_) cannot read Events.
STRIPE_KEY_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_")
# Lulu's print job shipping levels (https://api.lulu.com/docs/, "shipping_level").
LULU_SHIPPING_LEVELS = ("MAIL", "PRIORITY_MAIL", "GROUND_HD", "GROUND_BUS", "GROUND", "EXPEDITED", "EXPRESS")
_FLAGS = ("", "0", "1", "false", "true", "no", "yes", "off", "on")


def _fail(message: str) -> SystemExit:
    return SystemExit(f"configuration error: {message}")


def _flag(env: Mapping[str, str], name: str) -> None:
    value = env.get(name, "").strip().lower()
    if value not in _FLAGS:
        raise _fail(f"{name}={value[:40]!r}; use 1/true/yes or 0/false/no")


def _url(env: Mapping[str, str], name: str) -> None:
    value = env.get(name, "").strip()
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(f"{name} must be an http(s) URL (got {value[:60]!r})")


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """The settings read outside the cached readers (SystemExit naming the variable)."""
    e = os.environ if env is None else env
    level = e.get("LOG_LEVEL", "INFO").strip()
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise _fail(f"LOG_LEVEL={level[:40]!r}; choose one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    env_number(e, "CPU_PROCESSES", 0, 0, 64, whole=True)
    env_number(e, "DB_POOL_SIZE", 0, 0, 1000, whole=True)
    env_number(e, "METRICS_PORT", 0, 1, 65535, whole=True)
    env_number(e, "QUOTA_MAX_INLINE_WAIT", 1.0, 0.0, 60.0)
    # orders: what order_settings() and the print provider take as given
    _flag(e, "STRIPE_REQUIRE_SIGNATURE")
    _flag(e, "LULU_ALLOW_FILE_URLS")
    key = e.get("STRIPE_SECRET_KEY", "").strip()
    if key and not key.startswith(STRIPE_KEY_PREFIXES):
        raise _fail(f"STRIPE_SECRET_KEY must be a secret (sk_live_/sk_test_) or restricted (rk_live_/rk_test_) "
                    f"key (got one starting {key[:3]!r})")
    for name in ("STRIPE_API_BASE", "LULU_API_URL", "PRINT_FILES_BASE_URL"):
        _url(e, name)
    level = e.get("LULU_SHIPPING_LEVEL", "").strip().upper()
    if level and level not in LULU_SHIPPING_LEVELS:
        raise _fail(f"LULU_SHIPPING_LEVEL={level[:40]!r}; choose one of {', '.join(LULU_SHIPPING_LEVELS)}")
    env_number(e, "LULU_PRODUCTION_DELAY", 0, 0, 43200, whole=True)
    # Replicate's completion webhooks: a URL without its signing secret, or a secret that is not
    # whsec_<base64> (the images.replicate_webhook task verifies with it whatever IMAGE_PROVIDER is).
    from pipeline.providers.replicate_webhooks import webhook_config

    webhook_config(e)
    if e.get("POD_PROVIDER", "").strip().lower() == "lulu":
        missing = [n for n in ("LULU_CLIENT_KEY", "LULU_CLIENT_SECRET") if not e.get(n, "").strip()]
        if missing:
            raise _fail(f"{' and '.join(missing)} not set (POD_PROVIDER=lulu needs the API keys)")


def check_worker_configuration() -> None:
    """Everything a worker reads, read now, as its steps will read it: SystemExit("configuration
    error: ...") naming the first variable that is wrong. No network, no database (check_database
    does that). A setting read lazily (the database pool, the book's CPU processes, the quotas, the
    orders' settings read when a payment arrives) used to raise inside a task, which was then acked
    and lost: a worker with one it cannot work with exits at boot (workers/app.py) instead."""
    from db.engine import pool_size
    from pipeline.config import cost_settings, log_level, settings
    from pipeline.events.settings import event_settings
    from pipeline.kernel import job_timing, quota, quota_line, redis_transport
    from pipeline.kernel.cpu import processes
    from pipeline.kernel.metrics import metrics_port
    from pipeline.kernel.storage import presigned_url_seconds
    from pipeline.kernel.tracing import trace_settings
    from pipeline.orders import print_files
    from pipeline.orders import steps as orders
    from pipeline.orders.offline_print_shop import print_shop_stage_seconds
    from pipeline.privacy.settings import retention_settings
    from pipeline.providers import simulated_jobs
    from pipeline.stories.redo import redo_limit

    settings()  # STEP_*, STORY_PAGE_COUNT, providers' names, leases, timeouts...
    event_settings()  # WEBHOOK_*, EVENTS_*
    cost_settings()  # PRICE_*, COST_CURRENCY, COST_ESTIMATE_*, STORY_BUDGET_CENTS
    log_level()
    pool_size()  # DB_POOL_SIZE
    processes()  # CPU_PROCESSES
    metrics_port()  # METRICS_PORT
    quota.max_inline_wait()  # QUOTA_MAX_INLINE_WAIT
    print_shop_stage_seconds()  # LOCAL_PRINT_SHOP_STAGE_SECONDS
    redo_limit()  # REDO_LIMIT_PER_STORY
    retention_settings()  # RETENTION_* (README "Personal data")
    presigned_url_seconds()  # PRESIGNED_URL_SECONDS
    check_environment()
    trace_settings()  # OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_* (traces: off unless configured)
    orders.order_settings()  # POD_PROVIDER, ORDER_*, STRIPE_MODE vs STRIPE_SECRET_KEY...
    orders.print_provider()  # LULU_* (timeouts) or LOCAL_PRINT_SHOP_STAGE_SECONDS
    print_files.check_products()  # PRINT_PRODUCTS
    quota_line.enabled(), quota_line.backstop(), quota_line.grant_seconds(), quota_line.prewake()  # QUOTA_WAKE*
    job_timing.adaptive(), job_timing.poll_min()  # JOB_POLL_ADAPTIVE, JOB_POLL_MIN
    redis_transport.ack_batching()  # BROKER_ACK_BATCHING
    job_timing.inline_wait(), job_timing.inline_threads(), job_timing.look_lead()  # JOB_INLINE_*, JOB_LOOK_LEAD
    simulated = simulated_jobs.check_env()  # SIMULATED_JOB_*, the quotas simulated providers take
    for provider in (*quota.DEFAULTS, "lulu", *simulated):
        quota.limits(provider)  # QUOTA_<PROVIDER>_RPS / _RPM / _CONCURRENT
