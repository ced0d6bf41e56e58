"""Services of a test's own, for the fault tests that stop, start and restart them: a throwaway
``redis-server`` and a throwaway PostgreSQL cluster (``initdb`` into a temporary folder, ``pg_ctl``),
each on a free port of 127.0.0.1. A test restarts exactly these, never the machine's Redis (6379),
its PostgreSQL clusters or another run's services, so it can run beside other work.

- :class:`OwnRedis`: ``redis-server`` as a child process (no persistence: a restart loses every
  queued message, as the shared one configured that way would); ``stop``/``start``/``restart``.
- :class:`OwnPostgres`: a cluster with trust authentication for ``postgres`` on 127.0.0.1 (its Unix
  socket in its own folder); ``stop(mode)``/``start``/``restart``; ``database(storage)`` creates the
  test database with the project's schema the way the ``db`` fixture does (``ensure_database``)
  and returns a :class:`tests.support.Db` on it. As root, the cluster's programs run as the
  ``postgres`` user (``runuser``), which owns its folder (PostgreSQL refuses to run as root).

``own_redis()`` and ``own_postgres()`` are context managers that start one and, at the end, stop
it and remove its files (a test module wraps them in its own fixtures). ``missing()`` says why
neither can run here (no ``redis-server``, no PostgreSQL binaries), or None.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support import Db

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian/Ubuntu; else PG_BINDIR or initdb on PATH
TEST_DATABASE = "storycreator_outage"


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Does something accept connections on 127.0.0.1:``port``?"""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pg_bindir() -> Path | None:
    """The folder of initdb/pg_ctl: PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else PATH's."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                   else 0)
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing() -> str | None:
    """Why own services cannot run on this machine, or None when they can."""
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH"
    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").exists() or not (bindir / "pg_ctl").exists():
        return "no PostgreSQL server binaries (initdb, pg_ctl): set PG_BINDIR"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
        return "running as root without runuser or a postgres user to run PostgreSQL as"
    return None


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


class OwnRedis:
    """A ``redis-server`` child process on a free port, nothing saved to disk."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (no database number)."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=1) as r:
                    if r.ping():
                        return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start:\n{self._tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        """SHUTDOWN NOSAVE (every connection closed, nothing kept), then wait for the process."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(redis.ConnectionError), redis.Redis(port=self.port, socket_timeout=5) as r:
            r.shutdown(nosave=True)  # it closes the connection as it goes
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


class OwnPostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1, trust authentication."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        assert bindir is not None, missing()
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="storycreator-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            uid = _uid("postgres")
            assert uid is not None
            os.chown(self.dir, uid, -1)

    @property
    def url(self) -> str:
        """``postgresql+psycopg2://postgres@127.0.0.1:<port>`` (no database name)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                               f"{self._tail()}")
        return done

    def init(self) -> None:
        """initdb: superuser ``postgres``, trust, UTF-8, no fsync (nothing here must survive the machine)."""
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                   # no fsync: only a crash of the machine loses data. synchronous_commit stays on:
                   # a commit survives `stop -m immediate` (a server crash), as in production.
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        # pg_ctl -w returns once the postmaster accepts connections; the TCP port too by then
        deadline = time.monotonic() + 30
        while not listening(self.port):
            assert time.monotonic() < deadline, f"PostgreSQL on {self.port} not listening\n{self._tail()}"
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``fast`` (sessions ended, a clean shutdown: a restart or a
        maintenance), ``immediate`` (as a crash: recovery at the next start)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        done = subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, text=True, timeout=30)
        return done.returncode == 0

    def database(self, storage: Path, name: str = TEST_DATABASE) -> Db:
        """The test database ``name`` on this cluster with the project's schema (created as the
        ``db`` fixture creates its own: db.engine.ensure_database), as a :class:`Db`."""
        from db.engine import ensure_database

        url = f"{self.url}/{name}"
        ensure_database(url)
        return Db(url, storage)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


@contextlib.contextmanager
def own_redis(workdir: Path) -> Iterator[OwnRedis]:
    """A started :class:`OwnRedis` (files under ``workdir``), killed at the end."""
    server = OwnRedis(workdir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """An initialised and started :class:`OwnPostgres`, stopped and removed at the end."""
    cluster = OwnPostgres()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()
