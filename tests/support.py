"""Test helpers: rows inserted as the external API would, real worker processes, sample photos."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

import celeryconfig
from db.engine import make_engine
from db.url import database_url

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).parent / "celery")
ALL_QUEUES = ",".join(celeryconfig.QUEUES)  # the one queue list (a worker without -Q consumes them all)


def flush_redis(url: str) -> None:
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.close()


def astronaut_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return buf.getvalue()


def faceless_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, "PNG")
    return buf.getvalue()


class Db:
    """The database as the external API and an operator see it: plain SQL, no project code."""

    def __init__(self, url: str, storage: Path) -> None:
        self.url = url
        self.storage = storage
        self.engine = make_engine(url, pool_size=2, pool_pre_ping=True)  # survives a PostgreSQL restart (chaos tests)

    def close(self) -> None:
        self.engine.dispose()

    def drop(self) -> None:
        u = database_url(self.url)
        admin = make_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        admin.dispose()

    def truncate(self) -> None:
        """Empties every table. DELETE with foreign keys unchecked (all tables end empty, so none
        dangles) takes ~1 ms on the tests' few rows, where TRUNCATE takes 70-230 ms (new files for
        each table); a role that may not set ``session_replication_role`` (not a superuser) gets
        TRUNCATE."""
        with self.engine.begin() as c:
            tables = list(c.execute(text(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'")).scalars())
        try:
            with self.engine.begin() as c:
                c.execute(text("SET LOCAL session_replication_role = replica"))
                for table in tables:
                    c.execute(text(f"DELETE FROM {table}"))
        except ProgrammingError:  # permission denied to set parameter
            with self.engine.begin() as c:
                c.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))

    def one(self, sql: str, **params: Any) -> Any:
        with self.engine.begin() as c:
            return c.execute(text(sql), params).mappings().first()

    def all(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as c:
            return list(c.execute(text(sql), params).mappings())

    def exec(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as c:
            c.execute(text(sql), params)

    # -- rows as the external API inserts them ---------------------------------------------
    def user(self) -> str:
        row = self.one("INSERT INTO users (email) VALUES (:e) RETURNING id", e=f"{uuid.uuid4()}@example.com")
        return str(row["id"])

    def photo(
        self,
        image: bytes | None,
        *,
        status: str = "uploaded",
        user_id: str | None = None,
        storage_provider: str = "local",
        bucket: str | None = None,
        object_key: str | None = None,
        content_type: str = "image/png",
    ) -> str:
        user_id = user_id or self.user()
        key = object_key or f"uploads/{uuid.uuid4()}.png"
        if image is not None:
            path = self.storage / (bucket or "") / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
        row = self.one(
            """INSERT INTO photos (user_id, storage_provider, bucket, object_key, filename,
                                   content_type, status)
               VALUES (:u, :sp, :b, :k, 'child.png', :ct, :st) RETURNING id""",
            u=user_id,
            sp=storage_provider,
            b=bucket,
            k=key,
            ct=content_type,
            st=status,
        )
        return str(row["id"])

    def story(self, photo_id: str, *, name: str = "Mia", age: int = 6, theme: str = "space_adventure") -> str:
        user = self.one("SELECT user_id FROM photos WHERE id = :p", p=photo_id)["user_id"]
        row = self.one(
            """INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id)
               VALUES (:u, :n, :a, :t, :p) RETURNING id""",
            u=user,
            n=name,
            a=age,
            t=theme,
            p=photo_id,
        )
        return str(row["id"])

    # -- observing ----------------------------------------------------------------------------
    def story_row(self, story_id: str) -> Any:
        return self.one("SELECT * FROM stories WHERE id = :s", s=story_id)

    def pages(self, story_id: str) -> list[Any]:
        return self.all("SELECT * FROM story_pages WHERE story_id = :s ORDER BY page_number", s=story_id)

    def wait_story(
        self, story_id: str, timeout: float = 90, statuses: tuple[str, ...] = ("completed", "failed")
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.story_row(story_id)
            if row is not None and row["status"] in statuses:
                return row
            time.sleep(0.1)
        raise AssertionError(f"story {story_id} still {self.story_row(story_id)['status']} after {timeout}s")

    def wait_photo(self, photo_id: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.one("SELECT * FROM photos WHERE id = :p", p=photo_id)
            if row["ai_processing_status"] in ("completed", "failed"):
                return row
            time.sleep(0.1)
        raise AssertionError(f"photo {photo_id} not analysed after {timeout}s")


_STARTED: list[WorkerProcess] = []

# The tier of the test being set up or run (tests/conftest.py sets it; None between tests), and
# the real services' URLs by name ("PostgreSQL", "Redis", "RabbitMQ"), as the run started.
CURRENT_TIER: str | None = None
SERVICE_URLS: dict[str, str] = {}


class TierViolation(AssertionError):
    """A test used what its tier does not have (a service in ``unit``, a worker process in ``db``)."""


def stop_all_workers() -> None:
    """Session teardown: no worker outlives the tests (a stray one would steal later messages)."""
    for w in _STARTED:
        if w.proc is not None and w.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)


class WorkerProcess:
    """A real `celery worker` process, as the Procfile runs it."""

    def __init__(
        self,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        pool: str = "threads",
        concurrency: int = 8,
        queues: str | None = None,
    ) -> None:
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.pool, self.concurrency, self.queues = pool, concurrency, queues
        self.proc: subprocess.Popen[bytes] | None = None
        self.name = f"test-{uuid.uuid4().hex[:6]}@localhost"

    def start(self, timeout: float = 60) -> None:
        """Start the process and wait until it is ready (consuming). RuntimeError if it exits or
        is not ready within ``timeout`` s."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting (:meth:`wait_ready` waits): several workers then boot
        at once (:func:`start_workers`)."""
        if CURRENT_TIER in ("unit", "db"):
            raise TierViolation(f"a {CURRENT_TIER!r}-tier test started a celery worker process: mark it "
                                "@pytest.mark.workers (tests/conftest.py)")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                CELERY,
                "-A",
                "workers.app",
                "worker",
                "--pool",
                self.pool,
                "--concurrency",
                str(self.concurrency),
                *(["-Q", self.queues] if self.queues else []),  # none: every queue of celeryconfig
                "-n",
                self.name,
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                "-E",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _STARTED.append(self)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the launched worker logs `` ready.`` (its consumer runs). RuntimeError if it
        exits first or is not ready within ``timeout`` s."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if b" ready." in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """SIGKILL the whole worker (no warm shutdown, no acks: as an OOM kill would)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to its process group), waited for: SIGKILL after 30 s."""
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """SIGTERM the worker's process group without waiting (:meth:`wait_stopped` waits)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self) -> None:
        """Wait for the process to exit after :meth:`terminate` (SIGKILL after 30 s)."""
        if self.proc is None:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if not self._fh.closed:
            self._fh.close()


def start_workers(*workers: WorkerProcess, timeout: float = 60) -> None:
    """Start ``workers`` at once and wait until each is ready: they boot side by side (a boot is
    mostly imports and a CPU process spawned, ~7-20 s) instead of one after the other."""
    for w in workers:
        w.launch()
    for w in workers:
        w.wait_ready(timeout)


def stop_workers(*workers: WorkerProcess) -> None:
    """Warm-shut ``workers`` down at once and wait for every one (each takes seconds to exit: its
    interpreter tears down), as :meth:`WorkerProcess.stop` does one by one."""
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait_stopped()


def external_send(broker_url: str, name: str, kwargs: dict[str, Any], times: int = 1) -> None:
    """Publish as the external API does: a separate process that imports only celery and knows
    only the broker URL (none of our environment: Celery itself would let CELERY_BROKER_URL
    override the URL it is given)."""
    script = ROOT / "tests" / "external_client.py"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")}
    subprocess.run(
        [sys.executable, str(script), broker_url, name, *[json.dumps(kwargs)] * times],
        cwd="/",
        check=True,
        timeout=60,
        env=env,
    )


def done_lines(*logs: Path) -> list[dict[str, Any]]:
    """The workers' step log lines with outcome "done" (a step that did its work)."""
    out = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if "storycreator.step: step " in line:
                entry = json.loads(line.split("storycreator.step: step ", 1)[1])
                if entry["outcome"] == "done":
                    out.append(entry)
    return out


def peak_in_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window of ``window`` seconds (sliding)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def queued_messages(broker: str) -> int:
    """Messages waiting in every queue of ``broker`` (a Redis URL): what no worker has taken."""
    r = redis.Redis.from_url(broker)
    try:
        return sum(int(r.llen(q)) for q in ALL_QUEUES.split(","))  # type: ignore[misc]
    finally:
        r.close()


def boot_worker_until_exit(env: dict[str, str], log: Path, *, timeout: float = 40,
                           command: str | None = None) -> tuple[int | None, str]:
    """Start a worker with ``env`` over this process's environment (``command``: a shell line such
    as the Procfile's, default a plain ``celery -A workers.app worker`` with a unique node name) and
    wait up to ``timeout`` seconds for it to exit. Returns (exit code or None if it was still
    running and got killed, its output). For tests of a worker that must refuse to start."""
    if command is None:
        command = (f"exec {CELERY} -A workers.app worker --pool threads --concurrency 4 --loglevel INFO -E "
                   f"-n boot-{uuid.uuid4().hex[:6]}@localhost")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with open(log, "wb") as fh:
        p = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env={**os.environ, "PATH": path, **env},
                             stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            code = None
    return code, log.read_text(errors="replace")


def standby_queue(w: WorkerProcess) -> str:
    """The queue of a standby worker's own (nothing is ever sent to it): see :func:`consume_all`."""
    return f"standby.{w.name.split('@', 1)[0]}"


def consume_all(broker: str, w: WorkerProcess, timeout: float = 10) -> None:
    """Make worker ``w``, started on its :func:`standby_queue` alone (booted ahead, taking no work),
    consume every queue now, as a worker started at this moment would: Celery's ``add_consumer``
    remote control command (the worker's own queue declarations of celeryconfig, by name), sent on
    ``broker`` (a Redis URL) and answered by ``w`` for each queue within ``timeout`` s, else
    AssertionError. The boot (imports, CPU processes: 7-20 s) is paid before the moment the test
    times, not after it."""
    from kombu import Connection
    from kombu.pidbox import Mailbox

    # kombu's mailbox as Celery's remote control builds it ("celery" control exchange, JSON), on a
    # connection to ``broker`` itself (a Celery app here would take CELERY_BROKER_URL from the
    # environment, this process's own broker, over the one it is given)
    mailbox = Mailbox("celery", type="fanout", accept=["json"], serializer="json")
    with Connection(broker) as conn:
        node = mailbox(conn)
        for queue in ALL_QUEUES.split(","):
            replies = node._broadcast("add_consumer", {"queue": queue}, destination=[w.name], reply=True,
                                      timeout=timeout)
            assert replies and "ok" in replies[0].get(w.name, {}), (queue, replies, w.tail())


def rabbit_answers(url: str) -> bool:
    """Does a RabbitMQ (or anything) listen at the AMQP ``url``'s host and port (5672 by default)?
    A TCP connect with a 2 s timeout."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    try:
        socket.create_connection((u.hostname, u.port or 5672), timeout=2).close()
        return True
    except OSError:
        return False
