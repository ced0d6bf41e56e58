"""Test fixtures on the machine's real PostgreSQL and Redis, with real Celery worker processes,
and the four test tiers (README, Tests).

Each run creates its own database (dropped at the end) and uses its own Redis database
numbers, so it neither sees nor disturbs a demo or another run's queues.

Tiers (one marker per test, derived here unless the test carries one itself):

- ``unit``: no services at all (no PostgreSQL, Redis or RabbitMQ, no worker process). Enforced:
  while a unit test sets up and runs, connecting to PostgreSQL, Redis or RabbitMQ raises
  ``TierViolation`` (and a run that selected only unit tests points every service URL at an
  unusable address), so a test that needs a service cannot stay in this tier unnoticed.
- ``db``: in-process on the real PostgreSQL/Redis, no worker processes (``WorkerProcess.start``
  refuses in this tier and in ``unit``).
- ``workers``: starts real processes (celery workers, Flower, beat, ``./run``, subprocesses).
- ``chaos``: restarts services or kills processes (``tests/test_chaos.py``, a worker SIGKILLed).

Across the tiers, ``slow`` marks a test that takes a while on its own (set by the test, or measured:
the ``unit`` and ``db`` tests listed in ``tests/slow_tests.txt``, which ``--record-slow`` rewrites from a
run's own timings), so ``./run test fast`` (``-m "(unit or db) and not slow"``) is the loop a developer
runs after each edit, in seconds; CI (``./run test``) still runs every test.
"""
from __future__ import annotations

import ast
import inspect
import linecache
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

# pytest-xdist (./run test runs the non-chaos tiers on 3 workers): each worker process has its own
# PostgreSQL database (the random name below) and its own 4 Redis databases, TEST_REDIS_DB ..
# TEST_REDIS_DB + 3: gw0 11-14, gw1 1-4, gw2 5-8 (0 is the demo's, 10 the benches'; 9 and 15 spare).
_XDIST_BASES = (11, 1, 5)
_XDIST = os.environ.get("PYTEST_XDIST_WORKER", "")
if _XDIST:
    _n = int(_XDIST.removeprefix("gw"))
    if _n >= len(_XDIST_BASES):
        raise pytest.UsageError(f"at most {len(_XDIST_BASES)} xdist workers: each needs 4 Redis databases of the 16")
    os.environ["TEST_REDIS_DB"] = str(_XDIST_BASES[_n] + int(os.environ.get("TEST_REDIS_DB", "11")) - 11)
_RUN = uuid.uuid4().hex[:8]
TEST_DB = f"storycreator_test_{_RUN}"
PG = os.environ.get("TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
STORAGE = Path(tempfile.mkdtemp(prefix="storycreator-test-storage-"))

# Before anything reads pipeline.config.settings() (cached per process).
os.environ.update(
    DATABASE_URL=f"{PG}/{TEST_DB}",
    CELERY_BROKER_URL=f"{REDIS}/{REDIS_DB}",
    REDIS_URL=f"{REDIS}/{REDIS_DB}",
    LOCAL_STORAGE_ROOT=str(STORAGE),
    STORY_PAGE_COUNT="4",
    LOG_LEVEL="INFO",
)
for var in ("VISION_PROVIDER", "TEXT_PROVIDER", "IMAGE_PROVIDER", "STORAGE_BACKEND",
            "SIMULATED_PROVIDER_LATENCY", "STEP_LEASE_SECONDS", "BROKER_VISIBILITY_TIMEOUT"):
    os.environ.pop(var, None)

from tests import scheduling, support  # noqa: E402

# The real services, as this run found them (the unit tier's guard refuses exactly these).
support.SERVICE_URLS.update(
    PostgreSQL=os.environ["DATABASE_URL"], Redis=os.environ["CELERY_BROKER_URL"],
    RabbitMQ=os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
)
from tests.support import Db, TierViolation, WorkerProcess, flush_redis, stop_all_workers  # noqa: E402


@pytest.fixture(scope="session")
def db() -> Iterator[Db]:
    from db.engine import dispose_engine, ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    database = Db(os.environ["DATABASE_URL"], STORAGE)
    yield database
    stop_all_workers()
    database.close()
    dispose_engine()
    database.drop()


@pytest.fixture(scope="session")
def worker(db: Db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One real worker process (threads pool, all queues) shared by the tests that need one."""
    flush_redis(os.environ["CELERY_BROKER_URL"])
    w = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    yield w
    w.stop()


@pytest.fixture()
def clean_db(db: Db) -> Db:
    db.truncate()
    return db


# --- tiers --------------------------------------------------------------------------------------
TIERS = ("unit", "db", "workers", "chaos")  # each includes what the ones before it may do
# `workers`: the test, its fixtures or the test helpers they call (followed through tests.*) start
# a process. `chaos`: the test itself kills a process it started (a worker SIGKILLed mid-step),
# or lives in test_chaos.py (restarts its own Redis and PostgreSQL: tests/services.py).
_PROCESS_SOURCE = re.compile(r"WorkerProcess|subprocess|Popen|multiprocessing|start_worker|restart_")
_CHAOS_LINE = re.compile(r"\.kill\(\)|_restart_(?:redis|postgres)")  # not in a cleanup (addfinalizer) line
# `db`: PostgreSQL or Redis reached from the test's side (its fixtures are followed the same way).
_SERVICE_SOURCE = re.compile(r"\bDb\b|clean_db|get_engine|autocommit\(|transaction\(|redis\.|Redis\(|flush_redis|"
                             r"\bBROKER\b|CELERY_BROKER_URL|REDIS_URL|DATABASE_URL|TEST_PG_URL|send_task|apply_async|"
                             r"\.delay\(")
_SERVICE_FIXTURES = {"db", "clean_db", "worker"}
_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_SOURCES: dict[int, tuple[str, list[object]]] = {}  # id(obj) -> its source and the tests.* objects it calls


def _source_and_calls(obj: object) -> tuple[str, list[object]]:
    """The source of a function or class and the tests.* functions and classes it calls by name
    (memoized: inspect.getsource is slow, and 650 tests share their fixtures and helpers)."""
    key = id(obj)
    if key not in _SOURCES:
        source = _function_source(obj)
        if source is None:
            try:
                source = inspect.getsource(obj)  # type: ignore[arg-type]
            except (OSError, TypeError):
                source = ""
        module = inspect.getmodule(obj)
        calls: list[object] = []
        for name in set(_CALLED.findall(source)):
            called = getattr(module, name, None)
            owner = getattr(called, "__module__", "") or ""
            if (inspect.isfunction(called) or inspect.isclass(called)) and owner.startswith("tests"):
                calls.append(called)
        _SOURCES[key] = (source, calls)
    return _SOURCES[key]


_BLOCKS: dict[str, dict[int, int]] = {}  # file -> first line of each def/class (decorators included) -> last line


def _function_source(obj: object) -> str | None:
    """What ``inspect.getsource`` gives for a plain function, from one parse of its file (getsource
    tokenizes the file again for each function: half the cost of deriving 750 tiers). None for
    anything else (classes, lambdas, wrapped functions): the caller asks ``inspect``."""
    code = getattr(obj, "__code__", None)
    if not inspect.isfunction(obj) or code is None or hasattr(obj, "__wrapped__"):
        return None
    file = code.co_filename
    if file not in _BLOCKS:
        blocks: dict[int, int] = {}
        try:
            tree = ast.parse(Path(file).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.end_lineno:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                blocks[first] = node.end_lineno
        _BLOCKS[file] = blocks
    last = _BLOCKS[file].get(code.co_firstlineno)
    if last is None:
        return None
    return "".join(linecache.getlines(file)[code.co_firstlineno - 1:last])


def _matches(roots: list[object], pattern: re.Pattern[str]) -> bool:
    """Whether the source of ``roots`` or of the tests.* functions and classes they call matches."""
    stack, seen = list(roots), set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        source, calls = _source_and_calls(obj)
        if pattern.search(source):
            return True
        stack.extend(calls)
    return False


def _kills(function: Callable[..., Any]) -> bool:
    """Whether the test, or a helper of its own module that it calls, kills a process mid-run or
    restarts a service (cleanup lines that kill what the test started do not count)."""
    module = getattr(function, "__module__", None)
    stack, seen = [function], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        source, calls = _source_and_calls(obj)
        if any(_CHAOS_LINE.search(line) and "addfinalizer" not in line for line in source.splitlines()):
            return True
        stack.extend(c for c in calls if inspect.isfunction(c) and c.__module__ == module)
    return False


def derived_tier(item: pytest.Item) -> str:
    """The tier of a test without an explicit marker: the highest one its source calls for."""
    function = getattr(item, "function", None)
    info = getattr(item, "_fixtureinfo", None)
    fixtures = [d.func for defs in (info.name2fixturedefs.values() if info else []) for d in defs]
    roots = [f for f in [function, *fixtures] if f is not None]
    if item.path.name == "test_chaos.py" or (function is not None and _kills(function)):
        return "chaos"
    if _matches(roots, _PROCESS_SOURCE):
        return "workers"
    if _SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or _matches(roots, _SERVICE_SOURCE):
        return "db"
    return "unit"


def tier_of(item: pytest.Item) -> str:
    explicit = [t for t in TIERS if item.get_closest_marker(t)]
    return explicit[-1] if explicit else derived_tier(item)


# --- slow: measured ------------------------------------------------------------------------------
SLOW_FILE = Path(__file__).with_name("slow_tests.txt")
SLOW_SECONDS = 0.1  # a unit or db test over this (setup + call + teardown, wall) is `slow`
_FAST_TIERS = ("unit", "db")  # the tiers the fast loop is cut from (workers and chaos are slow anyway)


def measured_slow(path: Path = SLOW_FILE) -> set[str]:
    """The node ids ``tests/slow_tests.txt`` lists, one a line as ``<seconds> <node id>`` (a line
    starting with ``#`` is a comment). A missing file lists nothing; an id no test has any more is
    ignored here (tests/test_tiers.py fails on it)."""
    if not path.is_file():
        return set()
    return set(_slow_lines(path))


def _slow_lines(path: Path) -> dict[str, str]:
    """node id -> its seconds as written, from the lines of ``path`` that are not comments."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            seconds, _, nodeid = line.strip().partition(" ")
            out[nodeid.strip()] = seconds
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-slow", action="store_true",
        help=f"after the run, rewrite {SLOW_FILE.name}: every unit or db test of this run that took over "
             f"{SLOW_SECONDS} s (setup + call + teardown, wall clock), plus the listed tests this run did not "
             "select. Run it alone on a quiet machine: ./run test -m 'unit or db' --record-slow")
    parser.addoption(
        "--record-module-seconds", action="store_true",
        help=f"after the run, rewrite tests/{scheduling.SECONDS_FILE.name} with the seconds each test module of this "
             "run took (modules it did not run keep their line): the order ./run test hands modules to its xdist "
             "processes, longest first (tests/scheduling.py). Run it as CI does: ./run test --record-module-seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = measured_slow()
    for item in items:
        tier = tier_of(item)
        item.stash[_TIER] = tier
        function = getattr(item, "function", None)
        item.stash[_RESTARTS] = function is not None and _matches([function], _RESTART_SOURCE)
        if not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
        if item.nodeid in slow and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


_TIMES: dict[str, float] = {}  # node id -> seconds of setup + call + teardown of this run's unit and db tests


_MODULE_TIMES: dict[str, float] = {}  # test module -> seconds of setup + call + teardown of its tests in this run


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sums the phases of each unit or db test (on the xdist controller too, from its workers' reports,
    which carry the markers as keywords), and of every test per module (``--record-module-seconds``)."""
    if any(tier in report.keywords for tier in _FAST_TIERS):
        _TIMES[report.nodeid] = _TIMES.get(report.nodeid, 0.0) + report.duration
    module = report.nodeid.split("::", 1)[0]
    _MODULE_TIMES[module] = _MODULE_TIMES.get(module, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``--record-slow``: rewrites ``tests/slow_tests.txt`` from this run's unit and db tests (on
    the xdist controller, not its workers; not when the run was interrupted). Tests the run did not
    select keep their old lines. With ``--record-module-seconds``: rewrites ``tests/module_seconds.txt``
    the same way, per module."""
    config = session.config
    if _XDIST or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    if config.getoption("--record-module-seconds"):
        scheduling.write_seconds(_MODULE_TIMES)
    if not config.getoption("--record-slow"):
        return
    old = _slow_lines(SLOW_FILE) if SLOW_FILE.is_file() else {}
    lines = {n: s for n, s in old.items() if n not in _TIMES}
    lines.update({n: f"{t:.2f}" for n, t in _TIMES.items() if t > SLOW_SECONDS})
    header = (f"# unit and db tests over {SLOW_SECONDS} s each (setup + call + teardown, wall clock), marked `slow`\n"
              "# by tests/conftest.py so `./run test fast` skips them. Rewritten by:\n"
              "#   ./run test -m 'unit or db' --record-slow    (alone, on a quiet machine; serial)\n")
    body = "".join(f"{lines[n]} {n}\n" for n in sorted(lines, key=lambda n: (-float(lines[n]), n)))
    SLOW_FILE.write_text(header + body, encoding="utf-8")


_TIER = pytest.StashKey[str]()
_RESTARTS = pytest.StashKey[bool]()
# Restarting the machine's own services (its PostgreSQL cluster, its Redis, a system service); the
# tests that restart services restart their own (tests/services.py: OwnRedis, OwnPostgres), which
# disturbs nobody beside them.
_RESTART_SOURCE = re.compile(r"pg_ctlcluster|\.shutdown\(nosave|systemctl|\bservice (?:redis|postgresql)")
_UNUSABLE = "127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run of unit tests only has no services: every service URL points at an unusable address,
    so nothing can reach the real ones even past the per-test guard below."""
    if session.items and all(item.stash.get(_TIER, "") == "unit" for item in session.items):
        os.environ.update(
            DATABASE_URL=f"postgresql+psycopg2://unit-tier@{_UNUSABLE}/no_database_in_the_unit_tier",
            CELERY_BROKER_URL=f"redis://{_UNUSABLE}/0",
            REDIS_URL=f"redis://{_UNUSABLE}/0",
            TEST_PG_URL=f"postgresql+psycopg2://unit-tier@{_UNUSABLE}",
            TEST_REDIS_URL=f"redis://{_UNUSABLE}",
            TEST_AMQP_URL=f"amqp://guest:guest@{_UNUSABLE}//",
        )
        from db.engine import dispose_engine
        from pipeline.config import settings

        settings.cache_clear()
        dispose_engine()


# Scheduling under xdist: a test module stays on one process (its module-scoped workers and Redis
# databases), and the modules that use RabbitMQ share one process: they share its vhost's queues.
try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist not installed: serial runs only
    pass
else:
    _AMQP_MODULES: dict[str, bool] = {}

    class _ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """One scope per module (the RabbitMQ modules: one together), the longest first by the
        seconds tests/module_seconds.txt records (tests/scheduling.py)."""

        _expected: dict[str, float] | None = None

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in _AMQP_MODULES:
                file = Path(__file__).resolve().parent.parent / path
                _AMQP_MODULES[path] = file.is_file() and "TEST_AMQP_URL" in file.read_text()
            return "rabbitmq" if _AMQP_MODULES[path] else path

        def _assign_work_unit(self, node: Any) -> None:
            if self._expected is None:  # the first assignment: every scope is still queued
                modules = {scope: sorted({n.split("::", 1)[0] for n in unit}) for scope, unit in self.workqueue.items()}
                self._expected = scheduling.scope_seconds(modules, scheduling.read_seconds())
            if self.workqueue:
                self.workqueue.move_to_end(scheduling.longest_first(list(self.workqueue), self._expected), last=False)
            super()._assign_work_unit(node)

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> _ModuleScheduling:
        return _ModuleScheduling(config, log)


# The guard: while a test of a tier sets up and runs, what that tier may not use raises. Installed
# once; each hook below only says which tier is current (None between tests, so fixtures of other
# tiers tear down freely).
def _service_ports() -> dict[str, int]:
    """The ports of the real services this run uses (the guard refuses those, so a unit test may
    still try an unusable address on purpose, as the outage tests do)."""
    defaults = {"redis": 6379, "amqp": 5672}
    out = {}
    for name, url in support.SERVICE_URLS.items():
        parts = urlsplit(url)
        out[name] = parts.port or defaults.get(parts.scheme, 5432)
    return out


def _refuse(what: str) -> None:
    tier = support.CURRENT_TIER
    raise TierViolation(
        f"a {tier!r}-tier test used {what}: the {tier} tier has no services. Give the test the tier it needs "
        f"(@pytest.mark.db for PostgreSQL/Redis, @pytest.mark.workers for processes; see tests/conftest.py)")


def _install_guards() -> None:
    import psycopg2
    import psycopg2.extensions
    import redis.connection
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    ports = _service_ports()
    real_connect = psycopg2.connect

    def pg_connect(dsn: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if support.CURRENT_TIER == "unit":
            params = {**(psycopg2.extensions.parse_dsn(dsn) if dsn else {}), **kwargs}
            if int(params.get("port") or 5432) == ports["PostgreSQL"]:
                _refuse("PostgreSQL (a new connection)")
        return real_connect(dsn, *args, **kwargs)

    psycopg2.connect = pg_connect  # SQLAlchemy's dialect looks it up at each connect

    @event.listens_for(Pool, "checkout")
    def _pooled(dbapi_connection: Any, *_: Any) -> None:
        info = getattr(dbapi_connection, "info", None)
        if support.CURRENT_TIER == "unit" and getattr(info, "port", None) == ports["PostgreSQL"]:
            _refuse("PostgreSQL (a pooled connection)")

    def guarded(cls: type, name: str) -> None:
        real: Callable[..., Any] = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if support.CURRENT_TIER == "unit" and getattr(self, "port", None) == ports["Redis"]:
                _refuse("Redis")
            return real(self, *args, **kwargs)

        setattr(cls, name, wrapper)

    guarded(redis.connection.AbstractConnection, "send_packed_command")
    guarded(redis.connection.AbstractConnection, "connect")

    real_sock_connect = socket.socket.connect

    def sock_connect(self: socket.socket, address: Any) -> Any:
        if (support.CURRENT_TIER == "unit" and isinstance(address, tuple) and len(address) >= 2
                and address[1] in ports.values()):
            _refuse(f"a service at {address[0]}:{address[1]}")
        return real_sock_connect(self, address)

    socket.socket.connect = sock_connect  # type: ignore[method-assign,assignment]  # RabbitMQ (py-amqp), anything else


def pytest_configure(config: pytest.Config) -> None:
    _install_guards()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    support.CURRENT_TIER = item.stash.get(_TIER, None)
    if _XDIST and item.stash.get(_RESTARTS, False):
        # it restarts the machine's Redis or PostgreSQL under whatever runs beside it (a test that
        # kills its own worker process or restarts its own services disturbs nobody else)
        raise TierViolation("a test that restarts the machine's services never runs beside others: restart your "
                            "own instead (tests/services.py: OwnRedis, OwnPostgres)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    support.CURRENT_TIER = None
