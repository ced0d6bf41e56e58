"""Waiting out a short remote job's end in the step's thread (pipeline/kernel/job_timing.py
``wait_end``, JOB_INLINE_WAIT) and the pre-woken step getting ready while the running job ends
(pipeline/kernel/quota_line.py ``wait_turn(ready=...)``): on the real Redis, and through a real
worker with the simulated remote-job provider."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.kernel import job_timing, quota
from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"  # this module's worker only

DB = pytest.mark.db  # the real Redis; the test with real workers is in the workers tier


@pytest.fixture()
def kind() -> Iterator[str]:
    """A job kind of its own (its average duration in Redis), removed after."""
    k = f"test-{uuid.uuid4().hex[:8]}"
    yield k
    job_timing._client().delete(job_timing._key("waitprov", k))


@DB
def test_a_short_job_is_waited_out_in_the_thread_looking_at_its_expected_end(kind: str) -> None:
    # given jobs of this kind that take 0.3 s (the average), and one that ends 0.3 s after it started
    job_timing.observe("waitprov", kind, 0.3)
    t0 = time.monotonic()
    looks: list[float] = []

    def look() -> str | None:
        looks.append(time.monotonic() - t0)
        return "ended" if time.monotonic() - t0 >= 0.3 else None

    # when the step that created it waits for it in its thread
    got = job_timing.wait_end("waitprov", kind, 0.0, look)
    # then it sees the end with its first look, at the expected end (no look before it)
    assert got == "ended"
    assert len(looks) == 1 and 0.3 <= looks[0] < 0.45, looks


@DB
def test_the_wait_in_the_thread_is_bounded_and_gives_up_for_a_job_that_runs_long(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given JOB_INLINE_WAIT=0.3 and a job expected to take 0.1 s that keeps running
    monkeypatch.setenv("JOB_INLINE_WAIT", "0.3")
    job_timing.observe("waitprov", kind, 0.1)
    looks: list[float] = []
    t0 = time.monotonic()
    # when the step waits for it in its thread
    got = job_timing.wait_end("waitprov", kind, 0.0, lambda: looks.append(time.monotonic() - t0))
    # then it gives up within the bound (the caller re-schedules), having looked on the re-scheduled
    # looks' schedule (at the expected end, then a quarter of the time overdue, at least 20 ms apart)
    assert got is None and time.monotonic() - t0 <= 0.35
    assert 2 <= len(looks) <= 10, looks
    assert all(b - a >= 0.019 for a, b in zip(looks, looks[1:], strict=False)), looks


@DB
def test_no_wait_in_the_thread_for_a_job_whose_end_is_far_or_unknown(kind: str) -> None:
    looks: list[int] = []
    # given no job of this kind ended yet: its end is unknown, the step re-schedules (no look)
    assert job_timing.wait_end("waitprov", kind, 0.0, lambda: looks.append(1)) is None
    # given jobs of this kind that take 3 s: one that ran 1 s is not waited for (2 s > JOB_INLINE_WAIT)
    job_timing.observe("waitprov", kind, 3.0)
    t0 = time.monotonic()
    assert job_timing.wait_end("waitprov", kind, 1.0, lambda: looks.append(1)) is None
    assert looks == [] and time.monotonic() - t0 < 0.05


@pytest.mark.parametrize("env", [{"JOB_INLINE_WAIT": "0"}, {"JOB_POLL_ADAPTIVE": "false"}])
@DB
def test_no_wait_in_the_thread_when_it_is_off(kind: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # given the wait in the thread off (or the looks not adaptive: every JOB_POLL_INTERVAL, as before)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    job_timing.observe("waitprov", kind, 0.05)
    looks: list[int] = []
    # when a step would wait for a job's end
    got = job_timing.wait_end("waitprov", kind, 0.0, lambda: looks.append(1))
    # then it does not: no look, the caller re-schedules as before (with no lead)
    assert got is None and looks == []
    assert job_timing.look_lead() == 0.0


@DB
def test_the_threads_waiting_per_process_are_bounded(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given at most one thread of this process waiting for a job's end, and one waiting already
    monkeypatch.setenv("JOB_INLINE_THREADS", "1")
    job_timing.observe("waitprov", kind, 0.3)
    started, results = threading.Event(), []

    def first() -> None:
        started.set()
        results.append(job_timing.wait_end("waitprov", kind, 0.0, lambda: "first"))

    t = threading.Thread(target=first)
    t.start()
    started.wait(2)
    time.sleep(0.05)
    # when a second step would wait for its job's end
    t0 = time.monotonic()
    second = job_timing.wait_end("waitprov", kind, 0.0, lambda: "second")
    # then it does not wait (it re-schedules), and the first one's wait ends as usual
    assert second is None and time.monotonic() - t0 < 0.05
    t.join(2)
    assert results == ["first"]


@DB
def test_a_re_scheduled_look_comes_a_lead_before_the_expected_end(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given jobs of this kind that take 2 s
    job_timing.observe("waitprov", kind, 2.0)
    monkeypatch.setenv("JOB_POLL_INTERVAL", "3")
    # then a re-scheduled look at a job just started comes JOB_LOOK_LEAD (0.05 s) before its end, the
    # rest waited out in the thread; a look in the thread comes at the end; close to the end, no lead
    assert job_timing.next_look("waitprov", kind, 0.0) == pytest.approx(1.952)
    assert job_timing.next_look("waitprov", kind, 0.0, lead=False) == pytest.approx(2.002)
    assert job_timing.next_look("waitprov", kind, 1.95) == pytest.approx(0.052)
    # and with the wait in the thread off, or the looks not adaptive, as before
    monkeypatch.setenv("JOB_INLINE_WAIT", "0")
    assert job_timing.next_look("waitprov", kind, 0.0) == pytest.approx(2.002)
    monkeypatch.setenv("JOB_POLL_ADAPTIVE", "false")
    assert job_timing.next_look("waitprov", kind, 0.0) == 3.0


@pytest.fixture()
def line(monkeypatch: pytest.MonkeyPatch) -> Iterator[quota.Quotas]:
    prefix = f"test:line:{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("QUOTA_LINEPROV_CONCURRENT", "1")
    quota.limits.cache_clear()
    q = quota.Quotas(os.environ["REDIS_URL"], prefix=prefix)
    q.max_inline_wait = 5.0
    yield q
    quota.limits.cache_clear()
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in r.scan_iter(f"{prefix}:*"):
        r.delete(key)
    r.close()


@DB
def test_the_pre_woken_step_gets_ready_while_the_running_job_ends(line: quota.Quotas) -> None:
    q = line
    # given A holding the one slot, B first in line and C behind it
    assert q.acquire("lineprov", "A", 60) == 0
    assert q.wait_in_line("lineprov", "B", "tB", "{}")
    assert q.wait_in_line("lineprov", "C", "tC", "{}")
    readied: list[str] = []
    # when C (not first) waits for its turn: it is not readied, it queues again
    assert not q.wait_turn("lineprov", "C", 60, ready=lambda: readied.append("C"))
    # and B (first) waits for its turn while A's job ends, A releasing while B is getting ready
    got: list[bool] = []

    def ready() -> None:
        readied.append("B")
        q._line.release("lineprov", 1, "A", True)  # the slot is granted during B's preparation

    t0 = time.monotonic()
    got.append(q.wait_turn("lineprov", "B", 60, ready=ready))
    # then only B got ready, and the grant that came meanwhile is B's at once
    assert readied == ["B"] and got == [True] and time.monotonic() - t0 < 1.0
    assert q.acquire("lineprov", "C", 60) > 0


def _step_lines(log: Path, stages: tuple[str, ...]) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "step {" in line:
            rec = json.loads(line[line.index("step {") + 5:])
            if rec.get("stage") in stages:
                out.append(rec)
    return out


@pytest.mark.workers
@pytest.mark.parametrize("inline", [True, False])
def test_short_jobs_are_followed_in_the_creating_run(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest,
                                                      inline: bool) -> None:
    flush_redis(BROKER)
    # given images made as simulated remote jobs of 0.3 s, no cap on running jobs; the wait in the
    # thread on (the default) or off (JOB_INLINE_WAIT=0: every look re-scheduled, as before)
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "IMAGE_PROVIDER": "simulated",
           "SIMULATED_JOB_SECONDS": "0.3", "SIMULATED_JOB_IMAGES": "instant", "QUOTA_REPLICATE_CONCURRENT": "0",
           "QUOTA_REPLICATE_RPS": "0", "STORY_PAGE_COUNT": "2", "LOG_LEVEL": "INFO",
           **({} if inline else {"JOB_INLINE_WAIT": "0"})}
    # and the jobs' average duration known (jobs of both kinds ended before)
    r = redis.Redis.from_url(BROKER)
    for k in ("base", "personalize"):
        r.set(job_timing._key("simulated", k), "0.3")
    w = WorkerProcess(tmp_path / "w.log", env=env, concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    story = clean_db.story(clean_db.photo(astronaut_png()))
    # when a 2-page story runs (4 jobs)
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=60)
    assert row["status"] == "completed", row["error_message"]
    rows = clean_db.all("SELECT j.status FROM provider_jobs j JOIN story_pages p ON p.id = j.page_id "
                        "WHERE p.story_id = :s", s=story)
    assert [r["status"] for r in rows] == ["succeeded"] * 4
    lines = _step_lines(tmp_path / "w.log", ("image", "personalization"))
    waiting = [x for x in lines if x["outcome"] == "waiting"]
    done = [x for x in lines if x["outcome"] == "done"]
    assert len(done) == 4, lines
    if inline:
        # then each job was created, waited out and its output stored by one run of its step: no
        # re-scheduled look through the broker
        assert waiting == [], lines
        assert all("wait" in x["phases"] for x in done), done  # type: ignore[operator]
    else:
        # then (off) each job's end was seen by a re-scheduled look, as before
        assert len(waiting) >= 4, lines


@DB
def test_a_pre_woken_step_that_cannot_get_ready_leaves_the_line(line: quota.Quotas) -> None:
    q = line
    # given A holding the one slot, B first in line and C behind it
    assert q.acquire("lineprov", "A", 60) == 0
    assert q.wait_in_line("lineprov", "B", "tB", "{}")
    assert q.wait_in_line("lineprov", "C", "tC", '{"task": "C"}')

    def broken() -> None:
        raise OSError("the photo cannot be read")

    # when B's input cannot be built while it waits for its turn
    with pytest.raises(OSError):
        q.wait_turn("lineprov", "B", 60, ready=broken)
    # then B has left the line: A's release hands the slot to C, not to a step that is not waiting
    assert q.waiting("lineprov") == ["C"]
    assert q._line.release("lineprov", 1, "A", True) == ['tC\n{"task": "C"}']
    assert q.acquire("lineprov", "B", 60) > 0 and q.acquire("lineprov", "C", 60) == 0
