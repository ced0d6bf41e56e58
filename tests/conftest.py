"""Test fixtures on the machine's real PostgreSQL and Redis, with real Celery worker processes.

Each run creates its own database (dropped at the end) and uses its own Redis database
numbers, so it neither sees nor disturbs a demo or another run's queues.
"""
from __future__ import annotations

import inspect
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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

from tests.support import Db, WorkerProcess, flush_redis, stop_all_workers  # noqa: E402


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


# --- markers: the fast loop ---------------------------------------------------------------------
# `system`: the test starts real processes (celery workers, Flower, beat, ./run, process pools)
# or restarts services; seconds to minutes. `unit`: everything else (in-process; PostgreSQL and
# Redis at most): `./run test -m unit` is the developers' loop. Derived from the source of the
# test, of its fixtures and of the test-side helpers they call (followed through tests.*), so a
# new test is classified without anyone remembering to mark it.
_SYSTEM_SOURCE = re.compile(r"WorkerProcess|subprocess|Popen|multiprocessing|start_worker|restart_")
_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_system_cache: dict[object, bool] = {}


def _starts_processes(roots: list[object]) -> bool:
    stack, seen = list(roots), set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if obj in _system_cache:
            if _system_cache[obj]:
                return True
            continue
        try:
            source = inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            continue
        if _SYSTEM_SOURCE.search(source):
            _system_cache[obj] = True
            return True
        module = inspect.getmodule(obj)
        for name in set(_CALLED.findall(source)):
            called = getattr(module, name, None)
            owner = getattr(called, "__module__", "") or ""
            if (inspect.isfunction(called) or inspect.isclass(called)) and owner.startswith("tests"):
                stack.append(called)
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("unit") or item.get_closest_marker("system"):
            continue
        function = getattr(item, "function", None)
        info = getattr(item, "_fixtureinfo", None)
        fixtures = [d.func for defs in (info.name2fixturedefs.values() if info else []) for d in defs]
        system = _starts_processes([f for f in [function, *fixtures] if f is not None])
        item.add_marker(pytest.mark.system if system else pytest.mark.unit)
