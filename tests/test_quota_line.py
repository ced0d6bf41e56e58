"""The line of steps waiting for a concurrent-job slot (pipeline/kernel/quota_line.py) on the real
Redis, and the simulated remote-job provider (pipeline/providers/simulated_jobs.py) under the
shared cap through a real worker: slots handed on in order, at once."""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.kernel import quota
from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"  # this module's worker only


@pytest.fixture()
def line(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[quota.Quotas, str]]:
    prefix = f"test:line:{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("QUOTA_LINEPROV_CONCURRENT", "1")
    quota.limits.cache_clear()
    yield quota.Quotas(os.environ["REDIS_URL"], prefix=prefix), prefix
    quota.limits.cache_clear()
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in r.scan_iter(f"{prefix}:*"):
        r.delete(key)
    r.close()


def test_freed_slot_goes_to_the_oldest_waiter_first(line: tuple[quota.Quotas, str]) -> None:
    q, _ = line
    # given one slot held by A, and B, C, D queued in that order (B queues again later: it keeps its place)
    assert q.acquire("lineprov", "A", 60) == 0
    for h in ("B", "C", "D"):
        assert q.wait_in_line("lineprov", h, f"t{h}", f'{{"task": "{h}"}}')
    assert q.wait_in_line("lineprov", "B", "tB2", '{"task": "B2"}')
    assert q.waiting("lineprov") == ["B", "C", "D"]
    # when A gives its slot back
    woken = q._line.release("lineprov", 1, "A", True)
    # then B's latest message is sent (the slot is B's now), and C's too, early (pre-woken: its step
    # gets ready and waits for the next slot); a newcomer cannot take B's slot, nor can C
    assert woken == ['tB2\n{"task": "B2"}', 'tC\n{"task": "C"}']
    assert q.acquire("lineprov", "E", 60) > 0 and q.acquire("lineprov", "C", 60) > 0
    assert q.acquire("lineprov", "B", 60) == 0  # B's woken step renews its granted slot
    # and each release hands on to the next in line, in order: C (its message already sent), with
    # D pre-woken; then D
    assert q._line.release("lineprov", 1, "B", True) == ['tD\n{"task": "D"}']
    assert q.acquire("lineprov", "D", 60) > 0 and q.acquire("lineprov", "C", 60) == 0
    assert q._line.release("lineprov", 1, "C", True) == []
    assert q.acquire("lineprov", "D", 60) == 0
    assert q.waiting("lineprov") == []
    # a woken wait's backstop copy is recognised
    q._line.mark_woken("tD")
    assert q.superseded("tD") and not q.superseded("tX")


def test_a_pre_woken_step_waits_in_its_thread_for_the_next_slot(line: tuple[quota.Quotas, str]) -> None:
    import threading

    q, _ = line
    q.max_inline_wait = 5.0
    # given A holding the one slot and B first in line
    assert q.acquire("lineprov", "A", 60) == 0
    assert q.wait_in_line("lineprov", "B", "tB", "{}")
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(q.wait_turn("lineprov", "B", 60)))
    # when B's step waits for its turn in its thread and A gives its slot back
    t0 = time.monotonic()
    t.start()
    time.sleep(0.2)
    assert q._line.release("lineprov", 1, "A", True) == []  # B is waiting inline: nothing to send
    t.join(5)
    # then B has the slot at once
    assert got == [True] and time.monotonic() - t0 < 1.0
    assert q.acquire("lineprov", "E", 60) > 0


def test_waiter_ahead_keeps_a_freed_slot_from_a_newcomer(line: tuple[quota.Quotas, str]) -> None:
    q, _ = line
    # given A holding the one slot, B in line
    assert q.acquire("lineprov", "A", 0.3) == 0
    assert q.wait_in_line("lineprov", "B", "tB", "{}")
    # when A's lease runs out (its worker died: nobody released)
    time.sleep(0.4)
    # then a newcomer still waits behind B, and B takes the slot when it comes back
    assert q.acquire("lineprov", "E", 60) > 0
    assert q.acquire("lineprov", "B", 60) == 0
    assert q.waiting("lineprov") == []


@pytest.mark.workers
def test_simulated_jobs_run_back_to_back_under_the_cap(clean_db: Db, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    # given images made as simulated remote jobs of 0.3 s, at most one running at once
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "IMAGE_PROVIDER": "simulated",
           "SIMULATED_JOB_SECONDS": "0.3", "SIMULATED_JOB_IMAGES": "instant", "QUOTA_REPLICATE_CONCURRENT": "1",
           "QUOTA_REPLICATE_RPS": "0", "STORY_PAGE_COUNT": "3"}
    w = WorkerProcess(tmp_path / "w.log", env=env, concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    story = clean_db.story(clean_db.photo(astronaut_png()))
    # when a 3-page story runs (6 jobs: every page's illustration then its personalization)
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=60)
    assert row["status"] == "completed", row["error_message"]
    from pipeline.providers.simulated_jobs import job_records

    jobs = sorted(job_records(redis.Redis.from_url(BROKER)), key=lambda j: j["created"])
    # then one job per page step, never two running at once
    assert len(jobs) == 6
    for a, b in zip(jobs, jobs[1:], strict=False):
        assert b["created"] >= a["created"] + a["seconds"] - 0.005, (a, b)
    # and each freed slot was handed on at once (woken, not a countdown of seconds): the gaps
    # between one job's end and the next one's start stay well under a second
    gaps = [b["created"] - (a["created"] + a["seconds"]) for a, b in zip(jobs, jobs[1:], strict=False)]
    assert max(gaps) < 1.0, gaps
    rows = clean_db.all("SELECT j.provider, j.status FROM provider_jobs j JOIN story_pages p ON p.id = j.page_id "
                        "WHERE p.story_id = :s", s=story)
    assert {(r["provider"], r["status"]) for r in rows} == {("simulated", "succeeded")}


def test_status_polls_and_downloads_do_not_spend_the_create_limit() -> None:
    # Replicate: create 600/min, every other endpoint 3000/min, output files on another host
    # (https://replicate.com/docs/topics/predictions/rate-limits)
    assert quota.rate_bucket("replicate", "create") == "replicate"
    assert {quota.rate_bucket("replicate", op) for op in ("get", "list", "cancel")} == {"replicate_api"}
    assert quota.rate_bucket("replicate", "download") == "replicate_files"
    assert quota.rate_bucket("openai", "chat") == "openai"


_WAKER = """
import sys, time, redis
from pipeline.providers.simulated_jobs import PREFIX
from pipeline.stories.remote_jobs import wake_job
r, woken, deadline = redis.Redis.from_url(sys.argv[1]), set(), time.time() + 30
while len(woken) < int(sys.argv[2]) and time.time() < deadline:
    now = time.time()
    for raw in r.zrange(PREFIX + ":all", 0, -1):
        jid = raw.decode()
        created, seconds = r.hmget(PREFIX + ":" + jid, "created_ms", "seconds")
        if jid not in woken and created and int(created) / 1000 + float(seconds) < now and wake_job("simulated", jid):
            woken.add(jid)
    time.sleep(0.02)
print(len(woken))
"""


@pytest.mark.workers
def test_a_completion_event_wakes_the_follow_at_once(clean_db: Db, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    import subprocess
    import sys

    from tests.support import ROOT

    flush_redis(BROKER)
    # given a worker that would look at a running job only every 4 s (no adaptive polling)
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "IMAGE_PROVIDER": "simulated",
           "SIMULATED_JOB_SECONDS": "0.2", "SIMULATED_JOB_IMAGES": "instant", "JOB_POLL_ADAPTIVE": "false",
           "JOB_POLL_INTERVAL": "4", "STORY_PAGE_COUNT": "1"}
    w = WorkerProcess(tmp_path / "w.log", env=env, concurrency=4)
    request.addfinalizer(w.stop)
    w.start()
    story = clean_db.story(clean_db.photo(astronaut_png()))
    # when something (a provider's webhook) calls wake_job as soon as each job has ended
    waker = subprocess.Popen([sys.executable, "-c", _WAKER, BROKER, "2"], cwd=ROOT, env={**os.environ, **env},
                             stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=30)
    took = time.monotonic() - t0
    out, _ = waker.communicate(timeout=30)
    # then the story is done long before two 4 s looks: each follow was sent at once
    assert row["status"] == "completed", row["error_message"]
    assert out.strip() == "2"
    assert took < 6.0, took
