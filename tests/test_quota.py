"""The shared provider quotas (pipeline/kernel/quota.py) on the real Redis, across processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from pipeline.kernel import quota
from tests.support import peak_in_window


def _taker(provider: str, n: int, env: dict[str, str], out: mp.Queue) -> None:  # type: ignore[type-arg]
    os.environ.update(env)
    q = quota.Quotas(os.environ["REDIS_URL"], prefix=env["PREFIX"])
    q.max_inline_wait = 30
    stamps = []
    for _ in range(n):
        q.take(provider)
        stamps.append(time.time())
    out.put(stamps)


@pytest.fixture()
def prefix() -> Iterator[str]:
    p = f"test:quota:{uuid.uuid4().hex[:8]}"
    yield p
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in r.scan_iter(f"{p}:*"):
        r.delete(key)
    r.close()


def test_rate_limit_holds_across_processes(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a limit of 10 requests per second shared by three processes that each want 12 now
    env = {"QUOTA_FAKEPROV_RPS": "10", "QUOTA_FAKEPROV_RPM": "0", "PREFIX": prefix,
           "REDIS_URL": os.environ["REDIS_URL"]}
    quota.limits.cache_clear()
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_taker, args=("fakeprov", 12, env, out)) for _ in range(3)]
    t0 = time.time()
    for p in procs:
        p.start()
    stamps = [t for _ in procs for t in out.get(timeout=60)]
    for p in procs:
        p.join(10)
    # then no one-second window saw more than 10, and the 36 went through at about the limit
    assert len(stamps) == 36
    assert peak_in_window(stamps, 1.0) <= 10, peak_in_window(stamps, 1.0)
    span = max(stamps) - min(stamps)
    assert 3.5 <= span <= 6.5, span  # 35 gaps of 110 ms (limit spacing + 10% margin), plus start-up skew
    assert max(stamps) - t0 < 30


def test_per_minute_limit_spaces_requests(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given 120 requests per minute (one every 0.5 s) and no per-second limit
    monkeypatch.setenv("QUOTA_SLOWPROV_RPM", "120")
    monkeypatch.setenv("QUOTA_SLOWPROV_RPS", "0")
    quota.limits.cache_clear()
    q = quota.Quotas(os.environ["REDIS_URL"], prefix=prefix)
    q.max_inline_wait = 0.1
    # when two requests come at once
    q.take("slowprov")
    # then the second is told to come back in about half a second (a re-scheduled task, not a
    # blocked worker slot), without using up the allowance
    with pytest.raises(quota.QuotaWait) as e:
        q.take("slowprov")
    assert e.value.retry_after is not None and 0.35 < e.value.retry_after <= 0.55
    time.sleep(e.value.retry_after)
    q.take("slowprov")


def test_concurrent_job_slots_are_shared_and_leased(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTA_JOBPROV_CONCURRENT", "2")
    quota.limits.cache_clear()
    a = quota.Quotas(os.environ["REDIS_URL"], prefix=prefix)
    b = quota.Quotas(os.environ["REDIS_URL"], prefix=prefix)  # another worker's connection
    # given two slots, both held (one with a short lease, as if its worker then died)
    assert a.acquire("jobprov", "page-1:image", lease=60) == 0
    assert b.acquire("jobprov", "page-2:image", lease=0.5) == 0
    # then a third job waits, told roughly how long
    wait = a.acquire("jobprov", "page-3:image", lease=60)
    assert 0 < wait <= 0.5
    # and a holder asking again keeps its slot (a re-run of the same step is not a new job)
    assert a.acquire("jobprov", "page-1:image", lease=60) == 0
    # when the dead holder's lease runs out, its slot is free again
    time.sleep(0.6)
    assert b.acquire("jobprov", "page-3:image", lease=60) == 0
    assert a.holders("jobprov") == 2
    # and a released slot is free at once
    a.release("jobprov", "page-1:image")
    assert a.acquire("jobprov", "page-4:image", lease=60) == 0


def test_quota_store_down_is_a_transient_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTA_DOWNPROV_RPS", "5")
    quota.limits.cache_clear()
    q = quota.Quotas("redis://127.0.0.1:1/0")  # nothing listens there
    with pytest.raises(quota.TransientStepError) as e:
        q.take("downprov")
    assert not isinstance(e.value, quota.QuotaWait)  # an outage uses up tries; a full quota doesn't
    assert "Redis" in str(e.value)


def test_bad_limit_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTA_BADPROV_RPS", "lots")
    quota.limits.cache_clear()
    with pytest.raises(SystemExit, match="QUOTA_BADPROV_RPS"):
        quota.limits("badprov")


def teardown_module() -> None:
    quota.limits.cache_clear()
