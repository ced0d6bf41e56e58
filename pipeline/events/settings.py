"""The events' configuration (README "Events (webhooks)"): where events go and how hard we try.

Read from the environment once per process (``event_settings()``); a bad value is a configuration
error (SystemExit naming the variable), found at boot by pipeline.operations.boot_check.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from pipeline.config import env_float, env_int, settings

BROKER_PREFIX = "celery:"  # event_endpoints.endpoint of the broker alternative: celery:<task>@<queue>


@dataclass(frozen=True)
class EventSettings:
    """Each field names its variable; defaults in README "Configuration"."""

    webhook_urls: tuple[str, ...]  # WEBHOOK_URLS: comma-separated http(s) URLs; none = no webhooks
    secret: str | None  # WEBHOOK_SECRET: whsec_<base64>, the Standard Webhooks signing secret
    timeout: float  # WEBHOOK_TIMEOUT: seconds per request (connect, read, write, pool each)
    max_attempts: int  # WEBHOOK_MAX_ATTEMPTS: then the delivery is dead (an operator retries it)
    backoff_base: float  # WEBHOOK_BACKOFF_BASE: seconds; attempt n waits up to base * 2^(n-1)
    backoff_cap: float  # WEBHOOK_BACKOFF_CAP: seconds, the longest wait (and Retry-After's cap)
    lease: float  # WEBHOOK_LEASE_SECONDS: a delivery in flight this long is presumed lost, sent again
    concurrency: int  # WEBHOOK_CONCURRENCY: requests in flight per delivery run
    max_runs: int  # EVENTS_MAX_RUNS: delivery runs at once across all workers (each holds one thread)
    run_seconds: float  # EVENTS_RUN_SECONDS: a run stops claiming after this long; the next run goes on
    poll_interval: float  # EVENTS_POLL_INTERVAL: celery beat sends a delivery run this often
    backlog: float  # EVENTS_BACKLOG_SECONDS: a new endpoint gets the events of this last while
    celery_task: str | None  # EVENTS_CELERY_TASK: also publish each event as this Celery task
    celery_queue: str  # EVENTS_CELERY_QUEUE
    broker_url: str  # EVENTS_BROKER_URL: the broker those tasks go to (default: ours)

    def endpoints(self) -> list[str]:
        """Every endpoint events go to: the webhook URLs, then ``celery:<task>@<queue>``."""
        broker = [f"{BROKER_PREFIX}{self.celery_task}@{self.celery_queue}"] if self.celery_task else []
        return [*self.webhook_urls, *broker]


def _fail(message: str) -> SystemExit:
    return SystemExit(f"configuration error: {message}")


def read_event_settings(env: Mapping[str, str]) -> EventSettings:
    """EventSettings from ``env``. Raises SystemExit("configuration error: NAME ...")."""
    urls = tuple(u.strip() for u in env.get("WEBHOOK_URLS", "").split(",") if u.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _fail(f"WEBHOOK_URLS: {url[:60]!r} is not an http(s) URL")
    secret = env.get("WEBHOOK_SECRET", "").strip() or None
    if urls and secret is None:
        raise _fail("WEBHOOK_SECRET not set (WEBHOOK_URLS needs the signing secret, whsec_...)")
    if secret is not None:
        from standardwebhooks import Webhook

        if not secret.startswith("whsec_"):
            raise _fail("WEBHOOK_SECRET must be a Standard Webhooks secret: whsec_ and base64")
        try:
            Webhook(secret)
        except Exception:  # noqa: BLE001 - binascii.Error and friends: any undecodable secret
            raise _fail("WEBHOOK_SECRET must be a Standard Webhooks secret: whsec_ and base64") from None
    timeout = env_float("WEBHOOK_TIMEOUT", 10.0, 0.1, 120.0, env=env)
    task = env.get("EVENTS_CELERY_TASK", "").strip() or None
    return EventSettings(
        webhook_urls=urls, secret=secret, timeout=timeout,
        max_attempts=env_int("WEBHOOK_MAX_ATTEMPTS", 12, 1, 100, env=env),
        backoff_base=env_float("WEBHOOK_BACKOFF_BASE", 5.0, 0.01, 3600.0, env=env),
        backoff_cap=env_float("WEBHOOK_BACKOFF_CAP", 3600.0, 0.01, 7 * 86400.0, env=env),
        lease=env_float("WEBHOOK_LEASE_SECONDS", 4 * timeout + 30, timeout, 86400.0, env=env),
        concurrency=env_int("WEBHOOK_CONCURRENCY", 8, 1, 64, env=env),
        max_runs=env_int("EVENTS_MAX_RUNS", 2, 1, 64, env=env),
        run_seconds=env_float("EVENTS_RUN_SECONDS", 20.0, 0.1, 600.0, env=env),
        poll_interval=env_float("EVENTS_POLL_INTERVAL", 5.0, 0.1, 3600.0, env=env),
        backlog=env_float("EVENTS_BACKLOG_SECONDS", 86400.0, 0.0, 90 * 86400.0, env=env),
        celery_task=task,
        celery_queue=env.get("EVENTS_CELERY_QUEUE", "").strip() or "webapp_events",
        broker_url=env.get("EVENTS_BROKER_URL", "").strip() or settings().broker_url,
    )


@lru_cache(maxsize=1)
def event_settings() -> EventSettings:
    """The process's EventSettings (cached; ``event_settings.cache_clear()`` reads again)."""
    return read_event_settings(os.environ)
