"""Delivering the outbox's events (README "Events (webhooks)"): one run of ``events.deliver``.

A run takes one of ``EVENTS_MAX_RUNS`` slots (Redis keys with a TTL: a killed run's slot frees
itself), so however many runs are sent, at most that many worker threads deliver at once and a
slow or dead endpoint never holds more: the story pipeline's threads are never waited on. A run
creates the missing delivery rows, then claims due deliveries in batches (the oldest open one per
endpoint and ordering key: strict FIFO per key) and sends each batch concurrently, bounded by
``WEBHOOK_TIMEOUT`` per request, until nothing is due or ``EVENTS_RUN_SECONDS`` passed. Every
attempt is recorded; a failure is retried after an exponential backoff with full jitter,
``Retry-After`` as its floor, at most ``WEBHOOK_MAX_ATTEMPTS`` times, then the delivery is dead.
Before it ends, a run schedules the next one for when the earliest backoff or lease runs out
(celery beat's ``events-deliver`` every ``EVENTS_POLL_INTERVAL`` is the guarantee).

Webhooks follow the Standard Webhooks specification (https://www.standardwebhooks.com/), signed
by its reference library (``standardwebhooks`` on PyPI): headers ``webhook-id`` (the event's id,
the same on every retry), ``webhook-timestamp``, ``webhook-signature``; body
``{"type", "timestamp", "data"}``.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import redis
from celery import Celery
from sqlalchemy.engine import RowMapping

from db import events as db
from db.engine import autocommit
from pipeline.config import settings
from pipeline.events.settings import BROKER_PREFIX, EventSettings, event_settings
from pipeline.kernel import publish

log = logging.getLogger("storycreator.events")

DELIVER_TASK = "events.deliver"
QUEUE = "events"
KICK_KEY = "storycreator:events:kick"  # SET NX debounce of the kicks (at most one per KICK_MS)
WAKE_KEY = "storycreator:events:wake"  # one scheduled follow-up run at a time
SLOT_KEY = "storycreator:events:slot:{}"
KICK_MS = 300
USER_AGENT = "storycreator-events/1 (Standard Webhooks)"


@dataclass
class RunReport:
    """What a run did: ``sent`` deliveries delivered, ``failed`` attempts that failed (retried or
    dead), ``dead`` of them, ``busy`` when every slot was taken (the run did nothing)."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    busy: bool = False
    errors: list[str] = field(default_factory=list)


_redis_lock = threading.Lock()
_redis: redis.Redis | None = None


def _r() -> redis.Redis:
    global _redis
    with _redis_lock:
        if _redis is None:
            _redis = redis.Redis.from_url(settings().redis_url, socket_timeout=5, socket_connect_timeout=5)
        return _redis


def kick() -> None:
    """Ask for a delivery run soon (after a commit that may have written events), at most one
    message per KICK_MS across all workers. Best effort: a failure is logged, never raised (beat's
    schedule delivers anyway). Nothing at all when no endpoint is configured."""
    if not event_settings().endpoints():
        return
    try:
        if _r().set(KICK_KEY, "1", nx=True, px=KICK_MS):
            publish.send(DELIVER_TASK, {})
    except Exception:  # noqa: BLE001 - the kick is an optimisation; the schedule is the guarantee
        log.warning("could not kick the event delivery", exc_info=True)


def backoff(attempt: int, cfg: EventSettings, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: full jitter over base * 2^(attempt-1), capped at
    WEBHOOK_BACKOFF_CAP; ``retry_after`` (the endpoint's own word) is a floor, itself capped."""
    delay = random.uniform(0, min(cfg.backoff_cap, cfg.backoff_base * 2 ** min(attempt - 1, 30)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cfg.backoff_cap))
    return round(delay, 3)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date) as seconds from ``now``
    (>= 0), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def envelope(row: RowMapping | dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks body of an event: ``{"type", "timestamp", "data"}`` (timestamp: when
    the transition happened, ISO 8601 UTC)."""
    occurred = row["occurred_at"]
    stamp = occurred.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(occurred, datetime) \
        else str(occurred)
    return {"type": row["type"], "timestamp": stamp, "data": row["payload"]}


def signed_request(event_id: str, body: str, secret: str, now: datetime | None = None) -> dict[str, str]:
    """The headers of a Standard Webhooks request for ``body`` (its exact bytes, UTF-8), signed
    with ``secret`` (whsec_...) by the standardwebhooks library."""
    from standardwebhooks import Webhook

    now = now or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, now, body),
    }


@dataclass
class Outcome:
    """One attempt's result: ``ok``, the HTTP status (None without a reply), ``latency_ms``,
    ``error`` (for people; no secrets), ``retry_after`` seconds if the endpoint said so."""

    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None = None
    retry_after: float | None = None


_clients: dict[float, httpx.Client] = {}
_brokers: dict[str, Celery] = {}
_pool_lock = threading.Lock()


def _client(timeout: float) -> httpx.Client:
    with _pool_lock:
        if timeout not in _clients:
            _clients[timeout] = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                                             limits=httpx.Limits(max_connections=64))
        return _clients[timeout]


def post(url: str, row: RowMapping | dict[str, Any], cfg: EventSettings) -> Outcome:
    """POST one event to ``url`` (a Standard Webhooks request). 2xx is delivered; any other
    status, a timeout or a connection error is a failed attempt (never raised)."""
    assert cfg.secret is not None
    body = json.dumps(envelope(row), separators=(",", ":"), ensure_ascii=False, default=str)
    t0 = time.perf_counter()
    try:
        reply = _client(cfg.timeout).post(url, content=body.encode(),
                                          headers=signed_request(row["event_id"], body, cfg.secret))
    except httpx.HTTPError as e:
        return Outcome(False, None, round((time.perf_counter() - t0) * 1000),
                       f"{type(e).__name__}: {str(e)[:200] or 'no detail'}")
    ms = round((time.perf_counter() - t0) * 1000)
    if 200 <= reply.status_code < 300:
        return Outcome(True, reply.status_code, ms)
    return Outcome(False, reply.status_code, ms, f"HTTP {reply.status_code}: {reply.text[:200]}",
                   parse_retry_after(reply.headers.get("retry-after")))


def publish_to_broker(endpoint: str, row: RowMapping | dict[str, Any], cfg: EventSettings) -> Outcome:
    """Publish one event as the Celery task ``endpoint`` names (``celery:<task>@<queue>``) to
    EVENTS_BROKER_URL, kwargs ``{"event": {"id", "type", "timestamp", "data"}}``, JSON."""
    task, _, queue = endpoint.removeprefix(BROKER_PREFIX).partition("@")
    t0 = time.perf_counter()
    try:
        with _pool_lock:
            if cfg.broker_url not in _brokers:
                app = Celery("storycreator-events", broker=cfg.broker_url, set_as_current=False)
                app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry=False,
                                broker_connection_timeout=cfg.timeout)
                _brokers[cfg.broker_url] = app
            app = _brokers[cfg.broker_url]
        app.send_task(task, kwargs={"event": {"id": row["event_id"], **envelope(row)}}, queue=queue,
                      retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
    except Exception as e:  # noqa: BLE001 - kombu's and redis's errors alike: a failed attempt, retried
        return Outcome(False, None, round((time.perf_counter() - t0) * 1000), f"{type(e).__name__}: {str(e)[:200]}")
    return Outcome(True, None, round((time.perf_counter() - t0) * 1000))


def attempt(row: RowMapping, cfg: EventSettings) -> tuple[Outcome, str | None]:
    """Send one claimed delivery and record the attempt; returns the outcome and the delivery's
    new status (None: the claim was lost meanwhile)."""
    endpoint = row["endpoint"]
    outcome = publish_to_broker(endpoint, row, cfg) if endpoint.startswith(BROKER_PREFIX) else post(endpoint, row, cfg)
    with autocommit() as conn:
        status = db.record_attempt(conn, row["id"], row["token"], row["attempt"], ok=outcome.ok,
                                   status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                                   error=outcome.error, retry_in=backoff(row["attempt"], cfg, outcome.retry_after),
                                   max_attempts=cfg.max_attempts)
    fields = {"event": row["event_id"], "type": row["type"], "attempt": row["attempt"], "status": status,
              "code": outcome.status_code, "ms": outcome.latency_ms}
    if outcome.ok:
        log.info("event %s", json.dumps(fields))
    else:
        log.warning("event %s", json.dumps({**fields, "error": outcome.error}))
    return outcome, status


def _take_slot(cfg: EventSettings) -> str | None:
    token = uuid.uuid4().hex
    ttl = int(cfg.run_seconds + 4 * cfg.timeout + 30)  # the longest a run can hold it
    for i in range(cfg.max_runs):
        if _r().set(SLOT_KEY.format(i), token, nx=True, ex=ttl):
            return f"{i}:{token}"
    return None


_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _give_slot(slot: str) -> None:
    i, token = slot.split(":")
    try:
        _r().eval(_RELEASE, 1, SLOT_KEY.format(i), token)
    except redis.RedisError:  # its TTL frees it
        log.warning("could not free the event delivery slot %s", i, exc_info=True)


def run(cfg: EventSettings | None = None) -> RunReport:
    """One delivery run (see the module's docstring). Returns what it did. Raises the database's
    errors (the task layer's business); an endpoint's errors are recorded attempts."""
    cfg = cfg or event_settings()
    report = RunReport()
    endpoints = cfg.endpoints()
    if not endpoints:
        return report
    slot = _take_slot(cfg)
    if slot is None:
        report.busy = True
        return report
    try:
        with autocommit() as conn:
            db.add_endpoints(conn, endpoints, cfg.backlog)
        deadline = time.monotonic() + cfg.run_seconds
        with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="events") as pool:
            while time.monotonic() < deadline:
                with autocommit() as conn:
                    for endpoint in endpoints:
                        db.materialize(conn, endpoint)
                    batch = db.claim_due(conn, endpoints, cfg.concurrency, cfg.lease)
                if not batch:
                    break
                for outcome, status in pool.map(lambda r: attempt(r, cfg), batch):
                    report.sent += outcome.ok
                    report.failed += not outcome.ok
                    report.dead += status == "dead"
        with autocommit() as conn:
            due_in = db.next_due_in(conn, endpoints)
    finally:
        _give_slot(slot)
    if due_in is not None:
        _wake_in(due_in)
    return report


def _wake_in(seconds: float) -> None:
    """Schedule one follow-up run when the next delivery is due (at least 0.2 s, at most the
    beat interval away: beat takes over from there), unless one is scheduled already."""
    delay = max(0.2, min(seconds, event_settings().poll_interval))
    try:
        if _r().set(WAKE_KEY, "1", nx=True, px=max(50, int(delay * 1000))):
            publish.send(DELIVER_TASK, {}, countdown=delay)
    except Exception:  # noqa: BLE001 - beat's schedule runs it anyway
        log.warning("could not schedule the next event delivery run", exc_info=True)
