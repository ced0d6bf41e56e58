"""A Redis restart does not kill a worker (issue 12, item 3; the guard: workers/broker_survival.py).

Celery 5.7.0 closes the lost broker connection after collecting it (celery PR #10242). With
messages the worker holds unacked (delayed retries waiting in its timer: remote image jobs polled
every 0.2 s, each poll a ``task.retry(countdown=...)``), that close raised ``AttributeError:
'NoneType' object has no attribute 'hostname'`` in about half of the Redis restarts and the
worker exited.

- ``test_closing_a_lost_connection_as_celery_does``: the exact sequence in kombu alone, in about a
  second: the unguarded close raises that AttributeError, the guarded one does not, nor does a
  late ack into the old channel.
- ``test_the_guard_switches_itself_off_where_the_bug_is_not``: off below Celery 5.7.0, from a
  Celery named as fixed, and with a kombu that raises its connection error itself.
- ``test_worker_survives_redis_restarts_with_retries_in_its_timer``: the test's own redis-server
  (a free port, never a shared one) restarted 10 times (``SHUTDOWN NOSAVE``, then started again on
  the same port; each time 1-2 s after the worker reconnected) under a few stories in flight, with
  one real ``celery worker`` and a beat (its sweeper re-sends what the emptied Redis lost). Then:
  the worker never exited, every story completed (or failed with a reason and ``retry`` brought it
  back), no page step was done twice and no page step had two prediction jobs.

Only this test's Redis restarts, so the test runs beside others (the ``workers`` tier, not
``chaos``, which restarts the machine's shared services). Longer: ``CHAOS_ROUNDS=5`` (50
restarts). The proof that it catches the bug: ``BROKER_SURVIVAL_GUARD=0`` (the guard stays out of
the worker and of this process; each worker death is counted, a new worker started as a supervisor
would, and the test fails listing them).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.fakes.replicate_server import FakeReplicate
from tests.support import CELERY, ROOT, Db, WorkerProcess, astronaut_png, done_lines, external_send
from workers import broker_survival

TOKEN = "r8_broker_restart_token_0123"
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))
RESTARTS = 10 * ROUNDS
IN_FLIGHT = 3  # stories kept running while Redis restarts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own (nothing on disk), stopped and started on one port."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = _free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.ConnectionError:
                assert self.proc.poll() is None, (self.workdir / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def down(self) -> None:
        """SHUTDOWN NOSAVE: everything queued, unacked or scheduled in it is gone."""
        assert self.proc is not None
        with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it goes
            redis.Redis.from_url(self.url, socket_timeout=5).execute_command("SHUTDOWN", "NOSAVE")
        self.proc.wait(20)

    def restart(self) -> None:
        self.down()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# --- the close path alone ---------------------------------------------------------------------


def _close_as_celery_does(url: str, own_redis: OwnRedis) -> tuple[BaseException | None, BaseException | None]:
    """What a worker's consumer holds when Redis goes away, then what Celery 5.7.0's
    ``on_connection_error_after_connected`` does with it. Returns what escaped Celery's
    ``ignore_errors`` around the close, and what a late ack (a task that finished after the
    reconnect) raised beyond the connection errors ``ack_log_error`` logs."""
    from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT
    from kombu import Connection, Consumer, Exchange, Queue
    from kombu.common import ignore_errors

    conn = Connection(url)
    tasks = Queue("probe", Exchange("probe", type="direct"), routing_key="probe")
    conn.Producer().publish({"n": 1}, exchange=tasks.exchange, routing_key="probe", declare=[tasks])
    held: list[Any] = []
    conn.Consumer(tasks, callbacks=[lambda _body, message: held.append(message)]).consume()
    conn.drain_events(timeout=5)
    assert held, "no message delivered"  # held unacked, as a retry waiting for its ETA
    # the worker's remote-control (pidbox) channel: an auto-delete fanout queue on a second channel
    control = conn.channel()
    pidbox = Queue("probe.pidbox", Exchange("probe.pidbox", type="fanout"), auto_delete=True, exclusive=True)
    Consumer(control, [pidbox], callbacks=[lambda *_: None]).consume()
    conn.default_channel._brpop_start()  # type: ignore[attr-defined]  # an idle consumer has a BRPOP outstanding
    own_redis.down()

    with contextlib.suppress(Exception):  # celery/worker/consumer/consumer.py, 5.7.0, lines 475-478
        conn.collect(socket_timeout=COLLECT_SOCKET_TIMEOUT)
    closing = late_ack = None
    try:
        ignore_errors(conn, conn.close)  # line 487
    except Exception as exc:  # noqa: BLE001 - what would stop the worker
        closing = exc
    try:
        held[0].ack_log_error(logging.getLogger("probe"), conn.connection_errors)
    except Exception as exc:  # noqa: BLE001 - raised in the worker's event loop: it would stop the worker
        late_ack = exc
    return closing, late_ack


@pytest.fixture()
def guard_restored() -> Iterator[None]:
    was_on = broker_survival._original is not None
    yield
    if was_on:
        broker_survival.apply()
    else:
        broker_survival.remove()


@pytest.mark.workers
@pytest.mark.timeout(60)
def test_closing_a_lost_connection_as_celery_does(own_redis: OwnRedis, guard_restored: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # given the installed Celery and kombu, without the guard: the AttributeError that stopped workers
    # (acks written inline as kombu writes them: batched, a late ack is only queued, below)
    if broker_survival.affected()[0]:
        broker_survival.remove()
        monkeypatch.setenv("BROKER_ACK_BATCHING", "false")
        closing, late_ack = _close_as_celery_does(own_redis.url, own_redis)
        assert isinstance(closing, AttributeError) and "hostname" in str(closing), repr(closing)
        assert isinstance(late_ack, AttributeError), repr(late_ack)
        own_redis.start()
        monkeypatch.delenv("BROKER_ACK_BATCHING")
        closing, late_ack = _close_as_celery_does(own_redis.url, own_redis)
        assert late_ack is None, "a batched late ack is queued; its write fails later, logged, not raised"
        own_redis.start()
    # when the guard is in place (as workers/app.py puts it), then the close and the late ack end
    # as connection errors, which Celery handles (ignore_errors; "Couldn't ack")
    broker_survival.apply()
    closing, late_ack = _close_as_celery_does(own_redis.url, own_redis)
    assert closing is None and late_ack is None, (closing, late_ack)


@pytest.mark.unit
def test_the_guard_switches_itself_off_where_the_bug_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import celery
    from kombu.transport import redis as kombu_redis
    from packaging.version import Version

    assert broker_survival.affected()[0]  # celery 5.7.0, kombu 5.7.0 (pyproject.toml)
    monkeypatch.setattr(celery, "__version__", "5.6.3")  # before the close path
    assert not broker_survival.affected()[0]
    monkeypatch.setattr(celery, "__version__", "5.7.1")
    monkeypatch.setattr(broker_survival, "CELERY_FIXED_IN", Version("5.7.1"))  # a Celery with the fix
    assert not broker_survival.affected()[0]
    monkeypatch.setattr(broker_survival, "CELERY_FIXED_IN", None)
    assert broker_survival.affected()[0]

    def fixed_connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:  # a kombu with the fix
        if self.connection.client is None:
            raise redis.ConnectionError("closed")
        return {}

    monkeypatch.setattr(broker_survival, "_original", None)
    monkeypatch.setattr(kombu_redis.Channel, "_connparams", fixed_connparams)
    assert not broker_survival.affected()[0]


# --- a real worker under Redis restarts -------------------------------------------------------


@pytest.fixture()
def replicate() -> Iterator[FakeReplicate]:
    fake = FakeReplicate(TOKEN, run_seconds=1.0).start()
    yield fake
    fake.stop()


TRACEBACK = re.compile(r"^Traceback \(most recent call last\):\n(?:[ \t].*\n)*\S.*$", re.M)
CONNECTED = "celery.worker.consumer.connection: Connected to"


class Supervised:
    """The worker (and a beat), with a count of the worker's exits: each exit is recorded (its
    last traceback) and a new worker started, so a run without the guard can count every death."""

    def __init__(self, tmp_path: Path, env: dict[str, str], request: pytest.FixtureRequest) -> None:
        self.tmp_path, self.env, self.request = tmp_path, env, request
        self.workers: list[WorkerProcess] = []
        self.deaths: list[str] = []

    def start_worker(self) -> None:
        w = WorkerProcess(self.tmp_path / f"worker{len(self.workers)}.log", env=self.env, concurrency=8)
        self.request.addfinalizer(w.stop)
        w.start()
        self.workers.append(w)

    def check(self) -> None:
        w = self.workers[-1]
        if w.proc is not None and w.proc.poll() is not None:
            tracebacks = TRACEBACK.findall(w.log.read_text(errors="replace"))
            self.deaths.append(f"exit {w.proc.returncode}: {tracebacks[-1] if tracebacks else w.tail(15)}")
            self.start_worker()

    def count(self, text: str) -> int:
        return sum(w.log.read_text(errors="replace").count(text) for w in self.workers)

    def wait_connected(self, at_least: int, timeout: float = 30) -> None:
        """Until the worker (or the one that replaced it) has connected ``at_least`` times."""
        deadline = time.monotonic() + timeout
        while self.count(CONNECTED) < at_least:
            self.check()
            assert time.monotonic() < deadline, f"the worker did not reconnect:\n{self.workers[-1].tail()}"
            time.sleep(0.1)

    def beat(self) -> None:
        log = open(self.tmp_path / "beat.log", "ab")
        proc = subprocess.Popen([CELERY, "-A", "workers.app", "beat", "--loglevel", "INFO",
                                 "--schedule", str(self.tmp_path / "beat-schedule")],
                                cwd=ROOT, env={**os.environ, **self.env, "SWEEP_INTERVAL": "1"},
                                stdout=log, stderr=subprocess.STDOUT)

        def stop() -> None:
            proc.terminate()
            proc.wait(10)
            log.close()

        self.request.addfinalizer(stop)


def _steps_done_twice(cluster: Supervised) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for e in done_lines(*(w.log for w in cluster.workers)):
        if "page" in e:
            counts[(e["stage"], e["page"])] = counts.get((e["stage"], e["page"]), 0) + 1
    return {k: n for k, n in counts.items() if n > 1}


@pytest.mark.workers
@pytest.mark.timeout(60 * ROUNDS + 180)
def test_worker_survives_redis_restarts_with_retries_in_its_timer(
        clean_db: Db, own_redis: OwnRedis, replicate: FakeReplicate, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    env = {"CELERY_BROKER_URL": own_redis.url, "REDIS_URL": own_redis.url, "STEP_LEASE_SECONDS": "3",
           "BROKER_VISIBILITY_TIMEOUT": "3600",  # only the sweeper recovers what Redis lost
           "SIMULATED_PROVIDER_LATENCY": "0.3", "SIMULATED_STORAGE_LATENCY": "0.1",
           "IMAGE_PROVIDER": "replicate", "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": replicate.base_url,
           "JOB_POLL_INTERVAL": "0.2", "STEP_RETRY_BACKOFF_CAP": "1", "STORY_PAGE_COUNT": "2"}
    cluster = Supervised(tmp_path, env, request)
    cluster.start_worker()
    cluster.beat()
    stories: list[str] = []
    photo = astronaut_png()

    def running() -> int:
        return sum(clean_db.story_row(s)["status"] not in ("completed", "failed") for s in stories)

    def keep_busy() -> None:
        for _ in range(IN_FLIGHT - running()):
            stories.append(clean_db.story(clean_db.photo(photo)))
            external_send(own_redis.url, "stories.generate", {"story_id": stories[-1]})

    # given stories in flight, their image steps polling the fake Replicate every 0.2 s
    keep_busy()
    deadline = time.monotonic() + 60
    while clean_db.one("SELECT count(*) AS n FROM provider_jobs")["n"] == 0:
        assert time.monotonic() < deadline, cluster.workers[-1].tail()
        time.sleep(0.05)
    # when Redis restarts 10 times under them, each time 1-2 s after the worker reconnected
    rng = random.Random(12)
    for _ in range(RESTARTS):
        connected = cluster.count(CONNECTED)
        time.sleep(rng.uniform(1.0, 2.0))
        cluster.check()
        own_redis.restart()
        keep_busy()
        cluster.wait_connected(connected + 1)
    # then every story completes (the sweeper re-sends what the emptied Redis lost) ...
    deadline = time.monotonic() + 120
    while running():
        cluster.check()
        assert time.monotonic() < deadline, [clean_db.story_row(s)["status"] for s in stories]
        time.sleep(0.5)
    retried = 0
    for s in stories:
        row = clean_db.story_row(s)
        if row["status"] == "failed":  # ... or fails with a reason, and a retry brings it back
            retried += 1
            assert row["error_message"], row
            retry = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "retry", "--story", s], cwd=ROOT,
                                   env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
            assert retry.returncode == 0, retry.stdout + retry.stderr
            row = clean_db.wait_story(s, timeout=90)
        assert row["status"] == "completed", (row["error_message"], cluster.workers[-1].tail())
    cluster.check()
    lost, guarded = cluster.count("Connection to broker lost"), cluster.count("broker restart guard: ")
    print(f"\n{RESTARTS} Redis restarts: {lost} lost connections seen by the worker, the guard acted on {guarded}, "
          f"{len(cluster.deaths)} worker death(s); {len(stories)} stories, {retried} needed `retry`")
    # and the worker never exited
    assert not cluster.deaths, (f"{len(cluster.deaths)} worker death(s) in {RESTARTS} Redis restarts:\n"
                                + "\n\n".join(cluster.deaths))
    # and nothing was done twice: no page step, no prediction job
    time.sleep(1.0)
    assert not _steps_done_twice(cluster)
    jobs = clean_db.all("SELECT page_id, stage, count(*) AS n FROM provider_jobs GROUP BY 1, 2")
    assert jobs and all(j["n"] == 1 for j in jobs), [j for j in jobs if j["n"] > 1]
    inputs = [repr(sorted(p["input"].items())) for p in replicate.created]
    assert len(inputs) == len(set(inputs)), "a page step created two predictions"
