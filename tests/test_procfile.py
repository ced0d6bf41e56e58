"""What ships runs as written (issue 10, fault 3): every Procfile line is read from the Procfile
and started with ``bash -c`` exactly as a Procfile runner does, with the variables it references,
and does its job; so do the README's ``./run worker`` and ``./run flower``."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import ROOT, Db, astronaut_png, external_send

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
AUTH = "ops:pr0cfile-pass"


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): cmd.strip() for name, _, cmd in (ln.partition(":") for ln in lines if ln.strip())}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A shell command started as a Procfile runner starts it, in its own process group."""

    def __init__(self, command: str, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=self._fh,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.text():
            assert self.p.poll() is None, f"exited with {self.p.returncode}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what!r} after {timeout}s:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        self._fh.close()


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The variables the Procfile references, the broker an isolated Redis database, and `celery`
    on PATH as a deployment has it."""
    r = redis.Redis.from_url(BROKER)
    r.flushdb()
    yield {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "PORT": str(_free_port()),
           "FLOWER_BASIC_AUTH": AUTH, "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
           "WORKER_CONCURRENCY": "4", "SWEEP_INTERVAL": "1"}
    r.flushdb()
    r.close()


def _get(url: str, auth: str | None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _flower_serves(port: int, proc: Proc, timeout: float = 90) -> None:
    """Flower answers on ``port`` with basic auth, and refuses without it or with a wrong password."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        assert proc.p.poll() is None, f"flower exited with {proc.p.returncode}:\n{proc.text()[-3000:]}"
        with contextlib.suppress(OSError):
            if _get(f"{base}/api/workers", AUTH) == 200:
                break
        assert time.monotonic() < deadline, proc.text()[-3000:]
        time.sleep(0.2)
    assert _get(f"{base}/api/workers", None) == 401
    assert _get(f"{base}/api/workers", "ops:wrong") == 401
    assert _get(f"{base}/api/tasks", AUTH) == 200


def test_procfile_has_the_four_processes() -> None:
    assert set(procfile()) == {"worker", "flower", "beat", "exporter"}


def test_procfile_worker_line_completes_a_story(clean_db: Db, env: dict[str, str], tmp_path: Path) -> None:
    worker = Proc(procfile()["worker"], tmp_path / "worker.log", env)
    try:
        worker.wait_for(" ready.", 90)
        story = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(BROKER, "stories.generate", {"story_id": story})
        assert clean_db.wait_story(story, timeout=60)["status"] == "completed", worker.text()[-3000:]
    finally:
        worker.stop()


def test_procfile_flower_line_serves_on_port_behind_basic_auth(env: dict[str, str], tmp_path: Path) -> None:
    flower = Proc(procfile()["flower"], tmp_path / "flower.log", env)
    try:
        _flower_serves(int(env["PORT"]), flower)
    finally:
        flower.stop()


def test_procfile_flower_line_refuses_to_start_without_credentials(env: dict[str, str], tmp_path: Path) -> None:
    flower = Proc(procfile()["flower"], tmp_path / "flower.log", {k: v for k, v in env.items()
                                                                  if k != "FLOWER_BASIC_AUTH"})
    try:
        assert flower.p.wait(30) != 0
        assert "set FLOWER_BASIC_AUTH=user:password" in flower.text()
    finally:
        flower.stop()


def test_procfile_beat_line_sends_the_sweep(env: dict[str, str], tmp_path: Path) -> None:
    beat = Proc(procfile()["beat"], tmp_path / "beat.log", env)
    r = redis.Redis.from_url(BROKER)
    try:
        # nobody consumes this broker: the sweep messages beat sends stay in their queue
        deadline = time.monotonic() + 60
        while True:
            sent = [json.loads(m)["headers"]["task"] for m in r.lrange("stories", 0, -1)]  # type: ignore[union-attr]
            if sent.count("ops.sweep") >= 2:  # sent, and sent again at SWEEP_INTERVAL
                break
            assert beat.p.poll() is None, beat.text()[-3000:]
            assert time.monotonic() < deadline, (sent, beat.text()[-3000:])
            time.sleep(0.2)
        assert Path(env["BEAT_SCHEDULE_FILE"]).exists() or any(
            p.name.startswith("beat-schedule") for p in tmp_path.iterdir())
    finally:
        beat.stop()
        r.close()


def test_readme_run_worker_and_run_flower(clean_db: Db, env: dict[str, str], tmp_path: Path) -> None:
    # as the README says: ./run worker and ./run flower (PORT, FLOWER_BASIC_AUTH from the environment)
    worker = Proc("./run worker", tmp_path / "worker.log", env)
    flower: Proc | None = None
    try:
        worker.wait_for(" ready.", 240)  # ./run installs first when pyproject.toml changed
        flower = Proc("./run flower", tmp_path / "flower.log", env)  # after: not two installs at once
        _flower_serves(int(env["PORT"]), flower)
        story = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(BROKER, "stories.generate", {"story_id": story})
        assert clean_db.wait_story(story, timeout=60)["status"] == "completed", worker.text()[-3000:]
    finally:
        worker.stop()
        if flower is not None:
            flower.stop()


def test_procfile_worker_line_on_a_fresh_machine_makes_its_default_database(env: dict[str, str],
                                                                           tmp_path: Path) -> None:
    """With DATABASE_URL unset (a fresh machine, the line as written), the worker uses the local
    development database and creates it with schema.sql when missing, as ./run demo does; an
    explicit DATABASE_URL naming a missing database is still refused (test_database_config.py)."""
    import sqlalchemy as sa

    default_server = "postgresql+psycopg2://postgres@127.0.0.1:5432"
    if os.environ.get("TEST_PG_URL", default_server) != default_server:
        pytest.skip("the default DATABASE_URL's server is not this run's PostgreSQL")
    admin = sa.create_engine(f"{default_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        existed = c.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = 'storycreator'")).scalar()
    worker = Proc(procfile()["worker"], tmp_path / "worker.log",
                  {k: v for k, v in env.items() if k != "DATABASE_URL"})
    try:
        worker.wait_for(" ready.", 90)
        assert "DATABASE_URL is not set: using the local development database" in worker.text()
        fresh = sa.create_engine(f"{default_server}/storycreator")
        with fresh.connect() as c:
            assert c.execute(sa.text("SELECT to_regclass('story_pages') IS NOT NULL")).scalar()
        fresh.dispose()
    finally:
        worker.stop()
        if not existed:  # leave the shared server as it was
            with admin.connect() as c:
                c.execute(sa.text("DROP DATABASE IF EXISTS storycreator WITH (FORCE)"))
        admin.dispose()


def test_procfile_exporter_line_serves_the_backlog_gauges(clean_db: Db, env: dict[str, str], tmp_path: Path) -> None:
    """The exporter (issue 14, part 3) serves the backlog gauges from this run's database and broker on
    EXPORTER_PORT: two queued messages and a story pending for 5 minutes show, and its sources are up."""
    port = _free_port()
    story = clean_db.story(clean_db.photo(astronaut_png()))
    clean_db.exec("UPDATE stories SET created_at = now() - interval '5 minutes' WHERE id = :s", s=story)
    external_send(BROKER, "stories.generate", {"story_id": story}, times=2)  # nobody consumes this broker
    exporter = Proc(procfile()["exporter"], tmp_path / "exporter.log",
                    {**env, "EXPORTER_PORT": str(port), "EXPORTER_CACHE_SECONDS": "1"})
    try:
        exporter.wait_for("serving backlog gauges", 60)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
                if 'storycreator_queue_messages{queue="celery"} 2.0' in body:
                    break
            assert exporter.p.poll() is None and time.monotonic() < deadline, exporter.text()[-3000:]
            time.sleep(0.3)
        assert 'storycreator_backlog_source_up{source="database"} 1.0' in body, body
        assert 'storycreator_backlog_source_up{source="broker"} 1.0' in body, body
        pending = [ln for ln in body.splitlines()
                   if ln.startswith('storycreator_oldest_story_age_seconds{status="pending"}')]
        assert pending and 300 <= float(pending[0].split()[-1]) < 400, body
    finally:
        exporter.stop()
    assert exporter.p.returncode == 0, exporter.text()[-3000:]  # SIGTERM: a clean stop
