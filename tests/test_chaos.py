"""Faults, for real: a worker SIGKILLed in each stage, Redis and PostgreSQL restarted mid-run (the
test's own redis-server and PostgreSQL cluster, tests/services.py: never the machine's), a
provider down for a while. Nothing lost (every story completes, or fails with a reason and is
recovered by `retry`), nothing done twice (no page step completed twice, no page with two
provider jobs or two stored artefacts).

Images run as Replicate predictions against the fake server, so "two provider jobs" is
something the test can count. Recovery is unattended: celery beat sweeps every second.
Longer runs: CHAOS_ROUNDS=5 ./run test tests/test_chaos.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import services
from tests.fakes.openai_server import DEFAULT_KEY, FakeOpenAI
from tests.fakes.replicate_server import FakeReplicate
from tests.services import OwnPostgres, OwnRedis
from tests.support import (
    ROOT,
    Db,
    WorkerProcess,
    astronaut_png,
    consume_all,
    external_send,
    flush_redis,
    standby_queue,
    start_workers,
    stop_workers,
)

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 2}"  # this xdist process's own
TOKEN = "r8_chaos_token_0123456789"
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))


@pytest.fixture()
def replicate() -> Iterator[FakeReplicate]:
    fake = FakeReplicate(TOKEN, run_seconds=1.0).start()
    yield fake
    fake.stop()


def _env(fake: FakeReplicate, **extra: str) -> dict[str, str]:
    return {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "STEP_LEASE_SECONDS": "3",
            "BROKER_VISIBILITY_TIMEOUT": "3600",  # only the sweeper recovers: deterministic
            "SIMULATED_PROVIDER_LATENCY": "0.8", "SIMULATED_STORAGE_LATENCY": "0.3",
            "IMAGE_PROVIDER": "replicate", "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url,
            "JOB_POLL_INTERVAL": "0.2", "STEP_RETRY_BACKOFF_CAP": "1", "STORY_PAGE_COUNT": "2", **extra}


class Cluster:
    """Worker processes and a beat, all on this test's broker; stopped at the end."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest, env: dict[str, str]) -> None:
        self.tmp_path, self.request, self.env = tmp_path, request, env
        self.workers: list[WorkerProcess] = []
        request.addfinalizer(lambda: stop_workers(*self.workers))  # all at once: each takes seconds to exit

    def worker(self) -> WorkerProcess:
        w = self._new()
        w.start()
        return w

    def worker_and_standby(self) -> tuple[WorkerProcess, WorkerProcess]:
        """A worker and a standby booted side by side, both ready: the standby, on a queue of its own,
        takes no work until :meth:`take_over` (the moment "a new worker starts", without its boot)."""
        w, spare = self._new(), self._new()
        spare.queues = standby_queue(spare)
        start_workers(w, spare)
        return w, spare

    def take_over(self, spare: WorkerProcess) -> WorkerProcess:
        """The standby ``spare`` consumes every queue from now on (tests/support.py ``consume_all``)."""
        consume_all(self.env["CELERY_BROKER_URL"], spare)
        return spare

    def _new(self) -> WorkerProcess:
        w = WorkerProcess(self.tmp_path / f"worker{len(self.workers)}.log", env=self.env, concurrency=8)
        w.killed = False  # type: ignore[attr-defined]
        self.workers.append(w)
        return w

    def revive(self) -> int:
        """What a process supervisor (systemd Restart=always, Kubernetes) does: start a new
        worker for each one that exited. Returns how many were restarted."""
        dead = [w for w in self.workers
                if w.proc is not None and w.proc.poll() is not None and not w.killed]  # type: ignore[attr-defined]
        for w in dead:
            w.killed = True  # type: ignore[attr-defined]  # counted once
            self.worker()
        return len(dead)

    def beat(self) -> None:
        log = open(self.tmp_path / "beat.log", "ab")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO",
             "--schedule", str(self.tmp_path / "beat-schedule")],
            cwd=ROOT, env={**os.environ, **self.env, "SWEEP_INTERVAL": "1"}, stdout=log, stderr=subprocess.STDOUT)
        self.request.addfinalizer(lambda: (proc.kill(), proc.wait(10), log.close()))

    def done_counts(self) -> dict[tuple[str, str], int]:
        seen: dict[tuple[str, str], int] = {}
        for w in self.workers:
            for line in w.log.read_text(errors="replace").splitlines():
                if "storycreator.step: step " in line:
                    e = json.loads(line.split("storycreator.step: step ", 1)[1])
                    if e["outcome"] == "done" and "page" in e:
                        seen[(e["stage"], e["page"])] = seen.get((e["stage"], e["page"]), 0) + 1
        return seen


def _assert_nothing_twice(db: Db, cluster: Cluster, fake: FakeReplicate, stories: list[str]) -> None:
    time.sleep(1.0)  # duplicates still in flight must turn out to be no-ops
    counts = cluster.done_counts()
    assert counts and max(counts.values()) == 1, {k: v for k, v in counts.items() if v > 1}
    jobs = db.all("""SELECT page_id, stage, count(*) AS n, bool_and(status = 'succeeded') AS ok
                     FROM provider_jobs GROUP BY 1, 2""")
    pages = sum(len(db.pages(s)) for s in stories)
    assert len(jobs) == 2 * pages and all(j["n"] == 1 and j["ok"] for j in jobs), jobs
    inputs = [repr(sorted(p["input"].items())) for p in fake.created]
    assert len(inputs) == len(set(inputs)) == 2 * pages
    for s in stories:
        files = sorted(p.relative_to(db.storage / "stories" / s).as_posix()
                       for p in (db.storage / "stories" / s).rglob("*") if p.is_file())
        n = len(db.pages(s))
        expected = sorted([f"pages/{i:02d}/{v}.png" for i in range(1, n + 1) for v in ("base", "personalized")]
                          + ["book.html", "book.pdf"])
        assert files == expected, files


STAGE_IN_FLIGHT = {
    "analysis": "SELECT count(*) AS n FROM photos WHERE ai_processing_status = 'processing'",
    "text": "SELECT count(*) AS n FROM story_pages WHERE text_generation_status = 'processing'",
    "image": "SELECT count(*) AS n FROM story_pages WHERE image_generation_status = 'processing'",
    "personalization": "SELECT count(*) AS n FROM story_pages WHERE personalization_status = 'processing'",
    # every page done and the story not yet: its completion (the book) is being written
    "finish": """SELECT count(*) AS n FROM stories s WHERE s.status = 'processing'
                 AND EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id)
                 AND NOT EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id
                                 AND p.personalization_status IS DISTINCT FROM 'completed')""",
}


@pytest.mark.timeout(240 * ROUNDS)
@pytest.mark.parametrize("stage", list(STAGE_IN_FLIGHT))
def test_worker_killed_in_each_stage(stage: str, clean_db: Db, replicate: FakeReplicate, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    for _ in range(ROUNDS):
        flush_redis(BROKER)
        clean_db.truncate()
        replicate.created.clear()
        cluster = Cluster(tmp_path, request, _env(replicate))
        first, spare = cluster.worker_and_standby()  # the spare takes nothing until it takes over
        # given a story running
        story = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(BROKER, "stories.generate", {"story_id": story})
        # when the worker is SIGKILLed while the stage is in flight
        deadline = time.monotonic() + 90
        while clean_db.one(STAGE_IN_FLIGHT[stage])["n"] == 0:
            assert time.monotonic() < deadline, f"{stage} never ran\n{first.tail()}"
            assert clean_db.story_row(story)["status"] != "completed", "finished before the kill"
            time.sleep(0.01)
        first.kill()
        first.killed = True  # type: ignore[attr-defined]
        # and a new worker and the sweeper start (nobody types a command)
        cluster.take_over(spare)
        cluster.beat()
        # then the story completes, and nothing was done twice
        row = clean_db.wait_story(story, timeout=150)
        assert row["status"] == "completed", (row["error_message"], cluster.workers[-1].tail())
        _assert_nothing_twice(clean_db, cluster, replicate, [story])
        stop_workers(*cluster.workers)


def _restart_redis(server: OwnRedis) -> None:
    """SHUTDOWN NOSAVE and a new redis-server on the same port: this test's own, nobody else's."""
    server.restart()


def _restart_postgres(cluster: OwnPostgres) -> None:
    """pg_ctl restart -m fast (every session ended, the server down, then up): this test's own cluster."""
    cluster.restart("fast")


def _can_restart() -> str | None:
    """Why this test cannot start its own Redis and PostgreSQL here, or None."""
    return services.missing()


@pytest.fixture()
def own(tmp_path: Path) -> Iterator[tuple[OwnRedis, OwnPostgres, Db]]:
    """A redis-server and a PostgreSQL cluster of this test's own (tests/services.py), the
    project's schema applied: what the restart test restarts, so nothing else on the machine is."""
    if why := _can_restart():
        if os.environ.get("CI"):
            raise AssertionError(f"cannot start own services on this machine: {why}")
        pytest.skip(f"cannot start own services here: {why}")
    with services.own_redis(tmp_path / "redis") as server, services.own_postgres() as pg:
        db = pg.database(Path(os.environ["LOCAL_STORAGE_ROOT"]))
        try:
            yield server, pg, db
        finally:
            db.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", ["redis", "postgres"])
def test_service_restarted_mid_run(service: str, own: tuple[OwnRedis, OwnPostgres, Db], replicate: FakeReplicate,
                                   tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Its own Redis and PostgreSQL (the `own` fixture), restarted below: never the machine's.
    server, pg, db = own
    broker = f"{server.url}/0"
    cluster = Cluster(tmp_path, request, _env(replicate, CELERY_BROKER_URL=broker, REDIS_URL=broker,
                                              DATABASE_URL=db.url))
    cluster.worker()
    cluster.beat()
    # given three stories in progress
    stories = [db.story(db.photo(astronaut_png())) for _ in range(3)]
    for s in stories:
        external_send(broker, "stories.generate", {"story_id": s})
    deadline = time.monotonic() + 60
    while db.one(STAGE_IN_FLIGHT["image"])["n"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # when the service restarts under them (Redis keeps nothing on disk here: queued messages,
    # reserved retries and quota counters are all lost)
    if service == "redis":
        _restart_redis(server)
    else:
        _restart_postgres(pg)
    db.engine.dispose()  # the test's own connections died with PostgreSQL
    # then the workers reconnect (or, where kombu's reconnect crashes the worker, its supervisor
    # restarts it); every story completes, or fails with a reason and a retry brings it back;
    # none stays stuck
    deadline = time.monotonic() + 150
    while any(db.story_row(s)["status"] not in ("completed", "failed") for s in stories):
        restarted = cluster.revive()
        if restarted:
            print(f"\n{restarted} worker(s) exited after the {service} restart; restarted as a supervisor would")
        assert time.monotonic() < deadline, [db.story_row(s)["status"] for s in stories]
        time.sleep(0.5)
    for s in stories:
        row = db.wait_story(s, timeout=150)
        if row["status"] == "failed":
            assert row["error_message"], row
            retry = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "retry", "--story", s], cwd=ROOT,
                                   env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=60)
            assert retry.returncode == 0, retry.stdout + retry.stderr
            row = db.wait_story(s, timeout=150)
        assert row["status"] == "completed", (row["error_message"], cluster.workers[0].tail())
    counts = cluster.done_counts()
    assert max(counts.values()) == 1, {k: v for k, v in counts.items() if v > 1}


@pytest.mark.timeout(240)
def test_provider_down_for_a_while_then_back(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    openai = FakeOpenAI().start()
    request.addfinalizer(openai.stop)
    port = int(openai.base_url.rsplit(":", 1)[1].split("/")[0])
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "TEXT_PROVIDER": "openai",
           "OPENAI_API_KEY": DEFAULT_KEY, "OPENAI_BASE_URL": openai.base_url, "OPENAI_TIMEOUT": "2",
           "STEP_RETRY_BACKOFF_CAP": "2", "STEP_MAX_RETRIES": "6"}
    cluster = Cluster(tmp_path, request, env)
    cluster.worker()
    # given OpenAI answering 503 for its next 6 requests, then refusing connections for 3 s
    openai.script([("status", 503, {}, {"error": {"message": "overloaded", "type": "server_error"}})] * 6)
    stories = [clean_db.story(clean_db.photo(astronaut_png())) for _ in range(2)]
    for s in stories:
        external_send(BROKER, "stories.generate", {"story_id": s})
    deadline = time.monotonic() + 30
    while len(openai.requests) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    openai.stop()
    time.sleep(3.0)
    # when it comes back on the same address
    back = FakeOpenAI().start(port=port)
    request.addfinalizer(back.stop)
    # then the stories complete: the errors were retried with backoff, within the bound
    for s in stories:
        row = clean_db.wait_story(s, timeout=120)
        assert row["status"] == "completed", row["error_message"]
    retried = clean_db.all("SELECT attempt, message FROM step_errors WHERE NOT permanent")
    assert retried and max(r["attempt"] for r in retried) < 6
    assert any("503" in r["message"] for r in retried), [r["message"] for r in retried]


@pytest.mark.timeout(240)
def test_duplicate_delivery_of_every_task_type_mid_run(clean_db: Db, replicate: FakeReplicate, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    cluster = Cluster(tmp_path, request, _env(replicate, SIMULATED_PROVIDER_LATENCY="0.3"))
    cluster.worker()
    # given a story started by two clients at once
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story}, times=2)
    external_send(BROKER, "stories.generate", {"story_id": story})
    external_send(BROKER, "photos.analyze", {"photo_id": photo}, times=2)
    deadline = time.monotonic() + 60
    while not clean_db.pages(story):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # when every task of every page, and the completion, is delivered twice more while it runs
    for _ in range(3):
        for p in clean_db.pages(story):
            for name in ("pages.write_text", "pages.draw_base", "pages.personalize"):
                external_send(BROKER, name, {"page_id": str(p["id"])}, times=2)
        external_send(BROKER, "stories.finish", {"story_id": story}, times=2)
        time.sleep(0.7)
    # then the story completes once: no page step twice, one prediction per page step, one file each
    assert clean_db.wait_story(story, timeout=120)["status"] == "completed"
    _assert_nothing_twice(clean_db, cluster, replicate, [story])


DRAIN_STORIES = int(os.environ.get("CHAOS_DRAIN_STORIES", "24"))


@pytest.mark.timeout(900)
def test_drain_a_deep_queue(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Thousands of queued tasks on the threads pool: all complete, no stall, nothing left
    unacknowledged. Default 24 stories x 12 pages (912 tasks); CHAOS_DRAIN_STORIES=150 gives
    the 5,700-task run."""
    flush_redis(BROKER)
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "STORY_PAGE_COUNT": "12",
           "VISION_PROVIDER": "instant", "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "instant"}
    cluster = Cluster(tmp_path, request, env)
    # given every story queued before any worker runs
    stories = [clean_db.story(clean_db.photo(astronaut_png())) for _ in range(DRAIN_STORIES)]
    for i in range(0, len(stories), 50):
        subprocess.run([sys.executable, str(ROOT / "tests" / "external_client.py"), BROKER, "stories.generate",
                        *[json.dumps({"story_id": s}) for s in stories[i:i + 50]]], cwd="/", check=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")})
    r = redis.Redis.from_url(BROKER)
    assert r.llen("celery") == len(stories)
    # when one worker drains it
    cluster.worker()
    deadline = time.monotonic() + 800
    while True:
        done = clean_db.one("SELECT count(*) FILTER (WHERE status = 'completed') AS ok, "
                            "count(*) FILTER (WHERE status = 'failed') AS bad FROM stories")
        assert done["bad"] == 0
        if done["ok"] == len(stories):
            break
        assert time.monotonic() < deadline, f"{done['ok']} of {len(stories)} after the deadline"
        time.sleep(0.5)
    # then nothing is left in any queue or unacknowledged, and every page step ran exactly once
    time.sleep(1.0)
    assert sum(r.llen(q) for q in ("celery", "photos", "stories", "text", "images", "personalize")) == 0
    assert r.hlen("unacked") == 0
    steps_done = sum(cluster.done_counts().values())
    assert steps_done == 3 * 12 * len(stories)
