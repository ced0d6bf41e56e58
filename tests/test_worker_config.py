"""A worker with a misconfiguration exits at boot (issue 10, fault 2's kind, for configuration):
every setting the worker reads (the pipeline's, the orders' Stripe and Lulu settings, the print
products, the quotas, logging) is checked on ``worker_init``, before the consumer starts. The
Procfile's worker line, started as written with one bad setting, exits non-zero within seconds
with one line naming the variable, no traceback, and every message it could have taken is still
in the broker.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import ROOT, Db, boot_worker_until_exit, external_send, queued_messages

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
LULU_KEYS = {"POD_PROVIDER": "lulu", "LULU_CLIENT_KEY": "key", "LULU_CLIENT_SECRET": "secret"}
SECRET = "sk_live_s3cretValue0123"


def _worker_line() -> str:
    line = next(ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.startswith("worker:"))
    return line.split(":", 1)[1].strip()


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """Messages the external API sent (a story, a payment, an order's print step), published
    once: every misconfigured worker below must leave all three in the broker."""
    r = redis.Redis.from_url(BROKER)
    r.flushdb()
    external_send(BROKER, "stories.generate", {"story_id": str(uuid.uuid4())})
    external_send(BROKER, "orders.confirm_payment", {"order_id": str(uuid.uuid4()), "event_id": "evt_1"})
    external_send(BROKER, "orders.prepare_print", {"order_id": str(uuid.uuid4())})
    yield BROKER
    r.flushdb()
    r.close()



# Through real worker processes: one bad setting per reader the boot checks.
BOOT_CASES = [
    ({"STRIPE_MODE": "test", "STRIPE_SECRET_KEY": SECRET}, "STRIPE_MODE=test but STRIPE_SECRET_KEY"),
    ({"POD_PROVIDER": "bogus"}, "POD_PROVIDER"),
    ({"STEP_MAX_RETRIES": "abc"}, "STEP_MAX_RETRIES"),
    ({"POD_PROVIDER": "lulu"}, "LULU_CLIENT_KEY"),
    ({**LULU_KEYS, "LULU_TIMEOUT": "abc"}, "LULU_TIMEOUT"),
    ({"PRINT_PRODUCTS": "hardcover_book=0850X0850"}, "PRINT_PRODUCTS"),
    ({"QUOTA_LULU_CONCURRENT": "-2"}, "QUOTA_LULU_CONCURRENT"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),  # traces: gRPC is not installed (pipeline/kernel/tracing.py)
]
# The same check in-process, for the other settings it covers.
MORE_CASES = [
    ({"STRIPE_MODE": "sandbox"}, "STRIPE_MODE"),
    ({"STRIPE_SECRET_KEY": "pk_live_publishable"}, "STRIPE_SECRET_KEY"),
    ({"STRIPE_REQUIRE_SIGNATURE": "sure"}, "STRIPE_REQUIRE_SIGNATURE"),
    ({"STRIPE_API_BASE": "api.stripe.com"}, "STRIPE_API_BASE"),
    ({**LULU_KEYS, "LULU_API_URL": "api.lulu.com"}, "LULU_API_URL"),
    ({**LULU_KEYS, "LULU_CONNECT_TIMEOUT": "0"}, "LULU_CONNECT_TIMEOUT"),
    ({"LULU_SHIPPING_LEVEL": "FASTEST"}, "LULU_SHIPPING_LEVEL"),
    ({"LULU_PRODUCTION_DELAY": "soon"}, "LULU_PRODUCTION_DELAY"),
    ({"LULU_ALLOW_FILE_URLS": "maybe"}, "LULU_ALLOW_FILE_URLS"),
    ({"LOCAL_PRINT_SHOP_STAGE_SECONDS": "x"}, "LOCAL_PRINT_SHOP_STAGE_SECONDS"),
    ({"PRINT_PRODUCTS": "paperback"}, "PRINT_PRODUCTS"),
    ({"ORDER_POLL_INTERVAL": "-1"}, "ORDER_POLL_INTERVAL"),
    ({"ORDER_STORY_WAIT_SECONDS": "a day"}, "ORDER_STORY_WAIT_SECONDS"),
    ({"STRIPE_SIGNATURE_TOLERANCE": "0"}, "STRIPE_SIGNATURE_TOLERANCE"),
    ({"QUOTA_OPENAI_RPM": "fast"}, "QUOTA_OPENAI_RPM"),
    ({"QUOTA_MAX_INLINE_WAIT": "long"}, "QUOTA_MAX_INLINE_WAIT"),
    ({"CPU_PROCESSES": "two"}, "CPU_PROCESSES"),
    ({"DB_POOL_SIZE": "-1"}, "DB_POOL_SIZE"),
    ({"METRICS_PORT": "http"}, "METRICS_PORT"),
    ({"STORY_PAGE_COUNT": "100"}, "STORY_PAGE_COUNT"),
    ({"RETENTION_PHOTO_DAYS": "-1"}, "RETENTION_PHOTO_DAYS"),
    ({"RETENTION_BOOK_DAYS": "forever"}, "RETENTION_BOOK_DAYS"),
    ({"RETENTION_BATCH_SIZE": "0"}, "RETENTION_BATCH_SIZE"),
    ({"PRESIGNED_URL_SECONDS": "604801"}, "PRESIGNED_URL_SECONDS"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"USER_STORIES_IN_FLIGHT": "-1"}, "USER_STORIES_IN_FLIGHT"),  # fair turns (README): 0 = no cap
    ({"USER_STORIES_IN_FLIGHT": "four"}, "USER_STORIES_IN_FLIGHT"),
    ({"FAIR_PRIORITY": "maybe"}, "FAIR_PRIORITY"),
    ({"JOB_INLINE_WAIT": "61"}, "JOB_INLINE_WAIT"),  # waiting out a job's end in the thread (job_timing)
    ({"JOB_INLINE_THREADS": "0"}, "JOB_INLINE_THREADS"),
    ({"JOB_LOOK_LEAD": "-1"}, "JOB_LOOK_LEAD"),
]


def _ids(v: object) -> str:
    return "+".join(f"{k}={v[k]}" for k in v)[:60] if isinstance(v, dict) else ""


@pytest.mark.parametrize(("bad", "names"), BOOT_CASES, ids=_ids)
def test_a_misconfigured_worker_exits_at_boot_in_one_line_and_keeps_the_messages(
        db: Db, broker: str, tmp_path: Path, bad: dict[str, str], names: str) -> None:
    # given messages the external API sent (the broker fixture)
    assert queued_messages(broker) == 3
    # when the Procfile's worker starts, as written, with one setting wrong
    log = tmp_path / "worker.log"
    t0 = time.monotonic()
    code, out = boot_worker_until_exit({"CELERY_BROKER_URL": broker, "REDIS_URL": broker, "WORKER_CONCURRENCY": "2",
                                        **bad}, log, timeout=30, command=f"exec {_worker_line()}")
    elapsed = time.monotonic() - t0
    # then it exits non-zero within seconds, with one line naming the variable, and no traceback
    assert code not in (None, 0), f"worker did not exit ({code}):\n{out[-3000:]}"
    assert elapsed < 20, elapsed
    lines = [ln for ln in out.splitlines() if "configuration error" in ln]
    assert len(lines) == 1 and names in lines[0], out[-3000:]
    assert lines[0].startswith("configuration error: ") and out.strip().endswith(lines[0]), out[-3000:]
    assert "Traceback" not in out and SECRET not in out, out
    # and it took no message
    assert queued_messages(broker) == 3


def _clear_caches() -> None:
    from pipeline import config
    from pipeline.kernel import quota
    from pipeline.orders import settings as orders
    from pipeline.privacy.settings import retention_settings

    config.settings.cache_clear()
    retention_settings.cache_clear()
    orders.order_settings.cache_clear()
    quota.limits.cache_clear()
    orders._providers.clear()


@pytest.mark.parametrize(("bad", "names"), MORE_CASES, ids=_ids)
def test_the_boot_check_names_each_bad_setting(monkeypatch: pytest.MonkeyPatch, bad: dict[str, str],
                                                names: str) -> None:
    from pipeline.operations.boot_check import check_worker_configuration

    # given the test configuration (which passes) and one setting wrong
    _clear_caches()
    check_worker_configuration()
    for k, v in bad.items():
        monkeypatch.setenv(k, v)
    _clear_caches()
    try:
        # when a worker would boot, then it stops with one line naming the variable
        with pytest.raises(SystemExit) as e:
            check_worker_configuration()
        msg = str(e.value.code)
        assert msg.startswith("configuration error: ") and names in msg and "\n" not in msg, msg
    finally:
        monkeypatch.undo()
        _clear_caches()


def test_fair_turns_settings_read_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    """USER_STORIES_IN_FLIGHT (default 8, 0 = no cap) and FAIR_PRIORITY (default on; true/false,
    1/0, yes/no in any case, with one line naming the variable otherwise)."""
    from pipeline.config import parse_bool, settings

    for name in ("USER_STORIES_IN_FLIGHT", "FAIR_PRIORITY"):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    try:
        assert (settings().user_stories_in_flight, settings().fair_priority) == (8, True)
        monkeypatch.setenv("USER_STORIES_IN_FLIGHT", "0")
        monkeypatch.setenv("FAIR_PRIORITY", " No ")
        _clear_caches()
        assert (settings().user_stories_in_flight, settings().fair_priority) == (0, False)
    finally:
        monkeypatch.undo()
        _clear_caches()
    assert [parse_bool("X", v, False) for v in ("true", "1", "yes", "YES", "on")] == [True] * 5
    assert [parse_bool("X", v, True) for v in ("false", "0", "no", "Off")] == [False] * 4
    assert parse_bool("X", None, True) is True and parse_bool("X", "  ", False) is False
    with pytest.raises(SystemExit) as e:
        parse_bool("FAIR_PRIORITY", "maybe", True)
    assert str(e.value.code) == ("configuration error: FAIR_PRIORITY='maybe' is not a yes/no value; "
                                 "allowed: true/false, 1/0, yes/no")
